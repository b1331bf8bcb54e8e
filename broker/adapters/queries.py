"""The broker's statements as typed methods: the Queries port of broker/flows/ports.py.

Every method runs one named statement of queries.sql on the pool (or on one connection,
in a transaction) and returns domain values (broker.domain.model), never driver records:
this is the only module that reads a column by name.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from broker.adapters.db import Database
from broker.domain.model import (
    AdminSort,
    ChecksumAlgorithm,
    HistoryEntry,
    HourlyCount,
    NewUploadRecord,
    Outcome,
    PendingSummary,
    QuotaLimits,
    ReconcilerRun,
    StatusPolicyCount,
    Transfer,
    Upload,
    UploadFilters,
    UploadStatus,
)

# Enum members by value: a dict lookup, where calling the enum class costs ten times more.
_STATUSES = {status.value: status for status in UploadStatus}
_TRANSFERS = {transfer.value: transfer for transfer in Transfer}
_CHECKSUM_ALGORITHMS: dict[str | None, ChecksumAlgorithm | None] = {
    None: None,
    **{a.value: a for a in ChecksumAlgorithm},
}


def _upload(row: asyncpg.Record | None) -> Upload | None:
    """An uploads row, in the column order of queries.sql, as the domain value."""
    if row is None:
        return None
    values = list(row)
    values[2] = _STATUSES[values[2]]
    values[12] = _TRANSFERS[values[12]]
    values[16] = _CHECKSUM_ALGORITHMS[values[16]]
    return Upload._make(values)


def _uploads(rows: list[asyncpg.Record]) -> list[Upload]:
    return [_upload(row) for row in rows]  # type: ignore[misc]


def like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its own wildcards (% and _) and the escape
    character (\\) taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filter_values(filters: UploadFilters) -> dict[str, Any]:
    values = {field.name: getattr(filters, field.name) for field in dataclasses.fields(filters)}
    search = values.pop("search")
    values["filename_like"] = like_pattern(search) if search is not None else None
    return values


def _history(row: asyncpg.Record) -> HistoryEntry:
    return HistoryEntry(
        id=row["id"],
        status=UploadStatus(row["status"]),
        actor=row["actor"],
        detail=row["detail"],
        at=row["at"],
    )


class Queries:
    """The broker's statements, on the pool (each on its own) or on one connection."""

    def __init__(self, db: Database, conn: asyncpg.Connection | None = None) -> None:
        self.db = db
        self.conn = conn

    async def _row(self, name: str, **values: Any) -> asyncpg.Record | None:
        query = self.db.queries[name]
        arguments = query.arguments(values)
        if self.conn is None:
            return await self.db.fetchrow(query, arguments)
        return await self.conn.fetchrow(query.sql, *arguments)

    async def _rows(self, name: str, **values: Any) -> list[asyncpg.Record]:
        query = self.db.queries[name]
        arguments = query.arguments(values)
        if self.conn is None:
            return await self.db.fetch(query, arguments)
        return await self.conn.fetch(query.sql, *arguments)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Queries]:
        """These statements on one connection, committed together."""
        async with self.db.connection() as conn, conn.transaction():
            yield Queries(self.db, conn)

    @asynccontextmanager
    async def orphan_sweep_lock(self) -> AsyncIterator[Queries | None]:
        """The process-wide sweep lock, held by one connection that runs the sweep's queries;
        None when another process holds it."""
        async with self.db.connection() as conn:
            session = Queries(self.db, conn)
            locked = await session._row("try_lock_orphan_sweep")
            if not locked or not locked[0]:
                yield None
                return
            try:
                yield session
            finally:
                await session._row("unlock_orphan_sweep")

    async def ping(self) -> None:
        await self._row("ping")

    # ------------------------------------------------------------ creating

    async def insert_upload(self, record: NewUploadRecord, quota: QuotaLimits) -> Upload | None:
        """Record a new pending upload; None if its idempotency key exists or a quota is full.

        With quotas, the owner's quota lock is taken first in the same transaction, so
        concurrent creates of one owner are checked one after the other.
        """
        if quota.unlimited:
            query = self.db.queries["insert_upload"]
            return _upload(await self.db.fetchrow(query, self.db.bind_insert(record)))
        query = self.db.queries["insert_upload_within_quota"]
        arguments = self.db.bind_insert_within_quota((*record, *quota))
        async with self.transaction() as tx:
            await tx._row("lock_owner_quota", owner=record.owner)
            assert tx.conn is not None
            return _upload(await tx.conn.fetchrow(query.sql, *arguments))

    # ------------------------------------------------------------ reading

    async def get_upload(self, upload_id: uuid.UUID) -> Upload | None:
        return _upload(await self._row("get_upload", id=upload_id))

    async def get_upload_for_owner(self, upload_id: uuid.UUID, owner: str) -> Upload | None:
        return _upload(await self._row("get_upload_for_owner", id=upload_id, owner=owner))

    async def get_upload_owner(self, upload_id: uuid.UUID) -> str | None:
        row = await self._row("get_upload_owner", id=upload_id)
        return row[0] if row is not None else None

    async def get_upload_by_idempotency_key(self, owner: str, key: str) -> Upload | None:
        return _upload(
            await self._row("get_upload_by_idempotency_key", owner=owner, idempotency_key=key)
        )

    async def get_upload_by_key(self, bucket: str, object_key: str) -> Upload | None:
        return _upload(await self._row("get_upload_by_key", bucket=bucket, object_key=object_key))

    async def list_uploads_for_owner(
        self,
        owner: str,
        status: UploadStatus | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
        metadata: Mapping[str, str] | None = None,
    ) -> list[Upload]:
        after_created_at, after_id = after or (None, None)
        values: dict[str, Any] = {
            "owner": owner,
            "status": status,
            "after_created_at": after_created_at,
            "after_id": after_id,
            "limit": limit,
        }
        if not metadata:
            return _uploads(await self._rows("list_uploads_for_owner", **values))
        # Planned per call, as the operators' listing: a generic plan cannot tell a rare
        # value (the GIN index) from a common one (the newest-first index), and a wrong
        # guess costs hundreds of milliseconds on an owner with 100,000 uploads.
        query = self.db.queries["list_uploads_for_owner_by_metadata"]
        arguments = query.arguments({**values, "metadata": dict(metadata)})
        async with self.db.connection() as conn, conn.transaction():
            await conn.execute(self.db.queries["use_custom_plans"].sql)
            return _uploads(await conn.fetch(query.sql, *arguments))

    async def admin_list_uploads(
        self,
        filters: UploadFilters,
        sort: AdminSort,
        after: tuple[Any, uuid.UUID] | None,
        limit: int,
    ) -> list[Upload]:
        """Operators' listing, planned for this call's values (see use_custom_plans)."""
        after_value, after_id = after or (None, None)
        query = self.db.queries[f"admin_list_uploads:{sort}"]
        arguments = query.arguments(
            {
                **_filter_values(filters),
                "after_value": after_value,
                "after_id": after_id,
                "limit": limit,
            }
        )
        async with self.db.connection() as conn, conn.transaction():
            await conn.execute(self.db.queries["use_custom_plans"].sql)
            return _uploads(await conn.fetch(query.sql, *arguments))

    async def get_upload_history(
        self, upload_id: uuid.UUID, after_id: int | None = None
    ) -> list[HistoryEntry]:
        """The upload's states, oldest first; only those after `after_id` when given."""
        if after_id is None:
            rows = await self._rows("get_upload_history", id=upload_id)
        else:
            rows = await self._rows("get_upload_history_after", id=upload_id, after_id=after_id)
        return [_history(row) for row in rows]

    # ------------------------------------------------------------ state changes

    async def mark_upload_finalized(
        self,
        upload_id: uuid.UUID,
        *,
        etag: str,
        checksum: str | None,
        size: int,
        actor: str,
        detail: Mapping[str, Any],
    ) -> Upload | None:
        return _upload(
            await self._row(
                "mark_upload_finalized",
                id=upload_id,
                etag=etag,
                checksum=checksum,
                size=size,
                actor=actor,
                detail=detail,
            )
        )

    async def mark_upload_rejected(
        self, upload_id: uuid.UUID, *, reason: str, actor: str, detail: Mapping[str, Any]
    ) -> Upload | None:
        return _upload(
            await self._row(
                "mark_upload_rejected", id=upload_id, reason=reason, actor=actor, detail=detail
            )
        )

    async def mark_upload_deleted(self, upload_id: uuid.UUID, owner: str) -> Upload | None:
        return _upload(await self._row("mark_upload_deleted", id=upload_id, owner=owner))

    async def mark_upload_deleted_by_key(
        self, bucket: str, object_key: str, *, actor: str, detail: Mapping[str, Any]
    ) -> Upload | None:
        return _upload(
            await self._row(
                "mark_upload_deleted_by_key",
                bucket=bucket,
                object_key=object_key,
                actor=actor,
                detail=detail,
            )
        )

    async def mark_upload_expired(
        self, upload_id: uuid.UUID, *, force: bool, actor: str, detail: Mapping[str, Any]
    ) -> Upload | None:
        return _upload(
            await self._row(
                "mark_upload_expired", id=upload_id, force=force, actor=actor, detail=detail
            )
        )

    # ------------------------------------------------------------ reconciler

    async def claim_stale_pending_upload(self) -> Upload | None:
        """In a transaction: lock one pending upload past its deadline that nobody holds."""
        return _upload(await self._row("claim_stale_pending_upload"))

    async def claim_pending_upload(self, upload_id: uuid.UUID) -> Upload | None:
        """In a transaction: lock this upload if it is pending."""
        return _upload(await self._row("claim_pending_upload", id=upload_id))

    async def list_stale_pending_uploads(self, limit: int) -> list[Upload]:
        return _uploads(await self._rows("list_stale_pending_uploads", limit=limit))

    async def find_live_object_keys(self, bucket: str, object_keys: list[str]) -> set[str]:
        rows = await self._rows("find_live_object_keys", bucket=bucket, object_keys=object_keys)
        return {row[0] for row in rows}

    async def find_pending_multipart_ids(self, multipart_upload_ids: list[str]) -> set[str]:
        rows = await self._rows(
            "find_pending_multipart_ids", multipart_upload_ids=multipart_upload_ids
        )
        return {row[0] for row in rows}

    async def insert_reconciler_run(
        self, started_at: datetime, dry_run: bool, trigger: str, counts: Mapping[Outcome, int]
    ) -> None:
        await self._row(
            "insert_reconciler_run",
            started_at=started_at,
            dry_run=dry_run,
            trigger=trigger,
            counts=counts,
        )

    async def recent_reconciler_runs(self, limit: int) -> list[ReconcilerRun]:
        rows = await self._rows("recent_reconciler_runs", limit=limit)
        return [ReconcilerRun(*row) for row in rows]

    # ------------------------------------------------------------ statistics

    async def stats_by_status_and_policy(self) -> list[StatusPolicyCount]:
        rows = await self._rows("stats_by_status_and_policy")
        return [StatusPolicyCount(UploadStatus(r[0]), r[1], r[2], r[3]) for r in rows]

    async def stats_pending(self) -> PendingSummary:
        row = await self._row("stats_pending")
        assert row is not None  # an aggregate always has its row
        return PendingSummary(*row)

    async def stats_hourly(self) -> list[HourlyCount]:
        return [HourlyCount(*row) for row in await self._rows("stats_hourly")]
