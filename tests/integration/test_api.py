"""The HTTP API's contract: auth, ownership, validation errors, listing."""

from __future__ import annotations

import gc
import time
import uuid

import jwt
import pytest

from broker import auth
from tests.conftest import create_upload

# As the interpreter set them, before any test built an app (collection comes first).
DEFAULT_GC_THRESHOLDS = gc.get_threshold()

VALID = {"filename": "a.txt", "content_type": "text/plain", "size": 10}


def test_health_and_readiness(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"status": "ready"}


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "ERR_UNAUTHORIZED"),
        ("Basic abc", "ERR_UNAUTHORIZED"),
        ("Bearer not-a-jwt", "ERR_TOKEN_INVALID"),
        (
            "Bearer "
            + jwt.encode({"sub": "mallory", "exp": int(time.time()) + 60}, "x" * 32, "HS256"),
            "ERR_TOKEN_SIGNATURE",
        ),
        ("Bearer " + jwt.encode({"sub": "mallory"}, "x" * 32, "HS256"), "ERR_TOKEN_SIGNATURE"),
    ],
)
def test_requests_without_a_valid_token_are_401(api, authorization, code):
    headers = {"Authorization": authorization} if authorization else {}
    for response in (
        api.post("/v1/uploads", json=VALID, headers=headers),
        api.get("/v1/uploads", headers=headers),
    ):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == code


@pytest.mark.parametrize("body", [b"{not json", b'{"filename": 42}', b"[]"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/uploads"),
        ("POST", f"/v1/uploads/{uuid.uuid4()}/parts"),
        ("POST", f"/v1/uploads/{uuid.uuid4()}/complete"),
        ("POST", "/s3/multipart"),
        ("POST", "/uppy/not-a-token/s3/multipart"),
        ("POST", "/s3/multipart/x/complete?key=k"),
        ("POST", f"/v1/admin/uploads/{uuid.uuid4()}/expire"),
    ],
)
def test_a_bad_body_without_a_token_is_401_not_a_validation_error(api, method, path, body):
    """Every route checks who is asking before it reads the body."""
    response = api.request(method, path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] in {"ERR_UNAUTHORIZED", "ERR_TOKEN_INVALID"}


def test_a_create_app_leaves_the_garbage_collector_alone(broker):
    """The app factory (run here by the test server) does not tune GC; `broker serve` does."""
    assert gc.get_threshold() == DEFAULT_GC_THRESHOLDS
    assert gc.get_freeze_count() == 0


