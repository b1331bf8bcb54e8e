"""The broker's statements as typed methods: the Queries port of broker/flows/ports.py.

Every method runs one named statement of queries.sql on the pool (or on one connection,
in a transaction) and returns domain values (broker.domain.model), never driver records:
this is the only module that reads a column by name.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from broker.adapters.db import Database
from broker.adapters.rate_limits import TakeBatcher
from broker.domain.downloads import DownloadRecord, DownloadSummary, RequestOrigin
from broker.domain.model import (
    AdminSort,
    ChecksumAlgorithm,
    DeliveryStatus,
    HistoryEntry,
    HourlyCount,
    NewUploadRecord,
    Outcome,
    PendingSummary,
    QuotaLimits,
    ReconcilerRun,
    ScanBacklog,
    ScanResult,
    StatusPolicyCount,
    Transfer,
    Upload,
    UploadFilters,
    UploadStatus,
    WebhookEventType,
)
from broker.domain.webhooks import (
    ClaimedDelivery,
    DeliveredAttempt,
    DeliveryFilters,
    WebhookBacklog,
    WebhookDelivery,
    WebhookEndpoint,
)

# Enum members by value: a dict lookup, where calling the enum class costs ten times more.
_STATUSES = {status.value: status for status in UploadStatus}
_TRANSFERS = {transfer.value: transfer for transfer in Transfer}
_SCAN_RESULTS: dict[str | None, ScanResult | None] = {
    None: None,
    **{r.value: r for r in ScanResult},
}
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
    values[30] = _SCAN_RESULTS[values[30]]
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


def _download(row: asyncpg.Record) -> DownloadRecord:
    return DownloadRecord(
        id=row["id"],
        upload_id=row["upload_id"],
        requester=row["requester"],
        issued_at=row["issued_at"],
        expires_in_seconds=row["expires_in_seconds"],
        request_id=row["request_id"],
        client_address=row["client_address"],
    )


def _endpoint(row: asyncpg.Record | None) -> WebhookEndpoint | None:
    if row is None:
        return None
    return WebhookEndpoint(
        id=row["id"],
        url=row["url"],
        description=row["description"],
        event_types=tuple(WebhookEventType(t) for t in row["event_types"]),
        policy=row["policy"],
        previous_secret_expires_at=row["previous_secret_expires_at"],
        disabled_at=row["disabled_at"],
        disabled_reason=row["disabled_reason"],
        throttled_until=row["throttled_until"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _delivery(row: asyncpg.Record | None) -> WebhookDelivery | None:
    if row is None:
        return None
    return WebhookDelivery(
        id=row["id"],
        endpoint_id=row["endpoint_id"],
        message_id=row["message_id"],
        upload_id=row["upload_id"],
        seq=row["seq"],
        type=WebhookEventType(row["type"]),
        payload=row["payload"],
        status=DeliveryStatus(row["status"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
    )


class Queries:
    """The broker's statements, on the pool (each on its own) or on one connection."""

    def __init__(
        self, db: Database, conn: asyncpg.Connection | None = None, takes: TakeBatcher | None = None
    ) -> None:
        self.db = db
        self.conn = conn
        self.takes = takes or TakeBatcher(db)  # one per pool: shared by the copies below

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
            yield Queries(self.db, conn, self.takes)

    @asynccontextmanager
    async def orphan_sweep_lock(self) -> AsyncIterator[Queries | None]:
        """The process-wide sweep lock, held by one connection that runs the sweep's queries;
        None when another process holds it."""
        async with self.db.connection() as conn:
            session = Queries(self.db, conn, self.takes)
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

    async def claim_issuer_namespace(self, issuer: str, prefix: str) -> str | None:
        """Claim a provider's owner namespace; an owner that already has it, if one does."""
        row = await self._row("claim_issuer_namespace", issuer=issuer, prefix=prefix)
        return row[0] if row is not None else None

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
        detected_content_type: str | None,
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
                detected_content_type=detected_content_type,
                actor=actor,
                detail=detail,
            )
        )

    async def mark_upload_scanning(
        self,
        upload_id: uuid.UUID,
        *,
        etag: str,
        checksum: str | None,
        size: int,
        detected_content_type: str | None,
        actor: str,
        detail: Mapping[str, Any],
    ) -> Upload | None:
        return _upload(
            await self._row(
                "mark_upload_scanning",
                id=upload_id,
                etag=etag,
                checksum=checksum,
                size=size,
                detected_content_type=detected_content_type,
                actor=actor,
                detail=detail,
            )
        )

    async def mark_upload_rejected(
        self,
        upload_id: uuid.UUID,
        *,
        reason: str,
        actor: str,
        detail: Mapping[str, Any],
        detected_content_type: str | None = None,
    ) -> Upload | None:
        return _upload(
            await self._row(
                "mark_upload_rejected",
                id=upload_id,
                reason=reason,
                detected_content_type=detected_content_type,
                actor=actor,
                detail=detail,
            )
        )

    async def record_part_plan(
        self, upload_id: uuid.UUID, *, part_size: int, part_count: int
    ) -> None:
        await self._rows(
            "record_part_plan", id=upload_id, part_size=part_size, part_count=part_count
        )

    async def claim_unchecked_pending_upload(self) -> Upload | None:
        return _upload(await self._row("claim_unchecked_pending_upload"))

    async def mark_upload_checked(self, upload_id: uuid.UUID) -> None:
        await self._rows("mark_upload_checked", id=upload_id)

    async def schedule_upload_check(self, upload_id: uuid.UUID, *, seconds: float) -> None:
        await self._rows("schedule_upload_check", id=upload_id, seconds=seconds)

    async def latest_history_id(self) -> int:
        row = await self._row("latest_history_id")
        assert row is not None
        return int(row[0])

    async def uploads_changed_since(self, after_id: int) -> tuple[list[uuid.UUID], int]:
        row = await self._row("uploads_changed_since", after_id=after_id)
        assert row is not None
        return list(row[0]), int(row[1])

    # ---- malware scanning (migration 0009): the jobs, the verdicts, the admins' decisions

    async def claim_scan_jobs(
        self, *, now: datetime, lease_seconds: float, lease_owner: str, limit: int
    ) -> list[tuple[uuid.UUID, int]]:
        """(upload id, attempt number) of the jobs leased to `lease_owner`."""
        rows = await self._rows(
            "claim_scan_jobs",
            now=now,
            lease_seconds=lease_seconds,
            lease_owner=lease_owner,
            limit=limit,
        )
        return [(row[0], row[1]) for row in rows]

    async def record_scan_verdict(
        self,
        upload_id: uuid.UUID,
        *,
        lease_owner: str,
        status: UploadStatus,
        scan_result: ScanResult,
        scan_signature: str | None,
        actor: str,
        detail: Mapping[str, Any],
    ) -> Upload | None:
        return _upload(
            await self._row(
                "record_scan_verdict",
                id=upload_id,
                lease_owner=lease_owner,
                status=status.value,
                scan_result=scan_result.value,
                scan_signature=scan_signature,
                actor=actor,
                detail=detail,
            )
        )

    async def retry_scan_job(
        self, upload_id: uuid.UUID, *, lease_owner: str, next_attempt_at: datetime, error: str
    ) -> bool:
        row = await self._row(
            "retry_scan_job",
            id=upload_id,
            lease_owner=lease_owner,
            next_attempt_at=next_attempt_at,
            error=error,
        )
        return row is not None

    async def release_scan_leases(self, scanner: str) -> None:
        await self._rows("release_scan_leases", scanner=scanner)

    async def release_webhook_leases(self, sender: str) -> None:
        await self._rows("release_webhook_leases", sender=sender)

    async def drop_scan_job(self, upload_id: uuid.UUID, *, lease_owner: str) -> None:
        await self._rows("drop_scan_job", id=upload_id, lease_owner=lease_owner)

    async def scan_backlog(self) -> ScanBacklog:
        row = await self._row("scan_backlog")
        assert row is not None
        return ScanBacklog(jobs=row[0], retried=row[1], oldest_created_at=row[2])

    async def release_quarantined_upload(
        self, upload_id: uuid.UUID, *, actor: str, detail: Mapping[str, Any]
    ) -> Upload | None:
        return _upload(
            await self._row("release_quarantined_upload", id=upload_id, actor=actor, detail=detail)
        )

    async def admin_delete_upload(
        self, upload_id: uuid.UUID, *, actor: str, detail: Mapping[str, Any]
    ) -> Upload | None:
        return _upload(
            await self._row("admin_delete_upload", id=upload_id, actor=actor, detail=detail)
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

    # ------------------------------------------------------------ rate limits

    async def take_rate_limit(
        self, key: str, *, count: int = 1, interval_seconds: float, period_seconds: float
    ) -> tuple[int, float]:
        """How many of `count` actions of `key`'s allowance were taken; when none, the seconds
        to wait. Sent with the takes of concurrent requests, in one statement
        (adapters/rate_limits.py), on a connection of its own even within a transaction: a
        limit is not undone."""
        return await self.takes.take(key, count, float(interval_seconds), float(period_seconds))

    async def delete_idle_rate_limits(self, limit: int) -> int:
        """Forget up to `limit` keys whose allowance is whole again; how many went."""
        row = await self._row("delete_idle_rate_limits", limit=limit)
        assert row is not None  # an aggregate always has its row
        return int(row[0])

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

    # ------------------------------------------------------------ app webhooks

    async def insert_webhook_endpoint(
        self,
        endpoint_id: uuid.UUID,
        *,
        url: str,
        description: str,
        event_types: tuple[WebhookEventType, ...],
        policy: str | None,
        secret: str,
    ) -> WebhookEndpoint:
        row = await self._row(
            "insert_webhook_endpoint",
            id=endpoint_id,
            url=url,
            description=description,
            event_types=list(event_types),
            policy=policy,
            secret=secret,
        )
        endpoint = _endpoint(row)
        assert endpoint is not None  # an insert returns its row
        return endpoint

    async def list_webhook_endpoints(self) -> list[WebhookEndpoint]:
        return [_endpoint(row) for row in await self._rows("list_webhook_endpoints")]  # type: ignore[misc]

    async def get_webhook_endpoint(self, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
        return _endpoint(await self._row("get_webhook_endpoint", id=endpoint_id))

    async def update_webhook_endpoint(
        self,
        endpoint_id: uuid.UUID,
        *,
        url: str,
        description: str,
        event_types: tuple[WebhookEventType, ...],
        policy: str | None,
    ) -> WebhookEndpoint | None:
        row = await self._row(
            "update_webhook_endpoint",
            id=endpoint_id,
            url=url,
            description=description,
            event_types=list(event_types),
            policy=policy,
        )
        return _endpoint(row)

    async def rotate_webhook_secret(
        self, endpoint_id: uuid.UUID, secret: str, overlap_seconds: float
    ) -> WebhookEndpoint | None:
        row = await self._row(
            "rotate_webhook_secret", id=endpoint_id, secret=secret, overlap_seconds=overlap_seconds
        )
        return _endpoint(row)

    async def disable_webhook_endpoint(
        self, endpoint_id: uuid.UUID, reason: str
    ) -> WebhookEndpoint | None:
        return _endpoint(await self._row("disable_webhook_endpoint", id=endpoint_id, reason=reason))

    async def enable_webhook_endpoint(self, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
        return _endpoint(await self._row("enable_webhook_endpoint", id=endpoint_id))

    async def throttle_webhook_endpoint(self, endpoint_id: uuid.UUID, until: datetime) -> None:
        await self._row("throttle_webhook_endpoint", id=endpoint_id, until=until)

    async def insert_webhook_test_delivery(
        self, endpoint_id: uuid.UUID, message_id: str, payload: Mapping[str, Any]
    ) -> WebhookDelivery:
        row = await self._row(
            "insert_webhook_test_delivery",
            endpoint_id=endpoint_id,
            message_id=message_id,
            payload=payload,
        )
        delivery = _delivery(row)
        assert delivery is not None  # an insert returns its row
        return delivery

    async def notify_webhook_senders(self) -> None:
        await self._row("notify_webhook_senders")

    async def due_webhook_endpoints(self, now: datetime) -> list[uuid.UUID]:
        return [row[0] for row in await self._rows("due_webhook_endpoints", now=now)]

    async def claim_webhook_deliveries(
        self,
        endpoint_id: uuid.UUID,
        *,
        now: datetime,
        lease_seconds: float,
        lease_owner: str,
        limit: int,
    ) -> list[ClaimedDelivery]:
        """Lease due deliveries of one endpoint (in one short transaction of its own)."""
        rows = await self._rows(
            "claim_webhook_deliveries",
            endpoint_id=endpoint_id,
            now=now,
            lease_seconds=lease_seconds,
            lease_owner=lease_owner,
            limit=limit,
        )
        return [
            ClaimedDelivery(
                delivery=_delivery(row),  # type: ignore[arg-type]
                url=row["url"],
                secrets=tuple(s for s in (row["secret"], row["previous_secret"]) if s),
                lease_owner=lease_owner,
            )
            for row in rows
        ]

    async def mark_webhooks_delivered(
        self, attempts: Sequence[DeliveredAttempt]
    ) -> dict[int, datetime]:
        """Delivery id -> when its state changed, for the attempts whose sender still held
        the lease (the others were recorded by nobody)."""
        rows = await self._rows(
            "mark_webhooks_delivered",
            ids=[a.delivery_id for a in attempts],
            lease_owners=[a.lease_owner for a in attempts],
            delivered_at=[a.at for a in attempts],
            http_statuses=[a.http_status for a in attempts],
        )
        return {row[0]: row[1] for row in rows}

    async def mark_webhook_attempt_failed(
        self,
        delivery_id: int,
        *,
        lease_owner: str,
        status: DeliveryStatus,
        next_attempt_at: datetime,
        http_status: int | None,
        error: str | None,
    ) -> bool:
        row = await self._row(
            "mark_webhook_attempt_failed",
            id=delivery_id,
            lease_owner=lease_owner,
            status=status,
            next_attempt_at=next_attempt_at,
            http_status=http_status,
            error=error,
        )
        return row is not None

    async def get_webhook_delivery(self, delivery_id: int) -> WebhookDelivery | None:
        return _delivery(await self._row("get_webhook_delivery", id=delivery_id))

    async def list_webhook_deliveries(
        self, filters: DeliveryFilters, before_id: int | None, limit: int
    ) -> list[WebhookDelivery]:
        rows = await self._rows(
            "list_webhook_deliveries",
            endpoint_id=filters.endpoint_id,
            status=filters.status,
            upload_id=filters.upload_id,
            type=filters.type,
            before_id=before_id,
            limit=limit,
        )
        return [_delivery(row) for row in rows]  # type: ignore[misc]

    async def retry_dead_webhook_delivery(self, delivery_id: int) -> WebhookDelivery | None:
        return _delivery(await self._row("retry_dead_webhook_delivery", id=delivery_id))

    async def replay_webhook_deliveries(self, endpoint_id: uuid.UUID, since: datetime) -> int:
        rows = await self._rows("replay_webhook_deliveries", endpoint_id=endpoint_id, since=since)
        return len(rows)

    async def webhook_backlog(self) -> WebhookBacklog:
        row = await self._row("webhook_backlog")
        assert row is not None  # an aggregate always has its row
        return WebhookBacklog(row[0], row[1])

    async def count_dead_webhook_deliveries(self) -> int:
        row = await self._row("count_dead_webhook_deliveries")
        assert row is not None  # an aggregate always has its row
        return int(row[0])

    # ---- download audit (migration 0013)

    async def get_upload_recording_download(
        self, upload_id: uuid.UUID, owner: str, *, expires_in: int, origin: RequestOrigin
    ) -> Upload | None:
        return _upload(
            await self._row(
                "get_upload_recording_download",
                id=upload_id,
                owner=owner,
                expires_in_seconds=expires_in,
                request_id=origin.request_id,
                client_address=origin.client_address,
            )
        )

    async def list_upload_downloads(
        self,
        upload_id: uuid.UUID,
        after: tuple[datetime, int] | None,
        limit: int,
        since: datetime | None = None,
    ) -> list[DownloadRecord]:
        after_issued_at, after_id = after or (None, None)
        rows = await self._rows(
            "list_upload_downloads",
            upload_id=upload_id,
            since=since,
            after_issued_at=after_issued_at,
            after_id=after_id,
            limit=limit,
        )
        return [_download(row) for row in rows]

    async def list_downloads_since(
        self, since: datetime, after: tuple[datetime, int] | None, limit: int
    ) -> list[DownloadRecord]:
        after_issued_at, after_id = after or (None, None)
        rows = await self._rows(
            "list_downloads_since",
            since=since,
            after_issued_at=after_issued_at,
            after_id=after_id,
            limit=limit,
        )
        return [_download(row) for row in rows]

    async def count_upload_downloads(self, upload_id: uuid.UUID) -> DownloadSummary:
        row = await self._row("count_upload_downloads", upload_id=upload_id)
        assert row is not None
        return DownloadSummary(downloads=row["downloads"], last_issued_at=row["last_issued_at"])

    async def delete_expired_download_audit(self, retention_days: int, limit: int) -> int:
        row = await self._row(
            "delete_expired_download_audit", retention_days=retention_days, limit=limit
        )
        return int(row[0]) if row is not None else 0
