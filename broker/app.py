"""The FastAPI application: create_app(settings), its lifespan and its error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from opentelemetry import trace
from starlette.exceptions import HTTPException as StarletteHTTPException

from broker import api, wiring
from broker.api import address_limits, status_stream
from broker.config import Settings
from broker.domain import errors
from broker.domain.policies import load_policies
from broker.issuers import load_issuers
from broker.request_context import RequestContext

log = logging.getLogger("broker.app")
# What browsers may send to the broker: its JSON API, SSE reconnects, Uppy's plugin.
CORS_REQUEST_HEADERS = [
    "authorization",
    "content-type",
    "idempotency-key",
    "x-request-id",
    "last-event-id",
    "uppy-auth-token",
]


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


def create_app(settings: Settings, after_startup: Callable[[], None] | None = None) -> FastAPI:
    """The broker's ASGI app; its use cases live on app.state.flows during its lifespan.

    `after_startup` runs once everything is connected, before the first request (the
    server entry point tunes the garbage collector there).
    """

    load_policies(settings)  # a bad policies or issuers file stops the start here
    load_issuers(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with wiring.connected(
            settings, pool_min=settings.db_pool_min, pool_max=settings.db_pool_max
        ) as flows:
            app.state.flows = flows
            await flows.live.start()
            background = None
            if settings.reconcile_interval_seconds > 0:
                background = asyncio.create_task(
                    flows.reconciler.run_forever(
                        settings.reconcile_interval_seconds,
                        settings.orphan_sweep_interval_seconds,
                    )
                )
            sender = None
            if settings.webhook_sender:
                sender = asyncio.create_task(flows.webhook_sender.run_forever())
            scanner = None
            if settings.scanner:
                scanner = asyncio.create_task(flows.scanner.run_forever())
            if after_startup is not None:
                after_startup()
            log.info("startup.ready", extra={"bucket": settings.s3_bucket})
            try:
                yield
            finally:
                for task in (background, sender, scanner):
                    if task is not None:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                await flows.live.stop()
                log.info("shutdown.background_stopped")
        log.info("shutdown.pool_closed")

    app = FastAPI(
        title="broker",
        summary="Presigned-URL uploads to MinIO, recorded in PostgreSQL.",
        version="0.1.0",
        lifespan=lifespan,
        telemetry=fastapi_telemetry(),
        # /docs is broker.api.api_docs: Swagger UI with assets served here, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    # Innermost: live status streams skip the router (see the class).
    app.add_middleware(status_stream.StatusStreamShortcut)
    # Inside the request context: a refusal carries a request id and is timed.
    app.add_middleware(address_limits.RefuseBlockedAddresses)
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
    for router in api.ROUTERS:
        # The routes themselves, not app.include_router(router): FastAPI keeps an included
        # router as a branch that it resolves again on every request (~20 µs of each create).
        # Our routers set their paths and tags themselves, so nothing is lost.
        app.router.routes.extend(router.routes)
    _install_error_handlers(app)
    api.security_doc.install(app)
    return app


def _error_response(error: errors.BrokerError) -> JSONResponse:
    return JSONResponse(error.to_body(), status_code=error.status, headers=error.headers())


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.BrokerError)
    async def broker_error(request: Request, exc: errors.BrokerError) -> JSONResponse:
        if exc.status == 401:
            exc = await address_limits.count_failed_authentication(request, exc)
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
