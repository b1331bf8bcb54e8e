"""Live upload status: one LISTEN connection per process fans NOTIFYs out to SSE streams."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import asyncpg

log = logging.getLogger("broker.live")

CHANNEL = "broker_upload_changes"  # see migrations/0004_notify_upload_changes.sql
FINAL_STATUSES = frozenset({"finalized", "rejected", "expired", "deleted"})


class UploadChanges:
    """Wakes the streams watching an upload whenever its state changes, in any process.

    A NOTIFY only says "look again": streams read what changed from upload_history, so a
    notification lost while the listening connection reconnects delays an event (until
    the stream's next heartbeat re-check), never loses it.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.watchers: dict[uuid.UUID, set[asyncio.Event]] = defaultdict(set)
        self.conn: asyncpg.Connection | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._keep_listening())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.conn is not None and not self.conn.is_closed():
            await self.conn.close()

    async def _keep_listening(self) -> None:
        delay = 0.2
        while True:
            try:
                self.conn = await asyncpg.connect(self.dsn)
                lost = asyncio.Event()
                self.conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await self.conn.add_listener(CHANNEL, self._notified)
                delay = 0.2
                self._wake_all()  # anything may have changed while we were not listening
                await lost.wait()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("live.listen_failed", extra={"error": repr(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5)

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
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
