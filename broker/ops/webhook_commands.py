"""Operator commands for the apps' webhooks (`broker webhooks ...`), over the AppWebhooks use
case: tables for people, JSON for scripts. Secrets are printed only by `add` and `rotate`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from broker import config, wiring
from broker.domain.webhooks import DeliveryFilters, WebhookDelivery, WebhookEndpoint
from broker.flows.app_webhooks import AppWebhooks
from broker.ops.commands import table, to_json
from broker.ops.formatting import format_age

CLI_DISABLE_REASON = "disabled by an operator (cli)"
MAX_LIMIT = 500
ERROR_WIDTH = 60


@asynccontextmanager
async def webhooks(settings: config.Settings) -> AsyncIterator[AppWebhooks]:
    """The webhooks use case on a small pool of its own."""
    async with wiring.connected(settings, pool_min=1, pool_max=2) as flows:
        yield flows.webhooks


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"--limit must be between 1 and {MAX_LIMIT}, not {limit}")
    return limit


def endpoint_json(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """An endpoint as the admin API shows it (never a secret)."""
    return {**asdict(endpoint), "enabled": endpoint.disabled_at is None}


def delivery_json(delivery: WebhookDelivery) -> dict[str, Any]:
    """A delivery as the admin API shows it: `webhook_id` is the webhook-id header."""
    fields = asdict(delivery)
    return {"id": fields.pop("id"), "webhook_id": fields.pop("message_id"), **fields}


def _state(endpoint: WebhookEndpoint) -> str:
    return "enabled" if endpoint.disabled_at is None else "disabled"


def _types(endpoint: WebhookEndpoint) -> str:
    return ",".join(endpoint.event_types) or "all upload.*"


def endpoint_table(endpoint: WebhookEndpoint) -> str:
    return table(
        ["field", "value"],
        [
            ("id", endpoint.id),
            ("url", endpoint.url),
            ("description", endpoint.description),
            ("event types", _types(endpoint)),
            ("policy", endpoint.policy or "any"),
            ("state", _state(endpoint)),
            ("disabled reason", endpoint.disabled_reason),
            ("previous secret signs until", endpoint.previous_secret_expires_at),
            ("created", endpoint.created_at),
        ],
    )


def _with_secret(endpoint: WebhookEndpoint, secret: str, as_json: bool) -> str:
    if as_json:
        return to_json({**endpoint_json(endpoint), "secret": secret})
    return (
        f"{endpoint_table(endpoint)}\n\nsecret: {secret}\n"
        "(shown this once: store it with the app now)"
    )


def _short(text: str | None) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 1] + "…"


def deliveries_table(items: list[WebhookDelivery], now: datetime) -> str:
    return table(
        ["id", "endpoint", "type", "status", "attempts", "last", "age", "upload", "error"],
        [
            (d.id, d.endpoint_id, d.type, d.status, d.attempts, d.last_status,
             format_age((now - d.created_at).total_seconds()), d.upload_id or "",
             _short(d.last_error))
            for d in items
        ],
    )  # fmt: skip


async def add(
    settings: config.Settings,
    url: str,
    *,
    event_types: list[str],
    policy: str | None,
    description: str,
    as_json: bool,
) -> str:
    async with webhooks(settings) as service:
        endpoint, secret = await service.create(
            url, description=description, event_types=event_types, policy=policy
        )
    return _with_secret(endpoint, secret, as_json)


async def list_endpoints(settings: config.Settings, as_json: bool) -> str:
    async with webhooks(settings) as service:
        found = await service.list()
    if as_json:
        return to_json([endpoint_json(e) for e in found])
    if not found:
        return "no webhook endpoints"
    return table(
        ["id", "url", "state", "event types", "policy", "description"],
        [(e.id, e.url, _state(e), _types(e), e.policy or "any", e.description) for e in found],
    )


async def rotate(settings: config.Settings, endpoint_id: uuid.UUID, as_json: bool) -> str:
    async with webhooks(settings) as service:
        endpoint, secret = await service.rotate(endpoint_id)
    return _with_secret(endpoint, secret, as_json)


async def send_test(settings: config.Settings, endpoint_id: uuid.UUID, as_json: bool) -> str:
    async with webhooks(settings) as service:
        delivery = await service.send_test(endpoint_id)
    if as_json:
        return to_json(delivery_json(delivery))
    return f"queued {delivery.type} delivery {delivery.id} (webhook-id {delivery.message_id})"


async def deliveries(
    settings: config.Settings, filters: DeliveryFilters, limit: int, as_json: bool
) -> str:
    async with webhooks(settings) as service:
        page = await service.deliveries(filters, check_limit(limit), None)
    if as_json:
        return to_json([delivery_json(d) for d in page.items])
    if not page.items:
        return "no deliveries"
    return deliveries_table(page.items, datetime.now(UTC))


async def replay(
    settings: config.Settings, endpoint_id: uuid.UUID, since_seconds: float, as_json: bool
) -> str:
    since = datetime.now(UTC) - timedelta(seconds=since_seconds)
    async with webhooks(settings) as service:
        queued = await service.replay(endpoint_id, since)
    if as_json:
        return to_json({"queued": queued, "since": since})
    return f"queued {queued} deliveries again (changes since {since:%Y-%m-%d %H:%M:%S} UTC)"


async def retry(settings: config.Settings, delivery_id: int, as_json: bool) -> str:
    async with webhooks(settings) as service:
        delivery = await service.retry(delivery_id)
    if as_json:
        return to_json(delivery_json(delivery))
    return f"delivery {delivery.id} queued again (webhook-id {delivery.message_id})"


async def set_enabled(
    settings: config.Settings, endpoint_id: uuid.UUID, enabled: bool, reason: str, as_json: bool
) -> str:
    async with webhooks(settings) as service:
        if enabled:
            endpoint = await service.enable(endpoint_id)
        else:
            endpoint = await service.disable(endpoint_id, reason)
    if as_json:
        return to_json(endpoint_json(endpoint))
    return f"endpoint {endpoint.id} is {_state(endpoint)}"
