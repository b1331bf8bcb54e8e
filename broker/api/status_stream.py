"""GET /v1/uploads/{id}/events: the upload's status as Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from broker import auth
from broker.adapters.db import Database
from broker.api.deps import UploadsDep, bearer_token
from broker.api.errors_doc import responses
from broker.domain import errors
from broker.flows import live

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


def sse(event_id: int, record: dict[str, object]) -> bytes:
    """One SSE message: the id lets a reconnect (Last-Event-ID) resume after it."""
    data = json.dumps(record, default=str)
    return f"id: {event_id}\nevent: status\ndata: {data}\n\n".encode()


async def _principal(
    request: Request, upload_id: uuid.UUID, token: str | None, db: Database
) -> auth.Principal:
    secret = request.app.state.settings.jwt_secret
    header = bearer_token(request)
    try:
        if header is not None:
            return auth.verify_token(secret, header)
        if token is not None:
            row = await db.fetchrow("get_upload", upload_id)
            owner = row["owner"] if row is not None else ""
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
)
async def upload_events(
    upload_id: uuid.UUID,
    request: Request,
    service: UploadsDep,
    token: Annotated[str | None, Query(description="The events_url token.")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Stream the upload's status: the current one at once, then each change, closing on a
    final state. Authenticate with a Bearer header or the `events_url` token."""
    principal = await _principal(request, upload_id, token, service.db)
    record = await service.get(principal.subject, upload_id)
    resume_after = int(last_event_id) if last_event_id and last_event_id.isdigit() else None
    changes: live.UploadChanges = request.app.state.live
    heartbeat = request.app.state.settings.sse_heartbeat_seconds
    db = service.db

    async def stream() -> AsyncIterator[bytes]:
        with changes.watch(upload_id) as changed:
            history = await db.fetch("get_upload_events_after", upload_id, resume_after or 0)
            if resume_after is None:
                # A new stream starts with the current state, under the latest event's id.
                last_id = history[-1]["id"] if history else 0
                yield sse(last_id, _state(upload_id, record["status"], record))
                status = record["status"]
            else:
                last_id, status = resume_after, None
                for row in history:
                    last_id, status = row["id"], row["status"]
                    yield sse(last_id, _state(upload_id, status, row))
            while status not in live.FINAL_STATUSES:
                try:
                    await asyncio.wait_for(changed.wait(), heartbeat)
                except TimeoutError:
                    yield b": heartbeat\n\n"
                changed.clear()
                # A missed NOTIFY only delays: every wake-up and heartbeat re-reads history.
                for row in await db.fetch("get_upload_events_after", upload_id, last_id):
                    last_id, status = row["id"], row["status"]
                    yield sse(last_id, _state(upload_id, status, row))

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _state(upload_id: uuid.UUID, status: str, row: asyncpg.Record) -> dict[str, object]:
    return {"id": str(upload_id), "status": status, "at": row.get("at") or row["updated_at"]}
