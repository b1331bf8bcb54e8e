"""Human-readable durations and sizes, for the command line and the /ops page."""

from __future__ import annotations


def format_age(seconds: float) -> str:
    """A duration as its two largest units: "45s", "3m 20s", "2h 5m", "3d 4h"."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def format_bytes(size: int | None) -> str:
    """A byte count in binary units: "0 B", "512 B", "1.5 KiB", "64.0 MiB"."""
    value = float(size or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
