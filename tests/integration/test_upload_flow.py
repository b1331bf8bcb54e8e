"""The main path against real services: create, PUT straight to MinIO, webhook, download."""

from __future__ import annotations

import hashlib
import urllib.parse

import httpx
import pytest

from tests.conftest import create_upload, put_bytes, wait_for_status, wait_until_object_gone


def test_upload_put_is_finalized_and_downloads_the_same_bytes(api, auth_headers):
    data = b"the quick brown fox\n" * 1000
    upload = create_upload(api, auth_headers, data, filename="fox.txt")
    assert upload["status"] == "pending"
    assert upload["upload"]["method"] == "PUT"
    assert upload["key"].startswith("uploads/") and "fox" not in upload["key"]

    assert put_bytes(upload, data).status_code == 200
    record = wait_for_status(api, auth_headers, upload["id"], "finalized")
    assert record["etag"] == hashlib.md5(data).hexdigest()

    link = api.get(f"/v1/uploads/{upload['id']}/download", headers=auth_headers)
    assert link.status_code == 200
    download = httpx.get(link.json()["url"])
    assert download.status_code == 200
    assert download.content == data
    assert download.headers["content-type"] == "text/plain"
    assert download.headers["content-disposition"].startswith('attachment; filename="fox.txt"')


def test_download_keeps_a_hostile_unicode_filename_inside_the_header(api, auth_headers):
    name = 'résumé "final"; x=1 ✓.txt'
    data = b"cv"
    upload = create_upload(api, auth_headers, data, filename=name)
    put_bytes(upload, data)
    wait_for_status(api, auth_headers, upload["id"], "finalized")

    url = api.get(f"/v1/uploads/{upload['id']}/download", headers=auth_headers).json()["url"]
    disposition = httpx.get(url).headers["content-disposition"]
    fallback, encoded = disposition.split("; filename*=UTF-8''")
    assert fallback == 'attachment; filename="r_sum_ _final_; x=1 _.txt"'
    assert urllib.parse.unquote(encoded) == name


def test_upload_with_sha256_is_finalized_and_recorded(api, auth_headers):
    data = b"checked bytes"
    digest = hashlib.sha256(data).hexdigest()
    upload = create_upload(api, auth_headers, data, sha256=digest.upper())
    assert "x-amz-checksum-sha256" in upload["upload"]["headers"]
    assert put_bytes(upload, data).status_code == 200
    assert wait_for_status(api, auth_headers, upload["id"], "finalized")["sha256"] == digest


def test_minio_refuses_bytes_that_do_not_match_the_sha256(api, auth_headers):
    data = b"original bytes"
    upload = create_upload(
        api, auth_headers, data, sha256=hashlib.sha256(b"other bytes!!").hexdigest()
    )
    response = put_bytes(upload, data)
    assert response.status_code == 400
    assert "XAmzContentChecksumMismatch" in response.text or "BadDigest" in response.text
    assert (
        api.get(f"/v1/uploads/{upload['id']}", headers=auth_headers).json()["status"] == "pending"
    )


def test_minio_refuses_a_different_content_type(api, auth_headers):
    data = b"<svg/>"
    upload = create_upload(api, auth_headers, data, content_type="image/png")
    response = put_bytes(upload, data, **{"content-type": "image/svg+xml"})
    assert response.status_code == 403
    assert "SignatureDoesNotMatch" in response.text


@pytest.mark.parametrize("sent", [b"short", b"much longer than promised"])
def test_minio_refuses_a_different_length(api, auth_headers, sent):
    upload = create_upload(api, auth_headers, b"promised bytes")
    headers = {**upload["upload"]["headers"], "content-length": str(len(sent))}
    response = httpx.put(upload["upload"]["url"], content=sent, headers=headers)
    assert response.status_code == 403
    assert (
        api.get(f"/v1/uploads/{upload['id']}", headers=auth_headers).json()["status"] == "pending"
    )


