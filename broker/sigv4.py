"""Pure-Python SigV4 query-string presigner, byte-identical to botocore's S3 presigned URLs."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

__all__ = ["Presigner"]

_ALGORITHM = "AWS4-HMAC-SHA256"
_SERVICE = "s3"
_TERMINATOR = "aws4_request"
_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_MAX_EXPIRES = 604800  # 7 days, the SigV4 query-auth limit
_DEFAULT_PORTS = {"http": 80, "https": 443}

# botocore.auth.SIGNED_HEADERS_BLACKLIST: headers botocore never puts into the signature.
_UNSIGNED_HEADERS = frozenset(
    {
        "baggage",
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "traceparent",
        "tracestate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    }
)
# SigV4QueryAuth silently drops a Content-Type with exactly this value (its own auto-set
# form-encoding default) before signing, even when the caller asked for it explicitly.
_DROPPED_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"


def _quote_table(safe: str) -> dict[int, str]:
    keep = {ord(c) for c in f"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~{safe}"}
    return {b: f"%{b:02X}" for b in range(256) if b not in keep}


_QUERY_TABLE = _quote_table("")
_PATH_TABLE = _quote_table("/")
_is_plain_query = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch
_is_plain_path = re.compile(r"[A-Za-z0-9_.~/-]*").fullmatch
_TRANS_36 = bytes(b ^ 0x36 for b in range(256))
_TRANS_5C = bytes(b ^ 0x5C for b in range(256))


def _q(value: str) -> str:
    """botocore.utils.percent_encode: UTF-8, only RFC 3986 unreserved characters kept."""
    if _is_plain_query(value):
        return value
    return value.encode().decode("latin-1").translate(_QUERY_TABLE)


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


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.digest(key, msg.encode(), "sha256")


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
        self._access_key = access_key
        self._secret = f"AWS4{secret_key}".encode()
        self._region = region
        self._scope_tail = f"/{region}/{_SERVICE}/{_TERMINATOR}"
        self._cred_prefix = f"{_q(access_key)}%2F"
        self._cred_suffix = _q(self._scope_tail)
        self._key_cache: tuple[str, bytes] = ("", b"")

    def _signing_key(self, datestamp: str) -> bytes:
        cached = self._key_cache  # single read: a concurrent replace is harmless
        if cached[0] == datestamp:
            return cached[1]
        k = _hmac(self._secret, datestamp)
        k = _hmac(k, self._region)
        k = _hmac(k, _SERVICE)
        k = _hmac(k, _TERMINATOR)
        self._key_cache = (datestamp, k)
        return k

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
        if not key:
            raise ValueError("key must be non-empty")
        if now is None:
            now = datetime.now(UTC)
        elif now.tzinfo is not None:
            now = now.astimezone(UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        datestamp = amz_date[:8]

        # Canonical headers: lowercase names, sorted, values trimmed, repeats comma-joined.
        values: dict[str, list[str]] = {}
        payload = _UNSIGNED_PAYLOAD
        if headers:
            for name, value in headers.items():
                lname = name.lower()
                if lname in _UNSIGNED_HEADERS:
                    continue
                if lname == "content-type" and value == _DROPPED_CONTENT_TYPE:
                    continue
                if lname == "x-amz-content-sha256" and lname not in values:
                    payload = value  # botocore signs a caller-set payload hash verbatim
                values.setdefault(lname, []).append(" ".join(value.split()))
        if "host" not in values:
            values["host"] = [self._host]
        names = sorted(values)
        signed_headers = ";".join(names)
        canonical_headers = "\n".join(f"{n}:{','.join(values[n])}" for n in names)

        auth = [
            ("X-Amz-Algorithm", _ALGORITHM),
            ("X-Amz-Credential", f"{self._cred_prefix}{datestamp}{self._cred_suffix}"),
            ("X-Amz-Date", amz_date),
            ("X-Amz-Expires", str(expires_in)),
            ("X-Amz-SignedHeaders", _q(signed_headers)),
        ]
        auth_qs = "&".join(f"{k}={v}" for k, v in auth)
        if query:
            # Canonical query = all encoded (name, value) pairs sorted; the URL keeps the
            # operation params first (in caller order), then the auth params.
            pairs = [(_q(k), _q(v)) for k, v in query.items()]
            url_qs = "&".join(f"{k}={v}" for k, v in pairs) + "&" + auth_qs
            canonical_qs = "&".join(f"{k}={v}" for k, v in sorted(pairs + auth))
        else:
            url_qs = canonical_qs = auth_qs  # the auth params are already in sorted order

        path = f"/{_q(bucket)}/{quote(key, safe='/~')}"
        canonical_request = (
            f"{method.upper()}\n{self._base_path}{path}\n{canonical_qs}\n"
            f"{canonical_headers}\n\n{signed_headers}\n{payload}"
        )
        string_to_sign = (
            f"{_ALGORITHM}\n{amz_date}\n{datestamp}{self._scope_tail}\n"
            f"{hashlib.sha256(canonical_request.encode()).hexdigest()}"
        )
        signature = hmac.digest(
            self._signing_key(datestamp), string_to_sign.encode(), "sha256"
        ).hex()
        return f"{self._base}{path}?{url_qs}&X-Amz-Signature={signature}"
