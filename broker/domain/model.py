"""The upload record and its vocabulary: statuses, transfers, outcomes. Pure values, no I/O.

Rows become these values in the database adapter and nowhere else; every other layer
reads attributes, never column names.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, NamedTuple


class UploadStatus(StrEnum):
    """Where an upload is in its life (migration 0009's uploads_status_check lists the same)."""

    PENDING = "pending"
    SCANNING = "scanning"  # bytes verified, waiting for the malware scanner's verdict
    FINALIZED = "finalized"
    QUARANTINED = "quarantined"  # the scanner found malware; an admin may release it
    REJECTED = "rejected"
    EXPIRED = "expired"
    DELETED = "deleted"


# Uploads that hold an object, and count against quotas.
LIVE_STATUSES = frozenset(
    {
        UploadStatus.PENDING,
        UploadStatus.SCANNING,
        UploadStatus.FINALIZED,
        UploadStatus.QUARANTINED,
    }
)
# Uploads the broker will not move by itself any more (an owner or admin still may).
FINAL_STATUSES = frozenset(set(UploadStatus) - {UploadStatus.PENDING, UploadStatus.SCANNING})
# A created event for an upload in one of these states means bytes arrived that no record
# keeps; they are deleted so that no object stays in the bucket without a live record.
DEAD_STATUSES = frozenset({UploadStatus.REJECTED, UploadStatus.EXPIRED, UploadStatus.DELETED})


class Transfer(StrEnum):
    """How the bytes travel to storage."""

    PUT = "put"
    POST = "post"
    MULTIPART = "multipart"


class ChecksumAlgorithm(StrEnum):
    """Per-part checksums storage verifies for a multipart upload."""

    SHA256 = "SHA256"
    CRC32C = "CRC32C"


class RejectReason(StrEnum):
    """Why finalization refused what was stored."""

    SIZE_MISMATCH = "size_mismatch"
    CONTENT_TYPE_MISMATCH = "content_type_mismatch"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    CHECKSUM_MISSING = "checksum_missing"
    CONTENT_MISMATCH = "content_mismatch"  # the bytes are not of the declared or allowed type


class ScanResult(StrEnum):
    """What the malware scan of an upload came to (migration 0009's uploads_scan_result_check)."""

    CLEAN = "clean"
    INFECTED = "infected"
    SKIPPED = "skipped"  # no scanner answered, and the policy fails open


class Outcome(StrEnum):
    """What handling one storage event, reconciler check or operator action did."""

    FINALIZED = "finalized"
    SCANNING = "scanning"
    QUARANTINED = "quarantined"
    SCAN_SKIPPED = "scan_skipped"
    SCAN_RETRY = "scan_retry"
    REJECTED = "rejected"
    DELETED = "deleted"
    EXPIRED = "expired"
    STILL_PENDING = "still_pending"
    NOT_PENDING = "not_pending"
    FINALIZED_MISSED_WEBHOOK = "finalized_missed_webhook"
    REJECTED_MISSED_WEBHOOK = "rejected_missed_webhook"
    SCANNING_MISSED_WEBHOOK = "scanning_missed_webhook"
    REMOVED_DEAD_OBJECT = "removed_dead_object"
    IGNORED_OTHER_BUCKET = "ignored_other_bucket"
    IGNORED_UNKNOWN_KEY = "ignored_unknown_key"
    IGNORED_NOT_LIVE = "ignored_not_live"
    IGNORED_ALREADY_FINAL = "ignored_already_final"
    IGNORED_OBJECT_GONE = "ignored_object_gone"
    IGNORED_MALFORMED = "ignored_malformed"
    ORPHAN_OBJECT_DELETED = "orphan_object_deleted"
    ORPHAN_MULTIPART_ABORTED = "orphan_multipart_aborted"
    ORPHAN_SWEEP_SKIPPED_BUSY = "orphan_sweep_skipped_busy"
    WOULD_SETTLE_MISSED_WEBHOOK = "would_settle_missed_webhook"
    WOULD_EXPIRE = "would_expire"
    WOULD_DELETE_ORPHAN_OBJECT = "would_delete_orphan_object"
    WOULD_ABORT_ORPHAN_MULTIPART = "would_abort_orphan_multipart"
    DOWNLOAD_AUDIT_PURGED = "download_audit_purged"  # rows past their retention, counted


# What a settled upload means when the reconciler, not the webhook, settled it.
MISSED_WEBHOOK = {
    Outcome.FINALIZED: Outcome.FINALIZED_MISSED_WEBHOOK,
    Outcome.SCANNING: Outcome.SCANNING_MISSED_WEBHOOK,
    Outcome.REJECTED: Outcome.REJECTED_MISSED_WEBHOOK,
}


class Actor(StrEnum):
    """Who moved an upload (history rows; an operator is recorded as `admin:<name>`)."""

    OWNER = "owner"
    WEBHOOK = "webhook"
    RECONCILER = "reconciler"
    SCANNER = "scanner"
    ADMIN = "admin"

    @classmethod
    def admin(cls, name: str) -> str:
        return f"{cls.ADMIN}:{name}"


class Upload(NamedTuple):
    """One upload record, as stored: an immutable value.

    A NamedTuple rather than a frozen dataclass: it is built for every row the database
    returns, on every request, and a frozen dataclass of 29 fields takes 4 us to build
    (each field goes through object.__setattr__) against 0.4 us for this.
    """

    id: uuid.UUID
    owner: str
    status: UploadStatus
    filename: str
    content_type: str
    size: int | None  # None until finalized for an upload of undeclared size
    size_limit: int | None  # the cap of an upload of undeclared size
    sha256: str | None
    metadata: dict[str, str]
    bucket: str
    object_key: str
    policy: str
    transfer: Transfer
    multipart_upload_id: str | None
    part_size: int | None
    part_count: int | None
    checksum_algorithm: ChecksumAlgorithm | None
    checksum: str | None
    etag: str | None
    reject_reason: str | None
    idempotency_key: str | None
    request_hash: str | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    finalized_at: datetime | None
    rejected_at: datetime | None
    expired_at: datetime | None
    deleted_at: datetime | None
    detected_content_type: str | None  # what the bytes are, when the policy sniffs them
    scan_result: ScanResult | None
    scan_signature: str | None  # the malware the scanner named

    def is_stuck(self, now: datetime) -> bool:
        """Pending past its deadline: the reconciler's next pass settles or expires it."""
        return self.status is UploadStatus.PENDING and self.expires_at <= now


class NewUploadRecord(NamedTuple):
    """Everything the broker decided about a new upload, ready to be recorded pending
    (a NamedTuple, as Upload: built on every create)."""

    id: uuid.UUID
    owner: str
    filename: str
    content_type: str
    size: int | None
    size_limit: int | None
    sha256: str | None
    metadata: dict[str, str]
    bucket: str
    object_key: str
    policy: str
    transfer: Transfer
    multipart_upload_id: str | None
    part_size: int | None
    part_count: int | None
    checksum_algorithm: ChecksumAlgorithm | None
    idempotency_key: str | None
    request_hash: str | None
    pending_seconds: float
    # When the reconciler checks it early: after its URL has expired, plus a grace period;
    # None for a multipart upload (checked once completed).
    check_after_seconds: float | None


class QuotaLimits(NamedTuple):
    """Live-upload limits checked atomically with an insert; None means no limit."""

    policy_bytes: int | None
    policy_count: int | None
    global_bytes: int | None
    global_count: int | None

    @property
    def unlimited(self) -> bool:
        return all(
            limit is None
            for limit in (
                self.policy_bytes,
                self.policy_count,
                self.global_bytes,
                self.global_count,
            )
        )


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One state an upload went through: who moved it there, why, and when."""

    id: int
    status: UploadStatus
    actor: str
    detail: dict[str, Any]
    at: datetime


@dataclass(frozen=True, slots=True)
class ReconcilerRun:
    """What one recorded reconciler pass did, counted by outcome."""

    started_at: datetime
    finished_at: datetime
    dry_run: bool
    trigger: str
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class StatusPolicyCount:
    status: UploadStatus
    policy: str
    uploads: int
    bytes: int


@dataclass(frozen=True, slots=True)
class PendingSummary:
    """How many uploads are pending, how many are past their deadline, the oldest one's start."""

    pending: int
    stuck: int
    oldest_created_at: datetime | None

    def oldest_age_seconds(self, now: datetime) -> float | None:
        if self.oldest_created_at is None:
            return None
        return (now - self.oldest_created_at).total_seconds()


@dataclass(frozen=True, slots=True)
class ScanBacklog:
    """Scan jobs waiting (retried: an attempt gave no verdict), and the oldest's start."""

    jobs: int
    retried: int
    oldest_created_at: datetime | None


@dataclass(frozen=True, slots=True)
class HourlyCount:
    hour: datetime
    created: int
    finalized: int


AdminSort = Literal["-created_at", "created_at", "-size", "size"]

# A filename search is served by a trigram index, which can only narrow a search down by a
# text holding three letters or digits in a row: with fewer ("ph", "%", "a_b") every row
# would be read. Such texts are refused rather than answered in seconds.
SEARCH_MAX = 255  # as long as a filename may be
BIGINT_MAX = 2**63 - 1  # PostgreSQL's bigint: ids and sizes a client names stay within it
_TRIGRAM = re.compile(r"[^\W_]{3}")
SEARCH_RULE = "must hold 3 letters or digits in a row"


def searchable(text: str) -> bool:
    """Whether a filename search for `text` can use the index (see SEARCH_RULE)."""
    return len(text) <= SEARCH_MAX and _TRIGRAM.search(text) is not None


@dataclass(frozen=True, slots=True)
class UploadFilters:
    """Optional filters of the operators' listing; None means any."""

    status: UploadStatus | None = None
    owner: str | None = None
    policy: str | None = None
    content_type: str | None = None
    created_before: datetime | None = None
    created_after: datetime | None = None
    pending_longer_than_seconds: float | None = None
    search: str | None = None  # part of the filename, in any case ("holi": "Holiday.JPG")


class WebhookEventType(StrEnum):
    """What an app's webhook says happened (migration 0009's webhook_deliveries_type_check)."""

    UPLOAD_CREATED = "upload.created"
    UPLOAD_FINALIZED = "upload.finalized"
    UPLOAD_REJECTED = "upload.rejected"
    UPLOAD_EXPIRED = "upload.expired"
    UPLOAD_DELETED = "upload.deleted"
    UPLOAD_QUARANTINED = "upload.quarantined"
    WEBHOOK_TEST = "webhook.test"


# The types an endpoint subscribes to (webhook.test is sent when an operator asks for it).
SUBSCRIBABLE_EVENT_TYPES = frozenset(set(WebhookEventType) - {WebhookEventType.WEBHOOK_TEST})


class DeliveryStatus(StrEnum):
    """Where one webhook delivery is (migration 0008's webhook_deliveries_status_check)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
