"""The download-audit half of MemoryQueries (tests/unit/fakes.py).

It keeps the contract of migration 0013 and queries.sql: reading an owner's upload for a
download records a row only when the upload is theirs and finalized, in the same step;
listings are newest first by (issued_at, id); retention deletes at most `limit` of the
rows older than its days, oldest first.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timedelta
from typing import Any

from broker.domain.downloads import DownloadRecord, DownloadSummary, RequestOrigin
from broker.domain.model import Upload, UploadStatus


class MemoryDownloads:
    """download_audit as a list; mixed into MemoryQueries, which provides the rest."""

    clock: Any
    uploads: dict[uuid.UUID, Upload]
    _check: Any  # MemoryQueries': raises DatabaseUnavailable when told to

    def _init_downloads(self) -> None:
        self.downloads: list[DownloadRecord] = []
        self._download_ids = itertools.count(1)

    async def get_upload_recording_download(
        self, upload_id: uuid.UUID, owner: str, *, expires_in: int, origin: RequestOrigin
    ) -> Upload | None:
        self._check()
        upload = self.uploads.get(upload_id)
        if upload is None or upload.owner != owner:
            return None
        if upload.status is UploadStatus.FINALIZED:
            self.downloads.append(
                DownloadRecord(
                    id=next(self._download_ids),
                    upload_id=upload_id,
                    requester=owner,
                    issued_at=self.clock(),
                    expires_in_seconds=expires_in,
                    request_id=origin.request_id,
                    client_address=origin.client_address,
                )
            )
        return upload

    def _newest_first(
        self, rows: list[DownloadRecord], after: tuple[datetime, int] | None, limit: int
    ) -> list[DownloadRecord]:
        ordered = sorted(rows, key=lambda r: (r.issued_at, r.id), reverse=True)
        if after is not None:
            ordered = [r for r in ordered if (r.issued_at, r.id) < after]
        return ordered[:limit]

    async def list_upload_downloads(
        self,
        upload_id: uuid.UUID,
        after: tuple[datetime, int] | None,
        limit: int,
        since: datetime | None = None,
    ) -> list[DownloadRecord]:
        self._check()
        rows = [
            r
            for r in self.downloads
            if r.upload_id == upload_id and (since is None or r.issued_at >= since)
        ]
        return self._newest_first(rows, after, limit)

    async def list_downloads_since(
        self, since: datetime, after: tuple[datetime, int] | None, limit: int
    ) -> list[DownloadRecord]:
        self._check()
        return self._newest_first([r for r in self.downloads if r.issued_at >= since], after, limit)

    async def count_upload_downloads(self, upload_id: uuid.UUID) -> DownloadSummary:
        self._check()
        times = [r.issued_at for r in self.downloads if r.upload_id == upload_id]
        return DownloadSummary(downloads=len(times), last_issued_at=max(times, default=None))

    async def delete_expired_download_audit(self, retention_days: int, limit: int) -> int:
        self._check()
        cutoff = self.clock() - timedelta(days=retention_days)
        expired = sorted(
            (r for r in self.downloads if r.issued_at < cutoff), key=lambda r: r.issued_at
        )
        gone = {r.id for r in expired[:limit]}
        self.downloads = [r for r in self.downloads if r.id not in gone]
        return len(gone)
