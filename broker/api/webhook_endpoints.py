"""Operators' routes for the apps' webhooks: endpoints and their deliveries (admin tokens)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from broker.api.deps import AdminRoute, AppWebhooksDep, PrincipalDep
from broker.api.errors_doc import responses
from broker.domain.model import BIGINT_MAX, DeliveryStatus, WebhookEventType
from broker.domain.webhooks import DeliveryFilters, WebhookDelivery, WebhookEndpoint
from broker.flows.app_webhooks import EndpointChanges

router = APIRouter(prefix="/v1/admin", tags=["webhooks"], route_class=AdminRoute)
ERRORS = responses(400, 401, 403, 404, 409, 422, 503)


class Endpoint(BaseModel):
    """A webhook endpoint (its secret is shown only when created or rotated)."""

    id: uuid.UUID
    url: str
    description: str
    event_types: list[WebhookEventType] = Field(description="Empty: every upload event.")
    policy: str | None = Field(description="Only uploads of this policy; null: every policy.")
    enabled: bool
    disabled_at: datetime | None
    disabled_reason: str | None
    throttled_until: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> Endpoint:
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            description=endpoint.description,
            event_types=list(endpoint.event_types),
            policy=endpoint.policy,
            enabled=endpoint.disabled_at is None,
            disabled_at=endpoint.disabled_at,
            disabled_reason=endpoint.disabled_reason,
            throttled_until=endpoint.throttled_until,
            previous_secret_expires_at=endpoint.previous_secret_expires_at,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
        )


class EndpointWithSecret(Endpoint):
    secret: str = Field(description="whsec_...: shown this once; store it with the app.")


class NewEndpoint(BaseModel):
    url: str = Field(max_length=2048, description="https://..., or http:// for an allowed host")
    description: str = Field(default="", max_length=500)
    event_types: list[str] = Field(default_factory=list, max_length=10)
    policy: str | None = None


class EndpointUpdate(BaseModel):
    url: str | None = Field(default=None, max_length=2048)
    description: str | None = Field(default=None, max_length=500)
    event_types: list[str] | None = Field(default=None, max_length=10)
    policy: str | None = Field(default=None, description='"" removes the policy filter')


class Disable(BaseModel):
    reason: str = Field(default="disabled by an operator", max_length=500)


class Delivery(BaseModel):
    id: int
    endpoint_id: uuid.UUID
    webhook_id: str = Field(description="The webhook-id header: the same on every attempt.")
    upload_id: uuid.UUID | None
    seq: int | None
    type: WebhookEventType
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    created_at: datetime = Field(description="When the state changed.")
    delivered_at: datetime | None
    payload: dict[str, Any]

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> Delivery:
        return cls(
            id=delivery.id,
            endpoint_id=delivery.endpoint_id,
            webhook_id=delivery.message_id,
            upload_id=delivery.upload_id,
            seq=delivery.seq,
            type=delivery.type,
            status=delivery.status,
            attempts=delivery.attempts,
            next_attempt_at=delivery.next_attempt_at,
            last_status=delivery.last_status,
            last_error=delivery.last_error,
            created_at=delivery.created_at,
            delivered_at=delivery.delivered_at,
            payload=delivery.payload,
        )


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_cursor: str | None


class Replay(BaseModel):
    since: datetime = Field(description="Re-send deliveries of changes since this time.")


class ReplayResult(BaseModel):
    queued: int


def _with_secret(endpoint: WebhookEndpoint, secret: str) -> EndpointWithSecret:
    return EndpointWithSecret(**Endpoint.of(endpoint).model_dump(), secret=secret)


@router.post(
    "/webhook-endpoints", status_code=201, response_model=EndpointWithSecret, responses=ERRORS
)
async def create_endpoint(body: NewEndpoint, service: AppWebhooksDep) -> EndpointWithSecret:
    """Register an endpoint; the answer holds its signing secret, shown this once."""
    endpoint, secret = await service.create(
        body.url, description=body.description, event_types=body.event_types, policy=body.policy
    )
    return _with_secret(endpoint, secret)


@router.get("/webhook-endpoints", response_model=list[Endpoint], responses=ERRORS)
async def list_endpoints(service: AppWebhooksDep) -> list[Endpoint]:
    """Every endpoint, oldest first (no secrets)."""
    return [Endpoint.of(e) for e in await service.list()]


@router.get("/webhook-endpoints/{endpoint_id}", response_model=Endpoint, responses=ERRORS)
async def get_endpoint(endpoint_id: uuid.UUID, service: AppWebhooksDep) -> Endpoint:
    """One endpoint (no secret)."""
    return Endpoint.of(await service.get(endpoint_id))


@router.patch("/webhook-endpoints/{endpoint_id}", response_model=Endpoint, responses=ERRORS)
async def update_endpoint(
    endpoint_id: uuid.UUID, body: EndpointUpdate, service: AppWebhooksDep
) -> Endpoint:
    """Change the URL, description, event types or policy filter."""
    changes = EndpointChanges(
        url=body.url,
        description=body.description,
        event_types=body.event_types,
        policy=body.policy or None,
        clear_policy=body.policy == "",
    )
    return Endpoint.of(await service.update(endpoint_id, changes))


@router.post(
    "/webhook-endpoints/{endpoint_id}/rotate-secret",
    response_model=EndpointWithSecret,
    responses=ERRORS,
)
async def rotate_secret(endpoint_id: uuid.UUID, service: AppWebhooksDep) -> EndpointWithSecret:
    """A new secret, shown this once; the old one keeps signing too for 24 hours."""
    endpoint, secret = await service.rotate(endpoint_id)
    return _with_secret(endpoint, secret)


@router.post("/webhook-endpoints/{endpoint_id}/disable", response_model=Endpoint, responses=ERRORS)
async def disable_endpoint(
    endpoint_id: uuid.UUID, service: AppWebhooksDep, principal: PrincipalDep, body: Disable
) -> Endpoint:
    """Stop sending to the endpoint; its deliveries wait until it is enabled again."""
    reason = f"{body.reason} (admin:{principal.owner})"
    return Endpoint.of(await service.disable(endpoint_id, reason))


@router.post("/webhook-endpoints/{endpoint_id}/enable", response_model=Endpoint, responses=ERRORS)
async def enable_endpoint(endpoint_id: uuid.UUID, service: AppWebhooksDep) -> Endpoint:
    """Send to the endpoint again, waiting deliveries first."""
    return Endpoint.of(await service.enable(endpoint_id))


@router.post(
    "/webhook-endpoints/{endpoint_id}/test",
    status_code=202,
    response_model=Delivery,
    responses=ERRORS,
)
async def send_test(endpoint_id: uuid.UUID, service: AppWebhooksDep) -> Delivery:
    """Queue a webhook.test event to the endpoint now."""
    return Delivery.of(await service.send_test(endpoint_id))


@router.post(
    "/webhook-endpoints/{endpoint_id}/replay", response_model=ReplayResult, responses=ERRORS
)
async def replay(endpoint_id: uuid.UUID, body: Replay, service: AppWebhooksDep) -> ReplayResult:
    """Send the endpoint's delivered and dead events since a time again (same webhook-ids)."""
    return ReplayResult(queued=await service.replay(endpoint_id, body.since))


@router.get("/webhook-deliveries", response_model=DeliveryPage, responses=ERRORS)
async def list_deliveries(
    service: AppWebhooksDep,
    endpoint_id: uuid.UUID | None = None,
    status: DeliveryStatus | None = None,
    upload_id: uuid.UUID | None = None,
    type: WebhookEventType | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=30)] = None,
) -> DeliveryPage:
    """Deliveries, newest first, with filters and keyset pagination."""
    filters = DeliveryFilters(
        endpoint_id=endpoint_id, status=status, upload_id=upload_id, type=type
    )
    page = await service.deliveries(filters, limit, cursor)
    return DeliveryPage(items=[Delivery.of(d) for d in page.items], next_cursor=page.next_cursor)


@router.post("/webhook-deliveries/{delivery_id}/retry", response_model=Delivery, responses=ERRORS)
async def retry_delivery(
    delivery_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)], service: AppWebhooksDep
) -> Delivery:
    """Send a dead delivery again, with a fresh retry schedule and the same webhook-id."""
    return Delivery.of(await service.retry(delivery_id))
