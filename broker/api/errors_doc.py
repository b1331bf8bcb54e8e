"""OpenAPI descriptions of the error responses a route can give."""

from __future__ import annotations

from typing import Any

from broker.api import schemas

DESCRIPTIONS = {
    400: "Malformed request (body is not JSON, a bad cursor, or a part list storage refuses)",
    401: "Missing, expired or forged token, or one of an issuer this broker does not trust "
    "(the code says which: ERR_UNAUTHORIZED, ERR_TOKEN_*)",
    403: "Quota exceeded or a policy the token does not grant (uploads), not an admin token "
    "(admin routes), or a browser origin BROKER_CORS_ORIGINS does not allow (Uppy routes)",
    404: "No such upload (or it belongs to someone else)",
    409: "The upload is not in a state that allows this, or an Idempotency-Key was reused",
    413: "The file is larger than allowed",
    415: "The content type is not allowed",
    422: "A field is invalid; details list each problem",
    429: "Too many requests (ERR_RATE_LIMITED): over the owner's rate limit for this action, "
    "or too many failed authentications from this client address; retry after the "
    "Retry-After header's seconds",
    503: "The database, storage or the token's identity provider is unavailable; retry later "
    "(Retry-After says when, where known)",
}


RETRY_AFTER = {
    "Retry-After": {
        "description": "Whole seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` argument of a route for these error statuses. A route that can
    answer 401 can also answer 429: its caller's address may be over its limit of failed
    authentications (broker/api/address_limits.py)."""
    if 401 in statuses and 429 not in statuses:
        statuses = (*statuses, 429)
    described: dict[int | str, dict[str, Any]] = {
        code: {"model": schemas.ErrorResponse, "description": DESCRIPTIONS[code]}
        for code in sorted(statuses)
    }
    if 429 in described:
        described[429]["headers"] = RETRY_AFTER
    return described
