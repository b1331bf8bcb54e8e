"""Pure-Python SigV4 query-string presigner, byte-identical to botocore's S3 presigned URLs."""

from __future__ import annotations

import hashlib
import hmac
import re
import string
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

from broker.hmac_key import HmacSha256Key

__all__ = ["Presigner"]

_ALGORITHM = "AWS4-HMAC-SHA256"
_SERVICE = "s3"
_TERMINATOR = "aws4_request"
_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_MAX_EXPIRES = 604800  # 7 days, the SigV4 query-auth limit
_DEFAULT_PORTS = {"http": 80, "https": 443}
_AMZ_DATE = "%04d%02d%02dT%02d%02d%02dZ"  # printf: ~3x faster than strftime on the hot path

# botocore.auth.SIGNED_HEADERS_BLACKLIST: headers botocore never puts into the signature.
_UNSIGNED_HEADERS = frozenset(
    "baggage connection expect keep-alive proxy-authenticate proxy-authorization te traceparent"
    " tracestate trailer transfer-encoding upgrade user-agent x-amzn-trace-id".split()
)
# SigV4QueryAuth silently drops a Content-Type with exactly this value (its own auto-set
# form-encoding default) before signing, even when the caller asked for it explicitly.
_DROPPED_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"


def _quote_table(safe: str) -> dict[int, str]:
    # Complete 256-entry table: str.translate raises (and swallows) KeyError on every
    # unmapped character, which makes partial tables several times slower.
    keep = {ord(c) for c in f"{string.ascii_letters}{string.digits}-_.~{safe}"}
    return {b: chr(b) if b in keep else f"%{b:02X}" for b in range(256)}


_QUERY_TABLE = _quote_table("")
_PATH_TABLE = _quote_table("/")
_is_plain_query = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch
_is_plain_path = re.compile(r"[A-Za-z0-9_.~/-]*").fullmatch


def _q(value: str) -> str:
    """botocore.utils.percent_encode: UTF-8, only RFC 3986 unreserved characters kept."""
    if _is_plain_query(value):
        return value
    return value.encode().decode("latin-1").translate(_QUERY_TABLE)


_SIGNED_HEADERS_Q: dict[str, str] = {}  # memo: few distinct signed-header sets per process


def _q_signed(signed_headers: str) -> str:
    quoted = _SIGNED_HEADERS_Q.get(signed_headers)
    if quoted is None:
        quoted = _q(signed_headers)
        if len(_SIGNED_HEADERS_Q) < 1024:
            _SIGNED_HEADERS_Q[signed_headers] = quoted
    return quoted


def _q_path(value: str) -> str:
    """Key quoting of botocore's greedy ``{Key+}`` label: percent_encode(key, safe="/~")."""
    if _is_plain_path(value):
        return value
    return value.encode().decode("latin-1").translate(_PATH_TABLE)


def _host_header(endpoint_url: str) -> str:
    """Host header value exactly as botocore.auth._host_from_url derives it."""
    parts = urlsplit(endpoint_url)
    if not parts.hostname:
        raise ValueError(f"endpoint_url has no host: {endpoint_url!r}")
    host = parts.hostname  # lowercased, userinfo stripped
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


