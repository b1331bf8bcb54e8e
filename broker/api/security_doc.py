"""OpenAPI descriptions of how each route authenticates: the security schemes of the
document, and the requirement each kind of route declares (the routes check it themselves;
this only tells clients and the fuzzer, tests/integration/test_openapi_fuzz.py)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

SCHEMES: dict[str, dict[str, Any]] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An HS256 JWT whose `sub` owns the uploads (`broker token --sub NAME`).",
    },
    "adminBearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT with the admin claim (`broker token --admin`); a token without "
        "it gets 403.",
    },
    "webhookBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "BROKER_WEBHOOK_TOKEN, as MinIO's webhook target sends it.",
    },
    "eventsToken": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The token of the upload's `events_url`, for EventSource (no headers).",
    },
}

Requirement = list[dict[str, list[str]]]
BEARER: Requirement = [{"bearer": []}]
ADMIN: Requirement = [{"adminBearer": []}]
WEBHOOK: Requirement = [{"webhookBearer": []}]
EVENTS: Requirement = [{"bearer": []}, {"eventsToken": []}]
# /uppy/{token}/s3/...: the token (scope 'uppy') is a path parameter, which no security
# scheme can describe (the parameter says so). The Companion routes are included twice, the
# same route objects under two prefixes, so this one is set on the document.
PATH_TOKEN_PREFIX = "/uppy/{token}"
IN_PATH: Requirement = []


def install(app: FastAPI) -> None:
    """Add the security schemes to the app's OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            document.setdefault("components", {})["securitySchemes"] = SCHEMES
            for path, operations in document.get("paths", {}).items():
                if path.startswith(PATH_TOKEN_PREFIX + "/"):
                    for operation in operations.values():
                        operation["security"] = IN_PATH
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
