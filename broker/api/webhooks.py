"""The MinIO bucket-notification webhook."""

from __future__ import annotations

import hmac
import logging

from fastapi import APIRouter, Request

from broker import metrics
from broker.api import schemas, security_doc
from broker.api.deps import FinalizerDep, SettingsDep
from broker.api.errors_doc import responses
from broker.domain import errors, minio_events
from broker.domain.model import Outcome

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
log = logging.getLogger("broker.webhooks")


# What the route reads of MinIO's notification (read by hand: anything else, even a body
# that is not JSON, is answered 200 `ignored_malformed`, so that MinIO's queue moves on).
NOTIFICATION_SCHEMA = {
    "type": "object",
    "properties": {
        "EventName": {"type": "string"},
        "Key": {"type": "string"},
        "Records": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["eventName", "s3"],
                "properties": {
                    "eventName": {"type": "string", "examples": ["s3:ObjectCreated:Put"]},
                    "s3": {
                        "type": "object",
                        "required": ["bucket", "object"],
                        "properties": {
                            "bucket": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}},
                            },
                            "object": {
                                "type": "object",
                                "required": ["key"],
                                "properties": {
                                    "key": {"type": "string"},
                                    "size": {"type": "integer"},
                                    "eTag": {"type": "string"},
                                    "contentType": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


@router.post(
    "/minio",
    response_model=schemas.WebhookResult,
    responses=responses(401, 503),
    openapi_extra={
        "security": security_doc.WEBHOOK,
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": NOTIFICATION_SCHEMA}},
        },
    },
)
async def minio_webhook(
    request: Request, settings: SettingsDep, finalizer: FinalizerDep
) -> schemas.WebhookResult:
    """Receive MinIO bucket events and settle the uploads they are about.

    Anything well-formed but unwanted is answered 2xx: a queued MinIO target retries a
    non-2xx forever and holds back every later event. Only an unavailable database gives
    503, so that MinIO delivers the event again later.
    """
    expected = f"Bearer {settings.webhook_token}".encode()
    given = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(given, expected):
        raise errors.WebhookUnauthorized()
    body = await request.body()
    try:
        parsed = minio_events.parse_notification(body)
    except minio_events.MalformedNotification as exc:
        log.warning("webhook.malformed", extra={"error": str(exc), "bytes": len(body)})
        return schemas.WebhookResult(outcomes=[Outcome.IGNORED_MALFORMED])
    outcomes = []
    for event in parsed:
        try:
            outcome = await finalizer.apply_event(event)
        except errors.InvalidRequest:
            # A key no upload can have (a NUL character): answered 2xx like any malformed
            # event, or MinIO's queue would retry it forever.
            outcome = Outcome.IGNORED_MALFORMED
        log.info(
            "webhook.event",
            extra={"event_name": event.name, "key": event.key, "outcome": outcome},
        )
        metrics.WEBHOOK_EVENTS.labels(outcome).inc()
        outcomes.append(outcome)
    return schemas.WebhookResult(outcomes=outcomes)
