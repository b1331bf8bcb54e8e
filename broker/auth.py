"""Bearer tokens: HS256 JWTs whose `sub` owns uploads. Pure: no I/O."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"


class InvalidToken(Exception):
    """The token is missing, expired, forged or malformed."""


@dataclass(frozen=True)
class Principal:
    """Who is asking."""

    subject: str
    admin: bool = False


def issue_token(secret: str, subject: str, ttl_seconds: int = 3600, admin: bool = False) -> str:
    """A signed token for `subject`, valid for `ttl_seconds`."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": subject, "iat": now, "exp": now + ttl_seconds}
    if admin:
        claims["admin"] = True
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


EVENTS_SCOPE = "upload-events"


def issue_events_token(secret: str, subject: str, upload_id: str, ttl_seconds: int = 600) -> str:
    """A token that only opens the live status stream of one upload (EventSource cannot
    send headers, so it travels in the URL: hence short-lived and narrow)."""
    now = int(time.time())
    claims = {
        "sub": subject,
        "iat": now,
        "exp": now + ttl_seconds,
        "scope": EVENTS_SCOPE,
        "upload": upload_id,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _decode(secret: str, token: str) -> dict[str, object]:
    try:
        return jwt.decode(  # type: ignore[no-any-return]
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc


def verify_events_token(secret: str, token: str, upload_id: str) -> Principal:
    """The owner named by a stream token for exactly this upload, or InvalidToken."""
    claims = _decode(secret, token)
    if claims.get("scope") != EVENTS_SCOPE or claims.get("upload") != upload_id:
        raise InvalidToken("this token does not open this upload's stream")
    return _principal(claims)


# Verified tokens and their expiry: a client sends the same token with every request, and
# checking an HS256 signature costs more than the rest of the auth step.
_VERIFIED: dict[tuple[str, str], tuple[Principal, float]] = {}
_VERIFIED_MAX = 4096


def verify_token(secret: str, token: str) -> Principal:
    """Check signature and expiry; return the principal or raise InvalidToken.

    Scoped tokens (such as stream tokens) are refused: they are good for one route only.
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
