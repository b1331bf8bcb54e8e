"""Rate limits on the real PostgreSQL: a burst over an owner's limit is refused 429 with
Retry-After and ERR_RATE_LIMITED (exactly the limit gets through, even all at once), other
owners and policies are unaffected, the owner may go on after the wait; part signings and
downloads are limited too; an address that fails authentication too often is refused
before its token is looked at. tests/integration/test_rate_limits_replicas.py holds the
limits across two broker processes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker import auth, config
from broker.adapters import db, queries
from tests import services
from tests.conftest import put_bytes, wait_for_status
from tests.waiting import until

LIMITED_POLICIES = """
[policies.throttled]
rate_limits = { create = "5/minute", parts = "2/minute", downloads = "2/minute" }

[policies.brisk]
rate_limits = { create = "2/second" }
"""
DATA = b"rate limited\n"


@pytest.fixture
def limited(
    settings: config.Settings, broker_slot: services.BrokerSlot, tmp_path: Path
) -> Iterator[httpx.Client]:
    """A broker with the limited policies and at most 3 failed authentications a minute
    per client address."""
    policies = tmp_path / "policies.toml"
    policies.write_text(services.TEST_POLICIES + LIMITED_POLICIES)
    broker_slot.plug(
        settings.model_copy(
            update={"policies_file": policies, "rate_limit_failed_auth": "3/minute"}
        )
    )
    try:
        with httpx.Client(base_url=broker_slot.url, timeout=15) as client:
            yield client
    finally:
        broker_slot.unplug()


def create(api: httpx.Client, headers: dict[str, str], **fields: object) -> httpx.Response:
    body = {"filename": "a.txt", "content_type": "text/plain", "size": len(DATA), **fields}
    return api.post("/v1/uploads", json=body, headers=headers)


def assert_rate_limited(response: httpx.Response, action: str) -> int:
    """The response is a 429 of `action`'s limit; its Retry-After in seconds."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "ERR_RATE_LIMITED"
    assert error["details"]["action"] == action
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1 and error["details"]["retry_after"] == retry_after
    return retry_after


def test_a_burst_gets_exactly_the_limit_through_and_429s_with_retry_after(
    limited, auth_headers, token_for, sql
):
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(
            pool.map(lambda _: create(limited, auth_headers, policy="throttled"), range(12))
        )

    assert Counter(a.status_code for a in answers) == {201: 5, 429: 7}
    waits = [assert_rate_limited(a, "create") for a in answers if a.status_code == 429]
    assert all(1 <= wait <= 12 for wait in waits)  # one create every 12 s from now on
    assert sql("SELECT count(*) FROM uploads")[0][0] == 5

    assert create(limited, token_for("someone-else"), policy="throttled").status_code == 201
    assert create(limited, auth_headers).status_code == 201  # the default policy: no limit


def test_after_retry_after_the_owner_may_create_again(limited, auth_headers):
    assert [create(limited, auth_headers, policy="brisk").status_code for _ in range(2)] == [
        201
    ] * 2
    refused = create(limited, auth_headers, policy="brisk")
    retry_after = assert_rate_limited(refused, "create")
    refused_at = time.monotonic()

    again = until(
        "a create is accepted again",
        lambda: create(limited, auth_headers, policy="brisk").status_code == 201,
        timeout=retry_after + 5,
    )

    assert again and time.monotonic() - refused_at <= retry_after + 1


def test_uppy_creates_count_against_the_owners_create_limit(limited, auth_headers):
    for _ in range(4):
        assert create(limited, auth_headers, policy="throttled").status_code == 201
    query = {"filename": "a.txt", "type": "text/plain", "metadata[policy]": "throttled"}

    first = limited.get("/s3/params", params=query, headers=auth_headers)
    second = limited.get("/s3/params", params=query, headers=auth_headers)

    assert first.status_code == 200, first.text
    assert_rate_limited(second, "create")


def test_part_signing_is_limited_per_owner(limited, auth_headers):
    created = create(limited, auth_headers, policy="throttled", size=6 * 1024**2, multipart=True)
    assert created.status_code == 201, created.text
    parts_url = f"/v1/uploads/{created.json()['id']}/parts"

    answers = [
        limited.post(parts_url, json={"part_numbers": [1, 2]}, headers=auth_headers)
        for _ in range(3)
    ]

    assert [a.status_code for a in answers[:2]] == [200, 200]
    assert assert_rate_limited(answers[2], "parts") == 30


