"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from broker import errors

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is unreachable"}})
async def readyz(request: Request) -> JSONResponse:
    """PostgreSQL and MinIO both answer; otherwise 503 naming the one that does not."""
    checks = {"postgres": request.app.state.db.ping, "minio": request.app.state.storage.ping}
    failing = []
    for name, check in checks.items():
        try:
            await check()
        except (errors.DatabaseUnavailable, errors.StorageUnavailable):
            failing.append(name)
    if failing:
        error = errors.NotReady(
            f"not ready: {', '.join(failing)} unreachable", details={"unavailable": failing}
        )
        return JSONResponse(error.to_body(), status_code=error.status)
    return JSONResponse({"status": "ready"})
