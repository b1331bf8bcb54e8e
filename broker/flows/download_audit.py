"""The download audit for operators: an upload's downloads page by page, and every download
since a time (the CLI's export). The rows are written by Uploads.download; the reconciler
deletes those past their retention."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from broker.domain import errors
from broker.domain.downloads import DownloadRecord
from broker.domain.model import BIGINT_MAX
from broker.flows.ports import Queries

EXPORT_BATCH = 1000  # rows per statement while exporting
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # before any row


@dataclass(frozen=True)
class DownloadPage:
    items: list[DownloadRecord]
    next_cursor: str | None


def encode_cursor(record: DownloadRecord) -> str:
    raw = json.dumps(["downloads", record.issued_at.isoformat(), record.id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The keyset position (issued_at, id) of a cursor of this listing, or InvalidCursor."""
    try:
        kind, issued_at, record_id = json.loads(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        )
        if kind != "downloads" or not isinstance(record_id, int):
            raise ValueError("not a cursor of the downloads listing")
        if not 1 <= record_id <= BIGINT_MAX:
            raise ValueError("not a cursor of the downloads listing")
        position = datetime.fromisoformat(issued_at)
        if position.tzinfo is None:
            raise ValueError("a cursor's time must have its zone")
        return position, record_id
    except (ValueError, TypeError, binascii.Error) as exc:
        raise errors.InvalidCursor() from exc


class DownloadAudit:
    """Who was given a download URL for what, for operators."""

    def __init__(self, queries: Queries) -> None:
        self.queries = queries

    async def list_for_upload(
        self, upload_id: uuid.UUID, limit: int, cursor: str | None
    ) -> DownloadPage:
        """The upload's downloads, newest first; an unknown upload is UploadNotFound."""
        after = decode_cursor(cursor) if cursor else None
        if after is None and await self.queries.get_upload(upload_id) is None:
            raise errors.UploadNotFound()
        rows = await self.queries.list_upload_downloads(upload_id, after, limit + 1)
        next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
        return DownloadPage(items=rows[:limit], next_cursor=next_cursor)

    async def latest(self, limit: int) -> list[DownloadRecord]:
        """The newest `limit` downloads of any upload (the /ops page)."""
        return await self.queries.list_downloads_since(EPOCH, None, limit)

    async def since(
        self, since: datetime, upload_id: uuid.UUID | None = None
    ) -> list[DownloadRecord]:
        """Every download issued at or after `since` (of one upload, when given), newest
        first, read in batches of EXPORT_BATCH rows."""
        found: list[DownloadRecord] = []
        after: tuple[datetime, int] | None = None
        while True:
            if upload_id is None:
                batch = await self.queries.list_downloads_since(since, after, EXPORT_BATCH)
            else:
                batch = await self.queries.list_upload_downloads(
                    upload_id, after, EXPORT_BATCH, since=since
                )
            found += batch
            if len(batch) < EXPORT_BATCH:
                return found
            after = (batch[-1].issued_at, batch[-1].id)
