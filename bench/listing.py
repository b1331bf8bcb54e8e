"""The operators' listing with 1,000,000 uploads: response times and the plans behind them."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import asyncpg
import httpx

from broker import auth
from broker.adapters import db

ROWS = 1_000_000
REPEATS = 20
TARGET_MS = 50.0

# Spread like a real table: 2,000 owners, most uploads finalized, sizes from bytes to GiB,
# created over the last 30 days, three policies.
FILL = """
INSERT INTO uploads (id, owner, status, filename, content_type, size, bucket, object_key,
                     policy, created_at, updated_at, expires_at)
SELECT gen_random_uuid(),
       'owner-' || (n % 2000),
       (ARRAY['finalized','finalized','finalized','finalized','finalized','finalized',
              'finalized','pending','rejected','deleted'])[(1 + n % 10)::int],
       'file-' || n || '.bin',
       (ARRAY['image/png','image/jpeg','video/mp4','application/pdf'])[(1 + n % 4)::int],
       1 + (hashint8(n) & 2147483647) % 1073741824,
       'bench-listing',
       'bench/' || n,
       (ARRAY['default','avatars','videos'])[(1 + n % 3)::int],
       now() - make_interval(secs => (n % 2592000)),
       now(),
       now() - make_interval(secs => (n % 2592000)) + interval '1 day'
FROM generate_series(1::bigint, $1::bigint) AS n
"""


async def fill(url: str) -> float:
    started = time.monotonic()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute(FILL, ROWS)
        # Vacuum now, so autovacuum does not start on the new rows in the middle of the timings.
        await conn.execute("VACUUM (ANALYZE) uploads")
    finally:
        await conn.close()
    return time.monotonic() - started


CASES: list[tuple[str, dict[str, Any]]] = [
    ("all, newest first", {}),
    ("status=pending", {"status": "pending"}),
    ("owner=owner-42", {"owner": "owner-42"}),
    ("policy=videos", {"policy": "videos"}),
    ("content_type=application/pdf", {"content_type": "application/pdf"}),
    ("pending longer than 1 h", {"pending_longer_than": 3600}),
    ("created in the last day", {"created_after": "__yesterday__"}),
    ("largest first", {"sort": "-size"}),
    ("oldest first", {"sort": "created_at"}),
]


def timed_pages(base: str, token: str) -> list[tuple[str, list[float]]]:
    """Each case's first page, and a page 50 pages deep, REPEATS times, timed from the client."""
    headers = {"Authorization": f"Bearer {token}"}
    yesterday = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400))
    results = []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for name, params in CASES:
            params = {k: (yesterday if v == "__yesterday__" else v) for k, v in params.items()}
            params["limit"] = 50
            client.get("/v1/admin/uploads", params=params).raise_for_status()  # warm
            results.append((f"{name}: first page", _time(client, params)))
        deep = {"limit": 50}
        for _ in range(50):
            deep["cursor"] = client.get("/v1/admin/uploads", params=deep).json()["next_cursor"]
        results.append(("all: page 51 (cursor)", _time(client, deep)))
        owner = {"owner": "owner-7", "limit": 50}
        for _ in range(5):
            owner["cursor"] = client.get("/v1/admin/uploads", params=owner).json()["next_cursor"]
        results.append(("owner=owner-7: page 6", _time(client, owner)))
    return results


def _time(client: httpx.Client, params: dict[str, Any]) -> list[float]:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        response = client.get("/v1/admin/uploads", params=params)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        assert len(response.json()["items"]) > 0, params
    return times


async def plans(url: str) -> list[tuple[str, str]]:
    """The top of each case's plan, as PostgreSQL chooses it for the broker's own query."""
    queries = db.load_queries()
    conn = await asyncpg.connect(url)
    found = []
    try:
        await conn.execute(queries["use_custom_plans"].sql.replace("LOCAL ", ""))
        cases: list[tuple[str, str, dict[str, Any]]] = [
            ("all", "-created_at", {}),
            ("status=pending", "-created_at", {"status": "pending"}),
            ("owner", "-created_at", {"owner": "owner-42"}),
            ("policy", "-created_at", {"policy": "videos"}),
            ("pending longer than 1 h", "-created_at", {"pending_longer_than_seconds": 3600.0}),
            ("content type", "-created_at", {"content_type": "application/pdf"}),
            ("largest first", "-size", {}),
        ]
        for name, sort, filters in cases:
            query = queries[f"admin_list_uploads:{sort}"]
            values = {name: None for name in query.parameters} | filters | {"limit": 51}
            rows = await conn.fetch("EXPLAIN (FORMAT JSON) " + query.sql, *query.arguments(values))
            found.append((name, _index_path(json.loads(rows[0][0])[0]["Plan"])))
    finally:
        await conn.close()
    return found


def _index_path(plan: dict[str, Any]) -> str:
    """The scan nodes of a plan, e.g. 'Index Scan using uploads_status_created_idx'."""
    scans = []

    def walk(node: dict[str, Any]) -> None:
        if "Scan" in node["Node Type"]:
            scans.append(
                node["Node Type"] + (f" using {node['Index Name']}" if "Index Name" in node else "")
            )
        for child in node.get("Plans", []):
            walk(child)

    walk(plan)
    return ", ".join(scans)


def run(database_url: str, broker_url: str, jwt_secret: str) -> list[str]:
    """Fill, measure, explain; the report's lines."""
    print(f"listing: inserting {ROWS:,} uploads ...", flush=True)
    seconds = asyncio.run(fill(database_url))
    token = auth.issue_token(jwt_secret, "bench-operator", admin=True)
    timings = timed_pages(broker_url, token)
    explained = asyncio.run(plans(database_url))
    lines = [
        f"Operators' listing (GET /v1/admin/uploads, limit 50) over {ROWS:,} uploads "
        f"(filled in {seconds:.0f}s), {REPEATS} requests each, timed at the client:",
        f"  {'case':42} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}",
    ]
    worst = 0.0
    for name, times in timings:
        p99 = statistics.quantiles(times, n=100, method="inclusive")[98]
        worst = max(worst, p99)
        lines.append(f"  {name:42} {statistics.median(times):7.2f} {p99:7.2f} {max(times):7.2f}")
    verdict = "PASS" if worst < TARGET_MS else "MISS"
    lines.append(f"  worst p99 {worst:.1f} ms   target < {TARGET_MS:.0f} ms   {verdict}")
    lines.append("  plans (EXPLAIN of the broker's query, planned per call):")
    lines += [f"    {name:26} {path}" for name, path in explained]
    return lines
