"""SIGTERM, as every orchestrator sends it, to a real `broker serve` under load: /readyz
turns 503 at once, live streams are told to reconnect and end, a request that started
before the signal is answered, every acknowledged create is recorded, and the process exits
0 within its timeout, one log line per phase."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import uuid
from typing import Any

import httpx

from broker import auth
from tests.integration.test_webhook_durability import serve_env, serving
from tests.waiting import query, until


class RawStream:
    """An SSE stream read line by line in a thread (retry: lines included)."""

    def __init__(self, url: str) -> None:
        self.lines: list[str] = []
        self.closed = threading.Event()
        self.error: BaseException | None = None
        threading.Thread(target=self._read, args=(url,), daemon=True).start()

    def _read(self, url: str) -> None:
        try:
            with httpx.stream("GET", url, timeout=30) as response:
                for line in response.iter_lines():
                    self.lines.append(line)
        except BaseException as exc:  # a reset would land here
            self.error = exc
        finally:
            self.closed.set()


class SlowCreate:
    """POST /v1/uploads whose body is sent in two halves: in flight across the signal."""

    def __init__(self, url: str, token: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps(
            {"filename": "slow.txt", "content_type": "text/plain", "size": 4}
        ).encode()
        self.rest = body[len(body) // 2 :]
        self.sock = socket.create_connection((host, int(port)))
        head = (
            f"POST /v1/uploads HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + body[: len(body) // 2])

    def finish(self) -> tuple[int, dict[str, Any]]:
        self.sock.sendall(self.rest)
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            received += chunk
        self.sock.close()
        head, _, body = received.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)


def test_sigterm_drains_streams_requests_and_background_work_and_exits_0(
    settings, database_url, tmp_path
):
    env = serve_env(settings, database_url)
    env.update(
        BROKER_SHUTDOWN_TIMEOUT_SECONDS="10",
        BROKER_SHUTDOWN_DRAIN_SECONDS="1",
        BROKER_RECONCILE_INTERVAL_SECONDS="1",
    )
    token = auth.issue_token(settings.jwt_secret, "alice")
    headers = {"authorization": f"Bearer {token}"}
    body = {"filename": "a.txt", "content_type": "text/plain", "size": 4}
    with serving(env, tmp_path) as start:
        broker = start()
        pending = [
            httpx.post(f"{broker.url}/v1/uploads", json=body, headers=headers).json()
            for _ in range(5)
        ]
        streams = [RawStream(broker.url + upload["events_url"]) for upload in pending]
        until("every stream has its first event", lambda: all(s.lines for s in streams), 10)
        slow = SlowCreate(broker.url, token)

        acknowledged: list[str] = []
        refused: list[str] = []
        bad: list[str] = []
        stop = threading.Event()
        signal_sent = threading.Event()

        def burst() -> None:
            with httpx.Client(base_url=broker.url, headers=headers, timeout=10) as client:
                while not stop.is_set():
                    after_signal = signal_sent.is_set()
                    try:
                        response = client.post("/v1/uploads", json=body)
                    except httpx.ConnectError:
                        refused.append("connect")  # the listener is closed: nothing sent
                        continue
                    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                        if not after_signal:
                            bad.append(repr(exc))  # a request sent before the signal, reset
                            return
                        # Sent after the signal on a connection the server then closed
                        # unanswered (a connection still in the listen backlog): never
                        # acknowledged, so the client retries it elsewhere.
                        refused.append("closed unanswered")
                        continue
                    except httpx.HTTPError as exc:
                        bad.append(repr(exc))  # a reset of a request sent before the signal
                        return
                    if response.status_code == 201:
                        acknowledged.append(response.json()["id"])
                    else:
                        bad.append(f"{response.status_code} {response.text[:200]}")

        creator = threading.Thread(target=burst)
        creator.start()
        until("the burst is under way", lambda: len(acknowledged) >= 20, 20)

        signalled = time.monotonic()
        signal_sent.set()
        broker.process.send_signal(signal.SIGTERM)
        ready = until(
            "/readyz answers 503",
            lambda: (r := httpx.get(f"{broker.url}/readyz", timeout=2)).status_code == 503 and r,
            1,
        )
        assert ready.json()["error"]["details"] == {"draining": True}

        status, created = slow.finish()  # started before the signal: answered, not reset
        assert status == 201 and created["status"] == "pending"

        for stream in streams:
            assert stream.closed.wait(10), "a live stream was not closed"
            assert stream.error is None
            assert "retry: 1000" in stream.lines

        exit_code = broker.process.wait(timeout=15)
        took = time.monotonic() - signalled
        stop.set()
        creator.join(10)

    assert exit_code == 0
    assert took < 10
    assert bad == []
    assert refused  # creates went on until the listener closed, then were refused
    recorded = {
        str(row["id"])
        for row in query(
            database_url,
            "SELECT id FROM uploads WHERE id = ANY($1::uuid[])",
            [uuid.UUID(i) for i in [*acknowledged, created["id"]]],
        )
    }
    assert recorded == {*acknowledged, created["id"]}
    events = [json.loads(line).get("event") for line in broker.log.read_text().splitlines()
              if line.startswith("{")]  # fmt: skip
    phases = [e for e in events if e and e.startswith("shutdown.")]
    assert phases == [
        "shutdown.draining",
        "shutdown.closing",
        "shutdown.background_stopped",
        "shutdown.pool_closed",
        "shutdown.stopped",
    ]
