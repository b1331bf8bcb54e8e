"""Multipart uploads against real MinIO: parallel parts, resume, checksums, complete, abort."""

from __future__ import annotations

import base64
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import wait_for_status, wait_until_object_gone

MIB = 1024 * 1024
# The test broker's part size is 5 MiB: 3 full parts and a short last one.
DATA = os.urandom(3 * 5 * MIB + 123_457)


def create_multipart(api, headers, data=DATA, **fields):
    body = {
        "filename": "video.bin",
        "content_type": "application/octet-stream",
        "size": len(data),
        "multipart": True,
        **fields,
    }
    response = api.post("/v1/uploads", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def part_bytes(upload, data, number):
    size = upload["upload"]["part_size"]
    return data[(number - 1) * size : number * size]


def sign(api, headers, upload, numbers, **extra):
    response = api.post(
        f"/v1/uploads/{upload['id']}/parts",
        json={"part_numbers": numbers, **extra},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return response.json()["parts"]


def send_parts(signed, upload, data):
    """PUT the parts in parallel, as a browser would; return {part_number: etag}."""

    def send(part):
        body = part_bytes(upload, data, part["part_number"])
        response = httpx.put(part["url"], content=body, headers=part["headers"], timeout=60)
        assert response.status_code == 200, response.text
        return part["part_number"], response.headers["etag"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(send, signed))


def complete(api, headers, upload, etags):
    parts = [{"part_number": n, "etag": etag} for n, etag in sorted(etags.items())]
    return api.post(f"/v1/uploads/{upload['id']}/complete", json={"parts": parts}, headers=headers)


def test_multipart_upload_resumed_halfway_is_finalized_with_the_same_bytes(api, auth_headers):
    upload = create_multipart(api, auth_headers)
    plan = upload["upload"]
    assert plan["method"] == "multipart"
    assert (plan["part_size"], plan["part_count"]) == (5 * MIB, 4)

    first_half = send_parts(sign(api, auth_headers, upload, [1, 2]), upload, DATA)
    # The client "reloads": it only knows the upload id, and asks what storage holds.
    held = api.get(f"/v1/uploads/{upload['id']}/parts", headers=auth_headers).json()["parts"]
    assert [(p["part_number"], p["etag"].strip('"'), p["size"]) for p in held] == [
        (1, first_half[1].strip('"'), 5 * MIB),
        (2, first_half[2].strip('"'), 5 * MIB),
    ]
    missing = sorted(set(range(1, plan["part_count"] + 1)) - {p["part_number"] for p in held})
    second_half = send_parts(sign(api, auth_headers, upload, missing), upload, DATA)

    response = complete(api, auth_headers, upload, {**first_half, **second_half})
    assert response.status_code == 200, response.text
    record = wait_for_status(api, auth_headers, upload["id"], "finalized")
    assert record["etag"].endswith("-4")

    url = api.get(f"/v1/uploads/{upload['id']}/download", headers=auth_headers).json()["url"]
    assert (
        hashlib.sha256(httpx.get(url, timeout=60).content).digest() == hashlib.sha256(DATA).digest()
    )
    # Completing again is harmless.
    assert complete(api, auth_headers, upload, {**first_half, **second_half}).status_code == 200


def b64_sha256(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_multipart_with_part_checksums_is_verified_and_recorded(api, auth_headers):
    upload = create_multipart(api, auth_headers, checksum_algorithm="SHA256")
    numbers = list(range(1, upload["upload"]["part_count"] + 1))
    checksums = {n: b64_sha256(part_bytes(upload, DATA, n)) for n in numbers}
    signed = sign(api, auth_headers, upload, numbers, checksums=checksums)
    assert all("x-amz-checksum-sha256" in part["headers"] for part in signed)
    etags = send_parts(signed, upload, DATA)
    assert complete(api, auth_headers, upload, etags).status_code == 200
    record = wait_for_status(api, auth_headers, upload["id"], "finalized")
    assert record["checksum_algorithm"] == "SHA256"
    assert record["checksum"].endswith("-4")


def test_a_part_with_a_wrong_checksum_is_refused_by_minio(api, auth_headers):
    upload = create_multipart(api, auth_headers, checksum_algorithm="SHA256")
    [part] = sign(api, auth_headers, upload, [1], checksums={1: b64_sha256(b"other bytes")})
    response = httpx.put(part["url"], content=part_bytes(upload, DATA, 1), headers=part["headers"])
    assert response.status_code == 400
    assert "XAmzContentChecksumMismatch" in response.text or "BadDigest" in response.text


def test_parts_need_their_checksum_when_the_upload_declared_one(api, auth_headers):
    upload = create_multipart(api, auth_headers, checksum_algorithm="CRC32C")
    response = api.post(
        f"/v1/uploads/{upload['id']}/parts", json={"part_numbers": [1]}, headers=auth_headers
    )
    assert response.status_code == 422
    assert "needs its CRC32C checksum" in response.text


def test_a_part_of_the_wrong_length_is_refused_by_minio(api, auth_headers):
    upload = create_multipart(api, auth_headers)
    [part] = sign(api, auth_headers, upload, [1])
    headers = {**part["headers"], "content-length": str(MIB)}
    assert httpx.put(part["url"], content=b"x" * MIB, headers=headers).status_code == 403


def test_completing_with_a_missing_or_wrong_part_is_400_and_stays_resumable(api, auth_headers):
    upload = create_multipart(api, auth_headers)
    etags = send_parts(sign(api, auth_headers, upload, [1, 2, 3]), upload, DATA)

    missing = complete(api, auth_headers, upload, etags)
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "ERR_INVALID_PARTS"
    assert {"part_number": 4, "problem": "not in the list"} in missing.json()["error"]["details"]

    etags.update(send_parts(sign(api, auth_headers, upload, [4]), upload, DATA))
    wrong = complete(api, auth_headers, upload, {**etags, 2: '"0123456789abcdef0123456789abcdef"'})
    assert wrong.status_code == 400
    assert wrong.json()["error"]["details"] == [
        {"part_number": 2, "problem": "etag does not match"}
    ]
    assert (
        api.get(f"/v1/uploads/{upload['id']}", headers=auth_headers).json()["status"] == "pending"
    )

    assert complete(api, auth_headers, upload, etags).status_code == 200
    wait_for_status(api, auth_headers, upload["id"], "finalized")


def test_deleting_a_pending_multipart_upload_aborts_it_in_minio(api, auth_headers, s3, settings):
    upload = create_multipart(api, auth_headers)
    send_parts(sign(api, auth_headers, upload, [1]), upload, DATA)

    def in_progress():
        listed = s3.list_multipart_uploads(Bucket=settings.s3_bucket, Prefix=upload["key"])
        return [u["UploadId"] for u in listed.get("Uploads", [])]

    assert in_progress() == [upload["upload"]["upload_id"]]
    assert (
        api.delete(f"/v1/uploads/{upload['id']}", headers=auth_headers).json()["status"]
        == "deleted"
    )
    assert in_progress() == []
    gone = api.get(f"/v1/uploads/{upload['id']}/parts", headers=auth_headers)
    assert gone.status_code == 409
    wait_until_object_gone(s3, settings.s3_bucket, upload["key"])


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"part_numbers": [5]}, 422, "ERR_VALIDATION"),
        ({"part_numbers": [0]}, 422, "ERR_VALIDATION"),
        ({"part_numbers": []}, 422, "ERR_VALIDATION"),
        ({"part_numbers": [1], "checksums": {"1": "AAAAAAAA"}}, 422, "ERR_VALIDATION"),
    ],
)
def test_bad_part_requests(api, auth_headers, body, status, code):
    upload = create_multipart(api, auth_headers)
    response = api.post(f"/v1/uploads/{upload['id']}/parts", json=body, headers=auth_headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_part_routes_on_a_single_put_upload_are_409(api, auth_headers):
    response = api.post(
        "/v1/uploads",
        json={"filename": "a.txt", "content_type": "text/plain", "size": 3},
        headers=auth_headers,
    )
    upload_id = response.json()["id"]
    signed = api.post(
        f"/v1/uploads/{upload_id}/parts", json={"part_numbers": [1]}, headers=auth_headers
    )
    assert signed.status_code == 409
    assert signed.json()["error"]["code"] == "ERR_NOT_MULTIPART"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"sha256": "0" * 64}, "ERR_VALIDATION"),
        ({"method": "POST"}, "ERR_VALIDATION"),
        ({"policy": "avatars", "content_type": "image/png"}, "ERR_MULTIPART_NOT_ALLOWED"),
    ],
)
def test_multipart_requests_that_cannot_be_honoured(api, auth_headers, fields, code):
    body = {
        "filename": "v.bin",
        "content_type": "application/octet-stream",
        "size": 100,
        "multipart": True,
        **fields,
    }
    response = api.post("/v1/uploads", json=body, headers=auth_headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code


def test_the_example_script_resumes_an_interrupted_upload(broker, auth_headers, tmp_path):
    """examples/resumable_upload.py: plain HTTP only; stopped after 2 parts, run again, done."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "big.bin"
    path.write_bytes(DATA + DATA[:MIB])
    token = auth_headers["Authorization"].removeprefix("Bearer ")
    script = Path(__file__).parents[2] / "examples" / "resumable_upload.py"
    command = [
        sys.executable,
        str(script),
        str(path),
        "--broker",
        broker,
        "--token",
        token,
        "--parallel",
        "2",
    ]
    first = subprocess.run([*command, "--stop-after-parts", "2"], capture_output=True, text=True)
    assert first.returncode == 3, first.stdout + first.stderr
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "2 parts already stored, 2 to send" in second.stdout
    result = json.loads(second.stdout.strip().splitlines()[-1])
    assert result["status"] == "finalized" and result["size"] == path.stat().st_size
    assert result["checksum"].endswith("-4")
