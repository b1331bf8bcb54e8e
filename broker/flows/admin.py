"""What operators need: find any upload, see its history and storage state, stats, fix it."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg

from broker import metrics
from broker.adapters import storage
from broker.adapters.db import Database
from broker.domain import errors
from broker.flows.reconciler import Reconciler

Sort = Literal["-created_at", "created_at", "-size", "size"]

# (ORDER BY, keyset condition, cursor column, cursor type) per sort order. Fixed text only:
# these fill the {order} and {after} slots of admin_list_uploads.
SORTS: dict[str, tuple[str, str, str]] = {
    "-created_at": (
        "created_at DESC, id DESC",
        "($8::timestamptz IS NULL OR (created_at, id) < ($8::timestamptz, $9::uuid))",
        "created_at",
    ),
    "created_at": (
        "created_at ASC, id ASC",
        "($8::timestamptz IS NULL OR (created_at, id) > ($8::timestamptz, $9::uuid))",
        "created_at",
    ),
    "-size": (
        "size DESC, id DESC",
        "($8::bigint IS NULL OR (size, id) < ($8::bigint, $9::uuid))",
        "size",
    ),
    "size": (
        "size ASC, id ASC",
        "($8::bigint IS NULL OR (size, id) > ($8::bigint, $9::uuid))",
        "size",
    ),
}


@dataclass(frozen=True)
class Filters:
    """Optional filters of the operators' listing; None means any."""

    status: str | None = None
    owner: str | None = None
    policy: str | None = None
    content_type: str | None = None
    created_before: datetime | None = None
    created_after: datetime | None = None
    pending_longer_than_seconds: float | None = None


@dataclass(frozen=True)
class Page:
    items: list[asyncpg.Record]
    next_cursor: str | None


@dataclass(frozen=True)
class Inspection:
    """An upload, its history, and what storage holds for it right now."""

    record: asyncpg.Record
    history: list[asyncpg.Record]
    stored: storage.StoredObject | None
    parts: list[storage.StoredPart] | None


def encode_cursor(sort: str, row: asyncpg.Record) -> str:
    value = row[SORTS[sort][2]]
    raw = json.dumps(
        [sort, value.isoformat() if isinstance(value, datetime) else value, str(row["id"])]
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(sort: str, cursor: str) -> tuple[datetime | int, uuid.UUID]:
    """The keyset position of a cursor issued for the same sort, or InvalidCursor."""
    try:
        issued_for, value, upload_id = json.loads(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        )
        if issued_for != sort:
            raise ValueError("cursor of another sort order")
        position = datetime.fromisoformat(value) if SORTS[sort][2] == "created_at" else int(value)
        return position, uuid.UUID(upload_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise errors.InvalidCursor() from exc


class Admin:
    """Operator use cases over every owner's uploads."""

    def __init__(self, db: Database, store: storage.Storage, reconciler: Reconciler) -> None:
        self.db = db
        self.storage = store
        self.reconciler = reconciler

    async def list(self, filters: Filters, sort: Sort, limit: int, cursor: str | None) -> Page:
        order, after, _ = SORTS[sort]
        position, after_id = decode_cursor(sort, cursor) if cursor else (None, None)
        rows = await self.db.fetch_planned_per_call(
            "admin_list_uploads",
            {"order": order, "after": after},
            filters.status,
            filters.owner,
            filters.policy,
            filters.content_type,
            filters.created_before,
            filters.created_after,
            filters.pending_longer_than_seconds,
            position,
            after_id,
            limit + 1,
        )
        next_cursor = encode_cursor(sort, rows[limit - 1]) if len(rows) > limit else None
        return Page(items=rows[:limit], next_cursor=next_cursor)

    async def _get(self, upload_id: uuid.UUID) -> asyncpg.Record:
        row = await self.db.fetchrow("get_upload", upload_id)
        if row is None:
            raise errors.UploadNotFound()
        return row

    async def inspect(self, upload_id: uuid.UUID) -> Inspection:
        row = await self._get(upload_id)
        history = await self.db.fetch("get_upload_history", upload_id)
        stored = await self.storage.head(row["object_key"])
        parts = None
        if row["multipart_upload_id"] is not None and row["status"] == "pending":
            parts = await self.storage.list_parts(row["object_key"], row["multipart_upload_id"])
        return Inspection(record=row, history=history, stored=stored, parts=parts)

    async def stats(self) -> dict[str, Any]:
        """Counts and bytes by status and policy, pending ages, hourly activity, last passes."""
        pending = await self.db.fetchrow("stats_pending")
        assert pending is not None
        oldest = pending["oldest_created_at"]
        return {
            "by_status_and_policy": [
                dict(row) for row in await self.db.fetch("stats_by_status_and_policy")
            ],
            "pending": pending["pending"],
            "stuck": pending["stuck"],
            "oldest_pending_age_seconds": (
                (datetime.now(UTC) - oldest).total_seconds() if oldest else None
            ),
            "hourly": [dict(row) for row in await self.db.fetch("stats_hourly")],
            "reconciler_runs": [
                dict(row) for row in await self.db.fetch("recent_reconciler_runs", 10)
            ],
        }

    async def reconcile(self, upload_id: uuid.UUID, actor: str) -> tuple[str, asyncpg.Record]:
        """Check one upload against storage now: settle it, expire it if past its deadline."""
        async with self.db.transaction() as tx:
            row = await tx.fetchrow("claim_pending_upload", upload_id)
            outcome = (
                "not_pending"
                if row is None
                else await self.reconciler.decide(row, tx, actor, {"trigger": "admin"})
            )
        return outcome, await self._get(upload_id)

    async def expire(self, upload_id: uuid.UUID, actor: str) -> tuple[str, asyncpg.Record]:
        """Expire a pending upload now, whatever its deadline; storage is cleaned up after."""
        row = await self.db.fetchrow(
            "mark_upload_expired", upload_id, True, actor, {"trigger": "admin"}
        )
        if row is None:
            return "not_pending", await self._get(upload_id)
        metrics.UPLOADS_EXPIRED.labels(row["policy"], "admin").inc()
        if row["multipart_upload_id"] is not None:
            await self.storage.abort_multipart(row["object_key"], row["multipart_upload_id"])
        await self.storage.delete(row["object_key"])
        return "expired", row
