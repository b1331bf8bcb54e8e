"""GET /v1/uploads/{id}/events: the upload's status as Server-Sent Events."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncGenerator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from broker import auth
from broker.api import address_limits, security_doc
from broker.api.deps import bearer_token, flows_of, token_error, verify
from broker.api.errors_doc import responses
from broker.domain import errors
from broker.flows.live import LiveStatus, Reconnect, StatusEvent

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])
RECONNECT_MS = 1000
HEARTBEAT = b": heartbeat\n\n"
# The process is shutting down: EventSource reconnects after this many ms, through the load
# balancer to another process, resuming by Last-Event-ID.
RETRY = f"retry: {RECONNECT_MS}\n\n".encode()
Events = AsyncGenerator[StatusEvent | Reconnect | None, None]


def sse(event: StatusEvent) -> bytes:
    """One SSE message: the id lets a reconnect (Last-Event-ID) resume after it."""
    data = json.dumps({"id": str(event.upload_id), "status": event.status, "at": str(event.at)})
    return f"id: {event.event_id}\nevent: status\ndata: {data}\n\n".encode()


async def _principal(
    request: Request, upload_id: uuid.UUID, token: str | None, live: LiveStatus
) -> auth.Principal:
    """The bearer header's owner, or the owner the stream token was issued for."""
    header = bearer_token(request)
    if header is not None:
        return await verify(request, header)
    if token is None:
        raise errors.Unauthorized()
    owner = await live.owner_of(upload_id) or ""
    try:
        secret = request.app.state.settings.jwt_secret
        return auth.verify_events_token(secret, token, str(upload_id), owner)
    except auth.InvalidToken as exc:
        raise token_error(exc) from None


async def open_stream(
    request: Request, upload_id: uuid.UUID, token: str | None, last_event_id: str | None
) -> Events:
    """Authenticate, find the upload (BrokerError otherwise), and return the stream's events:
    the current state at once, then each change, closing on a final state."""
    flows = flows_of(request)
    principal = await _principal(request, upload_id, token, flows.live)
    upload = await flows.uploads.get(principal.owner, upload_id)
    resume_after = int(last_event_id) if last_event_id and last_event_id.isdigit() else None
    return flows.live.follow(upload, resume_after)


EVENT_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]


def _client_gone(receive: Receive) -> bool:
    """Whether the client has gone, asked without waiting (uvicorn's send() to a closed
    connection returns as if it had written: only receive() tells).

    receive() is run up to its first wait: if it ends before, it answered with what it
    already had; if not, it is closed there and nothing was taken. Starlette's
    Request.is_disconnected does the same with a cancelled scope, which cost 10,000 idle
    streams 2% of a core more.
    """
    asking = receive().__await__()
    try:
        next(asking)
    except StopIteration as answered:
        return bool(answered.value["type"] == "http.disconnect")
    asking.close()
    return False


class EventStream(Response):
    """An SSE response with only what a long idle stream needs.

    Starlette's StreamingResponse keeps an anyio task group and two tasks per response
    (about 9 KiB). This keeps no task of its own: whether the client has gone is asked at
    each heartbeat, without waiting, so a stream whose client left ends at its next
    heartbeat and releases its watch.
    """

    def __init__(self, events: Events) -> None:
        # No content-length (Response would say 0): the body is streamed, chunked.
        self.status_code = 200
        self.background = None
        self.raw_headers = EVENT_STREAM_HEADERS
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        try:
            async for event in self.events:
                if event is None:
                    if _client_gone(receive):
                        break
                    chunk = HEARTBEAT
                elif isinstance(event, Reconnect):
                    chunk = RETRY
                else:
                    chunk = sse(event)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await self.events.aclose()


@router.get(
    "/{upload_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The status stream"},
        **responses(401, 404, 422, 503),
    },
    openapi_extra={"security": security_doc.EVENTS},
)
async def upload_events(
    upload_id: uuid.UUID,
    request: Request,
    token: Annotated[str | None, Query(description="The events_url token.")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Response:
    """Stream the upload's status: the current one at once, then each change, closing on a
    final state. Authenticate with a Bearer header or the `events_url` token."""
    # StatusStreamShortcut (below) serves this ahead of the router; the route documents it
    # and answers what the shortcut leaves (a malformed id: 422).
    return EventStream(await open_stream(request, upload_id, token, last_event_id))


EVENTS_PATH = re.compile(r"^/v1/uploads/([0-9a-fA-F-]{36})/events$")


class StatusStreamShortcut:
    """GET /v1/uploads/{id}/events, served before FastAPI's routing.

    A routed request keeps FastAPI's request handling suspended for as long as its response
    runs: about 10 KiB per open stream, 100 MiB for 10,000 idle streams. This ASGI layer
    (inside CORS and the request id, so both still apply) answers the stream itself, with
    the same checks and the same JSON errors.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = EVENTS_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        try:
            upload_id = uuid.UUID(match[1])
        except ValueError:
            await self.app(scope, receive, send)  # the route's 422
            return
        request = Request(scope, receive)
        try:
            events = await open_stream(
                request,
                upload_id,
                request.query_params.get("token"),
                request.headers.get("last-event-id"),
            )
        except errors.BrokerError as refused:
            error = refused
            if error.status == 401:  # as the app's error handler counts them
                error = await address_limits.count_failed_authentication(request, error)
            response: Response = JSONResponse(
                error.to_body(), status_code=error.status, headers=error.headers()
            )
        else:
            response = EventStream(events)
        del request  # its parsed headers and query are not kept for the stream's life
        await response(scope, receive, send)
