"""Standard Webhooks 1.0 signatures: secrets and the three headers of a delivery. Pure: no I/O.

`webhook-signature` is `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key
is the base64-decoded part of the `whsec_` secret; while a rotated secret still overlaps, one
signature per secret, space-separated (receivers accept a message if any one verifies).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def secret_from_bytes(raw: bytes) -> str:
    """An endpoint secret (`whsec_` + base64) from SECRET_BYTES random bytes."""
    if len(raw) != SECRET_BYTES:
        raise ValueError(f"a secret needs {SECRET_BYTES} random bytes")
    return SECRET_PREFIX + base64.b64encode(raw).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of a message under one secret."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The webhook-* headers of one attempt, signed with every secret given (newest first)."""
    if not secrets:
        raise ValueError("a message needs at least one secret to sign it")
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, message_id, timestamp, body) for s in secrets),
    }
