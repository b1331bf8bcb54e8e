"""The interfaces the use cases need from the outside world, and nothing more.

broker/adapters/queries.py (Queries), broker/adapters/storage.py (Storage) and
broker/adapters/http.py (WebhookPoster) implement them for PostgreSQL, MinIO and the apps'
webhook endpoints; tests/unit/fakes.py implements them in memory, so the use cases run in a
unit test without any service.
"""

from __future__ import annotations

import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from broker.domain.downloads import DownloadRecord, DownloadSummary, RequestOrigin
from broker.domain.model import (
    AdminSort,
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
    Upload,
    UploadFilters,
    UploadStatus,
    WebhookEventType,
)
from broker.domain.objects import PresignedForm, PresignedRequest, StoredObject, StoredPart
from broker.domain.scanning import ScanVerdict
from broker.domain.webhooks import (
    ClaimedDelivery,
    DeliveredAttempt,
    DeliveryFilters,
    PostResult,
    WebhookBacklog,
    WebhookDelivery,
    WebhookEndpoint,
)


class ObjectStore(Protocol):
    """One bucket: presigned requests for clients, and the calls the broker makes itself.

    Failures to reach storage raise errors.StorageUnavailable; a refused multipart
    completion raises objects.MultipartRefused.
    """

    bucket: str
    public_endpoint: str

    def presign_put(
        self, key: str, *, content_type: str, size: int, sha256_base64: str | None, expires_in: int
    ) -> PresignedRequest: ...

    def presign_part(
        self,
        key: str,
        *,
        upload_id: str,
        part_number: int,
        size: int | None,
        checksum: tuple[str, str] | None,
        expires_in: int,
    ) -> PresignedRequest: ...

    def presign_post(
        self,
        key: str,
        *,
        content_type: str,
        sizes: tuple[int, int],
        sha256_base64: str | None,
        expires_in: int,
    ) -> PresignedForm: ...

    def presign_get(
        self, key: str, *, content_disposition: str, content_type: str, expires_in: int
    ) -> PresignedRequest: ...

    async def head(self, key: str) -> StoredObject | None: ...

    async def read_head(self, key: str, length: int) -> bytes | None:
        """The first `length` bytes of the object (fewer if shorter), or None if gone."""
        ...

    def stream(self, key: str, chunk_size: int) -> Iterator[bytes]:
        """The object's bytes as they are read; blocking, so consumed in a thread. Raises
        errors.ObjectMissing if it is gone."""
        ...

    async def delete(self, key: str) -> None: ...

    async def create_multipart(
        self, key: str, *, content_type: str, checksum_algorithm: str | None
    ) -> str: ...

    async def list_parts(self, key: str, upload_id: str) -> list[StoredPart] | None: ...

    async def complete_multipart(
        self, key: str, upload_id: str, parts: list[StoredPart], checksum_algorithm: str | None
    ) -> None: ...

    async def abort_multipart(self, key: str, upload_id: str) -> None: ...

    def list_objects(self, prefix: str) -> AsyncIterator[list[tuple[str, datetime]]]: ...

    def list_multipart_uploads(self) -> AsyncIterator[list[tuple[str, str, datetime]]]: ...

    async def ping(self) -> None: ...


