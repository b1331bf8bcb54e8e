"""Helpers for tests that drive real processes: poll for a condition with a deadline (never
a sleep as synchronisation), and run one statement on a database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg


def until(what: str, check: Callable[[], Any], timeout: float, log: Path | None = None) -> Any:
    """Poll `check` until it returns something truthy, or fail after `timeout` seconds
    (with the tail of `log`, a process's output, in the message)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"not within {timeout} s: {what}\n{tail}")


def query(database_url: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    """Run one statement on its own connection and return its rows."""

    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database_url)
        try:
            return list(await conn.fetch(statement, *args))
        finally:
            await conn.close()

    return asyncio.run(go())
