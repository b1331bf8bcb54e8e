"""The listings with 1,000,000 uploads: the operators' (filters, sorts, filename search) and
an owner's metadata filter; response times and the plans behind them."""

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

# Spread like a real table: 2,000 owners and one app that owns a tenth of all uploads
# (`big-app`), most uploads finalized, sizes from bytes to GiB, created over the last 30
# days, three policies. One file in 997 is a "Holiday Photo <n>.JPG", the rest
# "file-<n>.bin". Metadata: a post id shared by 10 uploads (all of one owner), a tenant.
FILL = """
INSERT INTO uploads (id, owner, status, filename, content_type, size, metadata, bucket,
                     object_key, policy, created_at, updated_at, expires_at)
SELECT gen_random_uuid(),
       CASE WHEN n % 10 = 0 THEN 'big-app' ELSE 'owner-' || (n % 2000) END,
       (ARRAY['finalized','finalized','finalized','finalized','finalized','finalized',
              'finalized','pending','rejected','deleted'])[(1 + n % 10)::int],
       CASE WHEN n % 997 = 0 THEN 'Holiday Photo ' || n || '.JPG' ELSE 'file-' || n || '.bin' END,
       (ARRAY['image/png','image/jpeg','video/mp4','application/pdf'])[(1 + n % 4)::int],
       1 + (hashint8(n) & 2147483647) % 1073741824,
       jsonb_build_object('post_id', (n % 100000)::text, 'tenant', 'tenant-' || (n % 50)),
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
    # Filename search: rare (~1,000 matches), partial digits (~100), common (nearly all),
    # none. (Two letters, "ph", took 1.4 s: no trigram, so the API refuses such texts.)
    ("q=holi", {"q": "holi"}),
    ("q=holi, largest first", {"q": "holi", "sort": "-size"}),
    ("q=holi, oldest first", {"q": "holi", "sort": "created_at"}),
    ("q=holi, smallest first", {"q": "holi", "sort": "size"}),
    ("q=holi&status=pending", {"q": "holi", "status": "pending"}),
    ("q=file-4242", {"q": "file-4242"}),
    ("q=.bin (nearly every row)", {"q": ".bin"}),
    ("q=.bin, largest first", {"q": ".bin", "sort": "-size"}),
    ("q=nothing-matches (no match)", {"q": "nothing-matches"}),
]

# An owner's listing filtered by metadata (GET /v1/uploads, the owner's token).
METADATA_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("owner-42: post_id (10 of 500)", "owner-42", {"metadata.post_id": "2042"}),
    (
        "owner-42: post_id + tenant",
        "owner-42",
        {"metadata.post_id": "2042", "metadata.tenant": "tenant-42"},
    ),
    ("big-app: post_id (10 of 100,000)", "big-app", {"metadata.post_id": "12340"}),
    ("big-app: post_id (no match)", "big-app", {"metadata.post_id": "12345"}),
    ("big-app: tenant (1 in 5)", "big-app", {"metadata.tenant": "tenant-20"}),
]


def timed_metadata_pages(base: str, jwt_secret: str) -> list[tuple[str, list[float]]]:
    """Each metadata case's first page, REPEATS times, with its owner's token."""
    results = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for name, owner, params in METADATA_CASES:
            client.headers["Authorization"] = f"Bearer {auth.issue_token(jwt_secret, owner)}"
            query: dict[str, Any] = {**params, "limit": 20}
            client.get("/v1/uploads", params=query).raise_for_status()  # warm
            results.append((name, _time(client, query, "/v1/uploads", "no match" not in name)))
    return results


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
            found = "no match" not in name
            results.append((f"{name}: first page", _time(client, params, expect_found=found)))
        deep = {"limit": 50}
        for _ in range(50):
            deep["cursor"] = client.get("/v1/admin/uploads", params=deep).json()["next_cursor"]
        results.append(("all: page 51 (cursor)", _time(client, deep)))
        owner = {"owner": "owner-7", "limit": 50}
        for _ in range(5):
            owner["cursor"] = client.get("/v1/admin/uploads", params=owner).json()["next_cursor"]
        results.append(("owner=owner-7: page 6", _time(client, owner)))
    return results


def _time(
    client: httpx.Client,
    params: dict[str, Any],
    path: str = "/v1/admin/uploads",
    expect_found: bool = True,
) -> list[float]:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        response = client.get(path, params=params)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        # A no-match case must find nothing; every other case finds something.
        assert bool(response.json()["items"]) == expect_found, params
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
            ("q=holi", "-created_at", {"filename_like": "%holi%"}),
            ("q=holi, largest first", "-size", {"filename_like": "%holi%"}),
            ("q=holi, oldest first", "created_at", {"filename_like": "%holi%"}),
            ("q=holi, smallest first", "size", {"filename_like": "%holi%"}),
            (
                "q=holi&status=pending",
                "-created_at",
                {"filename_like": "%holi%", "status": "pending"},
            ),
            ("q=file-4242", "-created_at", {"filename_like": "%file-4242%"}),
            ("q=.bin", "-created_at", {"filename_like": "%.bin%"}),
            ("q=.bin, largest first", "-size", {"filename_like": "%.bin%"}),
            ("q=nothing-matches", "-created_at", {"filename_like": "%nothing-matches%"}),
        ]
        for name, sort, filters in cases:
            query = queries[f"admin_list_uploads:{sort}"]
            values = {name: None for name in query.parameters} | filters | {"limit": 51}
            rows = await conn.fetch("EXPLAIN (FORMAT JSON) " + query.sql, *query.arguments(values))
            found.append((name, _index_path(json.loads(rows[0][0])[0]["Plan"])))
        # The owner's metadata listing is planned per call too (use_custom_plans); the
        # generic plan PostgreSQL would otherwise keep after five runs is shown beside it.
        query = queries["list_uploads_for_owner_by_metadata"]
        await conn.execute(f"PREPARE by_metadata AS {query.sql}")
        for name, owner, params in METADATA_CASES:
            wanted = {key.removeprefix("metadata."): value for key, value in params.items()}
            values = {name: None for name in query.parameters}
            values |= {"owner": owner, "metadata": json.dumps(wanted), "limit": 21}
            arguments = ", ".join(_literal(v) for v in query.arguments(values))
            for mode in ("custom", "generic"):
                await conn.execute(f"SET plan_cache_mode = force_{mode}_plan")
                rows = await conn.fetch(f"EXPLAIN (FORMAT JSON) EXECUTE by_metadata({arguments})")
                found.append((f"{name} ({mode})", _index_path(json.loads(rows[0][0])[0]["Plan"])))
    finally:
        await conn.close()
    return found


def _literal(value: Any) -> str:
    """A parameter value as SQL text, for EXECUTE (bench values only: None, int, str)."""
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _index_path(plan: dict[str, Any]) -> str:
    """A plan's nodes, outermost first, each index named: 'Limit > Index Scan using x'
    (several children in brackets)."""

    def describe(node: dict[str, Any]) -> str:
        text = node["Node Type"]
        if "Index Name" in node:
            text += f" using {node['Index Name']}"
        children = [describe(child) for child in node.get("Plans", [])]
        if len(children) == 1:
            return f"{text} > {children[0]}"
        if children:
            return f"{text} > [{' + '.join(children)}]"
        return text

    return describe(plan)


def run(database_url: str, broker_url: str, jwt_secret: str) -> list[str]:
    """Fill, measure, explain; the report's lines."""
    print(f"listing: inserting {ROWS:,} uploads ...", flush=True)
    seconds = asyncio.run(fill(database_url))
    token = auth.issue_token(jwt_secret, "bench-operator", admin=True)
    timings = timed_pages(broker_url, token)
    by_metadata = timed_metadata_pages(broker_url, jwt_secret)
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
    lines.append("An owner's listing by metadata (GET /v1/uploads?metadata.<key>=, limit 20):")
    for name, times in by_metadata:
        p99 = statistics.quantiles(times, n=100, method="inclusive")[98]
        worst = max(worst, p99)
        lines.append(f"  {name:42} {statistics.median(times):7.2f} {p99:7.2f} {max(times):7.2f}")
    verdict = "PASS" if worst < TARGET_MS else "MISS"
    lines.append(f"  worst p99 {worst:.1f} ms   target < {TARGET_MS:.0f} ms   {verdict}")
    lines.append("  plans (EXPLAIN of the broker's query; the operators' planned per call):")
    lines += [f"    {name:44} {path}" for name, path in explained]
    return lines
