"""Operators' use cases for the apps' webhooks: endpoints (create, change, rotate, disable,
test) and deliveries (list, retry a dead one, replay an endpoint's recent ones)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from broker.domain import errors, webhook_signing, webhooks
from broker.domain.model import BIGINT_MAX, WebhookEventType
from broker.domain.webhooks import (
    DeliveryFilters,
    WebhookBacklog,
    WebhookDelivery,
    WebhookEndpoint,
)
from broker.flows.ports import Queries


def new_secret() -> str:
    """A fresh endpoint secret: `whsec_` + base64 of 32 random bytes."""
    return webhook_signing.secret_from_bytes(secrets.token_bytes(webhook_signing.SECRET_BYTES))


@dataclass(frozen=True)
class EndpointChanges:
    """What an update changes; None leaves a field as it is (`clear_policy` removes the
    policy filter)."""

    url: str | None = None
    description: str | None = None
    event_types: list[str] | None = None
    policy: str | None = None
    clear_policy: bool = False


@dataclass(frozen=True)
class DeliveryPage:
    items: list[WebhookDelivery]
    next_cursor: str | None


@dataclass(frozen=True)
class RecentDelivery:
    """A delivery with where it goes (None: the endpoint is gone)."""

    delivery: WebhookDelivery
    endpoint: WebhookEndpoint | None


@dataclass(frozen=True)
class DeliveriesOverview:
    """What the /ops page shows of the deliveries: the backlog, the dead, the latest."""

    backlog: WebhookBacklog
    dead: int
    recent: list[RecentDelivery]


class AppWebhooks:
    """Endpoints and deliveries, for operators (API and CLI)."""

    def __init__(
        self,
        queries: Queries,
        *,
        allowed_hosts: frozenset[str],
        policies: frozenset[str],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        make_secret: Callable[[], str] = new_secret,
    ) -> None:
        self.queries = queries
        self.allowed_hosts = allowed_hosts
        self.policies = policies
        self.clock = clock
        self.make_secret = make_secret

    def _check_policy(self, policy: str | None) -> str | None:
        if policy is not None and policy not in self.policies:
            raise errors.UnknownPolicy(f"no upload policy is named {policy!r}")
        return policy

    async def create(
        self, url: str, *, description: str = "", event_types: list[str], policy: str | None
    ) -> tuple[WebhookEndpoint, str]:
        """A new endpoint, and its secret (shown this once)."""
        secret = self.make_secret()
        endpoint = await self.queries.insert_webhook_endpoint(
            uuid.uuid4(),
            url=webhooks.check_url(url, self.allowed_hosts),
            description=description,
            event_types=webhooks.check_event_types(event_types),
            policy=self._check_policy(policy),
            secret=secret,
        )
        return endpoint, secret

    async def list(self) -> list[WebhookEndpoint]:
        return await self.queries.list_webhook_endpoints()

    async def get(self, endpoint_id: uuid.UUID) -> WebhookEndpoint:
        return self._found(await self.queries.get_webhook_endpoint(endpoint_id))

    @staticmethod
    def _found(endpoint: WebhookEndpoint | None) -> WebhookEndpoint:
        if endpoint is None:
            raise errors.WebhookEndpointNotFound()
        return endpoint

    async def update(self, endpoint_id: uuid.UUID, changes: EndpointChanges) -> WebhookEndpoint:
        current = await self.get(endpoint_id)
        policy = None if changes.clear_policy else (changes.policy or current.policy)
        return self._found(
            await self.queries.update_webhook_endpoint(
                endpoint_id,
                url=(
                    webhooks.check_url(changes.url, self.allowed_hosts)
                    if changes.url is not None
                    else current.url
                ),
                description=(
                    changes.description if changes.description is not None else current.description
                ),
                event_types=(
                    webhooks.check_event_types(changes.event_types)
                    if changes.event_types is not None
                    else current.event_types
                ),
                policy=self._check_policy(policy),
            )
        )

    async def rotate(self, endpoint_id: uuid.UUID) -> tuple[WebhookEndpoint, str]:
        """A new secret (shown this once); the old one keeps signing for 24 hours."""
        secret = self.make_secret()
        endpoint = await self.queries.rotate_webhook_secret(
            endpoint_id, secret, webhooks.ROTATION_OVERLAP_SECONDS
        )
        return self._found(endpoint), secret

    async def disable(self, endpoint_id: uuid.UUID, reason: str) -> WebhookEndpoint:
        changed = await self.queries.disable_webhook_endpoint(endpoint_id, reason)
        return changed or await self.get(endpoint_id)

    async def enable(self, endpoint_id: uuid.UUID) -> WebhookEndpoint:
        changed = await self.queries.enable_webhook_endpoint(endpoint_id)
        if changed is not None:
            await self.queries.notify_webhook_senders()
        return changed or await self.get(endpoint_id)

    async def send_test(self, endpoint_id: uuid.UUID) -> WebhookDelivery:
        """Queue a webhook.test message to the endpoint, due now."""
        endpoint = await self.get(endpoint_id)
        now = self.clock()
        payload = {
            "type": WebhookEventType.WEBHOOK_TEST.value,
            "timestamp": now.isoformat().replace("+00:00", "Z"),
            "data": {"endpoint_id": str(endpoint.id)},
        }
        delivery = await self.queries.insert_webhook_test_delivery(
            endpoint.id, f"msg_test_{uuid.uuid4().hex}", payload
        )
        await self.queries.notify_webhook_senders()
        return delivery

    async def deliveries(
        self, filters: DeliveryFilters, limit: int, cursor: str | None
    ) -> DeliveryPage:
        """Deliveries newest first; the cursor is the last id of the previous page."""
        before = None
        if cursor is not None:
            # ASCII digits only ("²".isdigit() too), and a bigint as the ids are.
            if not (cursor.isascii() and cursor.isdigit()) or int(cursor) > BIGINT_MAX:
                raise errors.InvalidCursor()
            before = int(cursor)
        found = await self.queries.list_webhook_deliveries(filters, before, limit + 1)
        next_cursor = str(found[limit - 1].id) if len(found) > limit else None
        return DeliveryPage(items=found[:limit], next_cursor=next_cursor)

    async def retry(self, delivery_id: int) -> WebhookDelivery:
        """Send a dead delivery again, with a fresh retry schedule and the same webhook-id."""
        retried = await self.queries.retry_dead_webhook_delivery(delivery_id)
        if retried is None:
            if await self.queries.get_webhook_delivery(delivery_id) is None:
                raise errors.WebhookDeliveryNotFound()
            raise errors.DeliveryNotDead()
        await self.queries.notify_webhook_senders()
        return retried

    async def replay(self, endpoint_id: uuid.UUID, since: datetime) -> int:
        """Send the endpoint's delivered and dead messages of changes since `since` again,
        under their webhook-ids; how many were queued."""
        await self.get(endpoint_id)
        count = await self.queries.replay_webhook_deliveries(endpoint_id, since)
        if count:
            await self.queries.notify_webhook_senders()
        return count

    async def overview(self, recent: int) -> DeliveriesOverview:
        """The backlog, the dead count and the newest `recent` deliveries with their
        endpoints (the /ops page)."""
        latest = await self.queries.list_webhook_deliveries(DeliveryFilters(), None, recent)
        endpoints = {e.id: e for e in await self.queries.list_webhook_endpoints()}
        return DeliveriesOverview(
            backlog=await self.queries.webhook_backlog(),
            dead=await self.queries.count_dead_webhook_deliveries(),
            recent=[RecentDelivery(d, endpoints.get(d.endpoint_id)) for d in latest],
        )

    async def backlog(self) -> WebhookBacklog:
        """Deliveries still to make (read for every metrics scrape)."""
        return await self.queries.webhook_backlog()
