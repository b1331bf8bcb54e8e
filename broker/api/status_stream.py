"""GET /v1/uploads/{id}/events: the upload's status as Server-Sent Events."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from broker import auth
from broker.api import security_doc
from broker.api.deps import LiveDep, UploadsDep, bearer_token
from broker.api.errors_doc import responses
from broker.domain import errors
from broker.flows.live import LiveStatus, StatusEvent

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


def sse(event: StatusEvent) -> bytes:
    """One SSE message: the id lets a reconnect (Last-Event-ID) resume after it."""
    data = json.dumps({"id": str(event.upload_id), "status": event.status, "at": str(event.at)})
    return f"id: {event.event_id}\nevent: status\ndata: {data}\n\n".encode()


async def _principal(
    request: Request, upload_id: uuid.UUID, token: str | None, live: LiveStatus
) -> auth.Principal:
    """The bearer header's owner, or the owner the stream token was issued for."""
    secret = request.app.state.settings.jwt_secret
    header = bearer_token(request)
    try:
        if header is not None:
            return auth.verify_token(secret, header)
        if token is not None:
            owner = await live.owner_of(upload_id) or ""
            return auth.verify_events_token(secret, token, str(upload_id), owner)
    except auth.InvalidToken as exc:
        raise errors.Unauthorized("the token is invalid, expired, or not for this upload") from exc
    raise errors.Unauthorized()


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
    service: UploadsDep,
    live: LiveDep,
    token: Annotated[str | None, Query(description="The events_url token.")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Stream the upload's status: the current one at once, then each change, closing on a
    final state. Authenticate with a Bearer header or the `events_url` token."""
    principal = await _principal(request, upload_id, token, live)
    upload = await service.get(principal.subject, upload_id)
    resume_after = int(last_event_id) if last_event_id and last_event_id.isdigit() else None

    async def stream() -> AsyncIterator[bytes]:
        async for event in live.follow(upload, resume_after):
            yield b": heartbeat\n\n" if event is None else sse(event)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
