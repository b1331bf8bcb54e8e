"""`broker audit downloads`: the download audit since a time, as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

from broker import config, wiring
from broker.domain.downloads import DownloadRecord
from broker.ops.commands import table

MAX_SINCE_SECONDS = 100 * 366 * 86400  # further back than any row can be
CSV_COLUMNS = (
    "issued_at",
    "upload_id",
    "requester",
    "expires_in_seconds",
    "url_expires_at",
    "request_id",
    "client_address",
)


def since_time(seconds: float, now: datetime) -> datetime:
    """`now` minus a --since duration, or ValueError when it reaches past any record."""
    if seconds > MAX_SINCE_SECONDS:
        raise ValueError("--since reaches back more than 100 years")
    return now - timedelta(seconds=seconds)


def _fields(record: DownloadRecord) -> dict[str, object]:
    """The CSV and JSON row: times in UTC, ISO 8601."""
    return {
        "issued_at": record.issued_at.astimezone(UTC).isoformat(),
        "upload_id": str(record.upload_id),
        "requester": record.requester,
        "expires_in_seconds": record.expires_in_seconds,
        "url_expires_at": record.url_expires_at.astimezone(UTC).isoformat(),
        "request_id": record.request_id,
        "client_address": record.client_address,
    }


def as_csv(records: list[DownloadRecord]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(_fields(record) for record in records)
    return out.getvalue().rstrip("\n")


def as_table(records: list[DownloadRecord]) -> str:
    if not records:
        return "no downloads in that time"
    return table(
        ["issued (UTC)", "upload", "requester", "valid", "client", "request id"],
        [
            (r.issued_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"), r.upload_id,
             r.requester, f"{r.expires_in_seconds}s", r.client_address, r.request_id)
            for r in records
        ],
    )  # fmt: skip


async def downloads(
    settings: config.Settings,
    since_seconds: float,
    upload_id: uuid.UUID | None,
    output: str,
) -> str:
    """Every download issued in the last `since_seconds` (of one upload, when given), newest
    first; `output` is table, csv or json."""
    since = since_time(since_seconds, datetime.now(UTC))
    async with wiring.connected(settings, pool_min=1, pool_max=2) as flows:
        records = await flows.downloads.since(since, upload_id)
    if output == "csv":
        return as_csv(records)
    if output == "json":
        return json.dumps([_fields(r) for r in records], indent=2)
    return as_table(records)