def test_a_presigned_put_cannot_overwrite_a_finalized_file(api, auth_headers):
    data = b"first version"
    upload = create_upload(api, auth_headers, data)
    put_bytes(upload, data)
    wait_for_status(api, auth_headers, upload["id"], "finalized")
    assert put_bytes(upload, b"other version").status_code == 412
    url = api.get(f"/v1/uploads/{upload['id']}/download", headers=auth_headers).json()["url"]
    assert httpx.get(url).content == data


def test_an_expired_presigned_put_is_refused(api, auth_headers, settings):
    from datetime import UTC, datetime, timedelta

    from broker.adapters import storage

    data = b"too late"
    upload = create_upload(api, auth_headers, data)
    expired = storage.Storage(settings).presign_put(
        upload["key"],
        content_type="text/plain",
        size=len(data),
        sha256_base64=None,
        expires_in=60,
        now=datetime.now(UTC) - timedelta(hours=1),
    )
    response = httpx.put(expired.url, content=data, headers=expired.headers)
    assert response.status_code == 403
    assert "expired" in response.text
    assert (
        api.get(f"/v1/uploads/{upload['id']}", headers=auth_headers).json()["status"] == "pending"
    )


def test_an_object_of_the_wrong_size_is_rejected_and_removed(api, auth_headers, s3, settings):
    upload = create_upload(api, auth_headers, b"ten bytes!")
    # Only someone holding storage credentials can write past the signed length.
    s3.put_object(
        Bucket=settings.s3_bucket, Key=upload["key"], Body=b"eleven byte", ContentType="text/plain"
    )
    record = wait_for_status(api, auth_headers, upload["id"], "rejected")
    assert record["reject_reason"] == "size_mismatch"
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket=settings.s3_bucket, Key=upload["key"])


def test_an_object_of_the_wrong_content_type_is_rejected(api, auth_headers, s3, settings):
    upload = create_upload(api, auth_headers, b"12345")
    s3.put_object(
        Bucket=settings.s3_bucket, Key=upload["key"], Body=b"12345", ContentType="text/html"
    )
    record = wait_for_status(api, auth_headers, upload["id"], "rejected")
    assert record["reject_reason"] == "content_type_mismatch"


def test_download_of_an_unfinished_upload_is_409(api, auth_headers):
    upload = create_upload(api, auth_headers, b"not yet")
    response = api.get(f"/v1/uploads/{upload['id']}/download", headers=auth_headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "ERR_UPLOAD_NOT_FINALIZED"


def test_delete_removes_the_object_and_is_idempotent(api, auth_headers, s3, settings):
    data = b"to be deleted"
    upload = create_upload(api, auth_headers, data)
    put_bytes(upload, data)
    wait_for_status(api, auth_headers, upload["id"], "finalized")

    first = api.delete(f"/v1/uploads/{upload['id']}", headers=auth_headers)
    assert first.status_code == 200 and first.json()["status"] == "deleted"
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket=settings.s3_bucket, Key=upload["key"])
    again = api.delete(f"/v1/uploads/{upload['id']}", headers=auth_headers)
    assert again.status_code == 200 and again.json()["deleted_at"] == first.json()["deleted_at"]
    download = api.get(f"/v1/uploads/{upload['id']}/download", headers=auth_headers)
    assert download.status_code == 409


def test_bytes_put_after_a_pending_upload_was_deleted_are_removed(api, auth_headers, s3, settings):
    data = b"changed my mind"
    upload = create_upload(api, auth_headers, data)
    assert (
        api.delete(f"/v1/uploads/{upload['id']}", headers=auth_headers).json()["status"]
        == "deleted"
    )
    assert put_bytes(upload, data).status_code == 200  # the URL is still valid
    wait_for_status(api, auth_headers, upload["id"], "deleted")
    wait_until_object_gone(s3, settings.s3_bucket, upload["key"])


def test_removing_the_object_in_storage_marks_the_upload_deleted(api, auth_headers, s3, settings):
    data = b"removed behind the broker's back"
    upload = create_upload(api, auth_headers, data)
    put_bytes(upload, data)
    wait_for_status(api, auth_headers, upload["id"], "finalized")
    s3.delete_object(Bucket=settings.s3_bucket, Key=upload["key"])
    wait_for_status(api, auth_headers, upload["id"], "deleted")