class Queries(Protocol):
    """The upload records. Each state change is atomic and guarded: it returns the changed
    upload, or None when the upload was not in the state the change starts from.

    Failures to reach the database raise errors.DatabaseUnavailable.
    """

    def transaction(self) -> AbstractAsyncContextManager[Queries]: ...

    def orphan_sweep_lock(self) -> AbstractAsyncContextManager[Queries | None]: ...

    async def ping(self) -> None: ...

    async def insert_upload(self, record: NewUploadRecord, quota: QuotaLimits) -> Upload | None: ...

    async def get_upload(self, upload_id: uuid.UUID) -> Upload | None: ...

    async def get_upload_for_owner(self, upload_id: uuid.UUID, owner: str) -> Upload | None: ...

    async def get_upload_owner(self, upload_id: uuid.UUID) -> str | None: ...

    async def get_upload_by_idempotency_key(self, owner: str, key: str) -> Upload | None: ...

    async def get_upload_by_key(self, bucket: str, object_key: str) -> Upload | None: ...

    async def list_uploads_for_owner(
        self,
        owner: str,
        status: UploadStatus | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
        metadata: Mapping[str, str] | None = None,
    ) -> list[Upload]:
        """The owner's uploads, newest first, after the keyset position `after`; with
        `metadata`, only those whose metadata holds every one of its keys with that value."""
        ...

    async def admin_list_uploads(
        self,
        filters: UploadFilters,
        sort: AdminSort,
        after: tuple[Any, uuid.UUID] | None,
        limit: int,
    ) -> list[Upload]: ...

    async def get_upload_history(
        self, upload_id: uuid.UUID, after_id: int | None = None
    ) -> list[HistoryEntry]: ...

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
    ) -> Upload | None: ...

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
        """pending -> scanning, with the upload's scan job queued by the same statement."""
        ...

    async def mark_upload_rejected(
        self,
        upload_id: uuid.UUID,
        *,
        reason: str,
        actor: str,
        detail: Mapping[str, Any],
        detected_content_type: str | None = None,
    ) -> Upload | None: ...

    async def record_part_plan(
        self, upload_id: uuid.UUID, *, part_size: int, part_count: int
    ) -> None:
        """The parts of a pending upload of undeclared size, known when they are joined."""
        ...

    async def latest_history_id(self) -> int:
        """The newest upload history id (0 when there is none)."""
        ...

    async def uploads_changed_since(self, after_id: int) -> tuple[list[uuid.UUID], int]:
        """The uploads with a history entry after `after_id`, and the newest id seen."""
        ...

    async def claim_unchecked_pending_upload(self) -> Upload | None:
        """A pending upload due for its early check (its URLs expired), row-locked."""
        ...

    async def mark_upload_checked(self, upload_id: uuid.UUID) -> None:
        """No early check again until a new one is scheduled (the deadline check remains)."""
        ...

    async def schedule_upload_check(self, upload_id: uuid.UUID, *, seconds: float) -> None: ...

    async def claim_scan_jobs(
        self, *, now: datetime, lease_seconds: float, lease_owner: str, limit: int
    ) -> list[tuple[uuid.UUID, int]]:
        """(upload id, attempt number) of due scan jobs, leased to `lease_owner`."""
        ...

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
        """scanning -> `status` and the job done, only while `lease_owner` holds the job."""
        ...

    async def retry_scan_job(
        self, upload_id: uuid.UUID, *, lease_owner: str, next_attempt_at: datetime, error: str
    ) -> bool: ...

    async def release_scan_leases(self, scanner: str) -> None:
        """Hand back every job leased by `scanner` (its lease owners are `scanner/...`)."""
        ...

    async def release_webhook_leases(self, sender: str) -> None:
        """Hand back every pending delivery leased by `sender` (lease owners `sender/...`)."""
        ...

    async def drop_scan_job(self, upload_id: uuid.UUID, *, lease_owner: str) -> None: ...

    async def scan_backlog(self) -> ScanBacklog: ...

    async def release_quarantined_upload(
        self, upload_id: uuid.UUID, *, actor: str, detail: Mapping[str, Any]
    ) -> Upload | None: ...

    async def admin_delete_upload(
        self, upload_id: uuid.UUID, *, actor: str, detail: Mapping[str, Any]
    ) -> Upload | None: ...

    async def mark_upload_deleted(self, upload_id: uuid.UUID, owner: str) -> Upload | None: ...

    async def mark_upload_deleted_by_key(
        self, bucket: str, object_key: str, *, actor: str, detail: Mapping[str, Any]
    ) -> Upload | None: ...

    async def mark_upload_expired(
        self, upload_id: uuid.UUID, *, force: bool, actor: str, detail: Mapping[str, Any]
    ) -> Upload | None: ...

    async def claim_stale_pending_upload(self) -> Upload | None: ...

    async def claim_pending_upload(self, upload_id: uuid.UUID) -> Upload | None: ...

    async def list_stale_pending_uploads(self, limit: int) -> list[Upload]: ...

    async def find_live_object_keys(self, bucket: str, object_keys: list[str]) -> set[str]: ...

    async def find_pending_multipart_ids(self, multipart_upload_ids: list[str]) -> set[str]: ...

    async def insert_reconciler_run(
        self, started_at: datetime, dry_run: bool, trigger: str, counts: Mapping[Outcome, int]
    ) -> None: ...

    async def recent_reconciler_runs(self, limit: int) -> list[ReconcilerRun]: ...

    async def take_rate_limit(
        self, key: str, *, count: int = 1, interval_seconds: float, period_seconds: float
    ) -> tuple[int, float]:
        """Take up to `count` actions of `key`'s allowance (GCRA: each action uses
        `interval_seconds` of a whole allowance of `period_seconds`), atomically across
        processes: how many were taken (as many as fit) and, when none was, the seconds until
        one would be."""
        ...

    async def delete_idle_rate_limits(self, limit: int) -> int:
        """Forget up to `limit` keys whose allowance is whole again; how many went."""
        ...

    async def stats_by_status_and_policy(self) -> list[StatusPolicyCount]: ...

    async def stats_pending(self) -> PendingSummary: ...

    async def stats_hourly(self) -> list[HourlyCount]: ...

    # ---- app webhooks (migration 0008): endpoints, and the deliveries outbox

    async def insert_webhook_endpoint(
        self,
        endpoint_id: uuid.UUID,
        *,
        url: str,
        description: str,
        event_types: tuple[WebhookEventType, ...],
        policy: str | None,
        secret: str,
    ) -> WebhookEndpoint: ...

    async def list_webhook_endpoints(self) -> list[WebhookEndpoint]: ...

    async def get_webhook_endpoint(self, endpoint_id: uuid.UUID) -> WebhookEndpoint | None: ...

    async def update_webhook_endpoint(
        self,
        endpoint_id: uuid.UUID,
        *,
        url: str,
        description: str,
        event_types: tuple[WebhookEventType, ...],
        policy: str | None,
    ) -> WebhookEndpoint | None: ...

    async def rotate_webhook_secret(
        self, endpoint_id: uuid.UUID, secret: str, overlap_seconds: float
    ) -> WebhookEndpoint | None: ...

    async def disable_webhook_endpoint(
        self, endpoint_id: uuid.UUID, reason: str
    ) -> WebhookEndpoint | None: ...

    async def enable_webhook_endpoint(self, endpoint_id: uuid.UUID) -> WebhookEndpoint | None: ...

    async def throttle_webhook_endpoint(self, endpoint_id: uuid.UUID, until: datetime) -> None: ...

    async def insert_webhook_test_delivery(
        self, endpoint_id: uuid.UUID, message_id: str, payload: Mapping[str, Any]
    ) -> WebhookDelivery: ...

    async def notify_webhook_senders(self) -> None: ...

    async def due_webhook_endpoints(self, now: datetime) -> list[uuid.UUID]: ...

    async def claim_webhook_deliveries(
        self,
        endpoint_id: uuid.UUID,
        *,
        now: datetime,
        lease_seconds: float,
        lease_owner: str,
        limit: int,
    ) -> list[ClaimedDelivery]: ...

    async def mark_webhooks_delivered(
        self, attempts: Sequence[DeliveredAttempt]
    ) -> dict[int, datetime]:
        """Delivery id -> when its state changed, for the attempts whose sender still held
        the lease; one statement (and one commit) for the whole batch."""
        ...

    async def mark_webhook_attempt_failed(
        self,
        delivery_id: int,
        *,
        lease_owner: str,
        status: DeliveryStatus,
        next_attempt_at: datetime,
        http_status: int | None,
        error: str | None,
    ) -> bool: ...

    async def get_webhook_delivery(self, delivery_id: int) -> WebhookDelivery | None: ...

    async def list_webhook_deliveries(
        self, filters: DeliveryFilters, before_id: int | None, limit: int
    ) -> list[WebhookDelivery]: ...

    async def retry_dead_webhook_delivery(self, delivery_id: int) -> WebhookDelivery | None: ...

    async def replay_webhook_deliveries(self, endpoint_id: uuid.UUID, since: datetime) -> int: ...

    async def webhook_backlog(self) -> WebhookBacklog: ...

    async def count_dead_webhook_deliveries(self) -> int: ...

    # ---- download audit (migration 0013)

    async def get_upload_recording_download(
        self, upload_id: uuid.UUID, owner: str, *, expires_in: int, origin: RequestOrigin
    ) -> Upload | None:
        """The owner's upload (None if not theirs); when it is finalized, the same statement
        records the download of a URL valid for `expires_in` seconds, issued now."""
        ...

    async def list_upload_downloads(
        self,
        upload_id: uuid.UUID,
        after: tuple[datetime, int] | None,
        limit: int,
        since: datetime | None = None,
    ) -> list[DownloadRecord]:
        """One upload's downloads, newest first, after the keyset position (issued_at, id)."""
        ...

    async def list_downloads_since(
        self, since: datetime, after: tuple[datetime, int] | None, limit: int
    ) -> list[DownloadRecord]:
        """Every download issued at or after `since`, newest first, after `after`."""
        ...

    async def count_upload_downloads(self, upload_id: uuid.UUID) -> DownloadSummary: ...

    async def delete_expired_download_audit(self, retention_days: int, limit: int) -> int:
        """Delete up to `limit` rows older than `retention_days` days; how many went."""
        ...


# The media type of a file's first bytes (broker/adapters/sniffer.py: libmagic).
ContentSniffer = Callable[[bytes], Awaitable[str]]


class Scanner(Protocol):
    """A malware scanning engine (broker/adapters/scanners.py): blocking, so called in a
    thread; raises ScannerUnavailable when it gives no verdict."""

    name: str

    def scan(self, chunks: Iterable[bytes]) -> ScanVerdict: ...


class WebhookPoster(Protocol):
    """POSTs a signed webhook to an app's endpoint: never raises for what the endpoint (or
    the network, or the SSRF guard) does, but says it in the result."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> PostResult: ...