def test_downloads_are_limited_per_owner(limited, auth_headers, token_for):
    upload = create(limited, auth_headers, policy="throttled").json()
    assert put_bytes(upload, DATA).status_code == 200
    wait_for_status(limited, auth_headers, upload["id"], "finalized")
    url = f"/v1/uploads/{upload['id']}/download"

    answers = [limited.get(url, headers=auth_headers) for _ in range(3)]

    assert [a.status_code for a in answers[:2]] == [200, 200]
    assert_rate_limited(answers[2], "downloads")
    assert limited.get(url, headers=token_for("someone-else")).status_code == 404  # not theirs


def test_an_address_failing_authentication_too_often_is_refused_even_with_a_good_token(
    limited, auth_headers
):
    forged = {"authorization": "Bearer " + auth.issue_token("x" * 32, "mallory")}
    stream = f"/v1/uploads/{uuid.uuid4()}/events"  # the live status stream counts them too
    answers = [limited.get(path, headers=forged) for path in ["/v1/uploads", stream] * 2]

    assert [a.status_code for a in answers[:3]] == [401, 401, 401]
    assert_rate_limited(answers[3], "failed_auth")
    blocked = limited.get("/v1/uploads", headers=auth_headers)
    assert_rate_limited(blocked, "failed_auth")  # refused before the token is checked
    assert blocked.headers["x-request-id"]
    assert limited.get("/healthz").status_code == 200  # probes are never refused


def test_the_openapi_document_gives_429_and_its_retry_after_on_limited_routes(limited):
    document = limited.get("/openapi.json").json()
    for path, method in [
        ("/v1/uploads", "post"),
        ("/v1/uploads/{upload_id}/parts", "post"),
        ("/v1/uploads/{upload_id}/download", "get"),
        ("/s3/params", "get"),
        ("/s3/multipart/{upload_id}/{part_number}", "get"),
    ]:
        answer = document["paths"][path][method]["responses"]["429"]
        assert "Retry-After" in answer["headers"], path


def test_takes_asked_together_go_in_one_batch_and_get_exactly_what_fits(database_url):
    async def scenario() -> tuple[list[Any], list[Any], Any, int]:
        database = await db.Database.connect(database_url, min_size=1, max_size=2)
        try:
            statements = queries.Queries(database)

            def take(key: str, count: int = 1) -> Any:
                return statements.take_rate_limit(
                    key, count=count, interval_seconds=12, period_seconds=60
                )

            burst = await asyncio.gather(*(take("create:p:ann") for _ in range(8)))
            others = await asyncio.gather(take("create:p:bob"), take("failed_auth:10.0.0.1"))
            lease = await take("create:p:cy", count=3), await take("create:p:cy", count=3)
            rows = await database.pool.fetch("SELECT key FROM rate_limits")
            return burst, others, lease, len(rows)
        finally:
            await database.close()

    burst, others, lease, keys = asyncio.run(scenario())

    assert burst[:5] == [(1, 0.0)] * 5  # the first five asked, in order
    assert all(taken == 0 and 11 < wait <= 12 for taken, wait in burst[5:])  # next in 12 s
    assert others == [(1, 0.0), (1, 0.0)]
    assert lease == ((3, 0.0), (2, 0.0))  # several at once: as many as fit
    assert keys == 4


def test_with_the_database_down_a_bad_token_is_still_401_and_a_limited_create_503(
    limited, auth_headers, pg_proxy
):
    forged = {"authorization": "Bearer " + auth.issue_token("z" * 32, "mallory")}
    pg_proxy.cut()
    try:
        refused = limited.get("/v1/uploads", headers=forged)
        limited_create = create(limited, auth_headers, policy="throttled")
    finally:
        pg_proxy.restore()

    assert refused.status_code == 401  # not counted, never a 500
    assert limited_create.status_code == 503
    assert limited_create.json()["error"]["code"] == "ERR_DATABASE_UNAVAILABLE"
