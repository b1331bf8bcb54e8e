"""Uppy's @uppy/aws-s3 against the broker's Companion routes, with real PostgreSQL and MinIO.

`Plugin` makes the very HTTP calls the plugin makes (methods, paths, query, bodies, headers:
see docs/uppy.md); the bytes then go to MinIO as the browser sends them.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import httpx
import pytest

from broker import auth
from broker.dev import devstack
from tests import samples, services
from tests.conftest import wait_for_status

MIB = 1024 * 1024
# Uppy cuts a multipart file into 5 MiB parts (up to 48.8 GiB): two full ones and a short one.
DATA = os.urandom(2 * 5 * MIB + 123_457)


class Plugin:
    """@uppy/aws-s3 talking to its Companion endpoint.

    6.x (`companionEndpoint`) sends no application headers, so the token is in the endpoint's
    path; 5.x (`endpoint` + `headers`) sends the Authorization header it was given.
    """

    def __init__(self, api: httpx.Client, prefix: str, headers: dict[str, str]) -> None:
        self.api = api
        self.prefix = prefix
        self.headers = headers

    @classmethod
    def v6(cls, api: httpx.Client, token: str) -> Plugin:
        return cls(api, f"/uppy/{token}", {})

    @classmethod
    def v5(cls, api: httpx.Client, token: str) -> Plugin:
        return cls(api, "", {"accept": "application/json", "authorization": f"Bearer {token}"})

    def params(self, filename: str, type: str, metadata: dict[str, Any]) -> httpx.Response:
        query = {"filename": filename, "type": type}
        query.update({f"metadata[{k}]": str(v) for k, v in metadata.items()})
        return self.api.get(f"{self.prefix}/s3/params", params=query, headers=self.headers)

    def create(self, filename: str, type: str, metadata: dict[str, Any]) -> httpx.Response:
        body = {"filename": filename, "metadata": metadata, "type": type}
        return self.api.post(f"{self.prefix}/s3/multipart", json=body, headers=self.headers)

    def sign(self, upload: dict[str, str], number: int) -> httpx.Response:
        path = f"{self.prefix}/s3/multipart/{upload['uploadId']}/{number}"
        return self.api.get(path, params={"key": upload["key"]}, headers=self.headers)

    def batch(self, upload: dict[str, str], numbers: list[int]) -> httpx.Response:
        path = f"{self.prefix}/s3/multipart/{upload['uploadId']}/batch"
        query = {"key": upload["key"], "partNumbers": ",".join(map(str, numbers))}
        return self.api.get(path, params=query, headers=self.headers)

    def list_parts(self, upload: dict[str, str]) -> httpx.Response:
        path = f"{self.prefix}/s3/multipart/{upload['uploadId']}"
        return self.api.get(path, params={"key": upload["key"]}, headers=self.headers)

    def complete(self, upload: dict[str, str], etags: dict[int, str]) -> httpx.Response:
        path = f"{self.prefix}/s3/multipart/{upload['uploadId']}/complete"
        parts = [{"PartNumber": n, "ETag": etag} for n, etag in sorted(etags.items())]
        return self.api.post(
            path, params={"key": upload["key"]}, json={"parts": parts}, headers=self.headers
        )

    def abort(self, upload: dict[str, str]) -> httpx.Response:
        path = f"{self.prefix}/s3/multipart/{upload['uploadId']}"
        return self.api.delete(path, params={"key": upload["key"]}, headers=self.headers)


def meta(name: str, type: str, data: bytes, **more: Any) -> dict[str, Any]:
    """The file meta Uppy forwards (name, type), plus the size the app puts there."""
    return {"name": name, "type": type, "size": len(data), **more}


def post_form(params: dict[str, Any], data: bytes, name: str, type: str) -> httpx.Response:
    """Uppy's single upload: a multipart/form-data POST of the fields, then `file`."""
    files = {"file": (name, data, type)}
    return httpx.post(params["url"], data=params["fields"], files=files, timeout=30)


def put_part(url: str, data: bytes) -> str:
    """A part as the browser PUTs it (only the body); returns the ETag Uppy reads back."""
    response = httpx.put(url, content=data, timeout=60)
    assert response.status_code == 200, response.text
    return response.headers["etag"]


def upload_id_of(key: str) -> str:
    """The broker's upload id is the last segment of the object key it hands out."""
    return key.rsplit("/", 1)[1]


