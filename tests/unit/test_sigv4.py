"""Property tests: broker.sigv4.Presigner URLs are byte-identical to botocore's presigned URLs.

Reference client: the broker's own boto3 client (``broker.storage.Storage.client``) minus its
timeout/retry options, which do not affect signing::

    boto3.client(
        "s3", endpoint_url=..., aws_access_key_id=..., aws_secret_access_key=...,
        region_name=...,
        config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )

``request_checksum_calculation`` is left at its default ("when_supported"): with botocore
1.44.8 presigned URLs are identical under "when_required" (asserted below), because the
flexible-checksum handlers never add ``x-amz-sdk-checksum-algorithm`` or default
``x-amz-checksum-*`` headers when presigning. Quirks observed in botocore 1.44.8 and
replicated by the presigner: ContentLength (``content-length``), IfNoneMatch
(``if-none-match``), ``x-amz-checksum-*`` and ``x-amz-meta-*`` headers are all signed;
operation query params come first in ``Params`` order, then the auth params; no ``x-id``
param appears; the Host header drops default ports (80/443 for http/https) and is
lowercased, while the URL keeps the endpoint verbatim; a Content-Type of exactly
``application/x-www-form-urlencoded; charset=utf-8`` is silently left unsigned.

The clock is frozen by patching ``botocore.auth.get_current_datetime`` (which returns a
naive UTC datetime), the only time source ``SigV4Auth.add_auth`` uses in 1.44.8.
"""

from __future__ import annotations

import base64
import functools
import string
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal
from unittest import mock
from urllib.parse import quote

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import botocore.utils
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.adapters import sigv4
from broker.adapters.sigv4 import Presigner

AK = "AKIAIOSFODNN7EXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
NOW = datetime(2024, 5, 17, 12, 34, 56, tzinfo=UTC)
SETTINGS = settings(deadline=None)  # examples: the profile's (tests/conftest.py)
ChecksumMode = Literal["when_supported", "when_required"]


def _naive_utc(now: datetime) -> datetime:
    """What botocore's clock returns; the presigner reads a naive `now` as UTC too."""
    return now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now


@functools.lru_cache(maxsize=64)
def _client(
    endpoint: str, ak: str, sk: str, region: str, checksum: ChecksumMode = "when_supported"
) -> Any:
    config = botocore.config.Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        request_checksum_calculation=checksum,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ak,
        aws_secret_access_key=sk,
        region_name=region,
        config=config,
    )


def _reference(
    operation: str,
    params: Mapping[str, Any],
    *,
    expires_in: int,
    now: datetime,
    endpoint: str = "http://127.0.0.1:9000",
    ak: str = AK,
    sk: str = SK,
    region: str = "us-east-1",
    checksum: ChecksumMode = "when_supported",
) -> str:
    client = _client(endpoint, ak, sk, region, checksum)
    with mock.patch("botocore.auth.get_current_datetime", return_value=_naive_utc(now)):
        url: str = client.generate_presigned_url(
            operation, Params=dict(params), ExpiresIn=expires_in
        )
    return url


def _reference_signer(
    method: str,
    url: str,
    headers: Mapping[str, str],
    *,
    expires_in: int,
    now: datetime,
    region: str = "us-east-1",
) -> str:
    """botocore's presign-url signer (S3SigV4QueryAuth) applied to a hand-built request.

    Reaches header names / query names no S3 operation would produce through the client.
    """
    credentials = botocore.credentials.Credentials(AK, SK)
    signer = botocore.auth.S3SigV4QueryAuth(credentials, "s3", region, expires=expires_in)
    request = botocore.awsrequest.AWSRequest(method=method, url=url, headers=dict(headers))
    with mock.patch("botocore.auth.get_current_datetime", return_value=_naive_utc(now)):
        signer.add_auth(request)
    url = request.prepare().url
    return url


# --------------------------------------------------------------------------- strategies

_printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_special = st.sampled_from([*" +%~/!*'()&=?#;:@,$[]\"\\^`{}|<>", "😀", "é", "✓", "日"])
_unicode = st.characters(blacklist_categories=("Cs", "Cc"))
keys = st.builds(
    lambda prefix, tail: prefix + tail,
    st.sampled_from(["", "uploads/2f3c9a1e-6d7b-4f8e-9c0a-1b2c3d4e5f60/", "/", "a//b/"]),
    st.text(st.one_of(_special, _unicode, _printable), min_size=1, max_size=80),
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/octet-stream",
            "text/plain; charset=utf-8",
            "image/png",
            "  text/plain ;   charset=UTF-8  ",
            "application/x-www-form-urlencoded; charset=utf-8",  # botocore drops this one
            "application/x-www-form-urlencoded",
            "",
        ]
    ),
    st.text(_printable, max_size=60),
)
sha256_b64 = st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode())
crc32c_b64 = st.binary(min_size=4, max_size=4).map(lambda b: base64.b64encode(b).decode())
metadata = st.dictionaries(
    st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=20),
    st.text(_printable, max_size=40),  # botocore rejects non-ASCII metadata
    max_size=4,
)
expires = st.integers(1, 604800)
part_numbers = st.integers(1, 10000)
upload_ids = st.one_of(
    st.text(string.ascii_letters + string.digits + "-_.~/+=", min_size=1, max_size=120),
    st.text(_unicode, min_size=1, max_size=40),
)
_filename = st.text(st.one_of(_unicode, _printable), min_size=1, max_size=30)
dispositions = st.one_of(
    st.builds(
        lambda kind, ascii_name, name: (
            f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
        ),
        st.sampled_from(["attachment", "inline"]),
        st.text(string.ascii_letters + string.digits + "._- ", min_size=1, max_size=30),
        _filename,
    ),
    st.text(st.one_of(_unicode, _printable), min_size=1, max_size=80),
)
endpoints = st.builds(
    lambda scheme, host, port, suffix: f"{scheme}://{host}{port}{suffix}",
    st.sampled_from(["http", "https"]),
    st.sampled_from(
        ["127.0.0.1", "localhost", "minio", "s3.example.com", "S3.Example.COM", "[::1]"]
    ),
    st.one_of(
        st.just(""),
        st.sampled_from([":80", ":443", ":9000"]),
        st.integers(1, 65535).map(lambda p: f":{p}"),
    ),
    st.sampled_from(["", "/", "/s3"]),
)
regions = st.sampled_from(["us-east-1", "eu-central-1", "ap-southeast-2", "us-gov-west-1", "minio"])
access_keys = st.text(string.ascii_uppercase + string.digits, min_size=3, max_size=20)
secret_keys = st.text(string.ascii_letters + string.digits + "/+", min_size=8, max_size=40)
times = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2099, 12, 31),
    timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30))]),
)
buckets = st.from_regex(r"[a-z0-9](?:[a-z0-9-]|\.[a-z0-9]){1,40}[a-z0-9]", fullmatch=True)


# --------------------------------------------------------------------------- property tests


@SETTINGS
@given(
    endpoint=endpoints,
    region=regions,
    ak=access_keys,
    sk=secret_keys,
    bucket=buckets,
    key=keys,
    content_type=content_types,
    size=st.none() | st.integers(0, 5 * 1024**4),
    checksum=st.none() | sha256_b64,
    meta=metadata,
    if_none_match=st.booleans(),
    expires_in=expires,
    now=times,
)
def test_presign_put_object_matches_botocore(
    endpoint: str,
    region: str,
    ak: str,
    sk: str,
    bucket: str,
    key: str,
    content_type: str,
    size: int | None,
    checksum: str | None,
    meta: dict[str, str],
    if_none_match: bool,
    expires_in: int,
    now: datetime,
) -> None:
    params: dict[str, Any] = {"Bucket": bucket, "Key": key, "ContentType": content_type}
    headers = {"content-type": content_type}
    if size is not None:
        params["ContentLength"] = size
        headers["content-length"] = str(size)
    if checksum is not None:
        params["ChecksumSHA256"] = checksum
        headers["x-amz-checksum-sha256"] = checksum
    if meta:
        params["Metadata"] = meta
        headers.update({f"x-amz-meta-{k}": v for k, v in meta.items()})
    if if_none_match:
        params["IfNoneMatch"] = "*"
        headers["if-none-match"] = "*"

    expected = _reference(
        "put_object",
        params,
        expires_in=expires_in,
        now=now,
        endpoint=endpoint,
        ak=ak,
        sk=sk,
        region=region,
    )
    got = Presigner(endpoint, ak, sk, region).presign(
        "PUT", bucket, key, expires_in=expires_in, headers=headers, now=now
    )
    assert got == expected


