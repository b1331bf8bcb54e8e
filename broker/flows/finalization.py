"""Storage events -> upload states: verify what was stored against what was promised."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from broker import metrics
from broker.domain import content_checks, errors, minio_events
from broker.domain.model import (
    DEAD_STATUSES,
    Actor,
    Outcome,
    RejectReason,
    Upload,
    UploadStatus,
)
from broker.domain.objects import StoredObject
from broker.domain.policies import Policies, Sniff
from broker.flows.ports import ContentSniffer, ObjectStore, Queries
from broker.flows.uploads import sha256_base64

log = logging.getLogger("broker.finalization")


def rejection_reason(upload: Upload, stored: StoredObject) -> RejectReason | None:
    """Why the stored object does not match what the record promised, or None if it does."""
    if upload.size is None:  # known only now: it must fit the limit set at creation
        if not 1 <= stored.size <= (upload.size_limit or 0):
            return RejectReason.SIZE_MISMATCH
    elif stored.size != upload.size:
        return RejectReason.SIZE_MISMATCH
    if stored.content_type is not None and stored.content_type != upload.content_type:
        return RejectReason.CONTENT_TYPE_MISMATCH
    if upload.sha256 is not None and stored.checksum != sha256_base64(upload.sha256):
        return RejectReason.CHECKSUM_MISMATCH
    if upload.checksum_algorithm is not None and not stored.checksum:
        return RejectReason.CHECKSUM_MISSING
    return None


def record_finalized(upload: Upload, actor: str) -> None:
    """Metrics and the log line of an upload that just became finalized."""
    assert upload.finalized_at is not None
    metrics.UPLOADS_FINALIZED.labels(upload.policy, actor.split(":")[0]).inc()
    metrics.CREATE_TO_FINALIZED.labels(upload.policy).observe(
        (upload.finalized_at - upload.created_at).total_seconds()
    )
    log.info("upload.finalized", extra={"upload_id": str(upload.id), "by": actor})


def needs_head(upload: Upload, event: minio_events.ObjectEvent) -> bool:
    """Events carry size, type and etag but no checksum; HEAD storage for what is missing."""
    has_checksum = upload.sha256 is not None or upload.checksum_algorithm is not None
    return has_checksum or event.content_type is None or event.etag is None


class Finalizer:
    """Applies storage events to the uploads stored under their keys."""

    def __init__(
        self, queries: Queries, store: ObjectStore, policies: Policies, sniff: ContentSniffer
    ) -> None:
        self.queries = queries
        self.storage = store
        self.policies = policies
        self.sniff = sniff

    async def apply_event(self, event: minio_events.ObjectEvent) -> Outcome:
        """Move the upload under the event's key to the state the event proves.

        Every write is guarded by the expected state, so duplicates, late and out-of-order
        deliveries change nothing that an earlier event already settled.
        """
        if event.bucket != self.storage.bucket:
            return Outcome.IGNORED_OTHER_BUCKET
        upload = await self.queries.get_upload_by_key(event.bucket, event.key)
        if upload is None:
            return Outcome.IGNORED_UNKNOWN_KEY
        detail = {"event": event.name}
        if event.kind is minio_events.EventKind.REMOVED:
            changed = await self.queries.mark_upload_deleted_by_key(
                event.bucket, event.key, actor=Actor.WEBHOOK, detail=detail
            )
            if changed is None:
                return Outcome.IGNORED_NOT_LIVE
            metrics.UPLOADS_DELETED.labels("storage").inc()
            return Outcome.DELETED
        if upload.status in DEAD_STATUSES:
            await self.delete_quietly(upload)
            return Outcome.REMOVED_DEAD_OBJECT
        if upload.status is not UploadStatus.PENDING:
            return Outcome.IGNORED_ALREADY_FINAL
        stored = StoredObject(
            size=event.size, etag=event.etag or "", content_type=event.content_type
        )
        if needs_head(upload, event):
            found = await self.storage.head(upload.object_key)
            if found is None:
                return Outcome.IGNORED_OBJECT_GONE  # its removed event settles the record
            stored = found
        return await self.settle(upload, stored, self.queries, Actor.WEBHOOK, detail)

    async def settle(
        self,
        upload: Upload,
        stored: StoredObject,
        queries: Queries,
        actor: str,
        detail: Mapping[str, object],
    ) -> Outcome:
        """Finalize a pending upload whose object matches, or reject it and delete the object.

        `queries` is the pool's, or the transaction's that holds the upload's row lock.
        """
        reason = rejection_reason(upload, stored)
        policy = self.policies.get(upload.policy) or self.policies.default
        detected = None
        if reason is None and policy.sniff_mode is not Sniff.OFF:
            head = await self.storage.read_head(upload.object_key, content_checks.SNIFF_BYTES)
            if head is None:
                return Outcome.IGNORED_OBJECT_GONE  # its removed event settles the record
            detected = await self.sniff(head)
            if policy.sniff_mode is Sniff.REJECT and content_checks.mismatch(
                upload.content_type, detected
            ):
                reason = RejectReason.CONTENT_MISMATCH
                detail = {**detail, "declared": upload.content_type, "detected": detected}
        if reason is None:
            mark = queries.mark_upload_scanning if policy.scan else queries.mark_upload_finalized
            changed = await mark(
                upload.id,
                etag=stored.etag,
                checksum=stored.checksum,
                size=stored.size,
                detected_content_type=detected,
                actor=actor,
                detail=detail,
            )
            if changed is None:
                return Outcome.IGNORED_ALREADY_FINAL
            if policy.scan:  # the scanner (flows/scanning.py) gives the verdict
                log.info("upload.scanning", extra={"upload_id": str(upload.id), "by": actor})
                return Outcome.SCANNING
            record_finalized(changed, actor)
            return Outcome.FINALIZED
        changed = await queries.mark_upload_rejected(
            upload.id, reason=reason, actor=actor, detail=detail, detected_content_type=detected
        )
        if changed is None:
            return Outcome.IGNORED_ALREADY_FINAL
        metrics.UPLOADS_REJECTED.labels(upload.policy, reason).inc()
        log.warning(
            "upload.rejected",
            extra={
                "upload_id": str(upload.id),
                "reason": reason,
                "expected_size": upload.size,
                "stored_size": stored.size,
                "expected_content_type": upload.content_type,
                "stored_content_type": stored.content_type,
                "detected_content_type": detected,
            },
        )
        await self.delete_quietly(upload)
        return Outcome.REJECTED

    async def delete_quietly(self, upload: Upload) -> None:
        """Remove an object nobody may keep; if storage is down it stays an orphan for later."""
        try:
            await self.storage.delete(upload.object_key)
        except errors.StorageUnavailable:
            log.warning("object.delete_failed", extra={"upload_id": str(upload.id)})
