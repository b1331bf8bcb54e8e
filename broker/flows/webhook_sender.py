"""The sender: delivers the outbox's webhooks to the apps' endpoints, in every broker process.

Deliveries are leased in one short statement (FOR UPDATE SKIP LOCKED), POSTed outside any
transaction, and their outcome recorded by a statement guarded by the lease; a process that
dies mid-POST leaves a lease that runs out, and another sender retries the delivery. Each
endpoint has its own slots, so a slow or dead endpoint never holds up another's deliveries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from broker import metrics
from broker.domain import errors, webhook_signing, webhooks
from broker.domain.model import DeliveryStatus
from broker.domain.webhooks import AttemptOutcome, ClaimedDelivery, DeliveredAttempt, PostResult
from broker.flows.live import Listen
from broker.flows.ports import Queries, WebhookPoster
from broker.flows.rounds import run_rounds

log = logging.getLogger("broker.webhooks")

CHANNEL = "broker_webhook_deliveries"  # see migrations/0008_app_webhooks.sql


@dataclass(frozen=True)
class SenderLimits:
    """How a sender paces itself (BROKER_WEBHOOK_* settings)."""

    lease_seconds: float = 60
    poll_seconds: float = 5
    concurrency: int = 64  # POSTs in flight in this process
    per_endpoint: int = 16  # of which to one endpoint


@dataclass(frozen=True, slots=True)
class Attempt:
    """One POST and what came of it."""

    delivery_id: int
    message_id: str
    endpoint_id: uuid.UUID
    outcome: AttemptOutcome
    recorded: bool  # False: the lease had passed to another sender meanwhile


def body_of(claimed: ClaimedDelivery) -> bytes:
    """The JSON body of a delivery, the same bytes on every attempt."""
    return json.dumps(claimed.delivery.payload, separators=(",", ":"), sort_keys=True).encode()


class DeliveredRecorder:
    """Group commit for 2xx outcomes: an outcome waits for the next statement, which records
    every outcome that arrived while the previous one ran. A burst then costs one commit
    per batch instead of one per delivery, and a lone delivery waits for nobody."""

    def __init__(self, queries: Queries) -> None:
        self.queries = queries
        self.waiting: list[tuple[DeliveredAttempt, asyncio.Future[datetime | None]]] = []
        self.flushing: asyncio.Task[None] | None = None

    async def record(self, attempt: DeliveredAttempt) -> datetime | None:
        """When the delivery's state changed; None if its sender no longer held the lease."""
        future: asyncio.Future[datetime | None] = asyncio.get_running_loop().create_future()
        self.waiting.append((attempt, future))
        if self.flushing is None:
            self.flushing = asyncio.create_task(self._flush())
        return await future

    async def aclose(self) -> None:
        if self.flushing is not None:
            self.flushing.cancel()
            await asyncio.gather(self.flushing, return_exceptions=True)

    async def _flush(self) -> None:
        batch: list[tuple[DeliveredAttempt, asyncio.Future[datetime | None]]] = []
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                try:
                    changed = await self.queries.mark_webhooks_delivered([a for a, _ in batch])
                except Exception as exc:  # each waiter gets it, DatabaseUnavailable included
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for attempt, future in batch:
                    if not future.done():  # its waiter may have been cancelled
                        future.set_result(changed.get(attempt.delivery_id))
        finally:
            for _, future in [*batch, *self.waiting]:
                future.cancel()  # only those still waiting: a done future ignores it
            self.waiting = []
            self.flushing = None


