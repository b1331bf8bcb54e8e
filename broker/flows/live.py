"""Live upload status: one LISTEN connection per process wakes the streams watching an upload,
and each stream replays the upload's history from where its client left off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.domain.model import FINAL_STATUSES, Upload, UploadStatus
from broker.flows.ports import Queries

log = logging.getLogger("broker.live")

CHANNEL = "broker_upload_changes"  # see migrations/0004_notify_upload_changes.sql
# Runs until cancelled: LISTEN on the channel, call the first function with each payload and
# the second after each (re)connect (adapters.db.listen_forever, bound to a DSN).
Listen = Callable[[Callable[[str], None], Callable[[], None]], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """One state of an upload, under the history id a client resumes after."""

    event_id: int
    upload_id: uuid.UUID
    status: UploadStatus
    at: datetime


HEARTBEAT = None  # yielded by `follow` when nothing changed for a heartbeat interval


class Reconnect:
    """Yielded by `follow`, last, when the process is shutting down: the client should
    reconnect (to another process) and resume after the last event it saw."""


RECONNECT = Reconnect()


class LiveStatus:
    """Wakes the streams watching an upload whenever its state changes, in any process.

    A NOTIFY only says "look again": streams read what changed from the upload's history,
    so a notification lost while the listening connection reconnects delays an event
    (until the stream's next heartbeat re-check), never loses it.
    """

    def __init__(self, queries: Queries, listen: Listen, heartbeat_seconds: float) -> None:
        self.queries = queries
        self.listen = listen
        self.heartbeat = heartbeat_seconds
        self.watchers: dict[uuid.UUID, set[asyncio.Event]] = defaultdict(set)
        self.task: asyncio.Task[None] | None = None
        self.closing = False

    async def start(self) -> None:
        self.task = asyncio.create_task(self.listen(self._notified, self._wake_all))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def close_streams(self) -> None:
        """Shutting down: every stream ends, after telling its client to reconnect."""
        self.closing = True
        self._wake_all()

    async def owner_of(self, upload_id: uuid.UUID) -> str | None:
        """Who owns the upload (a stream token is checked against it)."""
        return await self.queries.get_upload_owner(upload_id)

    def _notified(self, payload: str) -> None:
        try:
            upload_id = uuid.UUID(json.loads(payload)["upload_id"])
        except (ValueError, KeyError, TypeError):
            log.warning("live.bad_payload", extra={"payload": payload[:200]})
            return
        for event in self.watchers.get(upload_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self.watchers.values():
            for event in events:
                event.set()

    @contextlib.contextmanager
    def watch(self, upload_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set whenever the upload may have changed; clear it before re-reading."""
        event = asyncio.Event()
        self.watchers[upload_id].add(event)
        try:
            yield event
        finally:
            self.watchers[upload_id].discard(event)
            if not self.watchers[upload_id]:
                del self.watchers[upload_id]

    async def follow(
        self, upload: Upload, resume_after: int | None
    ) -> AsyncIterator[StatusEvent | Reconnect | None]:
        """The upload's states until a final one: its current state (or, resuming, every
        state after `resume_after`), then each change as it happens; None for a heartbeat,
        and RECONNECT (then the end) when the process shuts down first.
        """
        with self.watch(upload.id) as changed:
            history = await self.queries.get_upload_history(upload.id, resume_after or 0)
            if resume_after is None:
                # A new stream starts with the current state, under the latest event's id.
                # The history is read after `upload` was: its last entry is the newer truth.
                current = (
                    StatusEvent(history[-1].id, upload.id, history[-1].status, history[-1].at)
                    if history
                    else StatusEvent(0, upload.id, upload.status, upload.updated_at)
                )
                yield current
                last_id, status = current.event_id, current.status
            else:
                # Nothing after the client's last event: the state it saw is still current,
                # and `upload` (read after the client saw it) shows it, final or not.
                last_id, status = resume_after, upload.status
                for entry in history:
                    last_id, status = entry.id, entry.status
                    yield StatusEvent(entry.id, upload.id, entry.status, entry.at)
            while status not in FINAL_STATUSES:
                if self.closing:
                    yield RECONNECT
                    return
                try:
                    await asyncio.wait_for(changed.wait(), self.heartbeat)
                except TimeoutError:
                    yield HEARTBEAT
                changed.clear()
                # A missed NOTIFY only delays: every wake-up and heartbeat re-reads history.
                for entry in await self.queries.get_upload_history(upload.id, last_id):
                    last_id, status = entry.id, entry.status
                    yield StatusEvent(entry.id, upload.id, entry.status, entry.at)