@SETTINGS
@given(
    endpoint=endpoints,
    region=regions,
    key=keys,
    disposition=st.none() | dispositions,
    response_type=st.none() | content_types.filter(bool),
    type_first=st.booleans(),
    expires_in=expires,
    now=times,
)
def test_presign_get_object_matches_botocore(
    endpoint: str,
    region: str,
    key: str,
    disposition: str | None,
    response_type: str | None,
    type_first: bool,
    expires_in: int,
    now: datetime,
) -> None:
    items = [
        ("ResponseContentDisposition", "response-content-disposition", disposition),
        ("ResponseContentType", "response-content-type", response_type),
    ]
    if type_first:
        items.reverse()
    params: dict[str, Any] = {"Bucket": "media", "Key": key}
    query = {}
    for param, name, value in items:
        if value is not None:
            params[param] = value
            query[name] = value

    expected = _reference(
        "get_object", params, expires_in=expires_in, now=now, endpoint=endpoint, region=region
    )
    got = Presigner(endpoint, AK, SK, region).presign(
        "GET", "media", key, expires_in=expires_in, query=query, now=now
    )
    assert got == expected


@SETTINGS
@given(
    endpoint=endpoints,
    key=keys,
    upload_id=upload_ids,
    part_number=part_numbers,
    checksum=st.none()
    | st.tuples(st.just("sha256"), sha256_b64)
    | st.tuples(st.just("crc32c"), crc32c_b64),
    size=st.none() | st.integers(0, 5 * 1024**3),
    upload_id_first=st.booleans(),
    expires_in=expires,
    now=times,
)
def test_presign_upload_part_matches_botocore(
    endpoint: str,
    key: str,
    upload_id: str,
    part_number: int,
    checksum: tuple[str, str] | None,
    size: int | None,
    upload_id_first: bool,
    expires_in: int,
    now: datetime,
) -> None:
    if upload_id_first:
        params: dict[str, Any] = {"UploadId": upload_id, "PartNumber": part_number}
        query = {"uploadId": upload_id, "partNumber": str(part_number)}
    else:
        params = {"PartNumber": part_number, "UploadId": upload_id}
        query = {"partNumber": str(part_number), "uploadId": upload_id}
    params.update(Bucket="uploads", Key=key)
    headers = {}
    if size is not None:  # the broker always signs the part's exact length
        params["ContentLength"] = size
        headers["content-length"] = str(size)
    if checksum is not None:
        algorithm, value = checksum
        params[f"Checksum{algorithm.upper()}"] = value
        headers[f"x-amz-checksum-{algorithm}"] = value

    expected = _reference("upload_part", params, expires_in=expires_in, now=now, endpoint=endpoint)
    got = Presigner(endpoint, AK, SK, "us-east-1").presign(
        "PUT", "uploads", key, expires_in=expires_in, headers=headers, query=query, now=now
    )
    assert got == expected


_header_names = st.one_of(
    st.sampled_from(
        [
            *("Content-Type", "content-type", "X-Amz-Meta-A", "x-amz-meta-a", "Host", "host"),
            *("user-agent", "Expect", "x-amzn-trace-id", "X-Amz-Content-SHA256"),
        ]
    ),
    st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=20),
)
_query_names = st.one_of(
    st.sampled_from(["A", "X-Amz-Foo", "X-Amz-Date2", "Z", "versionId", "x-id", "uploads"]),
    st.text(st.one_of(_printable, _unicode), min_size=1, max_size=20),
)
_header_values = st.text(
    st.one_of(_printable, _unicode, st.sampled_from(["\t", "\u3000", "\xa0", " "])),
    max_size=40,
)


@SETTINGS
@given(
    method=st.sampled_from(["GET", "PUT", "HEAD", "DELETE", "POST", "get"]),
    endpoint=endpoints,
    key=keys,
    headers=st.dictionaries(_header_names, _header_values, max_size=6),
    query=st.dictionaries(_query_names, st.text(st.one_of(_printable, _unicode)), max_size=4),
    expires_in=expires,
    now=times,
)
def test_presign_arbitrary_headers_and_query_match_botocore_signer(
    method: str,
    endpoint: str,
    key: str,
    headers: dict[str, str],
    query: dict[str, str],
    expires_in: int,
    now: datetime,
) -> None:
    url = f"{endpoint.rstrip('/')}/bkt/{botocore.utils.percent_encode(key, safe='/~')}"
    if query:
        url += "?" + botocore.utils.percent_encode_sequence(query)
    expected = _reference_signer(method, url, headers, expires_in=expires_in, now=now)
    got = Presigner(endpoint, AK, SK, "us-east-1").presign(
        method, "bkt", key, expires_in=expires_in, headers=headers, query=query, now=now
    )
    assert got == expected


# --------------------------------------------------------------------------- explicit examples


