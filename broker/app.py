"""The FastAPI application: create_app(settings), its lifespan and its error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import tenacity
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from opentelemetry import trace
from starlette.exceptions import HTTPException as StarletteHTTPException

from broker.adapters import storage
from broker.adapters.db import UNAVAILABLE_ERRORS, Database
from broker.api import admin as admin_api
from broker.api import companion, health, ops, parts, status_stream, webhooks
from broker.api import uploads as uploads_api
from broker.config import Settings
from broker.domain import errors
from broker.domain.policies import load_policies
from broker.flows import admin, finalization, live, multipart, reconciler, uploads
from broker.request_context import RequestContext

log = logging.getLogger("broker.app")
GC_YOUNG_THRESHOLD = 20_000
# What browsers may send to the broker: its JSON API, SSE reconnects, Uppy's plugin.
CORS_REQUEST_HEADERS = [
    "authorization",
    "content-type",
    "idempotency-key",
    "x-request-id",
    "last-event-id",
    "uppy-auth-token",
]


def _waiting(what: str, settings: Settings) -> tenacity.AsyncRetrying:
    """Bounded retries while a dependency comes up, saying what we wait for."""

    def say(state: tenacity.RetryCallState) -> None:
        log.info(
            "startup.waiting",
            extra={
                "for": what,
                "attempt": state.attempt_number,
                "error": repr(state.outcome and state.outcome.exception()),
            },
        )

    return tenacity.AsyncRetrying(
        stop=tenacity.stop_after_delay(settings.startup_timeout_seconds),
        wait=tenacity.wait_exponential(multiplier=0.2, max=2),
        before_sleep=say,
        reraise=True,
    )


async def connect_database(settings: Settings) -> Database:
    """Open the pool, retrying while PostgreSQL starts."""
    async for attempt in _waiting("postgres", settings):
        with attempt:
            try:
                return await Database.connect(
                    settings.database_url,
                    min_size=settings.db_pool_min,
                    max_size=settings.db_pool_max,
                )
            except UNAVAILABLE_ERRORS as exc:
                raise errors.DatabaseUnavailable() from exc
    raise AssertionError("unreachable")


async def connect_storage(settings: Settings) -> storage.Storage:
    """Build the storage client and wait until the bucket answers."""
    store = storage.Storage(settings)
    async for attempt in _waiting("minio", settings):
        with attempt:
            await store.ping()
    return store


def fastapi_telemetry() -> TelemetryConfig:
    """FastAPI's built-in OpenTelemetry (request spans, HTTP metrics, error logs) stays on
    when this process uses OpenTelemetry: a tracer provider is set (as under
    opentelemetry-instrument) or OTEL_* / FASTAPI_OTEL_* variables are. Otherwise it is off,
    decided once here: left on, FastAPI looks for providers on every request (~3% of a create).
    """
    in_use = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider) or any(
        name.startswith(("OTEL_", "FASTAPI_OTEL_")) for name in os.environ
    )
    return {} if in_use else {"tracing": False, "metrics": False, "logs": False}


def create_app(settings: Settings) -> FastAPI:
    """The broker's ASGI app; the pool and clients live on app.state during its lifespan."""

    policies = load_policies(settings)  # a bad policies file stops the start here

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = await connect_database(settings)
        try:
            store = await connect_storage(settings)
            app.state.db = db
            app.state.storage = store
            app.state.uploads = uploads.Uploads(
                db,
                store,
                policies,
                multipart_threshold=settings.multipart_threshold_bytes,
                part_size=settings.multipart_part_size_bytes,
                download_ttl=settings.download_url_ttl_seconds,
            )
            app.state.multipart = multipart.Multipart(app.state.uploads)
            app.state.finalizer = finalization.Finalizer(db, store)
            app.state.reconciler = reconciler.Reconciler(
                db,
                store,
                app.state.finalizer,
                policies,
                orphan_grace_seconds=settings.orphan_grace_seconds,
            )
            app.state.admin = admin.Admin(db, store, app.state.reconciler)
            app.state.live = live.UploadChanges(settings.database_url)
            await app.state.live.start()
            background = None
            if settings.reconcile_interval_seconds > 0:
                background = asyncio.create_task(
                    app.state.reconciler.run_forever(
                        settings.reconcile_interval_seconds,
                        settings.orphan_sweep_interval_seconds,
                    )
                )
            # Start-up objects live for the whole process: keep them out of the garbage
            # collector's full passes, which otherwise stall the event loop under load.
            gc.collect()
            gc.freeze()
            # Requests free their objects by reference counting; the cycle collector's passes
            # (young every 700 allocations by default) mostly find nothing and cost latency.
            gc.set_threshold(GC_YOUNG_THRESHOLD, 100, 100)
            log.info("startup.ready", extra={"bucket": settings.s3_bucket})
            yield
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
            await app.state.live.stop()
        finally:
            await db.close()

    app = FastAPI(
        title="broker",
        summary="Presigned-URL uploads to MinIO, recorded in PostgreSQL.",
        version="0.1.0",
        lifespan=lifespan,
        telemetry=fastapi_telemetry(),
    )
    app.state.settings = settings
    app.add_middleware(RequestContext)
    if settings.cors_origins:
        # Added last, so it is outermost: error responses carry CORS headers too.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=["x-request-id", "idempotent-replayed"],
            max_age=600,
        )
    for router in (
        uploads_api.router,
        parts.router,
        status_stream.router,
        admin_api.router,
        webhooks.router,
        health.router,
        ops.router,
        companion.router,
    ):
        # The routes themselves, not app.include_router(router): FastAPI keeps an included
        # router as a branch that it resolves again on every request (~20 µs of each create).
        # Our routers set their paths and tags themselves, so nothing is lost.
        app.router.routes.extend(router.routes)
    _install_error_handlers(app)
    return app


def _error_response(error: errors.BrokerError) -> JSONResponse:
    return JSONResponse(error.to_body(), status_code=error.status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.BrokerError)
    async def broker_error(request: Request, exc: errors.BrokerError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("request.unavailable", extra={"code": exc.code, "path": request.url.path})
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        if any(problem["type"] == "json_invalid" for problem in problems):
            return _error_response(errors.MalformedRequest())
        details = [
            {
                "field": ".".join(str(part) for part in problem["loc"][1:]) or problem["loc"][0],
                "in": problem["loc"][0],
                "message": problem["msg"].removeprefix("Value error, "),
            }
            for problem in problems
        ]
        return _error_response(errors.InvalidRequest(details=details))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error: errors.BrokerError
        if exc.status_code == 404:
            error = errors.RouteNotFound()
        elif exc.status_code == 405:
            error = errors.MethodNotAllowed()
        else:
            error = errors.BrokerError(str(exc.detail))
        response = _error_response(error)
        if exc.status_code < 500:
            response.status_code = exc.status_code
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The server logs the exception with its traceback; the client learns nothing more.
        return _error_response(errors.BrokerError("internal error"))
