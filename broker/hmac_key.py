"""HMAC-SHA256 with a fixed key whose padded blocks are hashed once (RFC 2104).

For keys that sign on every request (the SigV4 signing key, the stream-token secret): each
signature then costs two hash-state copies, instead of the key set-up that hmac.digest
repeats on every call. Same bytes as hmac.digest(key, message, "sha256").
"""

from __future__ import annotations

import hashlib

_BLOCK = 64  # SHA-256 block size
_TRANS_36 = bytes(b ^ 0x36 for b in range(256))
_TRANS_5C = bytes(b ^ 0x5C for b in range(256))


class HmacSha256Key:
    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        padded = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(padded.translate(_TRANS_36))
        self._outer = hashlib.sha256(padded.translate(_TRANS_5C))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def hexdigest(self, message: bytes) -> str:
        return self.digest(message).hex()