class WebhookSender:
    """Claims due deliveries, sends them and records what happened."""

    def __init__(
        self,
        queries: Queries,
        poster: WebhookPoster,
        listen: Listen | None,
        limits: SenderLimits,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        name: str | None = None,
    ) -> None:
        self.queries = queries
        self.poster = poster
        self.listen = listen
        self.limits = limits
        self.clock = clock
        self.rng = rng or random.Random()
        self.name = name or f"sender-{uuid.uuid4().hex[:12]}"
        self.in_flight: Counter[uuid.UUID] = Counter()
        self.wake = asyncio.Event()
        self.recorder = DeliveredRecorder(queries)

    async def send_due(self) -> list[Attempt]:
        """One round: claim what is due now, send it all, and return once every outcome is
        recorded (tests drive the sender with this; run_forever repeats rounds)."""
        return list(await asyncio.gather(*await self._start_round()))

    async def run_forever(self) -> None:
        """Send rounds until cancelled: on NOTIFY, when a POST ends, or every poll interval."""
        await run_rounds(
            self._start_round,
            listen=self.listen,
            wake=self.wake,
            poll_seconds=self.limits.poll_seconds,
            release=self._stop,
            log=log,
            database_down_event="webhooks.database_unavailable",
        )

    async def _stop(self) -> None:
        await self._release_claims()
        await self.recorder.aclose()

    async def _start_round(self) -> list[asyncio.Task[Attempt]]:
        now = self.clock()
        started: list[asyncio.Task[Attempt]] = []
        if sum(self.in_flight.values()) >= self.limits.concurrency:
            return started  # no slot free: a POST ending wakes the next round
        for endpoint_id in await self.queries.due_webhook_endpoints(now):
            free = min(
                self.limits.per_endpoint - self.in_flight[endpoint_id],
                self.limits.concurrency - sum(self.in_flight.values()),
            )
            if free <= 0:
                continue
            claimed = await self.queries.claim_webhook_deliveries(
                endpoint_id,
                now=now,
                lease_seconds=self.limits.lease_seconds,
                lease_owner=f"{self.name}/{uuid.uuid4().hex[:8]}",
                limit=free,
            )
            for delivery in claimed:
                self.in_flight[endpoint_id] += 1
                started.append(asyncio.create_task(self._deliver(delivery)))
        return started

    async def _deliver(self, claimed: ClaimedDelivery) -> Attempt:
        delivery = claimed.delivery
        try:
            body = body_of(claimed)
            timestamp = int(self.clock().timestamp())
            signed = webhook_signing.headers(claimed.secrets, delivery.message_id, timestamp, body)
            result = await self.poster.post(
                claimed.url, body, {**signed, "content-type": "application/json"}
            )
        finally:
            # The slot is free once the POST ends: the lease keeps this delivery from being
            # claimed again until its outcome is recorded.
            self.in_flight[delivery.endpoint_id] -= 1
            if not self.in_flight[delivery.endpoint_id]:
                del self.in_flight[delivery.endpoint_id]
            self.wake.set()
        try:
            recorded = await self._record(claimed, result)
        except errors.DatabaseUnavailable:
            # The lease runs out and the delivery is sent again (same webhook-id).
            log.warning("webhooks.record_failed", extra={"delivery_id": delivery.id})
            recorded = False
        self.wake.set()  # the upload's next event to this endpoint may be due now
        return Attempt(
            delivery.id, delivery.message_id, delivery.endpoint_id, result.outcome, recorded
        )

    async def _record(self, claimed: ClaimedDelivery, result: PostResult) -> bool:
        delivery, now, outcome = claimed.delivery, self.clock(), result.outcome
        metrics.WEBHOOK_DELIVERIES.labels(str(delivery.endpoint_id), outcome).inc()
        log.info(
            "webhooks.attempt",
            extra={
                "delivery_id": delivery.id,
                "message_id": delivery.message_id,
                "endpoint_id": str(delivery.endpoint_id),
                "type": delivery.type,
                "attempt": delivery.attempts,
                "outcome": outcome,
                "http_status": result.status,
                "error": result.error,
            },
        )
        if outcome is AttemptOutcome.DELIVERED:
            assert result.status is not None
            changed_at = await self.recorder.record(
                DeliveredAttempt(delivery.id, claimed.lease_owner, now, result.status)
            )
            if changed_at is not None:
                seconds = max((now - changed_at).total_seconds(), 0.0)
                metrics.WEBHOOK_CHANGE_TO_DELIVERED.observe(seconds)
            return changed_at is not None
        if outcome is AttemptOutcome.GONE:
            await self.queries.disable_webhook_endpoint(
                delivery.endpoint_id, "the endpoint answered 410 Gone"
            )
        delay = webhooks.retry_delay(delivery.attempts, self.rng)
        if outcome is AttemptOutcome.THROTTLED:
            asked = webhooks.parse_retry_after(result.retry_after, now)
            pause = asked if asked is not None else (delay or webhooks.RETRY_SCHEDULE[1])
            await self.queries.throttle_webhook_endpoint(
                delivery.endpoint_id, now + timedelta(seconds=pause)
            )
            if delay is not None:
                delay = max(delay, pause)
        return await self.queries.mark_webhook_attempt_failed(
            delivery.id,
            lease_owner=claimed.lease_owner,
            status=DeliveryStatus.DEAD if delay is None else DeliveryStatus.PENDING,
            next_attempt_at=now + timedelta(seconds=delay or 0),
            http_status=result.status,
            error=result.error or (f"HTTP {result.status}" if result.status else None),
        )

    async def _release_claims(self) -> None:
        """Stopping: hand back what this process still holds, so another process takes it
        at once rather than when the lease runs out."""
        try:
            await self.queries.release_webhook_leases(self.name)
        except errors.DatabaseUnavailable:
            log.warning("webhooks.release_failed")  # the leases run out instead
