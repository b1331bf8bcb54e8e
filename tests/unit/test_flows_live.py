"""Live status: a stream yields the current status, then each change until a final one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable

import pytest

from broker.domain.model import Actor, UploadStatus
from broker.flows import live
from tests.unit import steps
from tests.unit.steps import create, put_and_notify


@contextlib.asynccontextmanager
async def listening(flows):
    """The process's LISTEN task, on the fake's notifications, subscribed before we go on."""
    await flows.live.start()
    await flows.queries.listening.wait()
    try:
        yield
    finally:
        await flows.live.stop()


class Listener:
    """A LISTEN connection the test drives: it delivers only what the test hands it."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.on_notify: Callable[[str], None] = lambda payload: None
        self.on_connected: Callable[[], None] = lambda: None

    async def __call__(self, on_notify, on_connected):
        self.on_notify, self.on_connected = on_notify, on_connected
        self.ready.set()
        await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def driven(flows, heartbeat_seconds=3600.0):
    """LiveStatus on a Listener the test drives, started and subscribed."""
    listener = Listener()
    status = live.LiveStatus(flows.queries, listener, heartbeat_seconds)
    await status.start()
    await listener.ready.wait()
    try:
        yield status, listener
    finally:
        await status.stop()


async def every_event(stream):
    """Every event of a stream that must end by itself (fails rather than hangs)."""

    async def collect():
        return [event async for event in stream]

    return await asyncio.wait_for(collect(), 5)


def history_reads(flows, monkeypatch):
    """A queue of the streams' history reads: after one, the stream waits for a change."""
    reads: asyncio.Queue[int | None] = asyncio.Queue()
    real = flows.queries.get_upload_history

    async def reading(upload_id, after_id=None):
        entries = await real(upload_id, after_id)
        reads.put_nowait(after_id)
        return entries

    monkeypatch.setattr(flows.queries, "get_upload_history", reading)
    return reads


async def test_a_stream_yields_the_current_status_then_each_change_until_final(flows):
    created = await create(flows)
    async with listening(flows):
        stream = flows.live.follow(created.record, None)

        first = await anext(stream)
        assert (first.event_id, first.status) == (1, UploadStatus.PENDING)
        assert first.upload_id == created.record.id

        flows.clock.advance(3)
        _, upload = await put_and_notify(flows, created.record)
        change = await asyncio.wait_for(anext(stream), 5)
        assert (change.event_id, change.status, change.at) == (
            2,
            UploadStatus.FINALIZED,
            upload.finalized_at,
        )

        with pytest.raises(StopAsyncIteration):
            await anext(stream)


async def test_a_stream_of_a_final_upload_yields_it_and_ends(flows):
    upload = await steps.finalized(flows)

    events = await every_event(flows.live.follow(upload, None))

    assert [(e.event_id, e.status) for e in events] == [(2, UploadStatus.FINALIZED)]


async def test_a_resumed_stream_replays_only_what_came_after_the_last_event_id(flows):
    created = await create(flows)
    await put_and_notify(flows, created.record, b"too long")  # rejected: event 2
    upload = await flows.uploads.get(steps.OWNER, created.record.id)

    events = await every_event(flows.live.follow(upload, 1))

    assert [(e.event_id, e.status) for e in events] == [(2, UploadStatus.REJECTED)]


async def test_a_resumed_stream_waits_for_the_next_change(flows, monkeypatch):
    created = await create(flows)
    reads = history_reads(flows, monkeypatch)
    async with listening(flows):
        stream = flows.live.follow(created.record, 1)  # the client saw "pending" (event 1)
        waiting = asyncio.ensure_future(anext(stream))
        assert await reads.get() == 1
        assert not waiting.done()

        await flows.admin.expire(created.record.id, Actor.admin("ops"))

        event = await asyncio.wait_for(waiting, 5)
        assert (event.event_id, event.status) == (2, UploadStatus.EXPIRED)
        with pytest.raises(StopAsyncIteration):
            await anext(stream)


