"""Bearer tokens: HS256 JWTs whose `sub` owns uploads. Pure: no I/O."""

from __future__ import annotations

import base64
import hmac
import time
from dataclasses import dataclass

import jwt

from broker.hmac_key import HmacSha256Key

ALGORITHM = "HS256"


class InvalidToken(Exception):
    """The token is missing, expired, forged or malformed."""


@dataclass(frozen=True)
class Principal:
    """Who is asking."""

    subject: str
    admin: bool = False


def issue_token(
    secret: str,
    subject: str,
    ttl_seconds: int = 3600,
    admin: bool = False,
    scope: str | None = None,
) -> str:
    """A signed token for `subject`, valid for `ttl_seconds`; a `scope` narrows it to the
    routes that ask for that scope (and nothing else accepts it)."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": subject, "iat": now, "exp": now + ttl_seconds}
    if admin:
        claims["admin"] = True
    if scope is not None:
        claims["scope"] = scope
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


UPPY_SCOPE = "uppy"


def verify_scoped_token(secret: str, token: str, scope: str) -> Principal:
    """The principal of a token issued with exactly this scope, or InvalidToken."""
    claims = _decode(secret, token)
    if claims.get("scope") != scope:
        raise InvalidToken(f"this route needs a token with scope {scope!r}")
    return _principal(claims)


def issue_events_token(secret: str, subject: str, upload_id: str, ttl_seconds: int = 600) -> str:
    """A token that only opens the live status stream of one upload, for its owner.

    EventSource cannot send headers, so it travels in the URL: hence short-lived and
    narrow. A bare HMAC (not a JWT) because it is minted with every create, on the hot path.
    """
    expires = int(time.time()) + ttl_seconds
    return f"{expires}.{_events_signature(secret, subject, upload_id, expires)}"


def verify_events_token(secret: str, token: str, upload_id: str, owner: str) -> Principal:
    """The owner, if `token` was issued for exactly this upload of theirs and is unexpired."""
    expires_text, _, signature = token.partition(".")
    if not expires_text.isdigit() or int(expires_text) < time.time():
        raise InvalidToken("the stream token is malformed or expired")
    expected = _events_signature(secret, owner, upload_id, int(expires_text))
    if not hmac.compare_digest(signature, expected):
        raise InvalidToken("this token does not open this upload's stream")
    return Principal(subject=owner)


_EVENTS_KEYS: dict[str, HmacSha256Key] = {}  # by secret: one per process in practice


def _events_signature(secret: str, subject: str, upload_id: str, expires: int) -> str:
    key = _EVENTS_KEYS.get(secret)
    if key is None:
        key = _EVENTS_KEYS[secret] = HmacSha256Key(secret.encode())
    digest = key.digest(f"upload-events\n{upload_id}\n{subject}\n{expires}".encode())
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _decode(secret: str, token: str) -> dict[str, object]:
    try:
        return jwt.decode(  # type: ignore[no-any-return]
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc


# Verified tokens and their expiry: a client sends the same token with every request, and
# checking an HS256 signature costs more than the rest of the auth step.
_VERIFIED: dict[tuple[str, str], tuple[Principal, float]] = {}
_VERIFIED_MAX = 4096


def verify_token(secret: str, token: str) -> Principal:
    """Check signature and expiry; return the principal or raise InvalidToken.

    A JWT with a `scope` claim is refused: scoped tokens are good for one route only.
    """
    cached = _VERIFIED.get((secret, token))
    if cached is not None and cached[1] > time.time():
        return cached[0]
    claims = _decode(secret, token)
    if "scope" in claims:
        raise InvalidToken("a scoped token cannot be used here")
    principal = _principal(claims)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[(secret, token)] = (principal, float(claims["exp"]))  # type: ignore[arg-type]
    return principal


def _principal(claims: dict[str, object]) -> Principal:
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject or len(subject) > 255:
        raise InvalidToken("sub must be a non-empty string of at most 255 characters")
    return Principal(subject=subject, admin=claims.get("admin") is True)