def download(api: httpx.Client, headers: dict[str, str], upload_id: str) -> bytes:
    link = api.get(f"/v1/uploads/{upload_id}/download", headers=headers)
    assert link.status_code == 200, link.text
    return httpx.get(link.json()["url"], timeout=60).content


@pytest.fixture
def token(settings, owner) -> str:
    """For 6.x: in the endpoint's path, so scoped to the Uppy routes."""
    return auth.issue_token(settings.jwt_secret, owner, scope=auth.UPPY_SCOPE)


@pytest.fixture
def bearer(settings, owner) -> str:
    """For 5.x: a normal token in the Authorization header."""
    return auth.issue_token(settings.jwt_secret, owner)


def test_a_single_file_is_sent_with_the_form_from_params_and_finalized(
    api, auth_headers, token
) -> None:
    plugin = Plugin.v6(api, token)
    data = b"hello from uppy\n" * 100
    response = plugin.params(
        "notes.txt", "text/plain", meta("notes.txt", "text/plain", data, caption="Notes")
    )
    assert response.status_code == 200, response.text
    params = response.json()
    assert params["method"] == "POST"
    assert 0 < params["expires"] <= 900
    key = params["fields"]["key"]
    assert key.startswith("uploads/")

    assert post_form(params, data, "notes.txt", "text/plain").status_code == 204

    record = wait_for_status(api, auth_headers, upload_id_of(key), "finalized")
    assert (record["key"], record["transfer"], record["policy"]) == (key, "post", "default")
    assert (record["filename"], record["content_type"], record["size"]) == (
        "notes.txt",
        "text/plain",
        len(data),
    )
    assert record["metadata"] == {"caption": "Notes"}
    assert download(api, auth_headers, record["id"]) == data


def test_the_form_pins_the_declared_size(api, token) -> None:
    plugin = Plugin.v6(api, token)
    data = b"twelve bytes"
    params = plugin.params("a.txt", "text/plain", meta("a.txt", "text/plain", data)).json()
    response = post_form(params, data + b"!", "a.txt", "text/plain")
    assert response.status_code == 400
    assert "EntityTooLarge" in response.text


def test_a_multipart_file_is_uploaded_part_by_part_and_finalized(
    api, auth_headers, bearer, s3, settings
) -> None:
    plugin = Plugin.v5(api, bearer)
    # Dashboard adds relativePath (null for a picked file); it is not stored.
    response = plugin.create(
        "video.bin",
        "application/octet-stream",
        meta("video.bin", "application/octet-stream", DATA, relativePath=None),
    )
    assert response.status_code == 200, response.text
    upload = response.json()
    assert upload["bucket"] == settings.s3_bucket
    record = api.get(f"/v1/uploads/{upload_id_of(upload['key'])}", headers=auth_headers).json()
    assert (record["transfer"], record["part_size"], record["part_count"]) == (
        "multipart",
        5 * MIB,
        3,
    )
    assert record["metadata"] == {}
    chunks = {n: DATA[(n - 1) * 5 * MIB : n * 5 * MIB] for n in (1, 2, 3)}

    first = plugin.sign(upload, 1)
    assert first.status_code == 200, first.text
    assert 0 < first.json()["expires"] <= 900
    etags = {1: put_part(first.json()["url"], chunks[1])}
    batch = plugin.batch(upload, [2, 3])
    assert batch.status_code == 200, batch.text
    signed = batch.json()["presignedUrls"]
    assert set(signed) == {"2", "3"}
    etags |= {int(n): put_part(url, chunks[int(n)]) for n, url in signed.items()}

    held = plugin.list_parts(upload)
    assert held.status_code == 200, held.text
    assert held.json() == [
        {"PartNumber": n, "Size": len(chunks[n]), "ETag": etags[n]} for n in (1, 2, 3)
    ]

    done = plugin.complete(upload, etags)
    assert done.status_code == 200, done.text
    assert done.json() == {
        "location": f"{settings.public_endpoint}/{settings.s3_bucket}/{upload['key']}",
        "key": upload["key"],
        "bucket": settings.s3_bucket,
    }
    record = wait_for_status(api, auth_headers, record["id"], "finalized")
    assert record["etag"].endswith("-3")
    assert hashlib.sha256(download(api, auth_headers, record["id"])).digest() == (
        hashlib.sha256(DATA).digest()
    )
    # Uppy's resume asks again after completion: the upload is no longer pending.
    assert plugin.list_parts(upload).json()["error"]["code"] == "ERR_UPLOAD_NOT_PENDING"


