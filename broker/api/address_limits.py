"""Failed authentications per client address: counted when a request is refused 401, and a
blocked address refused 429 before its request is routed (so before its token is checked).

The client address is the TCP peer's, or, from a proxy listed in BROKER_FORWARDED_ALLOW_IPS,
the one its X-Forwarded-For names (uvicorn rewrites the ASGI scope's `client` before the app
sees it). Health probes are never refused.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.domain import errors
from broker.flows.rate_limits import RateLimiter

log = logging.getLogger("broker.rate_limits")
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


def _limiter(scope: Scope) -> RateLimiter | None:
    flows = getattr(scope["app"].state, "flows", None)
    return flows.rate_limiter if flows is not None else None


def client_address(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


class RefuseBlockedAddresses:
    """A pure ASGI middleware: 429 for an address this process knows to be over its
    failed-authentication limit; nothing but a dictionary lookup otherwise."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in PROBES:
            limiter = _limiter(scope)
            refusal = limiter.address_blocked(client_address(scope)) if limiter else None
            if refusal is not None:
                response = JSONResponse(
                    refusal.to_body(), status_code=refusal.status, headers=refusal.headers()
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def count_failed_authentication(
    request: Request, refused: errors.BrokerError
) -> errors.BrokerError:
    """What to answer for a request refused 401: the 401 itself, or 429 once its address
    is over BROKER_RATE_LIMIT_FAILED_AUTH. With the database down, the 401 (uncounted)."""
    limiter = _limiter(request.scope)
    if limiter is None:
        return refused
    try:
        over = await limiter.failed_authentication(client_address(request.scope))
    except errors.DatabaseUnavailable:
        log.warning("rate_limit.not_counted", extra={"action": "failed_auth"})
        return refused
    return over if over is not None else refused
