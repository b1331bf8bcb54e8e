"""Liveness and readiness probes, and the Prometheus metrics endpoint."""

from __future__ import annotations

from datetime import UTC, datetime

import prometheus_client
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from broker import metrics
from broker.api.deps import flows_of
from broker.domain import errors

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is unreachable"}})
async def readyz(request: Request) -> JSONResponse:
    """PostgreSQL and MinIO both answer; otherwise 503 naming the one that does not. From
    the moment the process is told to stop (SIGTERM), 503 with `details.draining`."""
    if getattr(request.app.state, "draining", False):
        error = errors.NotReady("not ready: shutting down", details={"draining": True})
        return JSONResponse(error.to_body(), status_code=error.status)
    failing = await flows_of(request).probes.unavailable()
    if failing:
        error = errors.NotReady(
            f"not ready: {', '.join(failing)} unreachable", details={"unavailable": failing}
        )
        return JSONResponse(error.to_body(), status_code=error.status)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    """Counters and histograms of this process, and pending gauges read from the database."""
    pending = await flows_of(request).admin.pending()
    metrics.PENDING.set(pending.pending)
    metrics.STUCK.set(pending.stuck)
    metrics.OLDEST_PENDING_AGE.set(pending.oldest_age_seconds(datetime.now(UTC)) or 0)
    scans = await flows_of(request).admin.scan_backlog()
    metrics.SCAN_BACKLOG.set(scans.jobs)
    oldest_scan = scans.oldest_created_at
    metrics.SCAN_OLDEST_AGE.set(
        (datetime.now(UTC) - oldest_scan).total_seconds() if oldest_scan else 0
    )
    backlog = await flows_of(request).webhooks.backlog()
    metrics.WEBHOOK_BACKLOG.set(backlog.pending)
    metrics.WEBHOOK_OLDEST_PENDING_AGE.set(backlog.oldest_age_seconds(datetime.now(UTC)) or 0)
    return Response(
        prometheus_client.generate_latest(), media_type=prometheus_client.CONTENT_TYPE_LATEST
    )
