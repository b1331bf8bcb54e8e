"""A webhook receiver for the tests: a threaded HTTP server on 127.0.0.1 that records every
request and answers with the statuses a test scripts."""

from __future__ import annotations

import http.server
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 200  # what the receiver answered


@dataclass
class Script:
    """Answers by turn: each (status, headers) is used once; then `default` for the rest."""

    answers: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    default: tuple[int, dict[str, str]] = (200, {})


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # a sender opens dozens of connections at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the sender went away before the answer (a timeout, a killed process)
        super().handle_error(request, client_address)


class Receiver:
    """Records requests; `answer(...)` queues the next statuses."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[Received] = []
        self.script = Script()
        self.lock = threading.Lock()
        self.hold = threading.Event()  # while cleared, requests wait (a slow endpoint)
        self.hold.set()
        self.waiting = 0  # requests read and held, not yet answered
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.waiting += 1
                receiver.hold.wait(timeout=60)
                with receiver.lock:
                    receiver.waiting -= 1
                    script = receiver.script
                    status, headers = script.answers.popleft() if script.answers else script.default
                    receiver.received.append(
                        Received(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, body, status
                        )
                    )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                body = b"" if status in (204, 304) else b"ok"
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", port), Handler, bind_and_activate=False)
        self.server.server_bind()
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.host_port = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.server.server_activate()  # listens from here on: before, connections are refused
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()

    def answer(self, *statuses: int | tuple[int, dict[str, str]], then: int = 200) -> None:
        with self.lock:
            for status in statuses:
                self.script.answers.append(status if isinstance(status, tuple) else (status, {}))
            self.script.default = (then, {})

    def wait_for(self, count: int, timeout: float = 20) -> list[Received]:
        """Poll until at least `count` requests arrived, or fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"{len(self.received)} requests arrived, not {count}")
