"""Property-based fuzzing of every operation in the OpenAPI document (schemathesis), against
the real broker of the test (real PostgreSQL and MinIO): no 5xx, every status code returned
is documented for its operation, every response body matches its documented schema and
content type.

`make test` runs a bounded, derandomized run (FUZZ_EXAMPLES examples per operation, the same
ones every time); `make fuzz` sets BROKER_FUZZ_EXAMPLES higher and BROKER_FUZZ_SEED to a
random seed, printed so that a failure can be replayed (docs/testing.md).

Each operation is called twice over: with the credentials its `security` says it needs (a
bearer token, an admin token, the webhook token, an Uppy-scoped token in the path), so the
fuzzer reaches the handlers; and with none at all, where an operation that documents a
security requirement must answer 401 and one that documents none must not.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from broker import auth, config
from broker.app import create_app

# CI's run, inside `make test`: about 60 s on two cores (docs/testing.md has the figure).
EXAMPLES = int(os.environ.get("BROKER_FUZZ_EXAMPLES", "25"))
SEED = os.environ.get("BROKER_FUZZ_SEED")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _document() -> dict[str, Any]:
    """The OpenAPI document, as clients/ts/scripts/dump-openapi.sh writes it: no services."""
    settings = config.Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url="postgresql://x@127.0.0.1/x",
        s3_endpoint="http://127.0.0.1:9000",
        s3_access_key="a",
        s3_secret_key="b",
        jwt_secret="0123456789abcdef0123456789abcdef",
        webhook_token="webhook-token-0123456789",
    )
    return create_app(settings).openapi()


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)

if SEED is None:
    FUZZ_SETTINGS = hypothesis.settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
else:
    FUZZ_SETTINGS = hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )


def _seeded(test: Callable[..., None]) -> Callable[..., None]:
    return hypothesis.seed(int(SEED))(test) if SEED is not None else test


# The test server's HTTP parser (uvicorn, h11) answers a request head over 16 KiB with a
# plain-text 400 before the broker sees it: that limit belongs to the server in front of the
# app, not to the API, so such requests (6,000 four-byte characters, percent-encoded) are
# not sent.
MAX_TARGET = 8 * 1024


def fits_the_server(case: schemathesis.Case) -> bool:
    path = "".join(quote(str(value)) for value in (case.path_parameters or {}).values())
    return len(path) + len(urlencode(case.query or {}, doseq=True)) < MAX_TARGET


def security_of(case: schemathesis.Case) -> list[dict[str, list[str]]]:
    operation = DOCUMENT["paths"][case.operation.path][case.operation.method.lower()]
    return operation.get("security", DOCUMENT.get("security", []))  # type: ignore[no-any-return]


@pytest.fixture
def credentials(settings: config.Settings) -> dict[str, str]:
    return {
        "bearer": auth.issue_token(settings.jwt_secret, "fuzz-user"),
        "admin": auth.issue_token(settings.jwt_secret, "fuzz-admin", admin=True),
        "uppy": auth.issue_token(settings.jwt_secret, "fuzz-user", scope=auth.UPPY_SCOPE),
        "webhook": settings.webhook_token,
    }


def authenticate(case: schemathesis.Case, credentials: dict[str, str]) -> dict[str, str]:
    """The headers (and the path token) the operation's documented security asks for."""
    if "token" in case.path_parameters:
        case.path_parameters["token"] = credentials["uppy"]
    names = {name for requirement in security_of(case) for name in requirement}
    if "adminBearer" in names:
        return {"Authorization": f"Bearer {credentials['admin']}"}
    if "webhookBearer" in names:
        return {"Authorization": f"Bearer {credentials['webhook']}"}
    if "bearer" in names:
        return {"Authorization": f"Bearer {credentials['bearer']}"}
    return {}


@_seeded
@FUZZ_SETTINGS
@schema.parametrize()
def test_every_operation_with_credentials(
    case: schemathesis.Case, broker: str, credentials: dict[str, str]
) -> None:
    hypothesis.assume(fits_the_server(case))
    headers = authenticate(case, credentials)
    case.call_and_validate(base_url=broker, headers=headers, checks=CHECKS, timeout=15)


