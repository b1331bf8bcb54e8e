"""The download route's throughput with its audit row, against the same route with the row
skipped, in the same run (BENCH_ONLY=downloads).

"Audit off" is the same broker and the same statement with a BEFORE INSERT trigger on
download_audit that returns NULL: the upload is read and the URL signed exactly as with
the audit on, but no row, no index entry and no WAL is written, so the commit does not
wait for a flush. The difference between the two is the audit's cost. GET
/v1/uploads/{id} (the same read, no signing, no write) is shown for reference, and so is the
audit with synchronous_commit off (set for the server and reloaded, for that run only): the
broker does not run so, since a crash could then lose rows of URLs already given, but it
shows how much of the cost is waiting for the WAL flush. The rounds alternate, each kind
going first in turn, as the create rounds do.
"""

from __future__ import annotations

import asyncio
import statistics
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from bench.medians import median_table

SKIP_TRIGGER = """
CREATE OR REPLACE FUNCTION bench_skip_download_audit() RETURNS trigger
LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
CREATE TRIGGER bench_skip_download_audit BEFORE INSERT ON download_audit
FOR EACH ROW EXECUTE FUNCTION bench_skip_download_audit();
ALTER TABLE download_audit DISABLE TRIGGER bench_skip_download_audit;
"""
FINALIZED_UPLOAD = """
INSERT INTO uploads (id, owner, status, filename, content_type, size, bucket, object_key,
                     expires_at, finalized_at)
VALUES ($1, $2, 'finalized', 'bench.bin', 'application/octet-stream', 1024, $3, $4,
        now() + interval '1 day', now())
"""
ROUNDS = 6


async def _execute(url: str, statement: str, *args: Any) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.execute(statement, *args)
    finally:
        await conn.close()


def _set_audit(url: str, on: bool, synchronous: bool) -> None:
    state = "DISABLE" if on else "ENABLE"  # the trigger skips the row
    commit = "on" if synchronous else "off"

    async def change() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                f"ALTER TABLE download_audit {state} TRIGGER bench_skip_download_audit"
            )
            # Reloaded into the pool's open sessions too (none sets it itself).
            await conn.execute(f"ALTER SYSTEM SET synchronous_commit = {commit}")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    asyncio.run(change())


def _count_rows(url: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM download_audit"))
        finally:
            await conn.close()

    return asyncio.run(count())


def run(
    database_url: str,
    owner: str,
    bucket: str,
    measure: Callable[[str, int], Any],
    seconds: int,
) -> list[str]:
    """`measure(path, seconds)` is one wrk run of GET `path` (bench/run.py's runner): it
    returns its WrkResult. Leaves the audit on."""
    upload_id = uuid.uuid4()
    asyncio.run(
        _execute(database_url, FINALIZED_UPLOAD, upload_id, owner, bucket, f"uploads/{upload_id}")
    )
    asyncio.run(_execute(database_url, SKIP_TRIGGER))
    download = f"/v1/uploads/{upload_id}/download"
    kinds: dict[str, tuple[str, bool, bool]] = {
        "download, audit on": (download, True, True),
        "download, audit off": (download, False, True),
        "read only: GET /v1/uploads/{id}": (f"/v1/uploads/{upload_id}", True, True),
        "audit on, synchronous_commit off": (download, True, False),
    }
    results: dict[str, list[Any]] = {name: [] for name in kinds}
    rows_written = 0
    try:
        for name, (path, audit, synchronous) in kinds.items():
            _set_audit(database_url, audit, synchronous)
            print(f"warming up {name} (3s) ...", flush=True)
            measure(path, 3)
        for round_number in range(1, ROUNDS + 1):
            order = list(kinds.items())
            if round_number % 2 == 0:
                order.reverse()
            for name, (path, audit, synchronous) in order:
                _set_audit(database_url, audit, synchronous)
                before = _count_rows(database_url)
                result = measure(path, seconds)
                written = _count_rows(database_url) - before
                if path == download:
                    expected = result.requests if audit else 0
                    # wrk counts only completed requests; those cut off at the end may
                    # still have written their row.
                    if not expected <= written <= expected + 64:
                        raise RuntimeError(
                            f"{name}: {written} audit rows for {result.requests} downloads"
                        )
                rows_written += written
                results[name].append(result)
                print(
                    f"round {round_number}/{ROUNDS} {name:32} {result.requests_per_second:6.0f}"
                    f" req/s  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms",
                    flush=True,
                )
    finally:
        _set_audit(database_url, True, True)

    table, medians = median_table(results, "route", 34)
    lines = [
        f"Downloads: GET /v1/uploads/{{id}}/download, wrk 10 s runs, median of {ROUNDS}"
        " alternating rounds (CPU = ms per request)",
        *table,
    ]
    ratio = medians["download, audit on"] / medians["download, audit off"]
    # On a shared machine the load moves between rounds more than the audit costs: the two
    # runs of one round, back to back, are the fairest comparison.
    paired = [
        on.requests_per_second / off.requests_per_second
        for on, off in zip(
            results["download, audit on"], results["download, audit off"], strict=True
        )
    ]
    return [
        *lines,
        f"  audit rows written: {rows_written}, one per download with the audit on",
        f"  throughput audit on/off {ratio:5.2f}x (medians); by round"
        f" {' '.join(f'{r:.2f}' for r in paired)}, median {statistics.median(paired):.2f}x",
        "  (no target: the audit is not optional)",
    ]