def test_parts_follow_uppys_size_even_when_the_broker_prefers_another(
    settings, found_services, owner
) -> None:
    # A second broker on the same database and bucket, whose native part size is 16 MiB.
    other = settings.model_copy(update={"multipart_part_size_bytes": 16 * MIB})
    server = services.BrokerServer(other, devstack.free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=15) as api:
            token = auth.issue_token(settings.jwt_secret, owner)
            headers = {"Authorization": f"Bearer {token}"}
            native = api.post(
                "/v1/uploads",
                json={
                    "filename": "x.bin",
                    "content_type": "application/octet-stream",
                    "size": len(DATA),
                    "multipart": True,
                },
                headers=headers,
            ).json()
            assert (native["part_size"], native["part_count"]) == (16 * MIB, 1)

            plugin = Plugin.v6(api, auth.issue_token(settings.jwt_secret, owner, scope="uppy"))
            created = plugin.create("x.bin", "application/octet-stream", meta("x", "b/c", DATA))
            upload = created.json()
            record = api.get(f"/v1/uploads/{upload_id_of(upload['key'])}", headers=headers)
            assert (record.json()["part_size"], record.json()["part_count"]) == (5 * MIB, 3)
            # The last part is signed for what Uppy sends: the remainder after two 5 MiB parts.
            last = plugin.sign(upload, 3).json()["url"]
            put_part(last, DATA[10 * MIB :])
            assert plugin.abort(upload).status_code == 200
    finally:
        server.stop()


def test_abort_deletes_the_upload_and_frees_its_parts(api, auth_headers, token, s3, settings):
    plugin = Plugin.v6(api, token)
    upload = plugin.create("v.bin", "application/octet-stream", meta("v", "b/c", DATA)).json()
    put_part(plugin.sign(upload, 1).json()["url"], DATA[: 5 * MIB])

    response = plugin.abort(upload)
    assert (response.status_code, response.json()) == (200, {})
    record = api.get(f"/v1/uploads/{upload_id_of(upload['key'])}", headers=auth_headers).json()
    assert record["status"] == "deleted"
    with pytest.raises(s3.exceptions.NoSuchUpload):
        s3.list_parts(Bucket=settings.s3_bucket, Key=upload["key"], UploadId=upload["uploadId"])
    assert plugin.abort(upload).status_code == 200  # repeating it is harmless
    assert plugin.sign(upload, 2).json()["error"]["code"] == "ERR_UPLOAD_NOT_PENDING"


def test_a_finalized_upload_is_not_aborted(api, auth_headers, token) -> None:
    plugin = Plugin.v6(api, token)
    small = DATA[: 6 * MIB]
    upload = plugin.create("s.bin", "application/octet-stream", meta("s", "b/c", small)).json()
    etags = {
        n: put_part(url, small[(int(n) - 1) * 5 * MIB : int(n) * 5 * MIB])
        for n, url in plugin.batch(upload, [1, 2]).json()["presignedUrls"].items()
    }
    assert plugin.complete(upload, {int(n): e for n, e in etags.items()}).status_code == 200
    wait_for_status(api, auth_headers, upload_id_of(upload["key"]), "finalized")
    response = plugin.abort(upload)
    assert (response.status_code, response.json()["error"]["code"]) == (
        409,
        "ERR_UPLOAD_NOT_PENDING",
    )


def test_every_route_needs_a_valid_token(api, token, bearer) -> None:
    plugin = Plugin.v6(api, token)
    upload = plugin.create("v.bin", "application/octet-stream", meta("v", "b/c", DATA)).json()
    unscoped_in_path, scoped_in_header = Plugin.v6(api, bearer), Plugin.v5(api, token)
    for anonymous in (
        Plugin(api, "", {}),
        Plugin.v6(api, "not-a-jwt"),
        Plugin.v5(api, "x.y.z"),
        unscoped_in_path,
        scoped_in_header,
    ):
        for response in (
            anonymous.params("a.txt", "text/plain", {"size": 1}),
            anonymous.create("a.bin", "application/octet-stream", {"size": 1}),
            anonymous.sign(upload, 1),
            anonymous.batch(upload, [1]),
            anonymous.list_parts(upload),
            anonymous.complete(upload, {1: '"etag"'}),
            anonymous.abort(upload),
        ):
            assert response.status_code == 401, response.text
            code = response.json()["error"]["code"]
            assert code in {"ERR_UNAUTHORIZED", "ERR_TOKEN_INVALID", "ERR_TOKEN_SCOPE"}


