"""The download audit's values: who was given a presigned GET for which upload, and when."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RequestOrigin:
    """Where a request came from, as the API saw it: its request id and the peer address
    (None when the server does not know it, as on a Unix socket)."""

    request_id: str | None
    client_address: str | None


@dataclass(frozen=True, slots=True)
class DownloadRecord:
    """One presigned GET the broker issued (a download_audit row)."""

    id: int
    upload_id: uuid.UUID
    requester: str
    issued_at: datetime
    expires_in_seconds: int
    request_id: str | None
    client_address: str | None

    @property
    def url_expires_at(self) -> datetime:
        return self.issued_at + timedelta(seconds=self.expires_in_seconds)


@dataclass(frozen=True, slots=True)
class DownloadSummary:
    """How many URLs were issued for one upload (rows still kept) and when the last one was."""

    downloads: int
    last_issued_at: datetime | None