@_seeded
@FUZZ_SETTINGS
@schema.parametrize()
def test_every_operation_without_credentials(case: schemathesis.Case, broker: str) -> None:
    hypothesis.assume(fits_the_server(case))
    for name in ("authorization", "Authorization"):
        (case.headers or {}).pop(name, None)
    if case.query:
        case.query.pop("token", None)  # the status stream's token
    response = case.call_and_validate(base_url=broker, checks=CHECKS, timeout=15)
    # The Uppy routes' token is in the path (a generated one here): no scheme describes it.
    secured = any(security_of(case)) or "token" in case.path_parameters
    if not secured:
        assert response.status_code != 401, response.text
    elif response.status_code != 401:
        # Only what is decided before the route is known may come first: a generated path
        # that matches no route, a method it does not have (schemathesis tries those), or
        # the status stream's upload id (checked by FastAPI before
        # the handler authenticates, as the `token` it accepts needs the id). Never a 404 of
        # an upload, a 403, a 409 or a 2xx.
        found = (response.status_code, response.json()["error"]["code"])
        assert (
            found == (404, "ERR_NOT_FOUND")
            or (found == (405, "ERR_METHOD_NOT_ALLOWED") and case.method != case.operation.method)
            or (case.operation.path == "/v1/uploads/{upload_id}/events" and found[0] == 422)
        ), response.text


def test_every_operation_documents_its_errors_and_security() -> None:
    """What the fuzzer may miss by chance: a body can always be malformed JSON (400), a
    parameter or body can always be invalid (422), and every route names how it
    authenticates (or, for the probes, that it needs nothing)."""
    open_routes = {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics")}
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            if "requestBody" in operation and path != "/v1/webhooks/minio":
                assert {"400", "422"} <= codes, (method, path)
            if operation.get("parameters") or "requestBody" in operation:
                if path != "/v1/webhooks/minio":
                    assert "422" in codes, (method, path)
            if (method, path) in open_routes:
                assert not operation.get("security"), (method, path)
                continue
            assert "security" in operation, (method, path)
            assert "401" in codes, (method, path)


def test_a_nul_character_is_a_422_not_a_500(api, auth_headers: dict[str, str]) -> None:
    # Found by the fuzzer: PostgreSQL's text refuses NUL, and that failure was a 500.
    response = api.get("/s3/multipart/x", params={"key": "a\x00b"}, headers=auth_headers)
    assert response.status_code == 422, response.text
    listing = api.get("/v1/uploads", params={"metadata[album]": "\x00"}, headers=auth_headers)
    assert listing.status_code in (200, 422), listing.text


@pytest.fixture
def admin_headers(settings: config.Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {auth.issue_token(settings.jwt_secret, 'op', admin=True)}"}


def test_numbers_past_postgresql_bigint_are_refused_not_a_500(
    api, admin_headers: dict[str, str]
) -> None:
    # Found by the fuzzer (seed 13526313): a delivery id past bigint was a 500 from asyncpg.
    huge = 10**25  # past 2**63 - 1, within the cursors' 30 characters
    retry = api.post(f"/v1/admin/webhook-deliveries/{huge}/retry", headers=admin_headers)
    assert retry.status_code == 422, retry.text
    # The same overflow through the cursors, and a digit that is not ASCII ("²".isdigit()).
    for cursor in (str(huge), "\u00b2"):
        listing = api.get(
            "/v1/admin/webhook-deliveries", params={"cursor": cursor}, headers=admin_headers
        )
        assert listing.status_code == 400, listing.text
    forged = json.dumps(["size", huge, str(uuid.uuid4())]).encode()
    cursor = base64.urlsafe_b64encode(forged).decode().rstrip("=")
    listing = api.get(
        "/v1/admin/uploads", params={"sort": "size", "cursor": cursor}, headers=admin_headers
    )
    assert listing.status_code == 400, listing.text
