"""Operator commands (`broker uploads | stats | reconcile`): straight to the database and bucket."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from typing import Any

from broker import config, wiring
from broker.domain import model
from broker.domain.model import Actor, UploadFilters
from broker.flows import admin
from broker.ops.formatting import format_age

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
SECONDS_PER_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '1h', '2d' -> seconds."""
    match = DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 1h or 2d")
    return float(match.group(1)) * SECONDS_PER_UNIT[match.group(2)]


def search_text(text: str) -> str:
    """A filename search the index can serve, or ValueError saying why not."""
    if not model.searchable(text):
        raise ValueError(f"--search {text!r} {model.SEARCH_RULE} (at most {model.SEARCH_MAX})")
    return text


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def to_json(value: Any) -> str:
    return json.dumps(value, default=_encode, indent=2)


@asynccontextmanager
async def operator(settings: config.Settings) -> AsyncIterator[admin.Admin]:
    """The operators' use cases on a small pool of their own."""
    async with wiring.connected(settings, pool_min=1, pool_max=2) as flows:
        yield flows.admin


def _encode(value: Any) -> Any:
    """What json cannot write by itself: domain values as objects, the rest as text."""
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else str(value)


async def list_uploads(
    settings: config.Settings, filters: UploadFilters, limit: int, as_json: bool
) -> str:
    async with operator(settings) as ops:
        page = await ops.list(filters, "-created_at", limit, None)
    now = datetime.now(UTC)
    if as_json:
        return to_json([upload._asdict() for upload in page.items])
    return table(
        ["id", "status", "owner", "policy", "size", "age", "filename", "stuck"],
        [
            (u.id, u.status, u.owner, u.policy, u.size,
             format_age((now - u.created_at).total_seconds()), u.filename,
             "STUCK" if u.is_stuck(now) else "")
            for u in page.items
        ],
    )  # fmt: skip


async def show_upload(settings: config.Settings, upload_id: uuid.UUID, as_json: bool) -> str:
    async with operator(settings) as ops:
        found = await ops.inspect(upload_id)
    record = found.record._asdict()
    stored = found.stored
    state = {
        "exists": stored is not None,
        **(
            {"size": stored.size, "etag": stored.etag, "checksum": stored.checksum}
            if stored
            else {}
        ),
        **({"multipart_parts": len(found.parts)} if found.parts is not None else {}),
    }
    if as_json:
        return to_json(
            {
                "upload": record,
                "history": found.history,
                "storage": state,
                "downloads": found.downloads,
                "recent_downloads": found.recent_downloads,
            }
        )
    fields = table(["field", "value"], [(k, v) for k, v in record.items()])
    events = table(
        ["at", "status", "actor", "detail"],
        [(h.at, h.status, h.actor, json.dumps(h.detail)) for h in found.history],
    )
    last = found.downloads.last_issued_at
    kept_days = settings.download_audit_retention_days or 36500  # 0: rows are kept forever
    downloads = (
        f"download URLs issued: {found.downloads.downloads}"
        f"{f', the last at {last}' if last else ''}"
        f" (all: broker audit downloads --upload {upload_id} --since {kept_days}d)"
    )
    return f"{fields}\n\nhistory\n{events}\n\nstorage now: {json.dumps(state)}\n{downloads}"


async def release_upload(
    settings: config.Settings, upload_id: uuid.UUID, reason: str, by: str, as_json: bool
) -> str:
    """Release a quarantined upload (finalized, downloadable), recorded as admin:<by>."""
    async with operator(settings) as ops:
        upload = await ops.release(upload_id, Actor.admin(by), reason)
    return to_json(upload._asdict()) if as_json else f"{upload.id} released: {upload.status}"


async def delete_upload(
    settings: config.Settings, upload_id: uuid.UUID, reason: str, by: str, as_json: bool
) -> str:
    """Delete a live upload and its object, recorded as admin:<by>."""
    async with operator(settings) as ops:
        outcome, upload = await ops.delete(upload_id, Actor.admin(by), reason)
    if as_json:
        return to_json({"outcome": outcome, "upload": upload._asdict()})
    return f"{upload.id} {outcome}: {upload.status}"


async def show_stats(settings: config.Settings, as_json: bool) -> str:
    async with operator(settings) as ops:
        stats = await ops.stats()
    if as_json:
        return to_json(
            {
                "by_status_and_policy": stats.by_status_and_policy,
                "pending": stats.pending.pending,
                "stuck": stats.pending.stuck,
                "oldest_pending_age_seconds": stats.oldest_pending_age_seconds,
                "hourly": stats.hourly,
                "reconciler_runs": stats.reconciler_runs,
                "scan_jobs": stats.scans,
            }
        )
    age = stats.oldest_pending_age_seconds
    return "\n\n".join([
        table(["status", "policy", "uploads", "bytes"],
              [(c.status, c.policy, c.uploads, c.bytes) for c in stats.by_status_and_policy]),
        f"pending: {stats.pending.pending}   stuck (past deadline): {stats.pending.stuck}   "
        f"oldest pending: {format_age(age) if age is not None else '-'}",
        table(["hour (UTC)", "created", "finalized"],
              [(h.hour.strftime("%m-%d %H:00"), h.created, h.finalized) for h in stats.hourly]),
        "last reconciler runs\n" + table(["started", "trigger", "counts"],
              [(r.started_at, r.trigger, json.dumps(r.counts))
               for r in stats.reconciler_runs[:5]]),
    ])  # fmt: skip


async def reconcile(settings: config.Settings, dry_run: bool, as_json: bool) -> str:
    async with operator(settings) as ops:
        report = await ops.reconciler.run_pass(dry_run=dry_run, trigger="cli")
    summary = {"dry_run": dry_run, "counts": dict(report.counts), "actions": report.actions}
    if as_json:
        return to_json(summary)
    heading = "dry run: nothing was changed\n" if dry_run else ""
    counts = (
        table(["outcome", "count"], sorted(report.counts.items()))
        if report.counts
        else ("nothing to do")
    )
    actions = table(["outcome", "upload", "key"],
                    [(a["outcome"], a.get("upload_id", ""), a.get("key", ""))
                     for a in report.actions])  # fmt: skip
    return f"{heading}{counts}\n\n{actions}" if report.actions else f"{heading}{counts}"
