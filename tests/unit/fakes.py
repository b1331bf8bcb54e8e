"""In-memory stand-ins for the two ports (broker/flows/ports.py), so the use cases run in a
unit test with no PostgreSQL and no MinIO.

They keep the contracts the use cases rely on: guarded state changes return None when the
upload is not in the starting state, idempotency keys and quotas are checked atomically with
the insert, a transaction's changes are undone when it raises, a state change after creation
is announced to listeners once committed (migration 0004's NOTIFY), a missing object is None,
storage refuses a multipart completion as MinIO does, an unreachable service raises its
Unavailable error. The real adapters are held to the same contracts by the integration suite.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import hashlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from broker.domain import errors
from broker.domain.model import (
    LIVE_STATUSES,
    AdminSort,
    ChecksumAlgorithm,
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
)
from broker.domain.objects import (
    MultipartRefused,
    PresignedForm,
    PresignedRequest,
    StoredObject,
    StoredPart,
)
from broker.domain.scanning import ScannerUnavailable, ScanVerdict
from tests.unit.fake_downloads import MemoryDownloads
from tests.unit.fake_webhooks import MemoryWebhooks

START = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def an_upload(**fields: Any) -> Upload:
    """A pending 5-byte text PUT upload, with any field replaced."""
    upload_id = fields.pop("id", uuid.uuid4())
    values: dict[str, Any] = {
        "id": upload_id,
        "owner": "alice",
        "status": UploadStatus.PENDING,
        "filename": "hello.txt",
        "content_type": "text/plain",
        "size": 5,
        "size_limit": None,
        "sha256": None,
        "metadata": {},
        "bucket": "uploads",
        "object_key": f"uploads/{upload_id}",
        "policy": "default",
        "transfer": Transfer.PUT,
        "multipart_upload_id": None,
        "part_size": None,
        "part_count": None,
        "checksum_algorithm": None,
        "checksum": None,
        "etag": None,
        "reject_reason": None,
        "idempotency_key": None,
        "request_hash": None,
        "created_at": START,
        "updated_at": START,
        "expires_at": START + timedelta(days=1),
        "finalized_at": None,
        "rejected_at": None,
        "expired_at": None,
        "deleted_at": None,
        "detected_content_type": None,
        "scan_result": None,
        "scan_signature": None,
    }
    return Upload(**(values | fields))


@dataclasses.dataclass
class ScanJob:
    next_attempt_at: datetime
    attempts: int = 0
    leased_until: datetime | None = None
    lease_owner: str | None = None
    last_error: str | None = None
    created_at: datetime = START


class MemoryQueries(MemoryWebhooks, MemoryDownloads):
    """The Queries port over dictionaries (app webhooks: tests/unit/fake_webhooks.py; the
    download audit: tests/unit/fake_downloads.py)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.uploads: dict[uuid.UUID, Upload] = {}
        self.history: list[tuple[uuid.UUID, HistoryEntry]] = []
        self.runs: list[ReconcilerRun] = []
        self.scan_jobs: dict[uuid.UUID, ScanJob] = {}
        self.check_after: dict[uuid.UUID, datetime] = {}  # migration 0010's column
        self.rate_limits: dict[str, datetime] = {}  # migration 0012: key -> tat
        self.rate_limit_statements = 0
        self.scan_wakeups: list[Callable[[str], None]] = []
        self.available = True
        self.sweep_busy = False  # another process holds the orphan sweep lock
        self.listeners: list[Callable[[str], None]] = []
        self.listening = asyncio.Event()  # set once a `listen` call has subscribed
        self._depth = 0  # open transactions
        self._history_ids = itertools.count(1)  # an identity: a rollback leaves a gap
        self._unsent: list[tuple[str, str]] = []  # notifications of the open transaction
        self._init_webhooks()
        self._init_downloads()

    def _check(self) -> None:
        if not self.available:
            raise errors.DatabaseUnavailable()

    def _notify(self, payload: str, channel: str = "live") -> None:
        if self._depth:
            # NOTIFY is delivered when the transaction commits
            self._unsent.append((channel, payload))
            return
        listeners = {
            "live": self.listeners, "webhooks": self.webhook_wakeups,
            "scan_jobs": self.scan_wakeups,
        }[channel]  # fmt: skip
        for listener in list(listeners):
            listener(payload)

    def _log(self, upload: Upload, actor: str, detail: Mapping[str, Any] | None = None) -> None:
        entry = HistoryEntry(
            id=next(self._history_ids),
            status=upload.status,
            actor=actor,
            detail=dict(detail or {}),
            at=self.clock(),
        )
        self.history.append((upload.id, entry))
        self._enqueue_deliveries(upload, entry.id, entry.at)  # migration 0008's trigger
        if upload.status is not UploadStatus.PENDING:  # as the upload_history_notify trigger
            payload = {"upload_id": str(upload.id), "event_id": entry.id, "status": upload.status}
            self._notify(json.dumps(payload))

    def _change(
        self,
        upload_id: uuid.UUID,
        allowed: frozenset[UploadStatus],
        actor: str,
        detail: Mapping[str, Any] | None,
        **fields: Any,
    ) -> Upload | None:
        """One guarded transition: nothing happens unless the upload is in `allowed`."""
        self._check()
        upload = self.uploads.get(upload_id)
        if upload is None or upload.status not in allowed:
            return None
        changed = upload._replace(updated_at=self.clock(), **fields)
        self.uploads[upload_id] = changed
        self._log(changed, actor, detail)
        return changed

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryQueries]:
        """Changes made inside are undone if the block raises, as a rolled-back transaction."""
        self._check()
        saved = (dict(self.uploads), list(self.history), list(self.runs), len(self._unsent))
        downloads = list(self.downloads)
        webhooks = copy.deepcopy((self.endpoints, self.deliveries, self.scan_jobs))
        self._depth += 1
        try:
            yield self
        except BaseException:
            self.uploads, self.history, self.runs = saved[0], saved[1], saved[2]
            self.endpoints, self.deliveries, self.scan_jobs = webhooks
            self.downloads = downloads
            del self._unsent[saved[3] :]
            raise
        finally:
            self._depth -= 1
        if not self._depth:
            unsent, self._unsent = self._unsent, []
            for channel, payload in unsent:
                self._notify(payload, channel)

    async def listen(
        self, on_notify: Callable[[str], None], on_connected: Callable[[], None]
    ) -> None:
        """live.Listen over this fake: every committed notification, until cancelled."""
        self.listening.set()
        await self._listen_on(self.listeners, on_notify, on_connected)

    async def listen_webhooks(
        self, on_notify: Callable[[str], None], on_connected: Callable[[], None]
    ) -> None:
        """live.Listen on the senders' channel (webhook_sender.CHANNEL), until cancelled."""
        await self._listen_on(self.webhook_wakeups, on_notify, on_connected)

    async def listen_scan_jobs(
        self, on_notify: Callable[[str], None], on_connected: Callable[[], None]
    ) -> None:
        """live.Listen on the scanners' channel (scanning.CHANNEL), until cancelled."""
        await self._listen_on(self.scan_wakeups, on_notify, on_connected)

    @staticmethod
    async def _listen_on(
        listeners: list[Callable[[str], None]],
        on_notify: Callable[[str], None],
        on_connected: Callable[[], None],
    ) -> None:
        listeners.append(on_notify)
        on_connected()
        try:
            await asyncio.Event().wait()
        finally:
            listeners.remove(on_notify)

    @asynccontextmanager
    async def orphan_sweep_lock(self) -> AsyncIterator[MemoryQueries | None]:
        self._check()
        yield None if self.sweep_busy else self

    async def ping(self) -> None:
        self._check()

    async def insert_upload(self, record: NewUploadRecord, quota: QuotaLimits) -> Upload | None:
        self._check()
        if record.idempotency_key is not None and any(
            u.owner == record.owner and u.idempotency_key == record.idempotency_key
            for u in self.uploads.values()
        ):
            return None
        if not self._within_quota(record, quota):
            return None
        now = self.clock()
        values = record._asdict()
        del values["pending_seconds"], values["check_after_seconds"]
        upload = an_upload(
            **values,
            created_at=now,
            updated_at=now,
            expires_at=now + timedelta(seconds=record.pending_seconds),
        )
        self.uploads[upload.id] = upload
        if record.check_after_seconds is not None:
            self.check_after[upload.id] = now + timedelta(seconds=record.check_after_seconds)
        self._log(upload, "owner")
        return upload

    def _within_quota(self, record: NewUploadRecord, quota: QuotaLimits) -> bool:
        live = [u for u in self.uploads.values() if u.owner == record.owner]
        live = [u for u in live if u.status in LIVE_STATUSES]
        of_policy = [u for u in live if u.policy == record.policy]
        size = record.size if record.size is not None else record.size_limit or 0

        def used(uploads: list[Upload]) -> int:
            return sum(u.size if u.size is not None else u.size_limit or 0 for u in uploads)

        return (
            (quota.policy_bytes is None or used(of_policy) + size <= quota.policy_bytes)
            and (quota.policy_count is None or len(of_policy) < quota.policy_count)
            and (quota.global_bytes is None or used(live) + size <= quota.global_bytes)
            and (quota.global_count is None or len(live) < quota.global_count)
        )

    async def get_upload(self, upload_id: uuid.UUID) -> Upload | None:
        self._check()
        return self.uploads.get(upload_id)

    async def get_upload_for_owner(self, upload_id: uuid.UUID, owner: str) -> Upload | None:
        upload = await self.get_upload(upload_id)
        return upload if upload is not None and upload.owner == owner else None

    async def get_upload_owner(self, upload_id: uuid.UUID) -> str | None:
        upload = await self.get_upload(upload_id)
        return upload.owner if upload is not None else None

    async def get_upload_by_idempotency_key(self, owner: str, key: str) -> Upload | None:
        self._check()
        found = [u for u in self.uploads.values() if u.owner == owner and u.idempotency_key == key]
        return found[0] if found else None

    async def get_upload_by_key(self, bucket: str, object_key: str) -> Upload | None:
        self._check()
        found = [
            u for u in self.uploads.values() if u.bucket == bucket and u.object_key == object_key
        ]
        return found[0] if found else None

    async def list_uploads_for_owner(
        self,
        owner: str,
        status: UploadStatus | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
        metadata: Mapping[str, str] | None = None,
    ) -> list[Upload]:
        self._check()
        wanted = dict(metadata or {})
        found = [
            u
            for u in self.uploads.values()
            if u.owner == owner
            and (status is None or u.status == status)
            and (after is None or (u.created_at, u.id) < after)
            # JSONB containment of a flat object: every key present with an equal value.
            and all(key in u.metadata and u.metadata[key] == v for key, v in wanted.items())
        ]
        found.sort(key=lambda u: (u.created_at, u.id), reverse=True)
        return found[:limit]

    async def admin_list_uploads(
        self,
        filters: UploadFilters,
        sort: AdminSort,
        after: tuple[Any, uuid.UUID] | None,
        limit: int,
    ) -> list[Upload]:
        self._check()
        now = self.clock()
        longer = filters.pending_longer_than_seconds

        def matches(u: Upload) -> bool:
            return (
                (filters.status is None or u.status == filters.status)
                and (filters.owner is None or u.owner == filters.owner)
                and (filters.policy is None or u.policy == filters.policy)
                and (filters.content_type is None or u.content_type == filters.content_type)
                and (filters.created_before is None or u.created_at < filters.created_before)
                and (filters.created_after is None or u.created_at >= filters.created_after)
                # ILIKE '%text%' with the text's wildcards escaped: a plain substring, any case.
                and (filters.search is None or filters.search.lower() in u.filename.lower())
                and (
                    longer is None
                    or (
                        u.status is UploadStatus.PENDING
                        and u.created_at < now - timedelta(seconds=longer)
                    )
                )
            )

        field = sort.lstrip("-")
        descending = sort.startswith("-")

        def position(u: Upload) -> tuple[bool, Any, uuid.UUID]:
            # PostgreSQL orders NULL above every value: last ascending, first descending.
            value = getattr(u, field)
            return (value is None, value if value is not None else 0, u.id)

        def beyond(u: Upload, cursor: tuple[Any, uuid.UUID]) -> bool:
            """Strictly past the cursor in the listing's order, NULLs included."""
            mark = (cursor[0] is None, cursor[0] if cursor[0] is not None else 0, cursor[1])
            return position(u) < mark if descending else position(u) > mark

        found = [u for u in self.uploads.values() if matches(u)]
        if after is not None:
            found = [u for u in found if beyond(u, after)]
        found.sort(key=position, reverse=descending)
        return found[:limit]

    async def get_upload_history(
        self, upload_id: uuid.UUID, after_id: int | None = None
    ) -> list[HistoryEntry]:
        self._check()
        return [
            entry
            for owner_id, entry in self.history
            if owner_id == upload_id and (after_id is None or entry.id > after_id)
        ]

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
        return self._verified(
            upload_id, UploadStatus.FINALIZED, etag, checksum, size, detected_content_type,
            actor, detail, finalized_at=self.clock(),
        )  # fmt: skip

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
        changed = self._verified(
            upload_id, UploadStatus.SCANNING, etag, checksum, size, detected_content_type,
            actor, detail,
        )  # fmt: skip
        if changed is not None:  # the same statement queues the job (and its trigger wakes)
            self.scan_jobs[upload_id] = ScanJob(next_attempt_at=self.clock())
            self._notify("", "scan_jobs")
        return changed

    def _verified(
        self,
        upload_id: uuid.UUID,
        status: UploadStatus,
        etag: str,
        checksum: str | None,
        size: int,
        detected_content_type: str | None,
        actor: str,
        detail: Mapping[str, Any],
        **fields: Any,
    ) -> Upload | None:
        self._check()
        upload = self.uploads.get(upload_id)
        known_size = upload.size if upload is not None and upload.size is not None else size
        return self._change(
            upload_id,
            frozenset({UploadStatus.PENDING}),
            actor,
            detail,
            status=status,
            etag=etag,
            checksum=checksum,
            size=known_size,
            detected_content_type=detected_content_type,
            **fields,
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
        upload = self.uploads.get(upload_id)
        detected = detected_content_type or (upload.detected_content_type if upload else None)
        return self._change(
            upload_id,
            frozenset({UploadStatus.PENDING}),
            actor,
            detail,
            status=UploadStatus.REJECTED,
            reject_reason=reason,
            detected_content_type=detected,
            rejected_at=self.clock(),
        )

    async def record_part_plan(
        self, upload_id: uuid.UUID, *, part_size: int, part_count: int
    ) -> None:
        self._check()
        upload = self.uploads.get(upload_id)
        if upload is not None and upload.status is UploadStatus.PENDING and upload.size is None:
            self.uploads[upload_id] = upload._replace(part_size=part_size, part_count=part_count)

    # ---- malware scanning: migration 0009's scan_jobs

    async def claim_scan_jobs(
        self, *, now: datetime, lease_seconds: float, lease_owner: str, limit: int
    ) -> list[tuple[uuid.UUID, int]]:
        self._check()
        due = sorted(
            (job.next_attempt_at, upload_id)
            for upload_id, job in self.scan_jobs.items()
            if job.next_attempt_at <= now and (job.leased_until is None or job.leased_until <= now)
        )
        claimed = []
        for _, upload_id in due[:limit]:
            job = self.scan_jobs[upload_id]
            job.leased_until = now + timedelta(seconds=lease_seconds)
            job.lease_owner = lease_owner
            job.attempts += 1
            claimed.append((upload_id, job.attempts))
        return claimed

    def _held_job(self, upload_id: uuid.UUID, lease_owner: str) -> ScanJob | None:
        job = self.scan_jobs.get(upload_id)
        return job if job is not None and job.lease_owner == lease_owner else None

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
        self._check()
        if self._held_job(upload_id, lease_owner) is None:
            return None
        del self.scan_jobs[upload_id]
        return self._change(
            upload_id,
            frozenset({UploadStatus.SCANNING}),
            actor,
            detail,
            status=status,
            scan_result=scan_result,
            scan_signature=scan_signature,
            finalized_at=self.clock() if status is UploadStatus.FINALIZED else None,
        )

    async def retry_scan_job(
        self, upload_id: uuid.UUID, *, lease_owner: str, next_attempt_at: datetime, error: str
    ) -> bool:
        self._check()
        job = self._held_job(upload_id, lease_owner)
        if job is None:
            return False
        job.next_attempt_at, job.leased_until, job.lease_owner = next_attempt_at, None, None
        job.last_error = error
        return True

    async def release_scan_leases(self, scanner: str) -> None:
        self._check()
        for job in self.scan_jobs.values():
            if job.lease_owner is not None and job.lease_owner.startswith(f"{scanner}/"):
                job.leased_until = job.lease_owner = None

    async def drop_scan_job(self, upload_id: uuid.UUID, *, lease_owner: str) -> None:
        self._check()
        if self._held_job(upload_id, lease_owner) is not None:
            del self.scan_jobs[upload_id]

    async def scan_backlog(self) -> ScanBacklog:
        self._check()
        jobs = list(self.scan_jobs.values())
        return ScanBacklog(
            jobs=len(jobs),
            retried=sum(1 for job in jobs if job.last_error is not None),
            oldest_created_at=min((job.created_at for job in jobs), default=None),
        )

    async def release_quarantined_upload(
        self, upload_id: uuid.UUID, *, actor: str, detail: Mapping[str, Any]
    ) -> Upload | None:
        return self._change(
            upload_id,
            frozenset({UploadStatus.QUARANTINED}),
            actor,
            detail,
            status=UploadStatus.FINALIZED,
            finalized_at=self.clock(),
        )

    async def admin_delete_upload(
        self, upload_id: uuid.UUID, *, actor: str, detail: Mapping[str, Any]
    ) -> Upload | None:
        return self._change(
            upload_id, LIVE_STATUSES, actor, detail, status=UploadStatus.DELETED,
            deleted_at=self.clock(),
        )  # fmt: skip

    async def mark_upload_deleted(self, upload_id: uuid.UUID, owner: str) -> Upload | None:
        self._check()
        upload = self.uploads.get(upload_id)
        if upload is None or upload.owner != owner:
            return None
        return self._change(
            upload_id,
            LIVE_STATUSES,
            "owner",
            None,
            status=UploadStatus.DELETED,
            deleted_at=self.clock(),
        )

    async def mark_upload_deleted_by_key(
        self, bucket: str, object_key: str, *, actor: str, detail: Mapping[str, Any]
    ) -> Upload | None:
        upload = await self.get_upload_by_key(bucket, object_key)
        if upload is None:
            return None
        return self._change(
            upload.id,
            LIVE_STATUSES,
            actor,
            detail,
            status=UploadStatus.DELETED,
            deleted_at=self.clock(),
        )

    async def mark_upload_expired(
        self, upload_id: uuid.UUID, *, force: bool, actor: str, detail: Mapping[str, Any]
    ) -> Upload | None:
        self._check()
        upload = self.uploads.get(upload_id)
        if upload is None or not (force or upload.expires_at <= self.clock()):
            return None
        return self._change(
            upload_id,
            frozenset({UploadStatus.PENDING}),
            actor,
            detail,
            status=UploadStatus.EXPIRED,
            expired_at=self.clock(),
        )

    def _stale(self) -> list[Upload]:
        now = self.clock()
        stale = [
            u
            for u in self.uploads.values()
            if u.status is UploadStatus.PENDING and u.expires_at <= now
        ]
        return sorted(stale, key=lambda u: u.expires_at)

    async def claim_stale_pending_upload(self) -> Upload | None:
        self._check()
        stale = self._stale()
        return stale[0] if stale else None

    async def latest_history_id(self) -> int:
        self._check()
        return max((entry.id for _, entry in self.history), default=0)

    async def uploads_changed_since(self, after_id: int) -> tuple[list[uuid.UUID], int]:
        self._check()
        later = [(upload_id, entry.id) for upload_id, entry in self.history if entry.id > after_id]
        return list(dict.fromkeys(u for u, _ in later)), max(
            (i for _, i in later), default=after_id
        )

    async def claim_unchecked_pending_upload(self) -> Upload | None:
        self._check()
        due = sorted(
            (at, upload_id)
            for upload_id, at in self.check_after.items()
            if at <= self.clock() and self.uploads[upload_id].status is UploadStatus.PENDING
        )
        return self.uploads[due[0][1]] if due else None

    async def mark_upload_checked(self, upload_id: uuid.UUID) -> None:
        self._check()
        self.check_after.pop(upload_id, None)

    async def schedule_upload_check(self, upload_id: uuid.UUID, *, seconds: float) -> None:
        self._check()
        upload = self.uploads.get(upload_id)
        if upload is not None and upload.status is UploadStatus.PENDING:
            self.check_after[upload_id] = self.clock() + timedelta(seconds=seconds)

    async def claim_pending_upload(self, upload_id: uuid.UUID) -> Upload | None:
        upload = await self.get_upload(upload_id)
        return upload if upload is not None and upload.status is UploadStatus.PENDING else None

    async def list_stale_pending_uploads(self, limit: int) -> list[Upload]:
        self._check()
        return self._stale()[:limit]

    async def find_live_object_keys(self, bucket: str, object_keys: list[str]) -> set[str]:
        self._check()
        return {
            u.object_key
            for u in self.uploads.values()
            if u.bucket == bucket and u.object_key in object_keys and u.status in LIVE_STATUSES
        }

    async def find_pending_multipart_ids(self, multipart_upload_ids: list[str]) -> set[str]:
        self._check()
        return {
            u.multipart_upload_id
            for u in self.uploads.values()
            if u.multipart_upload_id in multipart_upload_ids
            and u.multipart_upload_id is not None
            and u.status is UploadStatus.PENDING
        }

    async def insert_reconciler_run(
        self, started_at: datetime, dry_run: bool, trigger: str, counts: Mapping[Outcome, int]
    ) -> None:
        self._check()
        stored_counts = json.loads(json.dumps(counts))  # a jsonb column: keys come back as text
        self.runs.append(ReconcilerRun(started_at, self.clock(), dry_run, trigger, stored_counts))

    async def recent_reconciler_runs(self, limit: int) -> list[ReconcilerRun]:
        self._check()
        return sorted(self.runs, key=lambda run: run.started_at, reverse=True)[:limit]

    async def take_rate_limit(
        self, key: str, *, count: int = 1, interval_seconds: float, period_seconds: float
    ) -> tuple[int, float]:
        """GCRA as queries.sql's take_rate_limits, on the hand-moved clock."""
        self._check()
        self.rate_limit_statements += 1
        now = self.clock()
        taken = 0
        while taken < count:
            tat = max(self.rate_limits.get(key, now), now) + timedelta(seconds=interval_seconds)
            if tat - now > timedelta(seconds=period_seconds):
                if taken:
                    break
                return 0, max((tat - now).total_seconds() - period_seconds, 0.001)
            self.rate_limits[key] = tat
            taken += 1
        return taken, 0.0

    async def delete_idle_rate_limits(self, limit: int) -> int:
        self._check()
        idle = [key for key, tat in self.rate_limits.items() if tat < self.clock()][:limit]
        for key in idle:
            del self.rate_limits[key]
        return len(idle)

    async def stats_by_status_and_policy(self) -> list[StatusPolicyCount]:
        self._check()
        groups: dict[tuple[UploadStatus, str], tuple[int, int]] = {}
        for u in self.uploads.values():
            count, size = groups.get((u.status, u.policy), (0, 0))
            groups[(u.status, u.policy)] = (count + 1, size + (u.size or 0))
        return [StatusPolicyCount(s, p, c, b) for (s, p), (c, b) in sorted(groups.items())]

    async def stats_pending(self) -> PendingSummary:
        self._check()
        pending = [u for u in self.uploads.values() if u.status is UploadStatus.PENDING]
        return PendingSummary(
            pending=len(pending),
            stuck=len(self._stale()),
            oldest_created_at=min((u.created_at for u in pending), default=None),
        )

    async def stats_hourly(self) -> list[HourlyCount]:
        self._check()
        top = self.clock().replace(minute=0, second=0, microsecond=0)
        hours = [top - timedelta(hours=n) for n in range(23, -1, -1)]

        def count(moments: list[datetime | None], hour: datetime) -> int:
            return sum(
                1 for m in moments if m is not None and hour <= m < hour + timedelta(hours=1)
            )

        created = [u.created_at for u in self.uploads.values()]
        finalized = [u.finalized_at for u in self.uploads.values()]
        return [HourlyCount(h, count(list(created), h), count(finalized, h)) for h in hours]


def sha256_base64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


MIN_PART_SIZE = 5 * 1024**2  # every part but the last, or storage refuses to complete


@dataclasses.dataclass
class MultipartInProgress:
    key: str
    started_at: datetime
    content_type: str
    checksum_algorithm: str | None = None
    parts: dict[int, StoredPart] = dataclasses.field(default_factory=dict)
    data: dict[int, bytes] = dataclasses.field(default_factory=dict)


class MemoryStore:
    """The ObjectStore port over a dictionary: one bucket, its objects and multipart uploads."""

    def __init__(self, clock: Clock | None = None, bucket: str = "uploads") -> None:
        self.clock = clock or Clock()
        self.bucket = bucket
        self.public_endpoint = "http://storage.test"
        self.objects: dict[str, tuple[StoredObject, datetime]] = {}
        self.contents: dict[str, bytes] = {}
        self.multipart: dict[str, MultipartInProgress] = {}
        self.available = True
        self.deleted: list[str] = []
        self.aborted: list[str] = []

    def _check(self) -> None:
        if not self.available:
            raise errors.StorageUnavailable()

    # ------------------------------------------------------------ what a client would do

    def put(
        self, key: str, data: bytes, content_type: str | None = "text/plain", checksum: bool = False
    ) -> StoredObject:
        """Store bytes as a client's presigned PUT would."""
        stored = StoredObject(
            size=len(data),
            etag=hashlib.md5(data).hexdigest(),
            content_type=content_type,
            checksum=sha256_base64(data) if checksum else None,
        )
        self.objects[key] = (stored, self.clock())
        self.contents[key] = data
        return stored

    def upload_part(
        self, upload_id: str, number: int, data: bytes, checksum: str | None = None
    ) -> StoredPart:
        """Store one part as a client's presigned UploadPart would; of an upload created with
        a checksum algorithm, the part's SHA-256 is computed unless `checksum` is given."""
        found = self.multipart[upload_id]
        if checksum is None and found.checksum_algorithm == ChecksumAlgorithm.SHA256:
            checksum = sha256_base64(data)
        part = StoredPart(number, hashlib.md5(data).hexdigest(), len(data), checksum)
        found.parts[number] = part
        found.data[number] = data
        return part

    # ------------------------------------------------------------ the port

    def _presigned(self, method: str, key: str, expires_in: int, **query: Any) -> str:
        # The signing time is part of a real presigned URL (X-Amz-Date): a URL signed later
        # is another URL.
        extra = "".join(f"&{k}={quote(str(v), safe='')}" for k, v in query.items())
        base = f"{self.public_endpoint}/{self.bucket}/{key}"
        signed = self.clock().strftime("%Y%m%dT%H%M%SZ")
        return f"{base}?method={method}&date={signed}&expires={expires_in}{extra}"

    def presign_put(
        self, key: str, *, content_type: str, size: int, sha256_base64: str | None, expires_in: int
    ) -> PresignedRequest:
        headers = {"content-type": content_type, "content-length": str(size), "if-none-match": "*"}
        if sha256_base64 is not None:
            headers["x-amz-checksum-sha256"] = sha256_base64
        expires_at = self.clock() + timedelta(seconds=expires_in)
        return PresignedRequest("PUT", self._presigned("PUT", key, expires_in), headers, expires_at)

    def presign_part(
        self,
        key: str,
        *,
        upload_id: str,
        part_number: int,
        size: int | None,
        checksum: tuple[str, str] | None,
        expires_in: int,
    ) -> PresignedRequest:
        headers = {"content-length": str(size)} if size is not None else {}
        if checksum is not None:
            headers[f"x-amz-checksum-{checksum[0].lower()}"] = checksum[1]
        url = self._presigned("PUT", key, expires_in, uploadId=upload_id, partNumber=part_number)
        return PresignedRequest("PUT", url, headers, self.clock() + timedelta(seconds=expires_in))

    def presign_post(
        self,
        key: str,
        *,
        content_type: str,
        sizes: tuple[int, int],
        sha256_base64: str | None,
        expires_in: int,
    ) -> PresignedForm:
        fields = {"key": key, "Content-Type": content_type, "size-range": f"{sizes[0]},{sizes[1]}"}
        if sha256_base64 is not None:
            fields["x-amz-checksum-sha256"] = sha256_base64
        expires_at = self.clock() + timedelta(seconds=expires_in)
        return PresignedForm(f"{self.public_endpoint}/{self.bucket}", fields, expires_at)

    def presign_get(
        self, key: str, *, content_disposition: str, content_type: str, expires_in: int
    ) -> PresignedRequest:
        url = self._presigned(
            "GET",
            key,
            expires_in,
            **{
                "response-content-disposition": content_disposition,
                "response-content-type": content_type,
            },
        )
        return PresignedRequest("GET", url, {}, self.clock() + timedelta(seconds=expires_in))

    async def head(self, key: str) -> StoredObject | None:
        self._check()
        found = self.objects.get(key)
        return found[0] if found else None

    async def read_head(self, key: str, length: int) -> bytes | None:
        self._check()
        return self.contents.get(key, b"")[:length] if key in self.objects else None

    def stream(self, key: str, chunk_size: int) -> Iterator[bytes]:
        self._check()
        if key not in self.objects:
            raise errors.ObjectMissing()
        data = self.contents.get(key, b"")
        for start in range(0, len(data), chunk_size):
            yield data[start : start + chunk_size]

    async def delete(self, key: str) -> None:
        self._check()
        self.deleted.append(key)
        self.objects.pop(key, None)
        self.contents.pop(key, None)

    async def create_multipart(
        self, key: str, *, content_type: str, checksum_algorithm: str | None
    ) -> str:
        self._check()
        upload_id = f"mpu-{uuid.uuid4().hex[:12]}"
        self.multipart[upload_id] = MultipartInProgress(
            key, self.clock(), content_type, checksum_algorithm
        )
        return upload_id

    async def list_parts(self, key: str, upload_id: str) -> list[StoredPart] | None:
        self._check()
        found = self.multipart.get(upload_id)
        return sorted(found.parts.values(), key=lambda p: p.part_number) if found else None

    async def complete_multipart(
        self, key: str, upload_id: str, parts: list[StoredPart], checksum_algorithm: str | None
    ) -> None:
        """Join the listed parts as MinIO does, refusing what MinIO refuses."""
        self._check()
        found = self.multipart.get(upload_id)
        if found is None or found.key != key:
            raise MultipartRefused("NoSuchUpload", "no such upload")
        numbers = [p.part_number for p in parts]
        if not parts or numbers != sorted(set(numbers)):
            raise MultipartRefused("InvalidPartOrder", "parts must be listed in ascending order")
        for listed in parts:
            held = found.parts.get(listed.part_number)
            if held is None or held.etag != listed.etag:
                raise MultipartRefused("InvalidPart", f"part {listed.part_number} is not held")
            if checksum_algorithm is not None and held.checksum != listed.checksum:
                raise MultipartRefused("InvalidPart", f"part {listed.part_number} checksum")
        held_parts = [found.parts[n] for n in numbers]
        if any(p.size < MIN_PART_SIZE for p in held_parts[:-1]):
            raise MultipartRefused("EntityTooSmall", "a part but the last is below 5 MiB")
        del self.multipart[upload_id]
        # S3's multipart ETag and composite checksum: a digest of the parts' digests, "-N".
        count = len(held_parts)
        etag = hashlib.md5(b"".join(bytes.fromhex(p.etag) for p in held_parts)).hexdigest()
        checksum = None
        if checksum_algorithm is not None and all(p.checksum for p in held_parts):
            joined = b"".join(base64.b64decode(p.checksum or "") for p in held_parts)
            checksum = f"{sha256_base64(joined)}-{count}"
        stored = StoredObject(
            size=sum(p.size for p in held_parts),
            etag=f"{etag}-{count}",
            content_type=found.content_type,
            checksum=checksum,
        )
        self.objects[key] = (stored, self.clock())
        self.contents[key] = b"".join(found.data.get(n, b"") for n in numbers)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        self._check()
        self.aborted.append(upload_id)
        self.multipart.pop(upload_id, None)

    async def list_objects(self, prefix: str) -> AsyncIterator[list[tuple[str, datetime]]]:
        self._check()
        yield [(k, at) for k, (_, at) in sorted(self.objects.items()) if k.startswith(prefix)]

    async def list_multipart_uploads(self) -> AsyncIterator[list[tuple[str, str, datetime]]]:
        self._check()
        yield [(m.key, uid, m.started_at) for uid, m in sorted(self.multipart.items())]

    async def ping(self) -> None:
        self._check()


class FakeScanner:
    """The Scanner port: infected when the bytes hold `pattern`; `down` gives no verdict."""

    name = "fake"

    def __init__(self, pattern: bytes = b"EICAR") -> None:
        self.pattern = pattern
        self.down = False
        self.scanned = 0

    def scan(self, chunks: Iterable[bytes]) -> ScanVerdict:
        data = b"".join(chunks)  # a test's objects are small
        if self.down:
            raise ScannerUnavailable("fake engine is down")
        self.scanned += 1
        found = self.pattern in data
        return ScanVerdict(found, "Fake.Test" if found else None, self.name)
