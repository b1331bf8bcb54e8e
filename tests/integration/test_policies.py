"""Upload policies, browser form POSTs, quotas and idempotent creation on real services."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests import samples
from tests.conftest import wait_for_status, wait_until_object_gone

PNG = samples.png(padding=50)


def create(api, headers, **fields):
    body = {"filename": "a.png", "content_type": "image/png", "size": len(PNG), **fields}
    return api.post("/v1/uploads", json=body, headers=headers)


def test_a_named_policy_sets_prefix_types_size_and_url_lifetime(api, auth_headers):
    response = create(api, auth_headers, policy="avatars")
    assert response.status_code == 201, response.text
    upload = response.json()
    assert upload["policy"] == "avatars"
    assert upload["key"].startswith("avatars/")
    assert "X-Amz-Expires=120&" in upload["upload"]["url"]

    too_big = create(api, auth_headers, policy="avatars", size=64 * 1024 + 1)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["details"] == {"max_size": 65536, "policy": "avatars"}
    wrong_type = create(api, auth_headers, policy="avatars", content_type="image/gif")
    assert wrong_type.status_code == 415
    assert wrong_type.json()["error"]["code"] == "ERR_CONTENT_TYPE_NOT_ALLOWED"


def test_an_unknown_policy_is_422(api, auth_headers):
    response = create(api, auth_headers, policy="nope")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "ERR_UNKNOWN_POLICY"
    assert "avatars" in response.json()["error"]["details"]["policies"]


def post_form(upload, data, content_type="image/png"):
    form = upload["upload"]
    return httpx.post(
        form["url"], data=form["fields"], files={"file": ("a.png", data, content_type)}, timeout=30
    )


def test_a_browser_form_post_is_finalized(api, auth_headers):
    upload = create(api, auth_headers, policy="avatars", method="POST").json()
    assert upload["upload"]["method"] == "POST"
    assert upload["upload"]["fields"]["key"] == upload["key"]
    assert post_form(upload, PNG).status_code == 204
    record = wait_for_status(api, auth_headers, upload["id"], "finalized")
    assert record["transfer"] == "post"


def test_minio_refuses_a_form_post_larger_than_declared(api, auth_headers):
    upload = create(api, auth_headers, policy="avatars", method="POST").json()
    response = post_form(upload, PNG + b"more bytes than promised")
    assert response.status_code == 400
    assert "EntityTooLarge" in response.text
    assert (
        api.get(f"/v1/uploads/{upload['id']}", headers=auth_headers).json()["status"] == "pending"
    )


def test_minio_refuses_a_form_post_with_another_content_type(api, auth_headers):
    upload = create(api, auth_headers, policy="avatars", method="POST").json()
    fields = {**upload["upload"]["fields"], "Content-Type": "text/html"}
    response = httpx.post(upload["upload"]["url"], data=fields, files={"file": ("a", PNG)})
    assert response.status_code == 403


def test_an_object_larger_than_the_policy_allows_is_rejected_and_deleted(
    api, auth_headers, s3, settings
):
    upload = create(api, auth_headers, policy="avatars").json()
    # Written past the signature (only storage credentials can): the broker still refuses it.
    s3.put_object(
        Bucket=settings.s3_bucket,
        Key=upload["key"],
        Body=b"x" * (65 * 1024),
        ContentType="image/png",
    )
    assert (
        wait_for_status(api, auth_headers, upload["id"], "rejected")["reject_reason"]
        == "size_mismatch"
    )
    wait_until_object_gone(s3, settings.s3_bucket, upload["key"])


def test_fifty_parallel_creates_against_a_quota_of_ten_leave_exactly_ten(broker, auth_headers, api):
    async def burst():
        async with httpx.AsyncClient(base_url=broker, timeout=30) as client:
            body = {
                "filename": "q.bin",
                "content_type": "application/octet-stream",
                "size": 1000,
                "policy": "limited",
            }
            return await asyncio.gather(
                *(client.post("/v1/uploads", json=body, headers=auth_headers) for _ in range(50))
            )

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 10 + [403] * 40
    refused = next(r for r in responses if r.status_code == 403).json()["error"]
    assert refused["code"] == "ERR_QUOTA_EXCEEDED"
    pending = api.get(
        "/v1/uploads", params={"status": "pending", "limit": 100}, headers=auth_headers
    )
    assert len(pending.json()["items"]) == 10

    # Deleting one releases its share of the quota.
    first = next(r for r in responses if r.status_code == 201).json()
    api.delete(f"/v1/uploads/{first['id']}", headers=auth_headers)
    body = {"filename": "q.bin", "content_type": "text/plain", "size": 10, "policy": "limited"}
    assert api.post("/v1/uploads", json=body, headers=auth_headers).status_code == 201
    assert api.post("/v1/uploads", json=body, headers=auth_headers).status_code == 403


def test_the_byte_quota_counts_sizes(api, auth_headers):
    body = {
        "filename": "q.bin",
        "content_type": "text/plain",
        "size": 1024 * 1024,
        "policy": "limited",
    }
    for _ in range(10):
        assert api.post("/v1/uploads", json=body, headers=auth_headers).status_code == 201
    assert (
        api.post("/v1/uploads", json={**body, "size": 1}, headers=auth_headers).status_code == 403
    )


def test_the_same_idempotency_key_returns_the_same_upload(api, auth_headers):
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = create(api, {**auth_headers, **key})
    second = create(api, {**auth_headers, **key})
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["upload"]["method"] == "PUT"
    assert len(api.get("/v1/uploads", headers=auth_headers).json()["items"]) == 1

    changed = create(api, {**auth_headers, **key}, size=len(PNG) + 1)
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "ERR_IDEMPOTENCY_KEY_REUSED"


def test_parallel_retries_with_one_idempotency_key_make_one_upload(broker, auth_headers, api):
    headers = {**auth_headers, "Idempotency-Key": "retry-" + uuid.uuid4().hex}
    body = {"filename": "a.png", "content_type": "image/png", "size": 10}

    async def burst():
        async with httpx.AsyncClient(base_url=broker, timeout=30) as client:
            return await asyncio.gather(
                *(client.post("/v1/uploads", json=body, headers=headers) for _ in range(10))
            )

    responses = asyncio.run(burst())
    assert {r.json()["id"] for r in responses} == {responses[0].json()["id"]}
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]


@pytest.mark.parametrize("key", ["", "has space", "x" * 256])
def test_a_malformed_idempotency_key_is_422(api, auth_headers, key):
    response = create(api, {**auth_headers, "Idempotency-Key": key})
    assert response.status_code == 422
