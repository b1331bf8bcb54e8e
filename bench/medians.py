"""The table the A/B sections print: each variant's medians over alternating rounds."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Protocol


class Run(Protocol):
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    app_cpu_ms: float
    db_cpu_ms: float


def median_table(
    results: Mapping[str, Sequence[Run]], label: str, width: int
) -> tuple[list[str], dict[str, float]]:
    """The table's lines (header first) and each variant's median req/s."""
    lines = [
        f"  {label:{width}} {'req/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'app CPU':>8} {'PG CPU':>7}"
        "   req/s by round"
    ]
    medians: dict[str, float] = {}
    for name, runs in results.items():
        rps = medians[name] = statistics.median(r.requests_per_second for r in runs)
        lines.append(
            f"  {name:{width}} {rps:6.0f} {statistics.median(r.p50_ms for r in runs):7.2f}"
            f" {statistics.median(r.p99_ms for r in runs):7.2f}"
            f" {statistics.median(r.app_cpu_ms for r in runs):8.3f}"
            f" {statistics.median(r.db_cpu_ms for r in runs):7.3f}"
            f"   {' '.join(f'{r.requests_per_second:.0f}' for r in runs)}"
        )
    return lines, medians
