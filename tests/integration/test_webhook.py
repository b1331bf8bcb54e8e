"""The MinIO webhook: authentication, duplicates, late and out-of-order events, outages."""

from __future__ import annotations

import json
from urllib.parse import quote_plus

import httpx

from tests.conftest import create_upload, put_bytes, wait_for_status, wait_until_object_gone


def minio_event(name: str, bucket: str, key: str, size: int = 0, etag: str = "", ctype: str = ""):
    """A notification shaped like MinIO's (keys query-escaped, empty fields omitted)."""
    obj = {"key": quote_plus(key), "sequencer": "1"}
    if size:
        obj["size"] = size
    if etag:
        obj["eTag"] = etag
    if ctype:
        obj["contentType"] = ctype
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "eventTime": "2026-01-01T00:00:00.000Z",
        "eventName": name,
        "s3": {"bucket": {"name": bucket}, "object": obj},
    }
    return {"EventName": name, "Key": f"{bucket}/{key}", "Records": [record]}


def post_event(api: httpx.Client, settings, body) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return api.post(
        "/v1/webhooks/minio",
        content=raw,
        headers={
            "Authorization": f"Bearer {settings.webhook_token}",
            "content-type": "application/json",
        },
    )


def finalized_upload(api, auth_headers, data: bytes = b"settled bytes"):
    upload = create_upload(api, auth_headers, data)
    put_bytes(upload, data)
    return upload, wait_for_status(api, auth_headers, upload["id"], "finalized")


def test_webhook_without_the_token_is_401(api, settings):
    body = json.dumps(minio_event("s3:ObjectCreated:Put", settings.s3_bucket, "uploads/x")).encode()
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": settings.webhook_token},
    ):
        response = api.post("/v1/webhooks/minio", content=body, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "ERR_WEBHOOK_UNAUTHORIZED"
        assert settings.webhook_token not in response.text


def test_a_duplicate_created_event_changes_nothing(api, auth_headers, settings):
    upload, record = finalized_upload(api, auth_headers)
    event = minio_event(
        "s3:ObjectCreated:Put",
        settings.s3_bucket,
        upload["key"],
        upload["size"],
        record["etag"],
        "text/plain",
    )
    response = post_event(api, settings, event)
    assert response.status_code == 200
    assert response.json()["outcomes"] == ["ignored_already_final"]
    assert api.get(f"/v1/uploads/{upload['id']}", headers=auth_headers).json() == record


def test_a_late_event_with_other_facts_cannot_reject_a_finalized_upload(
    api, auth_headers, settings
):
    upload, _record = finalized_upload(api, auth_headers)
    event = minio_event(
        "s3:ObjectCreated:Put", settings.s3_bucket, upload["key"], 999, "bogus", "text/html"
    )
    assert post_event(api, settings, event).json()["outcomes"] == ["ignored_already_final"]
    assert (
        api.get(f"/v1/uploads/{upload['id']}", headers=auth_headers).json()["status"] == "finalized"
    )


def test_removed_then_stale_created_event_ends_deleted_with_no_object(
    api, auth_headers, settings, s3
):
    upload, record = finalized_upload(api, auth_headers)
    created = minio_event(
        "s3:ObjectCreated:Put",
        settings.s3_bucket,
        upload["key"],
        upload["size"],
        record["etag"],
        "text/plain",
    )
    removed = minio_event("s3:ObjectRemoved:Delete", settings.s3_bucket, upload["key"])
    assert post_event(api, settings, removed).json()["outcomes"] == ["deleted"]
    assert post_event(api, settings, removed).json()["outcomes"] == ["ignored_not_live"]
    assert post_event(api, settings, created).json()["outcomes"] == ["removed_dead_object"]
    assert (
        api.get(f"/v1/uploads/{upload['id']}", headers=auth_headers).json()["status"] == "deleted"
    )
    wait_until_object_gone(s3, settings.s3_bucket, upload["key"])


def test_unknown_keys_other_buckets_and_other_events_are_acknowledged(api, settings):
    bodies = [
        minio_event("s3:ObjectCreated:Put", settings.s3_bucket, "uploads/not-ours", 5),
        minio_event("s3:ObjectCreated:Put", "some-other-bucket", "uploads/x", 5),
        minio_event("s3:ObjectAccessed:Get", settings.s3_bucket, "uploads/x"),
        minio_event("s3:ObjectRemoved:NoOP", settings.s3_bucket, "uploads/x"),
    ]
    outcomes = [post_event(api, settings, body).json()["outcomes"] for body in bodies]
    assert outcomes == [["ignored_unknown_key"], ["ignored_other_bucket"], [], []]


def test_malformed_and_empty_bodies_are_acknowledged_not_retried(api, settings):
    for raw in (
        b"",
        b"not json",
        b'{"Records": [{"eventName": "s3:ObjectCreated:Put"}]}',
        b"[1,2]",
    ):
        response = post_event(api, settings, raw)
        assert response.status_code == 200, raw


def test_a_key_with_spaces_and_unicode_is_decoded(api, auth_headers, settings):
    # Keys are broker-made, but the decoder must still undo MinIO's query-escaping exactly.
    event = minio_event("s3:ObjectCreated:Put", settings.s3_bucket, "uploads/a b+c/ü✓", 3)
    assert post_event(api, settings, event).json()["outcomes"] == ["ignored_unknown_key"]


def test_an_event_while_postgres_is_down_is_redelivered_and_finalizes(
    api, auth_headers, settings, pg_proxy
):
    data = b"uploaded during a database outage"
    upload = create_upload(api, auth_headers, data)
    pg_proxy.cut()
    try:
        probe = minio_event("s3:ObjectCreated:Put", settings.s3_bucket, upload["key"], len(data))
        response = post_event(api, settings, probe)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "ERR_DATABASE_UNAVAILABLE"
        # MinIO accepts the bytes; its direct target gets a 503 and drops the event, the
        # queued target keeps it on disk and retries.
        assert put_bytes(upload, data).status_code == 200
        readyz = api.get("/readyz")
        assert readyz.status_code == 503
        assert readyz.json()["error"]["details"] == {"unavailable": ["postgres"]}
    finally:
        pg_proxy.restore()
    wait_for_status(api, auth_headers, upload["id"], "finalized", timeout=30)
    assert api.get("/readyz").status_code == 200
