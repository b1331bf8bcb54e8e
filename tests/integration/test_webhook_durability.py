"""Issue 10: webhooks survive a broker process killed mid-POST. Real `broker serve`
subprocesses send to a real receiver on 127.0.0.1; one is SIGKILLed with deliveries in
flight, another started on the same database: nothing is lost, and a repeat carries the same
webhook-id and body. And two processes sending at once never send a delivery twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import standardwebhooks

from broker import auth, config
from broker.dev import devstack
from tests.conftest import create_upload
from tests.receiver import Receiver
from tests.waiting import query, until

BROKER = str(Path(sys.executable).with_name("broker"))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def settings(settings: config.Settings, receiver: Receiver) -> config.Settings:
    """The test's settings, allowing the receiver's loopback address."""
    return settings.model_copy(update={"webhook_allowed_hosts": (receiver.host_port,)})


@pytest.fixture
def admin_headers(settings: config.Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {auth.issue_token(settings.jwt_secret, 'op', admin=True)}"}


def deliveries(database_url: str) -> list[asyncpg.Record]:
    return query(
        database_url,
        "SELECT message_id, upload_id, seq, type, payload, status, attempts, last_status,"
        " leased_until, delivered_at FROM webhook_deliveries ORDER BY id",
    )


def all_delivered(database_url: str, count: int) -> Callable[[], list[asyncpg.Record] | None]:
    """A check for until(): the deliveries, once there are `count` and all are delivered."""

    def check() -> list[asyncpg.Record] | None:
        rows = deliveries(database_url)
        done = len(rows) == count and all(r["status"] == "delivered" for r in rows)
        return rows if done else None

    return check


class Serve:
    """`broker serve` in a subprocess of its own, its output in a log file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        port = devstack.free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [BROKER, "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"broker serve exited: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # SIGKILL: no shutdown, no cleanup, leases left behind
        self.process.wait(timeout=10)


@contextmanager
def serving(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], Serve]]:
    """start() runs one more `broker serve` and returns it once ready; all are killed at the end."""
    started: list[Serve] = []

    def start() -> Serve:
        process = Serve(env, tmp_path / f"broker-{len(started)}.log")
        started.append(process)
        until("broker serve is ready", process.ready, 20, process.log)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.kill()