async def test_an_expiry_by_the_reconciler_reaches_the_stream(flows):
    created = await create(flows)
    flows.clock.advance(24 * 3600)
    async with listening(flows):
        stream = flows.live.follow(created.record, None)
        assert (await anext(stream)).status is UploadStatus.PENDING

        await flows.reconciler.run_pass(sweep=False)  # expires it inside a transaction

        assert (await asyncio.wait_for(anext(stream), 5)).status is UploadStatus.EXPIRED


async def test_a_lost_notification_is_caught_up_at_the_next_heartbeat(flows):
    created = await create(flows)
    async with driven(flows, heartbeat_seconds=0.01) as (status, _):
        stream = status.follow(created.record, None)
        assert (await anext(stream)).status is UploadStatus.PENDING

        await put_and_notify(flows, created.record)  # the listener never delivers it

        assert await anext(stream) is live.HEARTBEAT
        assert (await anext(stream)).status is UploadStatus.FINALIZED


async def test_a_reconnected_listener_wakes_every_stream(flows):
    created = await create(flows)
    async with driven(flows) as (status, listener):
        stream = status.follow(created.record, None)
        await anext(stream)
        waiting = asyncio.ensure_future(anext(stream))
        await put_and_notify(flows, created.record)  # NOTIFY sent while nobody listened

        listener.on_connected()

        assert (await asyncio.wait_for(waiting, 5)).status is UploadStatus.FINALIZED


async def test_a_notification_of_a_watched_upload_is_read_once_for_all_its_streams(
    flows, monkeypatch
):
    created = await create(flows)
    other = await create(flows)
    reads = history_reads(flows, monkeypatch)
    async with driven(flows) as (status, listener):
        with status.watch(created.record.id) as first, status.watch(created.record.id) as second:
            for payload in ["not json", json.dumps({"no": "id"}), notice(other.record.id)]:
                listener.on_notify(payload)  # nobody watches `other`: nothing is read
            listener.on_notify(notice(created.record.id))

            await asyncio.wait_for(first.wait(), 5)
            assert second.woken and second.pending == first.pending
            assert reads.qsize() == 1  # one history read serves both streams
        assert status.watchers == {}


async def test_the_stream_token_is_checked_against_the_uploads_owner(flows):
    created = await create(flows)

    assert await flows.live.owner_of(created.record.id) == steps.OWNER
    assert await flows.live.owner_of(uuid.uuid4()) is None


async def test_a_stream_resumed_after_the_final_event_ends(flows):
    upload = await steps.finalized(flows)
    async with driven(flows, heartbeat_seconds=0.01) as (status, _):
        first = await anext(status.follow(upload, 2), "ended")

    assert first == "ended"


async def test_a_stream_started_from_a_stale_read_still_reaches_the_final_status(flows):
    created = await create(flows)
    read = await flows.uploads.get(steps.OWNER, created.record.id)  # the route reads it first
    await put_and_notify(flows, created.record)  # then the webhook finalizes it
    async with driven(flows, heartbeat_seconds=0.01) as (status, _):
        stream = status.follow(read, None)
        events = [await anext(stream, "ended") for _ in range(3)]

    assert UploadStatus.FINALIZED in [getattr(e, "status", None) for e in events]


def notice(upload_id: uuid.UUID) -> str:
    """The NOTIFY payload of migration 0004's trigger."""
    return json.dumps({"upload_id": str(upload_id), "event_id": 0, "status": "finalized"})


async def test_idle_streams_get_heartbeats_without_reading_history(flows, monkeypatch):
    """10,000 idle streams must cost next to nothing: a heartbeat reads no history."""
    uploads = [await create(flows) for _ in range(20)]
    async with driven(flows, heartbeat_seconds=0.01) as (status, _):
        streams = [status.follow(u.record, None) for u in uploads]
        for stream in streams:
            await anext(stream)  # the current state: one read each, when the stream opens
        reads = history_reads(flows, monkeypatch)
        for _ in range(3):
            for stream in streams:
                assert await asyncio.wait_for(anext(stream), 5) is live.HEARTBEAT
        assert reads.qsize() == 0
