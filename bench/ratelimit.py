"""make bench's rate-limit section (issue 14): what a per-owner limit costs the create path.

1. create throughput with limits off (the default policy) and on (POLICY: a create limit
   far above what the run reaches, so nothing is refused and every create pays the check),
   in alternating rounds on the same broker process and database; medians and the ratio,
   against the target of >= 0.9x;
2. the check itself: queries.sql take_rate_limits for one key, on one connection, in a
   loop, next to `SELECT 1` (a bare round trip): microseconds per call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg

from bench.medians import Run, median_table
from broker.adapters.db import load_queries

POLICY = "bench-rate-limited"
POLICIES = f"""
[policies.{POLICY}]
rate_limits = {{ create = "1000000/second" }}
"""
TARGET_RATIO = 0.9
CHECK_CALLS = 5000


CreateRun = Callable[[int, str | None], Run]


def run(
    database_url: str, create_run: CreateRun, warmup_seconds: int, seconds: int, rounds: int
) -> list[str]:
    variants: dict[str, str | None] = {"limits off": None, "limits on": POLICY}
    for policy in variants.values():
        create_run(warmup_seconds, policy)
    results: dict[str, list[Run]] = {name: [] for name in variants}
    for number in range(1, rounds + 1):
        order = list(variants.items())
        if number % 2 == 0:
            order.reverse()  # each goes first in turn: the table grows as the run goes on
        for name, policy in order:
            result = create_run(seconds, policy)
            results[name].append(result)
            print(
                f"rate limits round {number}/{rounds} {name:10} "
                f"{result.requests_per_second:6.0f} req/s  p99 {result.p99_ms:6.2f} ms",
                flush=True,
            )
    check_us, round_trip_us = asyncio.run(_statement_costs(database_url))
    table, medians = median_table(results, "variant", 12)
    lines = [
        f"Rate limits: POST /v1/uploads, limits off (default policy) and on ({POLICY}:"
        f" create = 1000000/second, never refused), median of {rounds} alternating rounds:",
        *table,
    ]
    ratio = medians["limits on"] / medians["limits off"]
    verdict = "PASS" if ratio >= TARGET_RATIO else "MISS"
    return [
        *lines,
        f"  throughput on/off {ratio:5.2f}x   target >= {TARGET_RATIO:.2f}x   {verdict}",
        f"  the check alone (take_rate_limits, one key, {CHECK_CALLS} calls on one connection):"
        f" {check_us:.0f} us per call; a bare round trip (SELECT 1): {round_trip_us:.0f} us",
    ]


async def _statement_costs(database_url: str) -> tuple[float, float]:
    """Microseconds per take_rate_limit and per SELECT 1, sequential on one connection."""
    query = load_queries()["take_rate_limits"]
    conn = await asyncpg.connect(database_url)
    try:
        take = await conn.prepare(query.sql)
        ping = await conn.prepare("SELECT 1")

        async def per_call(call: Callable[[], object]) -> float:
            started = time.perf_counter()
            for _ in range(CHECK_CALLS):
                await call()  # type: ignore[misc]
            return (time.perf_counter() - started) / CHECK_CALLS * 1e6

        arguments = {
            "keys": ["bench:cost"],
            "counts": [1],
            "interval_seconds": [1e-6],
            "period_seconds": [1.0],
        }
        values = query.arguments(arguments)
        check = await per_call(lambda: take.fetch(*values))
        round_trip = await per_call(lambda: ping.fetchval())
        return check, round_trip
    finally:
        await conn.close()
