"""Per-request context: a request id (from X-Request-ID or new) in logs and responses, and
the latency of each request by route template. A pure ASGI middleware, to stay cheap."""

from __future__ import annotations

import contextvars
import itertools
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker import metrics

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
ACCEPTED_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdFilter(logging.Filter):
    """Adds the current request id to every log record made while serving a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        if request_id is not None:
            record.request_id = request_id
        return True


class RequestContext:
    """Sets the request id for the request's duration, echoes it, and times the request;
    while the process drains (broker/serving.py), each response closes its connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Histogram children by (method, route, status): .labels() is a lookup we can skip.
        self.timers: dict[tuple[str, str, int], Any] = {}
        # Ids are this process's random prefix and a counter: unique without a syscall each.
        self.id_prefix = uuid.uuid4().hex[:16]
        self.issued = itertools.count(1)

    def _new_id(self) -> str:
        return f"{self.id_prefix}{next(self.issued):016x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode(
            "latin-1"
        )
        request_id = given if given and ACCEPTED_ID.match(given) else self._new_id()
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                if getattr(scope["app"].state, "draining", False):
                    # Shutting down: the client opens a new connection (to another process)
                    # for its next request, instead of sending it on this one just as the
                    # server closes it, which would lose the request.
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            key = (scope["method"], getattr(scope.get("route"), "path", "unmatched"), status)
            timer = self.timers.get(key)
            if timer is None:
                timer = self.timers[key] = metrics.REQUEST_SECONDS.labels(*map(str, key))
            timer.observe(time.perf_counter() - started)
            REQUEST_ID.reset(token)
