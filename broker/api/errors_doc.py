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
    503: "The database, storage or the token's identity provider is unavailable; retry later "
    "(Retry-After says when, where known)",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` argument of a route for these error statuses."""
    return {
        code: {"model": schemas.ErrorResponse, "description": DESCRIPTIONS[code]}
        for code in statuses
    }
