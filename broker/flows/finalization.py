"""Storage events -> upload states: verify what was stored against what was promised."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import asyncpg

from broker import metrics
from broker.adapters import storage
from broker.adapters.db import Database, Executor
from broker.domain import errors
from broker.domain import minio_events as events
from broker.flows.uploads import sha256_base64

log = logging.getLogger("broker.finalization")

# A created event for a record in one of these states means bytes arrived that no record
# keeps; they are deleted so that no object stays in the bucket without a live record.
DEAD_STATUSES = frozenset({"rejected", "expired", "deleted"})


def rejection_reason(upload: asyncpg.Record, stored: storage.StoredObject) -> str | None:
    """Why the stored object does not match what the record promised, or None if it does."""
    if upload["size"] is None:  # known only now: it must fit the limit set at creation
        if not 1 <= stored.size <= upload["size_limit"]:
            return "size_mismatch"
    elif stored.size != upload["size"]:
        return "size_mismatch"
    if stored.content_type is not None and stored.content_type != upload["content_type"]:
        return "content_type_mismatch"
    if upload["sha256"] is not None and stored.checksum != sha256_base64(upload["sha256"]):
        return "checksum_mismatch"
    if upload["checksum_algorithm"] is not None and not stored.checksum:
        return "checksum_missing"
    return None


def needs_head(upload: asyncpg.Record, event: events.ObjectEvent) -> bool:
    """Events carry size, type and etag but no checksum; HEAD storage for what is missing."""
    has_checksum = upload["sha256"] is not None or upload["checksum_algorithm"] is not None
    return has_checksum or event.content_type is None or event.etag is None


class Finalizer:
    """Applies storage events to the uploads stored under their keys."""

    def __init__(self, db: Database, store: storage.Storage) -> None:
        self.db = db
        self.storage = store

    async def apply_event(self, event: events.ObjectEvent) -> str:
        """Move the upload under the event's key to the state the event proves; return the outcome.

        Every write is guarded by the expected state, so duplicates, late and out-of-order
        deliveries change nothing that an earlier event already settled.
        """
        if event.bucket != self.storage.bucket:
            return "ignored_other_bucket"
        row = await self.db.fetchrow("get_upload_by_key", event.bucket, event.key)
        if row is None:
            return "ignored_unknown_key"
        detail = {"event": event.name}
        if event.kind is events.EventKind.REMOVED:
            changed = await self.db.fetchrow(
                "mark_upload_deleted_by_key", event.bucket, event.key, "webhook", detail
            )
            if changed is None:
                return "ignored_not_live"
            metrics.UPLOADS_DELETED.labels("storage").inc()
            return "deleted"
        if row["status"] in DEAD_STATUSES:
            await self.delete_quietly(row)
            return "removed_dead_object"
        if row["status"] != "pending":
            return "ignored_already_final"
        stored = storage.StoredObject(
            size=event.size, etag=event.etag or "", content_type=event.content_type
        )
        if needs_head(row, event):
            found = await self.storage.head(row["object_key"])
            if found is None:
                return "ignored_object_gone"  # its removed event settles the record
            stored = found
        return await self.settle(row, stored, self.db, "webhook", detail)

    async def settle(
        self,
        row: asyncpg.Record,
        stored: storage.StoredObject,
        executor: Executor,
        actor: str,
        detail: Mapping[str, object],
    ) -> str:
        """Finalize a pending upload whose object matches, or reject it and delete the object.

        `executor` is the pool, or the transaction that holds the upload's row lock.
        """
        reason = rejection_reason(row, stored)
        if reason is None:
            changed = await executor.fetchrow(
                "mark_upload_finalized",
                row["id"],
                stored.etag,
                stored.checksum,
                actor,
                detail,
                stored.size,
            )
            if changed is None:
                return "ignored_already_final"
            metrics.UPLOADS_FINALIZED.labels(row["policy"], actor.split(":")[0]).inc()
            metrics.CREATE_TO_FINALIZED.labels(row["policy"]).observe(
                (changed["finalized_at"] - changed["created_at"]).total_seconds()
            )
            log.info("upload.finalized", extra={"upload_id": str(row["id"]), "by": actor})
            return "finalized"
        changed = await executor.fetchrow("mark_upload_rejected", row["id"], reason, actor, detail)
        if changed is None:
            return "ignored_already_final"
        metrics.UPLOADS_REJECTED.labels(row["policy"], reason).inc()
        log.warning(
            "upload.rejected",
            extra={
                "upload_id": str(row["id"]),
                "reason": reason,
                "expected_size": row["size"],
                "stored_size": stored.size,
                "expected_content_type": row["content_type"],
                "stored_content_type": stored.content_type,
            },
        )
        await self.delete_quietly(row)
        return "rejected"

    async def delete_quietly(self, row: asyncpg.Record) -> None:
        """Remove an object nobody may keep; if storage is down it stays an orphan for later."""
        try:
            await self.storage.delete(row["object_key"])
        except errors.StorageUnavailable:
            log.warning("object.delete_failed", extra={"upload_id": str(row["id"])})