def test_presign_put_with_all_broker_headers_matches_botocore() -> None:
    key = "uploads/2f3c9a1e/a b+c%~é😀.txt"
    digest = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hLuBY="
    expected = _reference(
        "put_object",
        {
            "Bucket": "uploads",
            "Key": key,
            "ContentType": "text/plain",
            "ContentLength": 12,
            "ChecksumSHA256": digest,
            "Metadata": {"upload-id": "0b9d6a"},
            "IfNoneMatch": "*",
        },
        expires_in=900,
        now=NOW,
    )
    got = Presigner("http://127.0.0.1:9000", AK, SK, "us-east-1").presign(
        "PUT",
        "uploads",
        key,
        expires_in=900,
        headers={
            "content-type": "text/plain",
            "content-length": "12",
            "x-amz-checksum-sha256": digest,
            "x-amz-meta-upload-id": "0b9d6a",
            "if-none-match": "*",
        },
        now=NOW,
    )
    assert got == expected
    assert got.startswith(
        "http://127.0.0.1:9000/uploads/uploads/2f3c9a1e/a%20b%2Bc%25~%C3%A9%F0%9F%98%80.txt?"
    )
    assert (
        "X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost%3Bif-none-match"
        "%3Bx-amz-checksum-sha256%3Bx-amz-meta-upload-id&X-Amz-Signature="
    ) in got


def test_presign_get_with_rfc5987_disposition_matches_botocore() -> None:
    disposition = "attachment; filename=\"a_b.txt\"; filename*=UTF-8''%E2%9C%93.txt"
    expected = _reference(
        "get_object",
        {
            "Bucket": "media",
            "Key": "reports/✓.txt",
            "ResponseContentDisposition": disposition,
            "ResponseContentType": "text/plain; charset=utf-8",
        },
        expires_in=3600,
        now=NOW,
        endpoint="https://s3.example.com",
        region="eu-central-1",
    )
    got = Presigner("https://s3.example.com", AK, SK, "eu-central-1").presign(
        "GET",
        "media",
        "reports/✓.txt",
        expires_in=3600,
        query={
            "response-content-disposition": disposition,
            "response-content-type": "text/plain; charset=utf-8",
        },
        now=NOW,
    )
    assert got == expected
    assert "?response-content-disposition=attachment%3B%20filename%3D%22a_b.txt%22%3B%20" in got


def test_presign_upload_part_example_matches_botocore() -> None:
    expected = _reference(
        "upload_part",
        {
            "Bucket": "b",
            "Key": "k",
            "UploadId": "up/id+=",
            "PartNumber": 7,
            "ChecksumCRC32C": "yZRlqg==",
        },
        expires_in=60,
        now=NOW,
    )
    got = Presigner("http://127.0.0.1:9000", AK, SK, "us-east-1").presign(
        "PUT",
        "b",
        "k",
        expires_in=60,
        headers={"x-amz-checksum-crc32c": "yZRlqg=="},
        query={"uploadId": "up/id+=", "partNumber": "7"},
        now=NOW,
    )
    assert got == expected
    assert "/b/k?uploadId=up%2Fid%2B%3D&partNumber=7&X-Amz-Algorithm=" in got


@pytest.mark.parametrize(
    ("method", "operation", "params", "query"),
    [
        ("HEAD", "head_object", {}, {}),
        ("DELETE", "delete_object", {}, {}),
        ("POST", "create_multipart_upload", {}, {"uploads": ""}),
        ("DELETE", "abort_multipart_upload", {"UploadId": "u-1"}, {"uploadId": "u-1"}),
    ],
)
def test_presign_other_methods_match_botocore(
    method: str, operation: str, params: dict[str, str], query: dict[str, str]
) -> None:
    expected = _reference(operation, {"Bucket": "b", "Key": "a/b", **params}, expires_in=5, now=NOW)
    got = Presigner("http://127.0.0.1:9000", AK, SK, "us-east-1").presign(
        method, "b", "a/b", expires_in=5, query=query, now=NOW
    )
    assert got == expected


@pytest.mark.parametrize(
    ("endpoint", "host_in_url"),
    [
        ("http://127.0.0.1:80", "http://127.0.0.1:80/"),
        ("https://S3.Example.com:443/", "https://S3.Example.com:443/"),
        ("http://minio:443", "http://minio:443/"),
        ("http://[::1]:9000", "http://[::1]:9000/"),
    ],
)
def test_presign_default_ports_and_host_case_match_botocore(
    endpoint: str, host_in_url: str
) -> None:
    expected = _reference(
        "get_object", {"Bucket": "b", "Key": "k"}, expires_in=5, now=NOW, endpoint=endpoint
    )
    got = Presigner(endpoint, AK, SK, "us-east-1").presign("GET", "b", "k", expires_in=5, now=NOW)
    assert got == expected
    assert got.startswith(host_in_url)