def serve_env(settings: config.Settings, database_url: str, **webhook: Any) -> dict[str, str]:
    """The environment of a `broker serve` on the test's database, sending to the receiver."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            env[f"BROKER_{name.upper()}"] = text
    env["BROKER_DATABASE_URL"] = database_url
    env["BROKER_WEBHOOK_SENDER"] = "true"
    env["BROKER_LOG_LEVEL"] = "INFO"
    for name, value in webhook.items():
        env[f"BROKER_WEBHOOK_{name.upper()}"] = str(value)
    return env


def create_endpoint(api: httpx.Client, admin_headers: dict[str, str], url: str) -> str:
    """Register the receiver (through the test's own broker); its secret."""
    created = api.post("/v1/admin/webhook-endpoints", json={"url": url}, headers=admin_headers)
    assert created.status_code == 201, created.text
    return created.json()["secret"]  # type: ignore[no-any-return]


def test_a_sigkilled_sender_loses_no_delivery_and_repeats_only_with_the_same_webhook_id(
    settings, database_url, broker, api, admin_headers, auth_headers, receiver, tmp_path
):
    started = time.monotonic()
    secret = create_endpoint(api, admin_headers, receiver.url)
    env = serve_env(
        settings, database_url, lease_seconds=2, timeout_seconds=1.5,
        poll_seconds=0.25, concurrency=32, endpoint_concurrency=32,
    )  # fmt: skip
    n, deleted = 30, 10
    receiver.hold.clear()  # every POST waits: the deliveries stay in flight
    with serving(env, tmp_path) as start, ThreadPoolExecutor(8) as pool:
        first = start()
        with httpx.Client(base_url=first.url, timeout=15) as first_api:
            made = list(pool.map(lambda _: create_upload(first_api, auth_headers, b"x"), range(n)))
            for upload in made[:deleted]:  # upload.deleted waits behind its upload.created
                gone = first_api.delete(f"/v1/uploads/{upload['id']}", headers=auth_headers)
                assert gone.status_code in (200, 204), gone.text
        until(f"{n} POSTs are held", lambda: receiver.waiting >= n, 10, first.log)
        first.kill()
        in_flight = {
            row["message_id"]: row["leased_until"]
            for row in query(
                database_url,
                "SELECT message_id, leased_until FROM webhook_deliveries"
                " WHERE status = 'pending' AND leased_until > now()",
            )
        }
        assert in_flight, "the killed process held no lease"
        receiver.hold.set()  # the held requests are answered now, to a dead process
        second = start()
        done = until(
            "every delivery is delivered",
            all_delivered(database_url, n + deleted),
            20,
            second.log,
        )

    assert {r["type"] for r in done[n:]} == {"upload.deleted"}
    assert all(200 <= r["last_status"] < 300 for r in done)
    answered = [r for r in receiver.received if 200 <= r.status < 300]
    assert {r["message_id"] for r in done} == {r.headers["webhook-id"] for r in answered}
    # No unknown ids; a repeat is the same message (same id, same body), correctly signed.
    by_id = {r["message_id"]: r for r in done}
    bodies: dict[str, set[bytes]] = {}
    for request in receiver.received:
        webhook_id = request.headers["webhook-id"]
        assert webhook_id in by_id, f"unknown webhook-id {webhook_id}"
        bodies.setdefault(webhook_id, set()).add(request.body)
        assert json.loads(request.body) == json.loads(by_id[webhook_id]["payload"])
        standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    assert all(len(b) == 1 for b in bodies.values())
    # Per upload, first receipts in seq order (deleted after created, across the kill).
    first_seen: dict[str, list[int]] = {}
    for request in receiver.received:
        data = json.loads(request.body)["data"]
        seqs = first_seen.setdefault(data["id"], [])
        if data["seq"] not in seqs:
            seqs.append(data["seq"])
    assert len(first_seen) == n
    assert all(seqs == sorted(seqs) for seqs in first_seen.values()), first_seen
    assert all(len(first_seen[u["id"]]) == 2 for u in made[:deleted])
    # The dead process's leases were taken over once they had run out, and sent again.
    counts = {i: sum(r.headers["webhook-id"] == i for r in receiver.received) for i in by_id}
    for message_id, leased_until in in_flight.items():
        row = by_id[message_id]
        assert row["attempts"] >= 2, row
        assert row["delivered_at"] >= leased_until, row
        assert counts[message_id] >= 2, message_id
    assert time.monotonic() - started < 30


def test_two_senders_at_once_answer_each_webhook_id_exactly_once(
    settings, database_url, broker, api, admin_headers, auth_headers, receiver, tmp_path
):
    create_endpoint(api, admin_headers, receiver.url)
    env = serve_env(settings, database_url, lease_seconds=30, timeout_seconds=10)
    n = 120
    with serving(env, tmp_path) as start, ThreadPoolExecutor(8) as pool:
        brokers = [start(), start()]
        clients = [httpx.Client(base_url=b.url, timeout=15) for b in brokers]
        try:
            list(pool.map(lambda i: create_upload(clients[i % 2], auth_headers, b"x"), range(n)))
        finally:
            for client in clients:
                client.close()
        done = until(
            f"{n} deliveries are delivered", all_delivered(database_url, n), 20, brokers[0].log
        )
    sent = [b.log.read_text().count('"webhooks.attempt"') for b in brokers]
    assert sum(sent) == n and all(sent), sent  # both sent, and no attempt failed
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert sorted(ids) == sorted(r["message_id"] for r in done)  # each exactly once
    assert all(r.status == 200 for r in receiver.received)
    assert all(r["attempts"] == 1 for r in done)
