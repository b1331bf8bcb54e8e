"""The app-webhook use cases on fakes: the outbox, the sender's rounds, retries, throttling,
ordering, leases, and the operators' endpoint and delivery management."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import standardwebhooks

from broker.domain import errors
from broker.domain.model import DeliveryStatus, UploadStatus
from broker.domain.webhooks import AttemptOutcome, DeliveryFilters, PostResult
from broker.flows import app_webhooks, webhook_sender
from tests.unit.fake_webhooks import FakePoster
from tests.unit.fakes import Clock, MemoryQueries, an_upload


class World:
    def __init__(self, **limits: Any) -> None:
        self.clock = Clock(datetime.now(UTC))  # the reference verifier checks timestamps
        self.queries = MemoryQueries(self.clock)
        self.poster = FakePoster()
        self.webhooks = app_webhooks.AppWebhooks(
            self.queries,
            allowed_hosts=frozenset({"localhost:3000"}),
            policies=frozenset({"default", "avatars"}),
            clock=self.clock,
        )
        self.sender = self.new_sender(**limits)

    def new_sender(self, **limits: Any) -> webhook_sender.WebhookSender:
        return webhook_sender.WebhookSender(
            self.queries,
            self.poster,
            self.queries.listen_webhooks,
            webhook_sender.SenderLimits(**limits),
            clock=self.clock,
            rng=random.Random(0),
        )

    def upload(self, **fields: Any) -> uuid.UUID:
        """A new pending upload, recorded as the real insert does (with its history)."""
        upload = an_upload(**fields)
        self.queries.uploads[upload.id] = upload
        self.queries._log(upload, "owner")
        return upload.id

    async def finalize(self, upload_id: uuid.UUID) -> None:
        await self.queries.mark_upload_finalized(
            upload_id,
            etag="e",
            checksum=None,
            size=5,
            detected_content_type=None,
            actor="webhook",
            detail={},
        )

    def received(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body, _ in self.poster.sent]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_webhooks_each_change_is_delivered_once_signed_with_its_message_id():
    async def scenario() -> None:
        world = World()
        endpoint, secret = await world.webhooks.create(
            "https://app.example/hooks", event_types=[], policy=None
        )
        upload_id = world.upload()
        await world.finalize(upload_id)
        attempts = await world.sender.send_due()
        assert [a.outcome for a in attempts] == [AttemptOutcome.DELIVERED]  # created first
        attempts += await world.sender.send_due()
        assert [r["type"] for r in world.received()] == ["upload.created", "upload.finalized"]
        seqs = [r["data"]["seq"] for r in world.received()]
        assert seqs == sorted(seqs)
        for url, body, headers in world.poster.sent:
            assert url == endpoint.url
            standardwebhooks.Webhook(secret).verify(body, headers)
            assert headers["webhook-id"] == f"msg_{json.loads(body)['data']['seq']}"
        assert await world.sender.send_due() == []

    run(scenario())


def test_webhooks_filter_by_event_type_and_policy():
    async def scenario() -> None:
        world = World()
        await world.webhooks.create(
            "https://app.example/hooks", event_types=["upload.finalized"], policy="avatars"
        )
        await world.finalize(world.upload(policy="default"))
        await world.finalize(world.upload(policy="avatars"))
        await world.sender.send_due()
        assert [(r["type"], r["data"]["policy"]) for r in world.received()] == [
            ("upload.finalized", "avatars")
        ]

    run(scenario())


def test_webhooks_a_rolled_back_change_queues_nothing():
    async def scenario() -> None:
        world = World()
        await world.webhooks.create("https://app.example/hooks", event_types=[], policy=None)
        upload_id = world.upload()
        with pytest.raises(RuntimeError):
            async with world.queries.transaction() as tx:
                await tx.mark_upload_expired(upload_id, force=True, actor="admin", detail={})
                raise RuntimeError("rolled back")
        await world.sender.send_due()
        assert [r["type"] for r in world.received()] == ["upload.created"]

    run(scenario())


def test_webhooks_failures_retry_on_the_schedule_with_the_same_id_then_die():
    async def scenario() -> None:
        world = World()
        world.poster.default = PostResult(500)
        await world.webhooks.create("https://app.example/hooks", event_types=[], policy=None)
        world.upload()
        for _ in range(10):
            assert len(await world.sender.send_due()) == 1
            assert await world.sender.send_due() == []  # not due before its delay
            world.clock.advance(86400 * 1.2)
        assert {h["webhook-id"] for _, _, h in world.poster.sent} == {"msg_1"}
        (dead,) = await world.queries.list_webhook_deliveries(DeliveryFilters(), None, 10)
        assert (dead.status, dead.attempts, dead.last_status) == (DeliveryStatus.DEAD, 10, 500)
        world.poster.default = PostResult(200)
        retried = await world.webhooks.retry(dead.id)
        assert retried.status is DeliveryStatus.PENDING
        assert [a.outcome for a in await world.sender.send_due()] == [AttemptOutcome.DELIVERED]
        with pytest.raises(errors.DeliveryNotDead):
            await world.webhooks.retry(dead.id)

    run(scenario())


def test_webhooks_an_upload_waits_for_its_earlier_event_but_others_do_not():
    async def scenario() -> None:
        world = World()
        world.poster.answers = [PostResult(500)]
        await world.webhooks.create("https://app.example/hooks", event_types=[], policy=None)
        first = world.upload()
        await world.finalize(first)
        second = world.upload()
        await world.sender.send_due()  # first's created fails; second's created goes
        world.clock.advance(1)
        await world.sender.send_due()
        order = [(r["data"]["id"], r["type"]) for r in world.received()]
        assert (str(first), "upload.finalized") not in order
        assert (str(second), "upload.created") in order
        world.clock.advance(10)
        await world.sender.send_due()
        await world.sender.send_due()
        firsts = [t for i, t in [(r["data"]["id"], r["type"]) for r in world.received()]
                  if i == str(first)]  # fmt: skip
        assert firsts == ["upload.created", "upload.created", "upload.finalized"]

    run(scenario())


def test_webhooks_successes_are_recorded_together_one_statement_per_batch():
    """Group commit: 2xx outcomes that arrive while a record statement runs share the next
    one, so a burst does not cost a commit per delivery."""

    async def scenario() -> None:
        world = World(per_endpoint=8, concurrency=8)
        await world.webhooks.create("https://app.example/hooks", event_types=[], policy=None)
        for _ in range(8):
            world.upload()  # each queues its upload.created
        calls = []
        record = world.queries.mark_webhooks_delivered

        async def counted(attempts):
            calls.append(len(attempts))
            await asyncio.sleep(0)  # the statement's round trip: others arrive meanwhile
            return await record(attempts)

        world.queries.mark_webhooks_delivered = counted
        attempts = await world.sender.send_due()
        assert len(attempts) == 8 and all(a.recorded for a in attempts)
        assert sum(calls) == 8 and len(calls) < 8
        assert not await world.sender.send_due()  # all recorded: nothing is sent twice

    run(scenario())


def test_webhooks_410_disables_the_endpoint():
    async def scenario() -> None:
        world = World()
        world.poster.default = PostResult(410)
        endpoint, _ = await world.webhooks.create(
            "https://app.example/hooks", event_types=[], policy=None
        )
        world.upload()
        await world.sender.send_due()
        disabled = await world.webhooks.get(endpoint.id)
        assert disabled.disabled_at is not None and "410" in (disabled.disabled_reason or "")
        world.clock.advance(3600)
        world.upload()
        assert await world.sender.send_due() == []
        world.poster.default = PostResult(200)
        await world.webhooks.enable(endpoint.id)
        world.clock.advance(3600)
        assert len(await world.sender.send_due()) == 1  # the first; the second queued nothing

    run(scenario())


def test_webhooks_throttling_honours_retry_after_for_the_whole_endpoint():
    async def scenario() -> None:
        world = World()
        world.poster.answers = [PostResult(429, retry_after="120")]
        await world.webhooks.create("https://app.example/hooks", event_types=[], policy=None)
        world.upload()
        world.upload()
        await world.sender.send_due()
        assert len(world.poster.sent) == 2  # both were in flight when the 429 came
        world.clock.advance(119)
        world.upload()
        assert await world.sender.send_due() == []
        world.clock.advance(2)
        outcomes = [a.outcome for a in await world.sender.send_due()]
        assert outcomes == [AttemptOutcome.DELIVERED, AttemptOutcome.DELIVERED]

    run(scenario())


def test_webhooks_a_slow_endpoint_does_not_hold_up_another():
    async def scenario() -> None:
        world = World(per_endpoint=1, concurrency=4)
        release = asyncio.Event()
        fast_sent: list[str] = []

        class Slow(FakePoster):
            async def post(self, url, body, headers):  # type: ignore[no-untyped-def]
                if "slow" in url:
                    await release.wait()
                else:
                    fast_sent.append(headers["webhook-id"])
                return PostResult(204)

        world.sender.poster = Slow()
        await world.webhooks.create("https://slow.example/hooks", event_types=[], policy=None)
        await world.webhooks.create("https://fast.example/hooks", event_types=[], policy=None)
        for _ in range(3):
            world.upload()
        task = asyncio.create_task(world.sender.run_forever())
        for _ in range(200):
            if len(fast_sent) == 3:
                break
            await asyncio.sleep(0)
        assert len(fast_sent) == 3
        assert sum(world.sender.in_flight.values()) == 1  # the slow endpoint's one slot
        release.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())


def test_webhooks_a_lease_held_elsewhere_is_not_taken_until_it_runs_out():
    async def scenario() -> None:
        world = World(lease_seconds=30)
        await world.webhooks.create("https://app.example/hooks", event_types=[], policy=None)
        world.upload()
        endpoint_id = next(iter(world.queries.endpoints))
        (claimed,) = await world.queries.claim_webhook_deliveries(
            endpoint_id, now=world.clock(), lease_seconds=30, lease_owner="dead", limit=5
        )
        assert await world.sender.send_due() == []
        world.clock.advance(31)
        (attempt,) = await world.sender.send_due()
        assert attempt.message_id == claimed.delivery.message_id and attempt.recorded
        assert not await world.queries.mark_webhook_attempt_failed(
            claimed.delivery.id, lease_owner="dead", status=DeliveryStatus.PENDING,
            next_attempt_at=world.clock(), http_status=None, error="late",
        )  # fmt: skip

    run(scenario())


def test_webhooks_management_rotates_tests_replays_and_refuses_bad_input():
    async def scenario() -> None:
        world = World()
        endpoint, old = await world.webhooks.create(
            "http://localhost:3000/api/hooks", event_types=[], policy=None
        )
        rotated, new = await world.webhooks.rotate(endpoint.id)
        assert new != old and rotated.previous_secret_expires_at == world.clock() + timedelta(
            hours=24
        )
        await world.webhooks.send_test(endpoint.id)
        await world.sender.send_due()
        (_, body, headers) = world.poster.sent[0]
        for secret in (old, new):
            standardwebhooks.Webhook(secret).verify(body, headers)
        assert json.loads(body)["type"] == "webhook.test"
        world.clock.advance(86401)
        await world.webhooks.send_test(endpoint.id)
        await world.sender.send_due()
        assert len(world.poster.sent[1][2]["webhook-signature"].split()) == 1

        assert await world.webhooks.replay(endpoint.id, world.clock() - timedelta(hours=2)) == 1
        await world.sender.send_due()
        assert world.poster.sent[2][2]["webhook-id"] == world.poster.sent[1][2]["webhook-id"]

        changed = await world.webhooks.update(
            endpoint.id,
            app_webhooks.EndpointChanges(event_types=["upload.deleted"], policy="avatars"),
        )
        assert ([t.value for t in changed.event_types], changed.policy) == (
            ["upload.deleted"],
            "avatars",
        )
        for bad, error in [
            ({"url": "http://example.com/hooks"}, errors.InvalidWebhookUrl),
            ({"event_types": ["upload.done"]}, errors.UnknownEventType),
            ({"policy": "nope"}, errors.UnknownPolicy),
        ]:
            with pytest.raises(error):
                await world.webhooks.create(
                    **{"url": "https://a.example/", "event_types": [], "policy": None, **bad}
                )
        with pytest.raises(errors.WebhookEndpointNotFound):
            await world.webhooks.get(uuid.uuid4())

    run(scenario())


def test_webhooks_backlog_counts_pending_deliveries():
    async def scenario() -> None:
        world = World()
        world.poster.default = PostResult(None, error="connection refused")
        await world.webhooks.create("https://app.example/hooks", event_types=[], policy=None)
        world.upload()
        world.clock.advance(30)
        await world.sender.send_due()
        backlog = await world.webhooks.backlog()
        assert (backlog.pending, backlog.oldest_age_seconds(world.clock())) == (1, 30)
        assert world.queries.uploads and UploadStatus.PENDING

    run(scenario())


def test_webhooks_overview_counts_the_backlog_and_the_dead_and_names_the_endpoints():
    async def scenario() -> None:
        world = World()
        endpoint, _ = await world.webhooks.create(
            "https://app.example/hooks", event_types=[], policy=None
        )
        first, second = world.upload(), world.upload()
        for stored in world.queries.deliveries.values():
            if stored.delivery.upload_id == first:
                stored.delivery = dataclasses.replace(stored.delivery, status=DeliveryStatus.DEAD)
        overview = await world.webhooks.overview(recent=1)
        assert (overview.backlog.pending, overview.dead) == (1, 1)
        (latest,) = overview.recent  # newest first, cut at `recent`
        assert latest.delivery.upload_id == second and latest.endpoint == endpoint

    run(scenario())
