"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

from datetime import UTC, datetime

import prometheus_client
from fastapi import APIRouter, Request, Response

from broker import metrics

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    """Counters and histograms of this process, and pending gauges read from the database."""
    pending = await request.app.state.db.fetchrow("stats_pending")
    metrics.PENDING.set(pending["pending"])
    metrics.STUCK.set(pending["stuck"])
    oldest = pending["oldest_created_at"]
    metrics.OLDEST_PENDING_AGE.set((datetime.now(UTC) - oldest).total_seconds() if oldest else 0)
    return Response(
        prometheus_client.generate_latest(), media_type=prometheus_client.CONTENT_TYPE_LATEST
    )
