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
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.domain import errors
from broker.domain.model import FINAL_STATUSES, HistoryEntry, Upload, UploadStatus
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


class Watch:
    """One stream's place: what it has seen, what a shared read found for it, and whether a
    heartbeat is due. Small on purpose: a process holds one per open stream, so it waits on
    a Future of its own rather than an asyncio.Event (whose deque of waiters alone is
    760 bytes)."""

    __slots__ = ("beat", "last_id", "pending", "waiter", "woken")

    def __init__(self) -> None:
        self.last_id = 0
        self.pending: list[HistoryEntry] = []
        self.beat = False
        self.woken = False  # a wake not yet taken by wait()
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        self.woken = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self) -> None:
        """Returns after a wake (at once if one came since the last wait)."""
        if not self.woken:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        self.woken = False


class LiveStatus:
    """Wakes the streams watching an upload whenever its state changes, in any process.

    A NOTIFY says "look again": one read of the upload's history serves every stream that
    watches it. Nothing is read per stream after it opens: one ticker gives every stream its
    heartbeat, and once per heartbeat interval asks the database which uploads changed
    since the last tick (one query per process), so a notification lost while the
    listening connection reconnects delays an event by one interval, never loses it.
    """

    def __init__(self, queries: Queries, listen: Listen, heartbeat_seconds: float) -> None:
        self.queries = queries
        self.listen = listen
        self.heartbeat = heartbeat_seconds
        self.watchers: dict[uuid.UUID, set[Watch]] = defaultdict(set)
        self.tasks: set[asyncio.Task[None]] = set()
        # upload id -> whether another read was asked for while one is running
        self.reading: dict[uuid.UUID, bool] = {}
        self.seen_history_id: int | None = None
        self.closing = False

    async def start(self) -> None:
        # The safety net starts from now: any change after this is seen by a tick.
        self.seen_history_id = await self.queries.latest_history_id()
        self._spawn(self.listen(self._notified, self._wake_all))
        self._spawn(self._tick_forever())

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def close_streams(self) -> None:
        """Shutting down: every stream ends, after telling its client to reconnect."""
        self.closing = True
        for watches in self.watchers.values():
            for watch in watches:
                watch.wake()

    async def owner_of(self, upload_id: uuid.UUID) -> str | None:
        """Who owns the upload (a stream token is checked against it)."""
        return await self.queries.get_upload_owner(upload_id)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _notified(self, payload: str) -> None:
        try:
            upload_id = uuid.UUID(json.loads(payload)["upload_id"])
        except (ValueError, KeyError, TypeError):
            log.warning("live.bad_payload", extra={"payload": payload[:200]})
            return
        self._read(upload_id)

    def _wake_all(self) -> None:
        """The listening connection (re)connected: what it missed is read for everyone."""
        for upload_id in list(self.watchers):
            self._read(upload_id)

    def _read(self, upload_id: uuid.UUID) -> None:
        """Read the upload's new history once for all its streams (or once more after the
        read in progress, which may have started before the change)."""
        if upload_id not in self.watchers:
            return
        if upload_id in self.reading:
            self.reading[upload_id] = True
            return
        self.reading[upload_id] = False
        self._spawn(self._read_for_watchers(upload_id))

    async def _read_for_watchers(self, upload_id: uuid.UUID) -> None:
        try:
            while watches := self.watchers.get(upload_id):
                after = min(watch.last_id for watch in watches)
                try:
                    entries = await self.queries.get_upload_history(upload_id, after)
                except errors.DatabaseUnavailable:
                    log.warning("live.read_failed", extra={"upload_id": str(upload_id)})
                    return  # the next tick asks again
                for watch in self.watchers.get(upload_id, ()):
                    if any(entry.id > watch.last_id for entry in entries):
                        watch.pending.extend(entries)
                        watch.wake()
                if not self.reading.get(upload_id):
                    return
                self.reading[upload_id] = False
        finally:
            self.reading.pop(upload_id, None)

    async def _tick_forever(self) -> None:
        """Every heartbeat interval: a heartbeat for every stream, and one query for the
        uploads that changed since the last tick (what a lost NOTIFY would hide)."""
        while True:
            await asyncio.sleep(self.heartbeat)
            for watches in self.watchers.values():
                for watch in watches:
                    watch.beat = True
                    watch.wake()
            try:
                if self.seen_history_id is None:
                    self.seen_history_id = await self.queries.latest_history_id()
                    continue
                changed, self.seen_history_id = await self.queries.uploads_changed_since(
                    self.seen_history_id
                )
            except errors.DatabaseUnavailable:
                log.warning("live.tick_failed")
                continue
            for upload_id in changed:
                self._read(upload_id)

    @contextlib.contextmanager
    def watch(self, upload_id: uuid.UUID) -> Iterator[Watch]:
        """A stream's Watch of the upload, registered until the stream ends."""
        watch = Watch()
        self.watchers[upload_id].add(watch)
        try:
            yield watch
        finally:
            self.watchers[upload_id].discard(watch)
            if not self.watchers[upload_id]:
                del self.watchers[upload_id]

    async def follow(
        self, upload: Upload, resume_after: int | None
    ) -> AsyncGenerator[StatusEvent | Reconnect | None, None]:
        """The upload's states until a final one: its current state (or, resuming, every
        state after `resume_after`), then each change as it happens; None for a heartbeat,
        and RECONNECT (then the end) when the process shuts down first.
        """
        with self.watch(upload.id) as watch:
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
            watch.last_id = last_id
            upload_id = upload.id
            # An idle stream keeps only what it needs (a process holds 10,000 of them).
            del upload, history
            while status not in FINAL_STATUSES:
                if self.closing:
                    yield RECONNECT
                    return
                await watch.wait()
                if self.closing:
                    continue
                found, watch.pending = watch.pending, []
                for entry in found:
                    if entry.id > last_id:  # a shared read may bring what was seen
                        last_id, status = entry.id, entry.status
                        watch.last_id = last_id
                        yield StatusEvent(entry.id, upload_id, entry.status, entry.at)
                if watch.beat:
                    watch.beat = False
                    if not found:
                        yield HEARTBEAT
