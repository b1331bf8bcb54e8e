"""The malware scanner: gives the verdict of uploads in `scanning`, in every broker process.

Scanning never runs in the webhook path (a PUT does not wait for it). Finalization queues a
job row in the statement that moves the upload to `scanning`; scanners claim due jobs with
FOR UPDATE SKIP LOCKED and a lease longer than the engine's timeout, stream the object to
the engine, and record the verdict with a statement guarded by the lease. A process that
dies mid-scan leaves a lease that runs out, and another scanner (or itself, restarted)
scans the file again; two scanners never hold one job at once.

With no verdict (the engine is down), a fail-closed policy's upload stays `scanning` and
its job is retried with backoff; a fail-open policy's upload is finalized with
scan_result = skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from broker import metrics
from broker.domain import errors
from broker.domain.model import Actor, Outcome, ScanResult, UploadStatus
from broker.domain.policies import Policies, ScanFailure
from broker.domain.scanning import ScannerUnavailable, ScanVerdict
from broker.flows.finalization import record_finalized
from broker.flows.live import Listen
from broker.flows.ports import ObjectStore, Queries, Scanner
from broker.flows.rounds import run_rounds

log = logging.getLogger("broker.scanning")

CHANNEL = "broker_scan_jobs"  # see migrations/0009_content_checks_and_scanning.sql
CHUNK_BYTES = 256 * 1024
# Seconds before the next attempt after attempt n gave no verdict (the last one repeats):
# clamd restarting is back within the first retries, a longer outage is polled gently.
RETRY_SECONDS = (5, 15, 30, 60, 120, 300)
NO_ENGINE = "no scanning engine is configured (BROKER_CLAMD_ADDRESS or BROKER_SCAN_COMMAND)"


@dataclass(frozen=True)
class ScannerLimits:
    """How a scanner paces itself."""

    lease_seconds: float = 150  # longer than the engine's timeout for one whole scan
    poll_seconds: float = 5
    concurrency: int = 2  # scans in flight in this process


def retry_delay(attempt: int) -> float:
    return RETRY_SECONDS[min(attempt, len(RETRY_SECONDS)) - 1]


class MalwareScanner:
    """Claims due scan jobs, streams each object to the engine and records the verdict."""

    def __init__(
        self,
        queries: Queries,
        store: ObjectStore,
        engine: Scanner | None,
        policies: Policies,
        listen: Listen | None,
        limits: ScannerLimits,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        name: str | None = None,
    ) -> None:
        self.queries = queries
        self.storage = store
        self.engine = engine
        self.policies = policies
        self.listen = listen
        self.limits = limits
        self.clock = clock
        self.name = name or f"scanner-{uuid.uuid4().hex[:12]}"
        self.in_flight = 0
        self.wake = asyncio.Event()

    async def scan_due(self) -> list[Outcome]:
        """One round: claim what is due now and scan it all (tests drive rounds with this)."""
        return list(await asyncio.gather(*await self._start_round()))

    async def run_forever(self) -> None:
        """Scan rounds until cancelled: on NOTIFY, when a scan ends, or every poll interval.
        Cancelled mid-scan, the jobs it held are handed back and scanned again at once."""
        await run_rounds(
            self._start_round,
            listen=self.listen,
            wake=self.wake,
            poll_seconds=self.limits.poll_seconds,
            release=self._release_claims,
            log=log,
            database_down_event="scanning.database_unavailable",
        )

    async def _start_round(self) -> list[asyncio.Task[Outcome]]:
        free = self.limits.concurrency - self.in_flight
        if free <= 0:
            return []
        lease_owner = f"{self.name}/{uuid.uuid4().hex[:8]}"
        claimed = await self.queries.claim_scan_jobs(
            now=self.clock(),
            lease_seconds=self.limits.lease_seconds,
            lease_owner=lease_owner,
            limit=free,
        )
        self.in_flight += len(claimed)
        return [
            asyncio.create_task(self._scan(upload_id, attempt, lease_owner))
            for upload_id, attempt in claimed
        ]

    async def _scan(self, upload_id: uuid.UUID, attempt: int, lease_owner: str) -> Outcome:
        try:
            return await self._scan_upload(upload_id, attempt, lease_owner)
        except errors.DatabaseUnavailable:
            log.warning("scanning.record_failed", extra={"upload_id": str(upload_id)})
            return Outcome.SCAN_RETRY  # the lease runs out and the job is scanned again
        finally:
            self.in_flight -= 1
            self.wake.set()

    async def _scan_upload(self, upload_id: uuid.UUID, attempt: int, lease_owner: str) -> Outcome:
        upload = await self.queries.get_upload(upload_id)
        if upload is None or upload.status is not UploadStatus.SCANNING:
            await self.queries.drop_scan_job(upload_id, lease_owner=lease_owner)
            return Outcome.IGNORED_NOT_LIVE
        policy = self.policies.get(upload.policy) or self.policies.default
        engine = self.engine.name if self.engine is not None else "none"
        started = time.monotonic()
        try:
            verdict = await asyncio.to_thread(self._verdict, upload.object_key)
        except errors.ObjectMissing:
            # Deleted from storage meanwhile: its removed event settles the record.
            await self.queries.drop_scan_job(upload_id, lease_owner=lease_owner)
            return Outcome.IGNORED_OBJECT_GONE
        except (ScannerUnavailable, errors.StorageUnavailable) as exc:
            metrics.SCANS.labels(engine, "unavailable").inc()
            fail_open = isinstance(exc, ScannerUnavailable) and (
                policy.scan_fail is ScanFailure.OPEN
            )
            if fail_open:
                return await self._record(
                    upload_id, lease_owner, engine, ScanVerdict(False, None, engine), str(exc)
                )
            delay = retry_delay(attempt)
            await self.queries.retry_scan_job(
                upload_id,
                lease_owner=lease_owner,
                next_attempt_at=self.clock() + timedelta(seconds=delay),
                error=str(exc)[:500],
            )
            log.warning(
                "scanning.no_verdict",
                extra={"upload_id": str(upload_id), "attempt": attempt, "retry_in": delay,
                       "error": str(exc)[:500]},
            )  # fmt: skip
            return Outcome.SCAN_RETRY
        metrics.SCAN_SECONDS.observe(time.monotonic() - started)
        return await self._record(upload_id, lease_owner, engine, verdict, None)

    def _verdict(self, object_key: str) -> ScanVerdict:
        """Blocking: the object streamed from storage into the engine, chunk by chunk."""
        if self.engine is None:
            raise ScannerUnavailable(NO_ENGINE)
        return self.engine.scan(self.storage.stream(object_key, CHUNK_BYTES))

    async def _record(
        self,
        upload_id: uuid.UUID,
        lease_owner: str,
        engine: str,
        verdict: ScanVerdict,
        skipped_because: str | None,
    ) -> Outcome:
        if skipped_because is not None:
            status, result, outcome = (
                UploadStatus.FINALIZED,
                ScanResult.SKIPPED,
                Outcome.SCAN_SKIPPED,
            )
            detail: dict[str, Any] = {"engine": engine, "error": skipped_because[:500]}
        elif verdict.infected:
            status, result, outcome = (
                UploadStatus.QUARANTINED, ScanResult.INFECTED, Outcome.QUARANTINED
            )  # fmt: skip
            detail = {"engine": verdict.engine, "signature": verdict.signature}
        else:
            status, result, outcome = UploadStatus.FINALIZED, ScanResult.CLEAN, Outcome.FINALIZED
            detail = {"engine": verdict.engine}
        changed = await self.queries.record_scan_verdict(
            upload_id,
            lease_owner=lease_owner,
            status=status,
            scan_result=result,
            scan_signature=verdict.signature,
            actor=Actor.SCANNER,
            detail=detail,
        )
        if changed is None:
            return Outcome.IGNORED_ALREADY_FINAL  # the lease passed to another scanner
        metrics.SCANS.labels(engine, result.value).inc()
        if status is UploadStatus.FINALIZED:
            record_finalized(changed, Actor.SCANNER)
        else:
            log.warning(
                "upload.quarantined",
                extra={"upload_id": str(upload_id), "signature": verdict.signature},
            )
        return outcome

    async def _release_claims(self) -> None:
        """Stopping: hand back what this process still holds, so another process takes it
        at once rather than when the lease runs out."""
        try:
            await self.queries.release_scan_leases(self.name)
        except errors.DatabaseUnavailable:
            log.warning("scanning.release_failed")  # the leases run out instead