def test_an_expired_token_is_401(api, settings):
    # Beyond the clock skew allowance (BROKER_JWT_LEEWAY_SECONDS, 30 s by default).
    token = auth.issue_token(settings.jwt_secret, "alice", ttl_seconds=-40)
    response = api.get("/v1/uploads", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "ERR_TOKEN_EXPIRED"
    almost = auth.issue_token(settings.jwt_secret, "alice", ttl_seconds=-10)
    assert api.get("/v1/uploads", headers={"Authorization": f"Bearer {almost}"}).status_code == 200


def test_another_owners_upload_is_not_found(api, auth_headers, token_for):
    upload = create_upload(api, auth_headers, b"private")
    stranger = token_for("someone-else")
    for method, path in [
        ("GET", f"/v1/uploads/{upload['id']}"),
        ("GET", f"/v1/uploads/{upload['id']}/download"),
        ("DELETE", f"/v1/uploads/{upload['id']}"),
    ]:
        response = api.request(method, path, headers=stranger)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "ERR_UPLOAD_NOT_FOUND"
    assert (
        api.get(f"/v1/uploads/{upload['id']}", headers=auth_headers).json()["status"] == "pending"
    )


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({**VALID, "size": 0}, 422, "ERR_VALIDATION", "size"),
        ({**VALID, "size": -1}, 422, "ERR_VALIDATION", "size"),
        ({**VALID, "size": "ten"}, 422, "ERR_VALIDATION", "size"),
        ({**VALID, "size": 64 * 1024 * 1024 + 1}, 413, "ERR_UPLOAD_TOO_LARGE", None),
        ({**VALID, "content_type": "video/mp4"}, 415, "ERR_CONTENT_TYPE_NOT_ALLOWED", None),
        ({**VALID, "content_type": "not a type"}, 422, "ERR_VALIDATION", "content_type"),
        (
            {**VALID, "content_type": "text/plain\r\nx-evil: 1"},
            422,
            "ERR_VALIDATION",
            "content_type",
        ),
        ({**VALID, "filename": ""}, 422, "ERR_VALIDATION", "filename"),
        ({**VALID, "filename": "x" * 256}, 422, "ERR_VALIDATION", "filename"),
        ({**VALID, "filename": "../etc/passwd"}, 422, "ERR_VALIDATION", "filename"),
        ({**VALID, "filename": "a\\b.txt"}, 422, "ERR_VALIDATION", "filename"),
        ({**VALID, "filename": "a\nb.txt"}, 422, "ERR_VALIDATION", "filename"),
        ({**VALID, "filename": "gpj\u202e.exe"}, 422, "ERR_VALIDATION", "filename"),
        ({**VALID, "sha256": "abc"}, 422, "ERR_VALIDATION", "sha256"),
        (
            {**VALID, "metadata": {f"k{i}": "v" for i in range(17)}},
            422,
            "ERR_VALIDATION",
            "metadata",
        ),
        ({**VALID, "metadata": {"k": "v" * 513}}, 422, "ERR_VALIDATION", "metadata"),
        ({**VALID, "metadata": {"bad key": "v"}}, 422, "ERR_VALIDATION", "metadata"),
        ({**VALID, "metadata": {"k": 1}}, 422, "ERR_VALIDATION", "metadata.k"),
        ({**VALID, "key": "chosen/by/me"}, 422, "ERR_VALIDATION", "key"),
        ({"filename": "a.txt", "size": 10}, 422, "ERR_VALIDATION", "content_type"),
    ],
)
def test_invalid_create_requests_get_a_clear_error_and_no_record(
    api, auth_headers, sql, body, status, code, field
):
    response = api.post("/v1/uploads", json=body, headers=auth_headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    if field:
        assert field in [detail["field"] for detail in error["details"]]
    assert api.get("/v1/uploads", headers=auth_headers).json()["items"] == []
    assert sql("SELECT count(*) AS n FROM uploads")[0]["n"] == 0


def test_a_body_that_is_not_json_is_400(api, auth_headers):
    response = api.post(
        "/v1/uploads",
        content=b"{not json",
        headers={**auth_headers, "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "ERR_MALFORMED_REQUEST"


def test_unknown_routes_methods_and_ids_have_json_errors(api, auth_headers):
    assert api.get("/nope").json()["error"]["code"] == "ERR_NOT_FOUND"
    assert (
        api.put("/v1/uploads", headers=auth_headers).json()["error"]["code"]
        == "ERR_METHOD_NOT_ALLOWED"
    )
    not_uuid = api.get("/v1/uploads/not-a-uuid", headers=auth_headers)
    assert not_uuid.status_code == 422 and not_uuid.json()["error"]["code"] == "ERR_VALIDATION"
    missing = api.get(f"/v1/uploads/{uuid.uuid4()}", headers=auth_headers)
    assert missing.status_code == 404


def test_listing_is_newest_first_paginated_and_filtered(api, auth_headers):
    created = [create_upload(api, auth_headers, b"x" * (i + 1))["id"] for i in range(5)]
    pages, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/uploads", params=params, headers=auth_headers).json()
        pages.append([item["id"] for item in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    newest_first = list(reversed(created))
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]

    api.delete(f"/v1/uploads/{created[0]}", headers=auth_headers)
    deleted = api.get("/v1/uploads", params={"status": "deleted"}, headers=auth_headers).json()
    assert [item["id"] for item in deleted["items"]] == [created[0]]
    pending = api.get("/v1/uploads", params={"status": "pending"}, headers=auth_headers).json()
    assert len(pending["items"]) == 4


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"cursor": "garbage"}, 400, "ERR_INVALID_CURSOR"),
        ({"limit": 0}, 422, "ERR_VALIDATION"),
        ({"limit": 101}, 422, "ERR_VALIDATION"),
        ({"status": "lost"}, 422, "ERR_VALIDATION"),
    ],
)
def test_bad_listing_parameters(api, auth_headers, params, status, code):
    response = api.get("/v1/uploads", params=params, headers=auth_headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_openapi_documents_every_route_with_a_summary(api):
    spec = api.get("/openapi.json").json()
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            assert operation.get("summary") or operation.get("description"), f"{method} {path}"
    create = spec["paths"]["/v1/uploads"]["post"]["requestBody"]["content"]["application/json"]
    assert create["schema"]["examples"] and "filename" in create["schema"]["properties"]


def test_the_create_response_matches_its_documented_schema(api, auth_headers):
    from broker.api import schemas

    for fields in (
        {},
        {"method": "POST", "content_type": "image/png", "policy": "avatars"},
        {"multipart": True},
    ):
        body = {"filename": "a.png", "content_type": "image/png", "size": 10, **fields}
        response = api.post("/v1/uploads", json=body, headers=auth_headers)
        assert response.status_code == 201, response.text
        parsed = schemas.CreatedUpload.model_validate(response.json())
        assert parsed.model_dump(mode="json") == response.json()


def test_cors_preflight_allows_the_configured_origin_only(api, found_services, broker):
    import httpx

    allowed, foreign = found_services.page_origin, f"http://127.0.0.1:{found_services.foreign_port}"
    for path, method, headers in [
        ("/v1/uploads", "POST", "authorization,content-type,idempotency-key"),
        ("/v1/uploads/00000000-0000-0000-0000-000000000000/events", "GET", "last-event-id"),
    ]:
        preflight = {
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        }
        ok = httpx.options(broker + path, headers={"Origin": allowed, **preflight})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == allowed
        refused = httpx.options(broker + path, headers={"Origin": foreign, **preflight})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
    listed = api.get("/healthz", headers={"Origin": allowed})
    assert "x-request-id" in listed.headers["access-control-expose-headers"].lower()


def test_minio_cors_lets_the_page_put_and_read_the_etag(api, auth_headers, found_services):
    import httpx

    upload = create_upload(api, auth_headers, b"cors")
    preflight = httpx.options(
        upload["upload"]["url"],
        headers={
            "Origin": found_services.page_origin,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type,if-none-match",
        },
    )
    assert preflight.status_code in (200, 204)
    assert preflight.headers["access-control-allow-origin"] == found_services.page_origin
    put = httpx.put(
        upload["upload"]["url"],
        content=b"cors",
        headers={**upload["upload"]["headers"], "Origin": found_services.page_origin},
    )
    assert put.status_code == 200
    assert "etag" in put.headers["access-control-expose-headers"].lower()
