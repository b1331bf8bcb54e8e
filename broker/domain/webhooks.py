"""The app's webhooks as values: endpoints, deliveries, attempts, and the rules of retrying.
Pure: no I/O (the clock and the random jitter are passed in)."""

from __future__ import annotations

import email.utils
import random
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from broker.domain import addresses, errors
from broker.domain.model import SUBSCRIBABLE_EVENT_TYPES, DeliveryStatus, WebhookEventType

# Seconds before each attempt (Standard Webhooks' schedule): the first at once, the tenth a
# day after the ninth; a delivery whose tenth attempt fails is dead.
RETRY_SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
JITTER = 0.1  # each delay is moved by up to 10% either way, so retries do not arrive in step
MAX_RETRY_AFTER = 86400.0
THROTTLE_STATUSES = frozenset({429, 502, 503, 504})
ROTATION_OVERLAP_SECONDS = 86400  # a rotated secret keeps signing for a day
MAX_RESPONSE_BYTES = 64 * 1024
MAX_URL_LENGTH = 2048


class AttemptOutcome(StrEnum):
    """What one POST to an endpoint came to (the metrics' `outcome` label)."""

    DELIVERED = "delivered"  # 2xx
    FAILED = "failed"  # any other answer, redirects included
    THROTTLED = "throttled"  # 429, 502, 503, 504: the endpoint is slowed down
    GONE = "gone"  # 410: the endpoint is disabled
    UNREACHABLE = "unreachable"  # no answer: DNS, connection, timeout
    REFUSED = "refused"  # the SSRF guard refused the address; nothing was sent


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """Where an app receives webhooks (its secrets are never part of this value)."""

    id: uuid.UUID
    url: str
    description: str
    event_types: tuple[WebhookEventType, ...]  # empty: every type
    policy: str | None  # None: uploads of every policy
    previous_secret_expires_at: datetime | None
    disabled_at: datetime | None
    disabled_reason: str | None
    throttled_until: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One message to one endpoint, and how sending it went so far."""

    id: int
    endpoint_id: uuid.UUID
    message_id: str  # the webhook-id header: the same on every attempt
    upload_id: uuid.UUID | None
    seq: int | None
    type: WebhookEventType
    payload: dict[str, Any]
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    created_at: datetime  # when the state changed
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A delivery leased by one sender, with where to send it and the secrets to sign it."""

    delivery: WebhookDelivery
    url: str
    secrets: tuple[str, ...]  # the current secret first, then one still overlapping
    lease_owner: str


class DeliveredAttempt(NamedTuple):
    """A 2xx to record: which delivery, by which lease, when, and the status."""

    delivery_id: int
    lease_owner: str
    at: datetime
    http_status: int


@dataclass(frozen=True, slots=True)
class PostResult:
    """What a POST to an endpoint got: a status, or an error and no status."""

    status: int | None
    retry_after: str | None = None
    error: str | None = None
    refused: bool = False

    @property
    def outcome(self) -> AttemptOutcome:
        if self.refused:
            return AttemptOutcome.REFUSED
        if self.status is None:
            return AttemptOutcome.UNREACHABLE
        if 200 <= self.status < 300:
            return AttemptOutcome.DELIVERED
        if self.status == 410:
            return AttemptOutcome.GONE
        if self.status in THROTTLE_STATUSES:
            return AttemptOutcome.THROTTLED
        return AttemptOutcome.FAILED


@dataclass(frozen=True, slots=True)
class DeliveryFilters:
    """Optional filters of the deliveries listing; None means any."""

    endpoint_id: uuid.UUID | None = None
    status: DeliveryStatus | None = None
    upload_id: uuid.UUID | None = None
    type: WebhookEventType | None = None


def retry_delay(attempts_made: int, rng: random.Random) -> float | None:
    """Seconds to wait after `attempts_made` failed attempts, with jitter; None: give up."""
    if attempts_made >= len(RETRY_SCHEDULE):
        return None
    base = RETRY_SCHEDULE[max(attempts_made, 0)]
    return base * rng.uniform(1 - JITTER, 1 + JITTER)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """A Retry-After header (delay-seconds or an HTTP date) as seconds from now, capped at a
    day; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return min(max((when - now).total_seconds(), 0.0), MAX_RETRY_AFTER)


def check_url(url: str, allowed_hosts: frozenset[str]) -> str:
    """An endpoint URL, or InvalidWebhookUrl: https, or plain http for an allowed host:port
    (a receiver on the developer's machine, e.g. localhost:3000)."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        raise errors.InvalidWebhookUrl(f"{url[:100]!r} is not a URL: {exc}") from None
    if len(url) > MAX_URL_LENGTH:
        raise errors.InvalidWebhookUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.InvalidWebhookUrl("the URL must be https://host/path")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise errors.InvalidWebhookUrl("the URL must not hold credentials or a #fragment")
    if parts.scheme == "http" and addresses.host_port(url) not in allowed_hosts:
        raise errors.InvalidWebhookUrl(
            "the URL must be https; plain http only for a host:port listed in "
            "BROKER_WEBHOOK_ALLOWED_HOSTS (a local receiver)"
        )
    return url


def check_event_types(names: list[str]) -> tuple[WebhookEventType, ...]:
    """Subscribable event types by name (empty: all), or UnknownEventType."""
    known = {t.value: t for t in SUBSCRIBABLE_EVENT_TYPES}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise errors.UnknownEventType(
            f"unknown event type {unknown[0]!r}; one of {', '.join(sorted(known))}"
        )
    return tuple(sorted({known[name] for name in names}))


@dataclass(frozen=True, slots=True)
class WebhookBacklog:
    """Deliveries still to make, and when the oldest one's change happened."""

    pending: int
    oldest_created_at: datetime | None

    def oldest_age_seconds(self, now: datetime) -> float | None:
        if self.oldest_created_at is None:
            return None
        return max((now - self.oldest_created_at).total_seconds(), 0.0)
