"""Issue 12: three `broker serve` replicas behind a real HAProxy (health-checking /readyz), on
one PostgreSQL and MinIO erasure-coded over 4 drives whose webhooks go to HAProxy. The
replicas migrate once when started together; 1,000 uploads through HAProxy all finalize,
spread over the three; a live stream on one replica sees what another finalized; every
reconciler claim and every app-webhook delivery is handled by exactly one replica; one
replica SIGKILLed and another SIGTERMed mid-load lose nothing, and clients carry on."""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import httpx
import pytest

from broker.adapters import migrate
from broker.dev import clamd
from tests import topology as topo
from tests.integration.test_shutdown import RawStream
from tests.receiver import Receiver

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver, clamd_service: clamd.LocalClamd
) -> Iterator[topo.Topology]:
    if clamd_service.process is None or clamd_service.process.poll() is not None:
        clamd_service.start()  # an earlier test may have left it down
    with topo.topology(
        tmp_path_factory.mktemp("topology"),
        clamd_address=clamd_service.address,
        scanner="true",
        webhook_allowed_hosts=receiver.host_port,
        webhook_poll_seconds="0.5",
        webhook_lease_seconds="30",
        reconcile_interval_seconds="1",
    ) as made:
        yield made


def s3_client(stack: topo.Topology) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=stack.minio.endpoint,
        aws_access_key_id=stack.minio.root_user,
        aws_secret_access_key=stack.minio.root_password,
        region_name="us-east-1",
        config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def logged_by(stack: topo.Topology, event: str, key: str) -> dict[str, list[str]]:
    """For each value of `key` in `event` log lines: the replicas that logged it."""
    seen: dict[str, list[str]] = {}
    for replica in stack.replicas:
        for entry in replica.events(event):
            if key in entry:
                seen.setdefault(str(entry[key]), []).append(replica.name)
    return seen


def test_replicas_started_together_on_an_empty_database_migrate_once(stack):
    names = [m.name for m in migrate.load_migrations()]
    applied = Counter(
        line.removeprefix("applied ")
        for output in stack.migrate_outputs
        for line in output.splitlines()
        if line.startswith("applied ")
    )
    assert applied == Counter(names), stack.migrate_outputs  # each by exactly one process
    rows = topo.query(stack.database_url, "SELECT version FROM schema_migrations")
    assert sorted(r["version"] for r in rows) == list(range(1, len(names) + 1))


def test_1000_uploads_through_haproxy_all_finalize_spread_over_replicas_each_delivery_once(
    stack, receiver
):
    admin = stack.headers("ops", admin=True)
    endpoint = httpx.post(
        f"{stack.url}/v1/admin/webhook-endpoints",
        json={"url": receiver.url, "event_types": ["upload.finalized"]},
        headers=admin,
    )
    assert endpoint.status_code == 201, endpoint.text
    owner = f"load-{uuid.uuid4()}"
    started = time.monotonic()
    report = topo.Load(stack.url, stack.headers(owner), 1000).run()
    assert report.statuses == {201: 1000}, (report.statuses, report.failures)
    assert not report.lb_errors and not report.failures, (report.lb_errors, report.failures)
    assert len(report.accepted) == 1000
    missing = topo.settle(stack.database_url, report.accepted, 60)
    assert not missing, f"{len(missing)} stored uploads never finalized"
    elapsed = time.monotonic() - started
    counts = topo.finalized_counts(stack.database_url, report.accepted)
    assert Counter(counts.values()) == {1: 1000}  # no upload finalized twice

    # MinIO's events reached every replica through HAProxy; each finalization was done by one.
    finalized_by = logged_by(stack, "upload.finalized", "upload_id")
    assert set(report.accepted) <= set(finalized_by)
    assert all(len(finalized_by[i]) == 1 for i in report.accepted)
    spread = Counter(finalized_by[i][0] for i in report.accepted)
    assert set(spread) == {r.name for r in stack.replicas}, spread
    assert all(n >= 100 for n in spread.values()), spread

    # The app's webhook: every finalization sent once, by one replica, all three sending.
    until_sent = topo.until(
        "1000 finalizations delivered",
        lambda: len({r.headers["webhook-id"] for r in receiver.received}) >= 1000 or None,
        60,
    )
    assert until_sent
    ids = Counter(r.headers["webhook-id"] for r in receiver.received)
    assert len(ids) == 1000 and set(ids.values()) == {1}, ids.most_common(3)
    sent_by = logged_by(stack, "webhooks.attempt", "message_id")
    assert set(ids) <= set(sent_by)
    assert all(len(sent_by[i]) == 1 for i in ids)
    senders = Counter(sent_by[i][0] for i in ids)
    assert len(senders) >= 2, senders
    print(f"\n1000 uploads through HAProxy finalized in {elapsed:.1f} s; by replica {spread}")


