"""Rate limits across replicas: two `broker serve` processes on one PostgreSQL share every
count. A burst spread over both gets exactly the owner's limit through, with 429s from each;
failed authentications from one address add up over both; behind HAProxy (option
forwardfor, BROKER_FORWARDED_ALLOW_IPS) the address is the client's, not the proxy's."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from broker import auth
from tests import topology as topo

pytestmark = pytest.mark.timeout(300)
LIMIT = 10


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[topo.Topology]:
    with topo.topology(
        tmp_path_factory.mktemp("rate-limits"),
        replicas=2,
        rate_limit_create=f"{LIMIT}/minute",
        rate_limit_failed_auth="4/minute",
        forwarded_allow_ips="127.0.0.1",
    ) as made:
        yield made


def create(url: str, headers: dict[str, str]) -> httpx.Response:
    body = {"filename": "a.txt", "content_type": "text/plain", "size": 5}
    return httpx.post(f"{url}/v1/uploads", json=body, headers=headers, timeout=15)


def test_a_burst_over_both_replicas_gets_exactly_the_limit_through(stack):
    headers = stack.headers("burst-owner")
    targets = [replica.url for replica in stack.replicas] * 15  # 30 creates, half on each

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda url: (url, create(url, headers)), targets))

    assert Counter(a.status_code for _, a in answers) == {201: LIMIT, 429: 30 - LIMIT}
    refused_by = {url for url, a in answers if a.status_code == 429}
    assert refused_by == {replica.url for replica in stack.replicas}  # 429s on every replica
    for _, answer in answers:
        if answer.status_code == 429:
            assert answer.json()["error"]["code"] == "ERR_RATE_LIMITED"
            assert int(answer.headers["retry-after"]) >= 1
    rows = topo.query(
        stack.database_url, "SELECT count(*) FROM uploads WHERE owner = $1", "burst-owner"
    )
    assert rows[0][0] == LIMIT
    assert create(stack.url, stack.headers("another-owner")).status_code == 201


def test_failed_authentications_of_one_address_add_up_over_both_replicas(stack):
    forged = {"authorization": "Bearer " + auth.issue_token("y" * 32, "mallory")}
    first, second = (replica.url for replica in stack.replicas)

    def as_client(url: str, address: str) -> int:
        headers = {**forged, "x-forwarded-for": address}
        return httpx.get(f"{url}/v1/uploads", headers=headers, timeout=15).status_code

    # Straight to the replicas: the tests' own address, 127.0.0.1, is a trusted proxy there,
    # so the X-Forwarded-For entry is the client's address.
    statuses = [as_client(url, "203.0.113.7") for url in (first, second, first, second, first)]

    assert statuses == [401, 401, 401, 401, 429]
    assert as_client(second, "203.0.113.7") == 429  # the second replica learns it as well
    # Through HAProxy, which appends the address it saw: the client's address is the one
    # blocked, not HAProxy's, and another client is counted apart.
    assert as_client(stack.url, "203.0.113.7") == 429
    assert as_client(stack.url, "198.51.100.9") == 401
