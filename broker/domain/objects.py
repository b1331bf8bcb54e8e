"""What storage holds and what the broker signs for clients: plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class PresignedRequest:
    """A request the client makes itself: method, URL, the exact headers to send, and expiry."""

    method: str
    url: str
    headers: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class PresignedForm:
    """A browser form POST: the URL and the fields to send before the file field."""

    url: str
    fields: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What storage holds under a key."""

    size: int
    etag: str
    content_type: str | None
    checksum: str | None = None  # as MinIO reports it, e.g. base64 SHA-256, "-N" for multipart


@dataclass(frozen=True, slots=True)
class StoredPart:
    """One part of a multipart upload as storage holds it."""

    part_number: int
    etag: str
    size: int
    checksum: str | None


class MultipartRefused(Exception):
    """Storage refused to complete a multipart upload (bad part list, or no such upload)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