class Presigner:
    """Signs S3 path-style URLs with SigV4 query authentication."""

    def __init__(self, endpoint_url: str, access_key: str, secret_key: str, region: str) -> None:
        base = endpoint_url.rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in _DEFAULT_PORTS:
            raise ValueError(f"endpoint_url must be http(s): {endpoint_url!r}")
        self._base = base  # the URL keeps the endpoint verbatim (case, default port)
        self._base_path = parts.path  # non-empty when the endpoint carries a path prefix
        self._host = _host_header(base)
        self._secret = f"AWS4{secret_key}".encode()
        self._region = region
        self._scope_tail = f"/{region}/{_SERVICE}/{_TERMINATOR}"
        self._cred_prefix = f"X-Amz-Credential={_q(access_key)}%2F"
        self._cred_suffix = _q(self._scope_tail)
        # (datestamp, its signing key); replaced whole, so thread-safe.
        self._key_cache: tuple[str, HmacSha256Key] | None = None

    def _signing_key(self, datestamp: str) -> HmacSha256Key:
        cached = self._key_cache  # single read: a concurrent replace is harmless
        if cached is not None and cached[0] == datestamp:
            return cached[1]
        k = self._secret
        for part in (datestamp, self._region, _SERVICE, _TERMINATOR):
            k = hmac.digest(k, part.encode(), "sha256")
        key = HmacSha256Key(k)
        self._key_cache = (datestamp, key)
        return key

    def presign(
        self,
        method: str,
        bucket: str,
        key: str,
        *,
        expires_in: int,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        now: datetime | None = None,
    ) -> str:
        """Return a presigned URL for ``method`` on ``bucket``/``key``.

        ``headers`` must be sent verbatim by the client; they are signed together with
        ``host``. ``query`` params are emitted in mapping order ahead of the auth params
        (botocore emits them in ``Params`` order). A naive ``now`` is taken as UTC.
        """
        if not 1 <= expires_in <= _MAX_EXPIRES:
            raise ValueError(f"expires_in must be within 1..{_MAX_EXPIRES}, got {expires_in}")
        if not bucket or not key:
            raise ValueError("bucket and key must be non-empty")
        if now is None:
            now = datetime.now(UTC)
        elif now.tzinfo is not None:
            now = now.astimezone(UTC)
        amz_date = _AMZ_DATE % (now.year, now.month, now.day, now.hour, now.minute, now.second)
        datestamp = amz_date[:8]

        # Canonical headers: lowercase names, sorted, values trimmed, repeats comma-joined.
        values: dict[str, str] = {}
        payload = _UNSIGNED_PAYLOAD
        if headers:
            for name, value in headers.items():
                lname = name.lower()
                if lname in _UNSIGNED_HEADERS or (
                    lname == "content-type" and value == _DROPPED_CONTENT_TYPE
                ):
                    continue
                trimmed = " ".join(value.split())
                if lname in values:
                    values[lname] += f",{trimmed}"
                else:
                    values[lname] = trimmed
                    if lname == "x-amz-content-sha256":
                        payload = value  # botocore signs a caller-set payload hash verbatim
        if "host" not in values:
            values["host"] = self._host
        names = sorted(values)
        signed_headers = ";".join(names)
        canonical_headers = "\n".join([f"{n}:{values[n]}" for n in names])

        auth_qs = (
            f"X-Amz-Algorithm={_ALGORITHM}&{self._cred_prefix}{datestamp}{self._cred_suffix}"
            f"&X-Amz-Date={amz_date}&X-Amz-Expires={expires_in}"
            f"&X-Amz-SignedHeaders={_q_signed(signed_headers)}"
        )
        if query:
            # The URL keeps the operation params first (in caller order), then the auth
            # params; the canonical query is all encoded (name, value) pairs sorted.
            pairs = [(_q(k), _q(v)) for k, v in query.items()]
            url_qs = "&".join([f"{k}={v}" for k, v in pairs]) + "&" + auth_qs
            if min(pairs)[0] > "X-Amz-SignedHeaders":  # usual: all sort after the auth block
                canonical_qs = auth_qs + "&" + "&".join([f"{k}={v}" for k, v in sorted(pairs)])
            else:
                pairs.extend((k, v) for k, _, v in (p.partition("=") for p in auth_qs.split("&")))
                canonical_qs = "&".join([f"{k}={v}" for k, v in sorted(pairs)])
        else:
            url_qs = canonical_qs = auth_qs  # the auth params are already in sorted order

        path = f"/{_q(bucket)}/{_q_path(key)}"
        canonical_request = (
            f"{method.upper()}\n{self._base_path}{path}\n{canonical_qs}\n"
            f"{canonical_headers}\n\n{signed_headers}\n{payload}"
        )
        string_to_sign = (
            f"{_ALGORITHM}\n{amz_date}\n{datestamp}{self._scope_tail}\n"
            f"{hashlib.sha256(canonical_request.encode()).hexdigest()}"
        )
        signature = self._signing_key(datestamp).hexdigest(string_to_sign.encode())
        return f"{self._base}{path}?{url_qs}&X-Amz-Signature={signature}"
