"""The reconciler: settles pending uploads the webhook missed, expires the rest, sweeps orphans.

Several broker processes may reconcile at once: stale uploads are claimed one per
transaction with FOR UPDATE SKIP LOCKED (no upload is handled twice, and a crash rolls its
claim back), and only the holder of an advisory lock sweeps the bucket.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from broker import metrics
from broker.domain import errors
from broker.domain.model import MISSED_WEBHOOK, Actor, Outcome, Upload
from broker.domain.policies import Policies
from broker.flows.finalization import Finalizer
from broker.flows.ports import ObjectStore, Queries
from broker.flows.rate_limits import RateLimiter

log = logging.getLogger("broker.reconciler")

# Download audit retention: rows deleted per statement, and statements per pass at most, so
# a first pass over a long backlog stays short and the next passes finish it.
AUDIT_PURGE_BATCH = 1000
AUDIT_PURGE_MAX_BATCHES = 50


@dataclass
class PassReport:
    """What one pass did (or, in a dry run, would do), counted by outcome and listed."""

    started_at: datetime
    dry_run: bool
    trigger: str
    counts: Counter[Outcome] = field(default_factory=Counter)
    actions: list[dict[str, Any]] = field(default_factory=list)

    def record(self, outcome: Outcome, **what: Any) -> None:
        self.counts[outcome] += 1
        if not self.dry_run:
            metrics.RECONCILER_OUTCOMES.labels(outcome).inc()
        self.actions.append({"outcome": outcome, **what})


def outermost(prefixes: Iterable[str]) -> list[str]:
    """The prefixes no other one contains: listing `uploads/` already lists `uploads/big/`."""
    unique = set(prefixes)
    return sorted(p for p in unique if not any(p != q and p.startswith(q) for q in unique))


class Reconciler:
    """Brings the database and the bucket into agreement."""

    def __init__(
        self,
        queries: Queries,
        store: ObjectStore,
        finalizer: Finalizer,
        policies: Policies,
        *,
        orphan_grace_seconds: int,
        download_audit_retention_days: int = 0,
        max_uploads_per_pass: int = 10_000,
        limiter: RateLimiter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.queries = queries
        self.storage = store
        self.finalizer = finalizer
        self.policies = policies
        self.orphan_grace = timedelta(seconds=orphan_grace_seconds)
        self.audit_retention_days = download_audit_retention_days  # 0: keep forever
        self.max_uploads = max_uploads_per_pass
        self.limiter = limiter or RateLimiter(queries, policies.failed_auth_limit)
        self.clock = clock

    async def run_pass(
        self, *, dry_run: bool = False, trigger: str = "manual", sweep: bool = True
    ) -> PassReport:
        """Settle or expire every stale pending upload, then (optionally) sweep orphans."""
        report = PassReport(started_at=self.clock(), dry_run=dry_run, trigger=trigger)
        if dry_run:
            await self._preview_stale(report)
        else:
            await self._settle_claimed(report, early=False)
            await self._settle_claimed(report, early=True)
            forgotten = await self.limiter.forget_idle()
            if forgotten:
                log.info("reconciler.rate_limits_forgotten", extra={"keys": forgotten})
        if sweep:
            await self._sweep_orphans(report)
        if not dry_run:
            await self._purge_download_audit(report)
            await self.queries.insert_reconciler_run(
                report.started_at, False, trigger, dict(report.counts)
            )
        log.info(
            "reconciler.pass",
            extra={"trigger": trigger, "dry_run": dry_run, "counts": dict(report.counts)},
        )
        return report

    async def _settle_claimed(self, report: PassReport, *, early: bool) -> None:
        """Settle pending uploads from storage, each claimed in a transaction of its own:
        those past their deadline, or (`early`) those whose URLs have expired plus a grace
        period. An early one's object can no longer change, so one whose webhook was lost is
        settled now rather than at its deadline; one that holds nothing is not checked early
        again (its deadline check follows)."""
        detail = {"trigger": report.trigger, **({"check": "early"} if early else {})}
        for _ in range(self.max_uploads):
            async with self.queries.transaction() as tx:
                claim = (
                    tx.claim_unchecked_pending_upload if early else tx.claim_stale_pending_upload
                )
                upload = await claim()
                if upload is None:
                    return
                outcome = await self.decide(upload, tx, Actor.RECONCILER, detail)
                if early and outcome is Outcome.STILL_PENDING:
                    await tx.mark_upload_checked(upload.id)
            report.record(outcome, upload_id=str(upload.id), key=upload.object_key)

    async def _purge_download_audit(self, report: PassReport) -> None:
        """Delete download audit rows past their retention, in bounded batches."""
        if self.audit_retention_days == 0:
            return
        for _ in range(AUDIT_PURGE_MAX_BATCHES):
            deleted = await self.queries.delete_expired_download_audit(
                self.audit_retention_days, AUDIT_PURGE_BATCH
            )
            if deleted:
                report.counts[Outcome.DOWNLOAD_AUDIT_PURGED] += deleted
                metrics.RECONCILER_OUTCOMES.labels(Outcome.DOWNLOAD_AUDIT_PURGED).inc(deleted)
            if deleted < AUDIT_PURGE_BATCH:
                return

    async def _preview_stale(self, report: PassReport) -> None:
        for upload in await self.queries.list_stale_pending_uploads(self.max_uploads):
            stored = await self.storage.head(upload.object_key)
            outcome = Outcome.WOULD_SETTLE_MISSED_WEBHOOK if stored else Outcome.WOULD_EXPIRE
            report.record(outcome, upload_id=str(upload.id), key=upload.object_key)

    async def decide(
        self,
        upload: Upload,
        queries: Queries,
        actor: str,
        detail: dict[str, Any],
        *,
        force_expire: bool = False,
    ) -> Outcome:
        """Settle a pending upload from what storage holds; expire it if nothing is there.

        `queries` must hold the upload's row lock (a claim), so nobody else moves it meanwhile.
        An upload before its deadline with nothing stored is left pending (STILL_PENDING).
        """
        stored = await self.storage.head(upload.object_key)
        if stored is not None:
            settled = await self.finalizer.settle(upload, stored, queries, actor, detail)
            if settled in MISSED_WEBHOOK:
                log.warning(
                    "webhook.missed", extra={"upload_id": str(upload.id), "outcome": settled}
                )
                return MISSED_WEBHOOK[settled]
            return settled
        expired = await queries.mark_upload_expired(
            upload.id, force=force_expire, actor=actor, detail=detail
        )
        if expired is None:
            return Outcome.STILL_PENDING
        if upload.multipart_upload_id is not None:
            await self.storage.abort_multipart(upload.object_key, upload.multipart_upload_id)
        metrics.UPLOADS_EXPIRED.labels(upload.policy, actor.split(":")[0]).inc()
        log.info("upload.expired", extra={"upload_id": str(upload.id), "by": actor})
        return Outcome.EXPIRED

    async def _sweep_orphans(self, report: PassReport) -> None:
        """Delete objects, and abort multipart uploads, that no live record keeps.

        Only what is older than the grace period is touched: a multipart upload is started
        in storage a moment before its record is written.
        """
        async with self.queries.orphan_sweep_lock() as session:
            if session is None:
                report.counts[Outcome.ORPHAN_SWEEP_SKIPPED_BUSY] += 1
                return
            cutoff = self.clock() - self.orphan_grace
            prefixes = outermost(p.key_prefix for p in self.policies.by_name.values())
            for prefix in prefixes:
                await self._sweep_objects(session, prefix, cutoff, report)
            await self._sweep_multipart(session, tuple(prefixes), cutoff, report)

    async def _sweep_objects(
        self, session: Queries, prefix: str, cutoff: datetime, report: PassReport
    ) -> None:
        async for page in self.storage.list_objects(prefix):
            old = [key for key, modified in page if modified < cutoff]
            if not old:
                continue
            live = await session.find_live_object_keys(self.storage.bucket, old)
            for key in old:
                if key in live:
                    continue
                if not report.dry_run:
                    await self.storage.delete(key)
                outcome = (
                    Outcome.WOULD_DELETE_ORPHAN_OBJECT
                    if report.dry_run
                    else Outcome.ORPHAN_OBJECT_DELETED
                )
                report.record(outcome, key=key)

    async def _sweep_multipart(
        self, session: Queries, prefixes: tuple[str, ...], cutoff: datetime, report: PassReport
    ) -> None:
        async for page in self.storage.list_multipart_uploads():
            old = [
                (key, upload_id)
                for key, upload_id, started in page
                if started < cutoff and key.startswith(prefixes)
            ]
            if not old:
                continue
            live = await session.find_pending_multipart_ids([u for _, u in old])
            for key, upload_id in old:
                if upload_id in live:
                    continue
                if not report.dry_run:
                    await self.storage.abort_multipart(key, upload_id)
                outcome = (
                    Outcome.WOULD_ABORT_ORPHAN_MULTIPART
                    if report.dry_run
                    else Outcome.ORPHAN_MULTIPART_ABORTED
                )
                report.record(outcome, key=key, multipart_upload_id=upload_id)

    async def run_forever(self, interval: float, sweep_interval: float) -> None:
        """The background task: a pass every `interval` seconds, a sweep every `sweep_interval`."""
        last_sweep = float("-inf")
        loop = asyncio.get_running_loop()
        while True:
            sweep = loop.time() - last_sweep >= sweep_interval
            try:
                await self.run_pass(trigger="background", sweep=sweep)
                if sweep:
                    last_sweep = loop.time()
            except (errors.DatabaseUnavailable, errors.StorageUnavailable) as exc:
                log.warning("reconciler.unavailable", extra={"error": exc.code})
            except Exception:
                log.exception("reconciler.failed")
            await asyncio.sleep(interval)
