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


def verify_token(secret: str, token: str) -> Principal:
    """Check signature and expiry; return the principal or raise InvalidToken."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject or len(subject) > 255:
        raise InvalidToken("sub must be a non-empty string of at most 255 characters")
    return Principal(subject=subject, admin=claims.get("admin") is True)