def test_presign_drops_botocore_default_form_content_type_like_botocore() -> None:
    form = "application/x-www-form-urlencoded; charset=utf-8"
    expected = _reference(
        "put_object", {"Bucket": "b", "Key": "k", "ContentType": form}, expires_in=5, now=NOW
    )
    got = Presigner("http://127.0.0.1:9000", AK, SK, "us-east-1").presign(
        "PUT", "b", "k", expires_in=5, headers={"content-type": form}, now=NOW
    )
    assert got == expected
    assert "X-Amz-SignedHeaders=host&" in got


def test_presign_matches_botocore_regardless_of_checksum_config() -> None:
    params = {
        "Bucket": "b",
        "Key": "k",
        "ContentType": "text/plain",
        "ChecksumSHA256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hLuBY=",
    }
    supported = _reference("put_object", params, expires_in=5, now=NOW)
    required = _reference("put_object", params, expires_in=5, now=NOW, checksum="when_required")
    assert supported == required
    got = Presigner("http://127.0.0.1:9000", AK, SK, "us-east-1").presign(
        "PUT",
        "b",
        "k",
        expires_in=5,
        now=NOW,
        headers={"content-type": "text/plain", "x-amz-checksum-sha256": params["ChecksumSHA256"]},
    )
    assert got == supported
    assert "sdk-checksum" not in got


def test_presign_rolls_cached_signing_key_on_new_day() -> None:
    presigner = Presigner("http://127.0.0.1:9000", AK, SK, "us-east-1")
    day1 = datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC)
    day2 = day1 + timedelta(seconds=2)
    params = {"Bucket": "b", "Key": "k"}

    for now in (day1 - timedelta(hours=1), day1):
        got = presigner.presign("GET", "b", "k", expires_in=60, now=now)
        assert got == _reference("get_object", params, expires_in=60, now=now)
    cached_day1 = presigner._key_cache
    assert cached_day1 is not None
    assert cached_day1[0] == "20241231"
    presigner.presign("GET", "b", "k", expires_in=60, now=day1)
    assert presigner._key_cache is cached_day1  # same day: derived key reused

    got = presigner.presign("GET", "b", "k", expires_in=60, now=day2)
    assert got == _reference("get_object", params, expires_in=60, now=day2)
    assert "X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20250101%2F" in got
    assert presigner._key_cache is not None
    assert presigner._key_cache[0] == "20250101"

    # Going back (e.g. a late caller with an old `now`) still signs correctly.
    got = presigner.presign("GET", "b", "k", expires_in=60, now=day1)
    assert got == _reference("get_object", params, expires_in=60, now=day1)


def test_presign_default_now_is_current_utc_time() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    url = Presigner("http://127.0.0.1:9000", AK, SK, "us-east-1").presign(
        "GET", "b", "k", expires_in=60
    )
    after = datetime.now(UTC)
    stamp = url.split("X-Amz-Date=")[1].split("&")[0]
    signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert before <= signed_at <= after
    assert url == _reference(
        "get_object", {"Bucket": "b", "Key": "k"}, expires_in=60, now=signed_at
    )


def test_presign_repeated_and_special_headers_match_botocore_signer() -> None:
    headers = {
        "X-Amz-Meta-A": " one  ",
        "x-amz-meta-a": "two\tthree",  # same header twice: botocore comma-joins the values
        "User-Agent": "curl/8",  # never signed by botocore
        "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD-CUSTOM",  # used verbatim as payload hash
        "Host": "cdn.example.com",  # overrides the endpoint-derived host
    }
    url = "http://127.0.0.1:9000/bkt/k"
    expected = _reference_signer("PUT", url, headers, expires_in=60, now=NOW)
    got = Presigner("http://127.0.0.1:9000", AK, SK, "us-east-1").presign(
        "PUT", "bkt", "k", expires_in=60, headers=headers, now=NOW
    )
    assert got == expected
    assert "X-Amz-SignedHeaders=host%3Bx-amz-content-sha256%3Bx-amz-meta-a&" in got


@pytest.mark.parametrize("expires_in", [0, -1, sigv4._MAX_EXPIRES + 1])
def test_presign_rejects_out_of_range_expiry(expires_in: int) -> None:
    with pytest.raises(ValueError, match="expires_in"):
        Presigner("http://127.0.0.1:9000", AK, SK, "us-east-1").presign(
            "GET", "b", "k", expires_in=expires_in, now=NOW
        )