def test_another_owners_upload_is_not_found(api, auth_headers, token, settings) -> None:
    mine = Plugin.v6(api, token)
    upload = mine.create("v.bin", "application/octet-stream", meta("v", "b/c", DATA)).json()
    stranger = Plugin.v5(api, auth.issue_token(settings.jwt_secret, "someone-else"))
    wrong_id = {"key": upload["key"], "uploadId": "not-this-one"}
    for plugin, target in ((stranger, upload), (mine, wrong_id)):
        for response in (
            plugin.sign(target, 1),
            plugin.batch(target, [1, 2]),
            plugin.list_parts(target),
            plugin.complete(target, {1: '"etag"'}),
            plugin.abort(target),
        ):
            assert response.status_code == 404, response.text
            assert response.json()["error"]["code"] == "ERR_UPLOAD_NOT_FOUND"
    record = api.get(f"/v1/uploads/{upload_id_of(upload['key'])}", headers=auth_headers).json()
    assert record["status"] == "pending"


def test_a_policy_is_chosen_through_the_files_meta(api, auth_headers, token) -> None:
    plugin = Plugin.v6(api, token)
    png = samples.png(padding=200)
    avatar = meta("me.png", "image/png", png, policy="avatars")
    response = plugin.params("me.png", "image/png", avatar)
    assert response.status_code == 200, response.text
    params = response.json()
    assert params["fields"]["key"].startswith("avatars/")
    assert post_form(params, png, "me.png", "image/png").status_code == 204
    record = wait_for_status(api, auth_headers, upload_id_of(params["fields"]["key"]), "finalized")
    assert (record["policy"], record["metadata"]) == ("avatars", {})

    refused = {
        "ERR_CONTENT_TYPE_NOT_ALLOWED": plugin.params(
            "a.txt", "text/plain", meta("a.txt", "text/plain", b"hi", policy="avatars")
        ),
        "ERR_UPLOAD_TOO_LARGE": plugin.params(
            "big.png", "image/png", meta("big.png", "image/png", DATA, policy="avatars")
        ),
        "ERR_MULTIPART_NOT_ALLOWED": plugin.create("me.png", "image/png", avatar),
        "ERR_UNKNOWN_POLICY": plugin.params(
            "a.txt", "text/plain", meta("a.txt", "text/plain", b"hi", policy="nope")
        ),
    }
    for code, response in refused.items():
        assert response.json()["error"]["code"] == code, response.text


def test_files_of_undeclared_size_are_capped_by_the_policy_and_sized_at_finalization(
    api, auth_headers, token
) -> None:
    """Uppy, unchanged, sends no size: the broker caps the upload by its policy instead."""
    plugin = Plugin.v6(api, token)
    uppy_meta = {"name": "a.png", "type": "image/png", "policy": "avatars"}  # no size

    data = samples.png(padding=1000)
    params = plugin.params("a.png", "image/png", uppy_meta)
    assert params.status_code == 200, params.text
    too_big = post_form(params.json(), b"x" * (64 * 1024 + 1), "a.png", "image/png")
    assert too_big.status_code == 400 and "EntityTooLarge" in too_big.text
    assert post_form(params.json(), data, "a.png", "image/png").status_code == 204
    upload_id = upload_id_of(params.json()["fields"]["key"])
    assert wait_for_status(api, auth_headers, upload_id, "finalized")["size"] == len(data)

    upload = plugin.create("v.bin", "application/octet-stream", {"name": "v.bin"}).json()
    record = api.get(f"/v1/uploads/{upload_id_of(upload['key'])}", headers=auth_headers).json()
    assert (record["size"], record["part_count"]) == (None, None)
    part_size = 5 * MIB
    etags = {}
    for number in (1, 2, 3):
        url = plugin.sign(upload, number).json()["url"]
        etags[number] = put_part(url, DATA[(number - 1) * part_size : number * part_size])
    assert plugin.complete(upload, etags).status_code == 200
    finalized = wait_for_status(api, auth_headers, record["id"], "finalized")
    assert (finalized["size"], finalized["part_size"], finalized["part_count"]) == (
        len(DATA),
        part_size,
        3,
    )
    assert download(api, auth_headers, record["id"]) == DATA


