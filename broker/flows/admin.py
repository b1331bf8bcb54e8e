"""What operators need: find any upload, see its history and storage state, stats, fix it."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from broker import metrics
from broker.domain import errors
from broker.domain.downloads import DownloadRecord, DownloadSummary
from broker.domain.model import (
    BIGINT_MAX,
    SEARCH_RULE,
    AdminSort,
    HistoryEntry,
    HourlyCount,
    Outcome,
    PendingSummary,
    ReconcilerRun,
    ScanBacklog,
    StatusPolicyCount,
    Upload,
    UploadFilters,
    UploadStatus,
    searchable,
)
from broker.domain.objects import StoredObject, StoredPart
from broker.flows.ports import ObjectStore, Queries
from broker.flows.reconciler import Reconciler

log = logging.getLogger("broker.admin")

RECENT_DOWNLOADS = 5  # the latest downloads an upload's inspection shows

# The field each sort order's cursor holds.
SORT_FIELDS: dict[str, str] = {
    "-created_at": "created_at",
    "created_at": "created_at",
    "-size": "size",
    "size": "size",
}


@dataclass(frozen=True)
class Page:
    items: list[Upload]
    next_cursor: str | None


@dataclass(frozen=True)
class Inspection:
    """An upload, its history, what storage holds for it right now, and its downloads."""

    record: Upload
    history: list[HistoryEntry]
    stored: StoredObject | None
    parts: list[StoredPart] | None
    downloads: DownloadSummary
    recent_downloads: list[DownloadRecord]


@dataclass(frozen=True)
class Stats:
    """Counts and bytes by status and policy, pending ages, hourly activity, last passes."""

    by_status_and_policy: list[StatusPolicyCount]
    pending: PendingSummary
    oldest_pending_age_seconds: float | None
    hourly: list[HourlyCount]
    reconciler_runs: list[ReconcilerRun]
    scans: ScanBacklog


def encode_cursor(sort: AdminSort, upload: Upload) -> str:
    value = getattr(upload, SORT_FIELDS[sort])
    raw = json.dumps(
        [sort, value.isoformat() if isinstance(value, datetime) else value, str(upload.id)]
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(sort: AdminSort, cursor: str) -> tuple[datetime | int | None, uuid.UUID]:
    """The keyset position of a cursor issued for the same sort, or InvalidCursor."""
    try:
        issued_for, value, upload_id = json.loads(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        )
        if issued_for != sort:
            raise ValueError("cursor of another sort order")
        position: datetime | int | None
        if SORT_FIELDS[sort] == "created_at":
            position = datetime.fromisoformat(value)
        else:  # a size, or null for an upload whose size is not known yet
            position = None if value is None else int(value)
            if position is not None and not 0 <= position <= BIGINT_MAX:
                raise ValueError("size out of range")
        return position, uuid.UUID(upload_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise errors.InvalidCursor() from exc


class Admin:
    """Operator use cases over every owner's uploads."""

    def __init__(self, queries: Queries, store: ObjectStore, reconciler: Reconciler) -> None:
        self.queries = queries
        self.storage = store
        self.reconciler = reconciler

    async def list(
        self, filters: UploadFilters, sort: AdminSort, limit: int, cursor: str | None
    ) -> Page:
        if filters.search is not None and not searchable(filters.search):
            raise errors.InvalidRequest(
                details=[{"field": "search", "message": SEARCH_RULE, "input": filters.search}]
            )
        after = decode_cursor(sort, cursor) if cursor else None
        uploads = await self.queries.admin_list_uploads(filters, sort, after, limit + 1)
        next_cursor = encode_cursor(sort, uploads[limit - 1]) if len(uploads) > limit else None
        return Page(items=uploads[:limit], next_cursor=next_cursor)

    async def _get(self, upload_id: uuid.UUID) -> Upload:
        upload = await self.queries.get_upload(upload_id)
        if upload is None:
            raise errors.UploadNotFound()
        return upload

    async def inspect(self, upload_id: uuid.UUID) -> Inspection:
        upload = await self._get(upload_id)
        history = await self.queries.get_upload_history(upload_id)
        stored = await self.storage.head(upload.object_key)
        parts = None
        if upload.multipart_upload_id is not None and upload.status is UploadStatus.PENDING:
            parts = await self.storage.list_parts(upload.object_key, upload.multipart_upload_id)
        return Inspection(
            record=upload,
            history=history,
            stored=stored,
            parts=parts,
            downloads=await self.queries.count_upload_downloads(upload_id),
            recent_downloads=await self.queries.list_upload_downloads(
                upload_id, None, RECENT_DOWNLOADS
            ),
        )

    async def pending(self) -> PendingSummary:
        """How many uploads are pending and stuck, and since when (read for every scrape)."""
        return await self.queries.stats_pending()

    async def scan_backlog(self) -> ScanBacklog:
        """Uploads waiting for a malware verdict, how many were retried, the oldest's start."""
        return await self.queries.scan_backlog()

    async def stats(self) -> Stats:
        """Counts and bytes by status and policy, pending ages, hourly activity, last passes."""
        pending = await self.pending()
        return Stats(
            by_status_and_policy=await self.queries.stats_by_status_and_policy(),
            pending=pending,
            oldest_pending_age_seconds=pending.oldest_age_seconds(datetime.now(UTC)),
            hourly=await self.queries.stats_hourly(),
            reconciler_runs=await self.queries.recent_reconciler_runs(10),
            scans=await self.queries.scan_backlog(),
        )

    async def reconcile(self, upload_id: uuid.UUID, actor: str) -> tuple[Outcome, Upload]:
        """Check one upload against storage now: settle it, expire it if past its deadline."""
        async with self.queries.transaction() as tx:
            upload = await tx.claim_pending_upload(upload_id)
            outcome = (
                Outcome.NOT_PENDING
                if upload is None
                else await self.reconciler.decide(upload, tx, actor, {"trigger": "admin"})
            )
        return outcome, await self._get(upload_id)

    async def expire(self, upload_id: uuid.UUID, actor: str) -> tuple[Outcome, Upload]:
        """Expire a pending upload now, whatever its deadline; storage is cleaned up after."""
        upload = await self.queries.mark_upload_expired(
            upload_id, force=True, actor=actor, detail={"trigger": "admin"}
        )
        if upload is None:
            return Outcome.NOT_PENDING, await self._get(upload_id)
        metrics.UPLOADS_EXPIRED.labels(upload.policy, "admin").inc()
        if upload.multipart_upload_id is not None:
            await self.storage.abort_multipart(upload.object_key, upload.multipart_upload_id)
        await self.storage.delete(upload.object_key)
        return Outcome.EXPIRED, upload

    async def release(self, upload_id: uuid.UUID, actor: str, reason: str) -> Upload:
        """Release a quarantined upload: finalized, downloadable, the reason recorded."""
        upload = await self.queries.release_quarantined_upload(
            upload_id, actor=actor, detail={"reason": reason}
        )
        if upload is None:
            found = await self._get(upload_id)
            raise errors.UploadNotQuarantined(
                f"upload is {found.status}, not quarantined", details={"status": found.status}
            )
        log.warning("upload.released", extra={"upload_id": str(upload_id), "by": actor})
        return upload

    async def delete(self, upload_id: uuid.UUID, actor: str, reason: str) -> tuple[Outcome, Upload]:
        """Delete any live upload (a quarantined one, say) and its object, the reason recorded.
        Like the owner's delete, the record changes first; storage follows."""
        upload = await self.queries.admin_delete_upload(
            upload_id, actor=actor, detail={"reason": reason}
        )
        if upload is None:
            return Outcome.IGNORED_NOT_LIVE, await self._get(upload_id)
        metrics.UPLOADS_DELETED.labels("admin").inc()
        log.info("upload.deleted", extra={"upload_id": str(upload_id), "by": actor})
        if upload.multipart_upload_id is not None:
            await self.storage.abort_multipart(upload.object_key, upload.multipart_upload_id)
        await self.storage.delete(upload.object_key)
        return Outcome.DELETED, upload