def test_a_stream_on_one_replica_sees_the_finalization_another_replica_handled(stack):
    watched = stack.replicas[0]
    stack.haproxy.command(f"set server brokers/{watched.name} state drain")
    try:
        topo.until(
            "HAProxy stops sending to the watched replica",
            lambda: stack.haproxy.server_states()[watched.name] == "DRAIN",
            5,
        )
        headers = stack.headers(f"sse-{uuid.uuid4()}")
        created = httpx.post(
            f"{stack.url}/v1/uploads",
            json={"filename": "a.txt", "content_type": "text/plain", "size": 5},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        upload = created.json()
        stream = RawStream(f"{watched.url}{upload['events_url']}")
        topo.until(
            "the stream's first event", lambda: any("pending" in x for x in stream.lines), 10
        )
        put = httpx.put(
            upload["upload"]["url"], content=b"hello", headers=upload["upload"]["headers"]
        )
        assert put.status_code == 200
        topo.until(
            "the watched replica's stream shows the finalization",
            lambda: any(x.startswith("data:") and "finalized" in x for x in stream.lines),
            10,
        )
    finally:
        stack.haproxy.command(f"set server brokers/{watched.name} state ready")
    by = logged_by(stack, "upload.finalized", "upload_id")[upload["id"]]
    assert len(by) == 1 and by[0] != watched.name, by


def test_each_upload_whose_webhooks_were_missed_is_settled_by_exactly_one_replica(stack):
    s3 = s3_client(stack)
    subscription = s3.get_bucket_notification_configuration(Bucket=stack.bucket)
    subscription.pop("ResponseMetadata", None)
    headers = stack.headers(f"missed-{uuid.uuid4()}")
    made = []
    s3.put_bucket_notification_configuration(
        Bucket=stack.bucket, NotificationConfiguration={}
    )  # MinIO reports nothing for a while: both webhooks are missed
    try:
        with httpx.Client(base_url=stack.url, headers=headers, timeout=15) as api:
            for n in range(30):
                created = api.post(
                    "/v1/uploads",
                    json={"filename": f"{n}.txt", "content_type": "text/plain", "size": 2,
                          "policy": "short"},
                )  # fmt: skip
                assert created.status_code == 201, created.text
                upload = created.json()
                put = httpx.put(
                    upload["upload"]["url"], content=b"ok", headers=upload["upload"]["headers"]
                )
                assert put.status_code == 200, put.text
                made.append(upload["id"])
    finally:
        s3.put_bucket_notification_configuration(
            Bucket=stack.bucket, NotificationConfiguration=subscription
        )
    assert not topo.settle(stack.database_url, set(made), 30)
    rows = topo.query(
        stack.database_url,
        "SELECT upload_id::text AS id, actor FROM upload_history"
        " WHERE upload_id = ANY($1::uuid[]) AND status = 'finalized'",
        made,
    )
    assert sorted(r["id"] for r in rows) == sorted(made)  # one finalization each
    assert {r["actor"] for r in rows} == {"reconciler"}
    missed_by = logged_by(stack, "webhook.missed", "upload_id")
    assert all(len(missed_by[i]) == 1 for i in made), {i: missed_by.get(i) for i in made}
    passes = {r.name for r in stack.replicas if r.events("reconciler.pass")}
    assert passes == {r.name for r in stack.replicas}  # all three reconcile, none twice


def test_each_scan_job_gets_one_verdict_from_one_replica(stack):
    headers = stack.headers(f"scans-{uuid.uuid4()}")
    contents = [b"clean %d" % n for n in range(24)] + [b"x " + clamd.EICAR] * 6
    made: dict[str, bool] = {}  # upload id -> infected
    with httpx.Client(base_url=stack.url, headers=headers, timeout=15) as api:
        for data in contents:
            created = api.post(
                "/v1/uploads",
                json={"filename": "s.txt", "content_type": "text/plain", "size": len(data),
                      "policy": "scanned"},
            )  # fmt: skip
            assert created.status_code == 201, created.text
            upload = created.json()
            put = httpx.put(
                upload["upload"]["url"], content=data, headers=upload["upload"]["headers"]
            )
            assert put.status_code == 200, put.text
            made[upload["id"]] = clamd.EICAR in data

    def verdicts() -> list[Any] | None:
        rows = topo.query(
            stack.database_url,
            "SELECT upload_id::text AS id, status FROM upload_history"
            " WHERE upload_id = ANY($1::uuid[]) AND actor = 'scanner'",
            list(made),
        )
        return rows if len({r["id"] for r in rows}) == len(made) else None

    rows = topo.until("every upload has its verdict", verdicts, 60)
    assert len(rows) == len(made)  # one verdict each, never two
    assert {r["id"]: r["status"] == "quarantined" for r in rows} == made
    scanned_by = logged_by(stack, "upload.finalized", "upload_id")
    clean = [i for i, infected in made.items() if not infected]
    assert all(len(scanned_by[i]) == 1 for i in clean)
    print(f"\nscan verdicts by replica: {Counter(scanned_by[i][0] for i in clean)}")


def test_one_replica_sigkilled_and_another_sigtermed_mid_load_lose_nothing(stack):
    killed, stopped = stack.replicas[1], stack.replicas[2]
    load = topo.Load(stack.url, stack.headers(f"faults-{uuid.uuid4()}"), 600)
    load.start()
    topo.until("the load is under way", lambda: load.completed() >= 150, 60)
    killed.signal(signal.SIGKILL)
    topo.until("the load goes on", lambda: load.completed() >= 300, 60)
    stopped.signal(signal.SIGTERM)
    assert stopped.wait(timeout=30) == 0
    report = load.finish()
    print(f"\nSIGKILL + SIGTERM mid-load: {report.statuses}, client retries {report.failures}")
    assert killed.wait(timeout=5) == -signal.SIGKILL
    try:
        assert len(report.created) == report.attempted == 600, (report.statuses, report.failures)
        assert report.bad_5xx == 0, report.statuses
        assert not report.lb_errors, report.lb_errors  # two replicas were always up
        assert len(report.accepted) == 600
        missing = topo.settle(stack.database_url, report.accepted, 60)
        assert not missing, f"{len(missing)} stored uploads never finalized"
        counts = topo.finalized_counts(stack.database_url, report.accepted)
        assert Counter(counts.values()) == {1: 600}
    finally:
        stack.restart(killed, stopped)
