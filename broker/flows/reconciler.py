"""The reconciler: settles pending uploads the webhook missed, expires the rest, sweeps orphans.

Several broker processes may reconcile at once: stale uploads are claimed one per
transaction with FOR UPDATE SKIP LOCKED (no upload is handled twice, and a crash rolls its
claim back), and only the holder of an advisory lock sweeps the bucket.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from broker import metrics
from broker.adapters import storage
from broker.adapters.db import Database, Executor, Session
from broker.domain import errors
from broker.domain.policies import Policies
from broker.flows.finalization import Finalizer

log = logging.getLogger("broker.reconciler")


@dataclass
class PassReport:
    """What one pass did (or, in a dry run, would do), counted by outcome and listed."""

    started_at: datetime
    dry_run: bool
    trigger: str
    counts: Counter[str] = field(default_factory=Counter)
    actions: list[dict[str, Any]] = field(default_factory=list)

    def record(self, outcome: str, **what: Any) -> None:
        self.counts[outcome] += 1
        if not self.dry_run:
            metrics.RECONCILER_OUTCOMES.labels(outcome).inc()
        self.actions.append({"outcome": outcome, **what})


class Reconciler:
    """Brings the database and the bucket into agreement."""

    def __init__(
        self,
        db: Database,
        store: storage.Storage,
        finalizer: Finalizer,
        policies: Policies,
        *,
        orphan_grace_seconds: int,
        max_uploads_per_pass: int = 10_000,
    ) -> None:
        self.db = db
        self.storage = store
        self.finalizer = finalizer
        self.policies = policies
        self.orphan_grace = timedelta(seconds=orphan_grace_seconds)
        self.max_uploads = max_uploads_per_pass

    async def run_pass(
        self, *, dry_run: bool = False, trigger: str = "manual", sweep: bool = True
    ) -> PassReport:
        """Settle or expire every stale pending upload, then (optionally) sweep orphans."""
        report = PassReport(started_at=datetime.now(UTC), dry_run=dry_run, trigger=trigger)
        if dry_run:
            await self._preview_stale(report)
        else:
            await self._settle_stale(report)
        if sweep:
            await self._sweep_orphans(report)
        if not dry_run:
            await self.db.fetchrow(
                "insert_reconciler_run", report.started_at, False, trigger, dict(report.counts)
            )
        log.info(
            "reconciler.pass",
            extra={"trigger": trigger, "dry_run": dry_run, "counts": dict(report.counts)},
        )
        return report

    async def _settle_stale(self, report: PassReport) -> None:
        for _ in range(self.max_uploads):
            async with self.db.transaction() as tx:
                row = await tx.fetchrow("claim_stale_pending_upload")
                if row is None:
                    return
                outcome = await self.decide(row, tx, "reconciler", {"trigger": report.trigger})
            report.record(outcome, upload_id=str(row["id"]), key=row["object_key"])

    async def _preview_stale(self, report: PassReport) -> None:
        for row in await self.db.fetch("list_stale_pending_uploads", self.max_uploads):
            stored = await self.storage.head(row["object_key"])
            outcome = "would_settle_missed_webhook" if stored else "would_expire"
            report.record(outcome, upload_id=str(row["id"]), key=row["object_key"])

    async def decide(
        self,
        row: asyncpg.Record,
        executor: Executor,
        actor: str,
        detail: dict[str, Any],
        *,
        force_expire: bool = False,
    ) -> str:
        """Settle a pending upload from what storage holds; expire it if nothing is there.

        `executor` must hold the upload's row lock (a claim), so nobody else moves it meanwhile.
        An upload before its deadline with nothing stored is left pending ("still_pending").
        """
        stored = await self.storage.head(row["object_key"])
        if stored is not None:
            settled = await self.finalizer.settle(row, stored, executor, actor, detail)
            if settled in ("finalized", "rejected"):
                log.warning(
                    "webhook.missed", extra={"upload_id": str(row["id"]), "outcome": settled}
                )
                return f"{settled}_missed_webhook"
            return settled
        expired = await executor.fetchrow(
            "mark_upload_expired", row["id"], force_expire, actor, detail
        )
        if expired is None:
            return "still_pending"
        if row["multipart_upload_id"] is not None:
            await self.storage.abort_multipart(row["object_key"], row["multipart_upload_id"])
        metrics.UPLOADS_EXPIRED.labels(row["policy"], actor.split(":")[0]).inc()
        log.info("upload.expired", extra={"upload_id": str(row["id"]), "by": actor})
        return "expired"

    async def _sweep_orphans(self, report: PassReport) -> None:
        """Delete objects, and abort multipart uploads, that no live record keeps.

        Only what is older than the grace period is touched: a multipart upload is started
        in storage a moment before its record is written.
        """
        # The lock is held by this session's connection, which also runs the sweep's queries.
        async with self.db.session() as session:
            locked = await session.fetchrow("try_lock_orphan_sweep")
            if not locked or not locked["locked"]:
                report.counts["orphan_sweep_skipped_busy"] += 1
                return
            try:
                cutoff = datetime.now(UTC) - self.orphan_grace
                prefixes = sorted({p.key_prefix for p in self.policies.by_name.values()})
                for prefix in prefixes:
                    await self._sweep_objects(session, prefix, cutoff, report)
                await self._sweep_multipart(session, tuple(prefixes), cutoff, report)
            finally:
                await session.fetchrow("unlock_orphan_sweep")

    async def _sweep_objects(
        self, session: Session, prefix: str, cutoff: datetime, report: PassReport
    ) -> None:
        async for page in self.storage.list_objects(prefix):
            old = [key for key, modified in page if modified < cutoff]
            if not old:
                continue
            rows = await session.fetch("find_live_object_keys", self.storage.bucket, old)
            live = {row["object_key"] for row in rows}
            for key in old:
                if key in live:
                    continue
                if not report.dry_run:
                    await self.storage.delete(key)
                outcome = (
                    "would_delete_orphan_object" if report.dry_run else "orphan_object_deleted"
                )
                report.record(outcome, key=key)

    async def _sweep_multipart(
        self, session: Session, prefixes: tuple[str, ...], cutoff: datetime, report: PassReport
    ) -> None:
        async for page in self.storage.list_multipart_uploads():
            old = [
                (key, upload_id)
                for key, upload_id, started in page
                if started < cutoff and key.startswith(prefixes)
            ]
            if not old:
                continue
            rows = await session.fetch("find_pending_multipart_ids", [u for _, u in old])
            live = {row["multipart_upload_id"] for row in rows}
            for key, upload_id in old:
                if upload_id in live:
                    continue
                if not report.dry_run:
                    await self.storage.abort_multipart(key, upload_id)
                outcome = (
                    "would_abort_orphan_multipart" if report.dry_run else "orphan_multipart_aborted"
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
