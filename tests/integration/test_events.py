"""Live status over Server-Sent Events, driven by LISTEN/NOTIFY, on real services."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from broker import auth
from broker.dev import devstack
from tests import services
from tests.conftest import create_upload, put_bytes
from tests.waiting import until


class Stream:
    """Reads an SSE stream in a thread, collecting messages (and heartbeat comments)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.messages: list[dict] = []
        self.heartbeats = 0
        self.closed = threading.Event()
        self.status_code: int | None = None
        self.response_headers: httpx.Headers | None = None
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(url, headers or {}), daemon=True)
        self.thread.start()
        assert self.opened.wait(10), "the stream did not open"

    def _read(self, url: str, headers: dict[str, str]) -> None:
        try:
            with httpx.stream("GET", url, headers=headers, timeout=30) as response:
                self.status_code = response.status_code
                self.response_headers = response.headers
                self.opened.set()
                message: dict = {}
                for line in response.iter_lines():
                    if line.startswith(": heartbeat"):
                        self.heartbeats += 1
                    elif line.startswith("id: "):
                        message["id"] = line[4:]
                    elif line.startswith("event: "):
                        message["event"] = line[7:]
                    elif line.startswith("data: "):
                        message["data"] = json.loads(line[6:])
                    elif line == "" and message:
                        self.messages.append(message)
                        message = {}
        finally:
            self.opened.set()
            self.closed.set()

    def statuses(self) -> list[str]:
        return [m["data"]["status"] for m in self.messages]

    def wait_for(self, count: int, timeout: float = 15) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.statuses()


def test_the_events_url_streams_pending_then_finalized_and_closes(api, auth_headers, broker):
    data = b"watch me"
    upload = create_upload(api, auth_headers, data)
    stream = Stream(broker + upload["events_url"])
    assert stream.status_code == 200
    assert stream.response_headers["content-type"].startswith("text/event-stream")
    assert stream.wait_for(1) == ["pending"]
    put_bytes(upload, data)
    assert stream.wait_for(2) == ["pending", "finalized"]
    assert stream.closed.wait(10), "the stream stays open after a final state"
    assert int(stream.messages[1]["id"]) > int(stream.messages[0]["id"])


def test_heartbeats_keep_a_quiet_stream_alive(api, auth_headers, broker):
    upload = create_upload(api, auth_headers, b"quiet")
    stream = Stream(f"{broker}/v1/uploads/{upload['id']}/events", auth_headers)
    deadline = time.monotonic() + 10
    while stream.heartbeats < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stream.heartbeats >= 2  # test settings: one every 0.5 s
    api.delete(f"/v1/uploads/{upload['id']}", headers=auth_headers)
    assert stream.wait_for(2) == ["pending", "deleted"]
    assert stream.closed.wait(10)


def test_a_reconnect_with_last_event_id_misses_nothing(api, auth_headers, broker):
    data = b"reconnect"
    upload = create_upload(api, auth_headers, data)
    url = broker + upload["events_url"]
    with httpx.stream("GET", url, timeout=10) as response:
        line = next(line for line in response.iter_lines() if line.startswith("id: "))
    seen = line[4:]
    put_bytes(upload, data)  # finalized while nobody listens
    resumed = Stream(url, {"Last-Event-ID": seen})
    assert resumed.wait_for(1) == ["finalized"]
    assert resumed.closed.wait(10)


def test_stream_tokens_open_one_stream_only(api, auth_headers, broker, settings, owner):
    upload = create_upload(api, auth_headers, b"scoped")
    other = create_upload(api, auth_headers, b"other")
    token = upload["events_url"].split("token=")[1]
    wrong = httpx.get(f"{broker}/v1/uploads/{other['id']}/events?token={token}")
    assert wrong.status_code == 401
    as_bearer = api.get("/v1/uploads", headers={"Authorization": f"Bearer {token}"})
    assert as_bearer.status_code == 401
    assert httpx.get(f"{broker}/v1/uploads/{upload['id']}/events").status_code == 401
    stranger = auth.issue_token(settings.jwt_secret, "someone-else")
    hidden = httpx.get(
        f"{broker}/v1/uploads/{upload['id']}/events",
        headers={"Authorization": f"Bearer {stranger}"},
    )
    assert hidden.status_code == 404


@pytest.fixture
def second_broker(settings, database_url) -> Iterator[str]:
    """Another broker process on the same database; MinIO's webhook does not call it."""
    other = settings.model_copy(update={"database_url": database_url})
    server = services.BrokerServer(other, devstack.free_port())
    server.start()
    yield server.url
    server.stop()


def test_a_change_handled_by_another_process_reaches_the_stream(
    api, auth_headers, second_broker, sql
):
    data = b"cross-process"
    upload = create_upload(api, auth_headers, data)
    stream = Stream(second_broker + upload["events_url"])
    assert stream.wait_for(1) == ["pending"]
    put_bytes(upload, data)  # the webhook lands on the first broker
    assert stream.wait_for(2) == ["pending", "finalized"]


def test_one_listening_connection_serves_many_streams(api, auth_headers, broker, sql):
    uploads = [create_upload(api, auth_headers, b"many") for _ in range(5)]
    streams = [Stream(broker + u["events_url"]) for u in uploads]
    for stream in streams:
        assert stream.wait_for(1) == ["pending"]
    listening = sql(
        "SELECT count(*) AS n FROM pg_stat_activity "
        "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    )[0]["n"]
    assert listening == 1
    for upload in uploads:
        api.delete(f"/v1/uploads/{upload['id']}", headers=auth_headers)
    for stream in streams:
        assert stream.closed.wait(10)


def test_a_client_that_leaves_releases_its_watch(api, auth_headers, broker, broker_slot):
    upload = create_upload(api, auth_headers, b"left")
    upload_id = uuid.UUID(upload["id"])
    watchers = broker_slot.app.state.flows.live.watchers
    host, port = broker.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(f"GET {upload['events_url']} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode())
        until("the first event", lambda: b"data: " in client.recv(65536), 10)
        assert upload_id in watchers
    # The client is gone; the stream notices by its next heartbeat (0.5 s in tests).
    until("the watch is released", lambda: upload_id not in watchers, 10)
