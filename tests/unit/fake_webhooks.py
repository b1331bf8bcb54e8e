"""The app-webhook half of MemoryQueries (tests/unit/fakes.py), and a fake WebhookPoster.

It keeps the contract of migration 0008 and queries.sql: a state change queues one delivery
per enabled endpoint whose types and policy match (inside the change's transaction, with a
wake-up sent once it commits); claims lease due deliveries of one endpoint in seq order per
upload, skipping leased ones; outcomes are recorded only by the lease holder.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from broker.domain.model import DeliveryStatus, Upload, UploadStatus, WebhookEventType
from broker.domain.webhooks import (
    ClaimedDelivery,
    DeliveredAttempt,
    DeliveryFilters,
    PostResult,
    WebhookBacklog,
    WebhookDelivery,
    WebhookEndpoint,
)

EVENT_OF_STATUS = {
    UploadStatus.PENDING: WebhookEventType.UPLOAD_CREATED,
    UploadStatus.FINALIZED: WebhookEventType.UPLOAD_FINALIZED,
    UploadStatus.REJECTED: WebhookEventType.UPLOAD_REJECTED,
    UploadStatus.EXPIRED: WebhookEventType.UPLOAD_EXPIRED,
    UploadStatus.DELETED: WebhookEventType.UPLOAD_DELETED,
    UploadStatus.QUARANTINED: WebhookEventType.UPLOAD_QUARANTINED,
}


@dataclasses.dataclass
class StoredEndpoint:
    endpoint: WebhookEndpoint
    secret: str
    previous_secret: str | None = None


@dataclasses.dataclass
class StoredDelivery:
    delivery: WebhookDelivery
    leased_until: datetime | None = None
    lease_owner: str | None = None


class MemoryWebhooks:
    """Endpoints and deliveries over dictionaries; mixed into MemoryQueries."""

    clock: Callable[[], datetime]
    _notify: Callable[[str, str], None]
    _check: Callable[[], None]

    def _init_webhooks(self) -> None:
        self.endpoints: dict[uuid.UUID, StoredEndpoint] = {}
        self.deliveries: dict[int, StoredDelivery] = {}
        self._delivery_ids = itertools.count(1)
        self.webhook_wakeups: list[Callable[[str], None]] = []

    def _wake_senders(self) -> None:
        self._notify("", "webhooks")

    def _enqueue_deliveries(self, upload: Upload, seq: int, at: datetime) -> None:
        """Migration 0009's trigger: one delivery per matching enabled endpoint (scanning
        is no event)."""
        event = EVENT_OF_STATUS.get(upload.status)
        if event is None:
            return
        queued = False
        for stored in self.endpoints.values():
            endpoint = stored.endpoint
            if endpoint.disabled_at is not None:
                continue
            if endpoint.event_types and event not in endpoint.event_types:
                continue
            if endpoint.policy is not None and endpoint.policy != upload.policy:
                continue
            payload = {
                "type": event.value,
                "timestamp": at.isoformat().replace("+00:00", "Z"),
                "data": {
                    "id": str(upload.id), "owner": upload.owner, "policy": upload.policy,
                    "status": upload.status.value, "size": upload.size,
                    "content_type": upload.content_type, "sha256": upload.sha256,
                    "metadata": upload.metadata, "seq": seq,
                },
            }  # fmt: skip
            self._add_delivery(endpoint.id, f"msg_{seq}", upload.id, seq, event, payload, at)
            queued = True
        if queued:
            self._wake_senders()

    def _add_delivery(
        self,
        endpoint_id: uuid.UUID,
        message_id: str,
        upload_id: uuid.UUID | None,
        seq: int | None,
        event: WebhookEventType,
        payload: dict[str, Any],
        at: datetime,
    ) -> WebhookDelivery:
        delivery = WebhookDelivery(
            id=next(self._delivery_ids), endpoint_id=endpoint_id, message_id=message_id,
            upload_id=upload_id, seq=seq, type=event, payload=payload,
            status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=at, last_status=None,
            last_error=None, created_at=at, delivered_at=None,
        )  # fmt: skip
        self.deliveries[delivery.id] = StoredDelivery(delivery)
        return delivery

    def _set_endpoint(self, endpoint_id: uuid.UUID, **fields: Any) -> WebhookEndpoint:
        stored = self.endpoints[endpoint_id]
        stored.endpoint = dataclasses.replace(stored.endpoint, **fields)
        return stored.endpoint

    async def insert_webhook_endpoint(
        self,
        endpoint_id: uuid.UUID,
        *,
        url: str,
        description: str,
        event_types: tuple[WebhookEventType, ...],
        policy: str | None,
        secret: str,
    ) -> WebhookEndpoint:
        self._check()
        now = self.clock()
        endpoint = WebhookEndpoint(
            id=endpoint_id, url=url, description=description, event_types=event_types,
            policy=policy, previous_secret_expires_at=None, disabled_at=None,
            disabled_reason=None, throttled_until=None, created_at=now, updated_at=now,
        )  # fmt: skip
        self.endpoints[endpoint_id] = StoredEndpoint(endpoint, secret)
        return endpoint

    async def list_webhook_endpoints(self) -> list[WebhookEndpoint]:
        self._check()
        return sorted(
            (s.endpoint for s in self.endpoints.values()), key=lambda e: (e.created_at, e.id)
        )

    async def get_webhook_endpoint(self, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
        self._check()
        stored = self.endpoints.get(endpoint_id)
        return stored.endpoint if stored else None

    async def update_webhook_endpoint(
        self,
        endpoint_id: uuid.UUID,
        *,
        url: str,
        description: str,
        event_types: tuple[WebhookEventType, ...],
        policy: str | None,
    ) -> WebhookEndpoint | None:
        self._check()
        if endpoint_id not in self.endpoints:
            return None
        return self._set_endpoint(
            endpoint_id, url=url, description=description, event_types=event_types,
            policy=policy, updated_at=self.clock(),
        )  # fmt: skip

    async def rotate_webhook_secret(
        self, endpoint_id: uuid.UUID, secret: str, overlap_seconds: float
    ) -> WebhookEndpoint | None:
        self._check()
        stored = self.endpoints.get(endpoint_id)
        if stored is None:
            return None
        stored.previous_secret, stored.secret = stored.secret, secret
        expires = self.clock() + timedelta(seconds=overlap_seconds)
        return self._set_endpoint(endpoint_id, previous_secret_expires_at=expires)

    async def disable_webhook_endpoint(
        self, endpoint_id: uuid.UUID, reason: str
    ) -> WebhookEndpoint | None:
        self._check()
        stored = self.endpoints.get(endpoint_id)
        if stored is None or stored.endpoint.disabled_at is not None:
            return None
        return self._set_endpoint(endpoint_id, disabled_at=self.clock(), disabled_reason=reason)

    async def enable_webhook_endpoint(self, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
        self._check()
        stored = self.endpoints.get(endpoint_id)
        if stored is None or stored.endpoint.disabled_at is None:
            return None
        return self._set_endpoint(
            endpoint_id, disabled_at=None, disabled_reason=None, throttled_until=None
        )

    async def throttle_webhook_endpoint(self, endpoint_id: uuid.UUID, until: datetime) -> None:
        self._check()
        current = self.endpoints[endpoint_id].endpoint.throttled_until
        self._set_endpoint(endpoint_id, throttled_until=max(until, current or until))

    async def insert_webhook_test_delivery(
        self, endpoint_id: uuid.UUID, message_id: str, payload: Mapping[str, Any]
    ) -> WebhookDelivery:
        self._check()
        return self._add_delivery(
            endpoint_id, message_id, None, None, WebhookEventType.WEBHOOK_TEST, dict(payload),
            self.clock(),
        )  # fmt: skip

    async def notify_webhook_senders(self) -> None:
        self._check()
        self._wake_senders()

    def _due(self, stored: StoredDelivery, now: datetime) -> bool:
        d = stored.delivery
        return (
            d.status is DeliveryStatus.PENDING
            and d.next_attempt_at <= now
            and (stored.leased_until is None or stored.leased_until <= now)
        )

    async def due_webhook_endpoints(self, now: datetime) -> list[uuid.UUID]:
        self._check()
        due = []
        for endpoint_id, stored in self.endpoints.items():
            e = stored.endpoint
            if e.disabled_at is not None or (e.throttled_until and e.throttled_until > now):
                continue
            if any(
                s.delivery.endpoint_id == endpoint_id and self._due(s, now)
                for s in self.deliveries.values()
            ):
                due.append(endpoint_id)
        return due

    async def claim_webhook_deliveries(
        self,
        endpoint_id: uuid.UUID,
        *,
        now: datetime,
        lease_seconds: float,
        lease_owner: str,
        limit: int,
    ) -> list[ClaimedDelivery]:
        self._check()
        endpoint = self.endpoints[endpoint_id]
        if endpoint.endpoint.disabled_at is not None:
            return []
        pending = [
            s.delivery
            for s in self.deliveries.values()
            if s.delivery.endpoint_id == endpoint_id and s.delivery.status is DeliveryStatus.PENDING
        ]

        def waits(d: WebhookDelivery) -> bool:
            return any(
                e.upload_id == d.upload_id
                and e.upload_id is not None
                and (e.seq or 0) < (d.seq or 0)
                for e in pending
            )

        due = [s for s in self.deliveries.values() if s.delivery.endpoint_id == endpoint_id]
        due = [s for s in due if self._due(s, now) and not waits(s.delivery)]
        due.sort(key=lambda s: (s.delivery.next_attempt_at, s.delivery.id))
        expires = endpoint.endpoint.previous_secret_expires_at
        secrets = (endpoint.secret,) + (
            (endpoint.previous_secret,)
            if endpoint.previous_secret and expires and expires > now
            else ()
        )
        claimed = []
        for stored in due[:limit]:
            stored.leased_until = now + timedelta(seconds=lease_seconds)
            stored.lease_owner = lease_owner
            stored.delivery = dataclasses.replace(
                stored.delivery, attempts=stored.delivery.attempts + 1
            )
            claimed.append(
                ClaimedDelivery(stored.delivery, endpoint.endpoint.url, secrets, lease_owner)
            )
        return claimed

    def _held(self, delivery_id: int, lease_owner: str) -> StoredDelivery | None:
        stored = self.deliveries.get(delivery_id)
        if stored is None or stored.delivery.status is not DeliveryStatus.PENDING:
            return None
        return stored if stored.lease_owner == lease_owner else None

    async def release_webhook_leases(self, sender: str) -> None:
        self._check()
        for stored in self.deliveries.values():
            owner = stored.lease_owner
            if owner is not None and owner.startswith(f"{sender}/"):
                if stored.delivery.status is DeliveryStatus.PENDING:
                    stored.leased_until = stored.lease_owner = None

    async def mark_webhooks_delivered(
        self, attempts: Sequence[DeliveredAttempt]
    ) -> dict[int, datetime]:
        self._check()
        changed = {}
        for attempt in attempts:
            stored = self._held(attempt.delivery_id, attempt.lease_owner)
            if stored is None:
                continue
            stored.leased_until = stored.lease_owner = None
            stored.delivery = dataclasses.replace(
                stored.delivery, status=DeliveryStatus.DELIVERED, delivered_at=attempt.at,
                last_status=attempt.http_status, last_error=None,
            )  # fmt: skip
            changed[attempt.delivery_id] = stored.delivery.created_at
        return changed

    async def mark_webhook_attempt_failed(
        self,
        delivery_id: int,
        *,
        lease_owner: str,
        status: DeliveryStatus,
        next_attempt_at: datetime,
        http_status: int | None,
        error: str | None,
    ) -> bool:
        self._check()
        stored = self._held(delivery_id, lease_owner)
        if stored is None:
            return False
        stored.leased_until = stored.lease_owner = None
        stored.delivery = dataclasses.replace(
            stored.delivery, status=status, next_attempt_at=next_attempt_at,
            last_status=http_status, last_error=error,
        )  # fmt: skip
        return True

    async def get_webhook_delivery(self, delivery_id: int) -> WebhookDelivery | None:
        self._check()
        stored = self.deliveries.get(delivery_id)
        return stored.delivery if stored else None

    async def list_webhook_deliveries(
        self, filters: DeliveryFilters, before_id: int | None, limit: int
    ) -> list[WebhookDelivery]:
        self._check()
        found = [
            d
            for d in (s.delivery for s in self.deliveries.values())
            if (filters.endpoint_id is None or d.endpoint_id == filters.endpoint_id)
            and (filters.status is None or d.status == filters.status)
            and (filters.upload_id is None or d.upload_id == filters.upload_id)
            and (filters.type is None or d.type == filters.type)
            and (before_id is None or d.id < before_id)
        ]
        return sorted(found, key=lambda d: d.id, reverse=True)[:limit]

    def _requeue(self, stored: StoredDelivery) -> None:
        stored.leased_until = stored.lease_owner = None
        stored.delivery = dataclasses.replace(
            stored.delivery, status=DeliveryStatus.PENDING, next_attempt_at=self.clock(),
            attempts=0,
        )  # fmt: skip

    async def retry_dead_webhook_delivery(self, delivery_id: int) -> WebhookDelivery | None:
        self._check()
        stored = self.deliveries.get(delivery_id)
        if stored is None or stored.delivery.status is not DeliveryStatus.DEAD:
            return None
        self._requeue(stored)
        return stored.delivery

    async def replay_webhook_deliveries(self, endpoint_id: uuid.UUID, since: datetime) -> int:
        self._check()
        chosen = [
            s
            for s in self.deliveries.values()
            if s.delivery.endpoint_id == endpoint_id
            and s.delivery.created_at >= since
            and s.delivery.status is not DeliveryStatus.PENDING
        ]
        for stored in chosen:
            self._requeue(stored)
        return len(chosen)

    async def webhook_backlog(self) -> WebhookBacklog:
        self._check()
        pending = [
            s.delivery.created_at
            for s in self.deliveries.values()
            if s.delivery.status is DeliveryStatus.PENDING
        ]
        return WebhookBacklog(len(pending), min(pending) if pending else None)

    async def count_dead_webhook_deliveries(self) -> int:
        self._check()
        return sum(s.delivery.status is DeliveryStatus.DEAD for s in self.deliveries.values())


class FakePoster:
    """The WebhookPoster port: records each POST and answers by script (then `default`)."""

    def __init__(self, default: PostResult | None = None) -> None:
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []
        self.answers: list[PostResult] = []
        self.default = default or PostResult(204)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> PostResult:
        self.sent.append((url, body, dict(headers)))
        return self.answers.pop(0) if self.answers else self.default
