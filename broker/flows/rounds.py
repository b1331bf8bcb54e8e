"""The loop of a background worker that claims leased work (the webhook sender, the scanner).

Each round claims what is due and starts a task per claim. A round runs on a NOTIFY, when
the worker wakes itself (a claim finished, a slot is free), and every poll interval as a
fallback. Cancelled, it cancels what is in flight and lets the worker hand its leases back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from broker.domain import errors
from broker.flows.live import Listen


async def run_rounds(
    start_round: Callable[[], Awaitable[list[asyncio.Task[Any]]]],
    *,
    listen: Listen | None,
    wake: asyncio.Event,
    poll_seconds: float,
    release: Callable[[], Awaitable[None]],
    log: logging.Logger,
    database_down_event: str,
) -> None:
    """Rounds until cancelled; then in-flight tasks are cancelled and `release` runs."""
    listener = None
    if listen is not None:
        listener = asyncio.create_task(listen(lambda _: wake.set(), wake.set))
    tasks: set[asyncio.Task[Any]] = set()
    try:
        while True:
            try:
                started = await start_round()
            except errors.DatabaseUnavailable:
                log.warning(database_down_event)
                started = []
            tasks.update(started)
            for task in started:
                task.add_done_callback(tasks.discard)
            # asyncio.timeout, not wait_for: in Python 3.11 wait_for can swallow a
            # cancellation that arrives as the event is set, and the loop never ends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll_seconds):
                    await wake.wait()
            wake.clear()
    finally:
        waiting: list[asyncio.Task[Any]] = [*tasks, *([listener] if listener else [])]
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await release()