def test_an_undeclared_multipart_upload_over_its_limit_is_not_completed(api, token) -> None:
    plugin = Plugin.v6(api, token)
    # The `limited` policy caps files at 1 MiB; two 5 MiB-part uploads would pass 10 MiB.
    upload = plugin.create("big.bin", "application/octet-stream", {"policy": "limited"}).json()
    etags = {1: put_part(plugin.sign(upload, 1).json()["url"], DATA[: 2 * MIB])}
    refused = plugin.complete(upload, etags)
    assert refused.status_code == 400
    assert "exceed the limit" in refused.text
    bad_size = plugin.create("a.bin", "application/octet-stream", {"size": "12 bytes"})
    assert bad_size.status_code == 422
    assert bad_size.json()["error"]["details"][0]["field"] == "metadata.size"


def test_a_page_on_an_origin_not_allowed_creates_nothing(api, token, settings, sql) -> None:
    """GET /s3/params is a simple request: the browser sends it without a preflight from any
    page. From an origin BROKER_CORS_ORIGINS does not list, it is refused before anything is
    recorded; from an allowed one (or with no Origin: a server) it works."""
    plugin = Plugin.v6(api, token)
    query = {"filename": "a.txt", "type": "text/plain", "metadata[size]": "5"}
    refused = api.get(
        f"{plugin.prefix}/s3/params", params=query, headers={"origin": "https://evil.example"}
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "ERR_ORIGIN_NOT_ALLOWED"
    assert sql("SELECT count(*) AS n FROM uploads")[0]["n"] == 0
    allowed = {"origin": settings.cors_origins[0]}
    assert api.get(f"{plugin.prefix}/s3/params", params=query, headers=allowed).is_success
    assert sql("SELECT count(*) AS n FROM uploads")[0]["n"] == 1


def test_the_same_file_stores_the_same_metadata_by_form_and_by_multipart(
    api, auth_headers, token
) -> None:
    """Uppy sends a null meta field (relativePath) as the text "null" in the form route's
    query and as null in the multipart route's JSON: neither stores it."""
    plugin = Plugin.v6(api, token)
    uppy_meta = {"name": "a.txt", "type": "text/plain", "size": 5, "relativePath": None,
                 "album": "summer"}  # fmt: skip
    query = {"filename": "a.txt", "type": "text/plain", "metadata[size]": "5",
             "metadata[relativePath]": "null", "metadata[album]": "summer"}  # fmt: skip
    form = api.get(f"{plugin.prefix}/s3/params", params=query).json()
    multipart = plugin.create("a.txt", "text/plain", uppy_meta).json()
    stored = [
        api.get(f"/v1/uploads/{upload_id_of(key)}", headers=auth_headers).json()["metadata"]
        for key in (form["fields"]["key"], multipart["key"])
    ]
    assert stored == [{"album": "summer"}, {"album": "summer"}]


def test_bad_requests_are_described_in_the_brokers_error_format(api, token) -> None:
    plugin = Plugin.v6(api, token)
    cases = [
        plugin.params("a/b.txt", "text/plain", {"size": 3}),
        plugin.params("a.txt", "not a type", {"size": 3}),
        plugin.create("a.bin", "application/octet-stream", {"size": 3, "bad key!": "x"}),
        plugin.create("a.bin", "application/octet-stream", {"size": 3, "nested": {"a": 1}}),
        api.post(f"{plugin.prefix}/s3/multipart", json={"type": "text/plain"}),
    ]
    for response in cases:
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "ERR_VALIDATION"
        assert response.json()["error"]["details"]
    upload = plugin.create("v.bin", "application/octet-stream", meta("v", "b/c", DATA)).json()
    assert plugin.sign(upload, 4).json()["error"]["code"] == "ERR_VALIDATION"  # 3 parts only
    assert plugin.batch(upload, []).json()["error"]["code"] == "ERR_VALIDATION"
    missing = plugin.complete(upload, {1: '"nope"'})
    assert (missing.status_code, missing.json()["error"]["code"]) == (400, "ERR_INVALID_PARTS")
