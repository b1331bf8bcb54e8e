"""Rate-limit takes of concurrent requests sent to PostgreSQL together.

Every limited request needs its key's allowance checked and taken in the database, which
every process shares (queries.sql take_rate_limits). One statement per request would cost
each create a round trip, ~25% of its throughput; instead the takes asked while a
statement is in flight wait for the next one, which carries them all (as group commit
does with commits). Alone, a request pays one round trip; under load, a batch shares it.
Within a batch, the takes of one key are served in the order they were asked.
"""

from __future__ import annotations

import asyncio

from broker.adapters.db import Database

# key, actions asked, interval, period, and the future of (actions taken, seconds to wait)
Pending = tuple[str, int, float, float, "asyncio.Future[tuple[int, float]]"]


class TakeBatcher:
    """Takes of one pool, one statement at a time, each carrying every take asked meanwhile."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.query = db.queries["take_rate_limits"]
        self.pending: list[Pending] = []
        self.sender: asyncio.Task[None] | None = None

    async def take(
        self, key: str, count: int, interval_seconds: float, period_seconds: float
    ) -> tuple[int, float]:
        """How many of `count` actions of `key` were taken (the first ones that fit), and
        when none was, the seconds until one would be."""
        future: asyncio.Future[tuple[int, float]] = asyncio.get_running_loop().create_future()
        self.pending.append((key, count, interval_seconds, period_seconds, future))
        if self.sender is None:
            # Started on the next turn of the loop: takes asked in this one join the batch.
            self.sender = asyncio.create_task(self._send())
        return await future

    async def _send(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    await self._send_batch(batch)
                except BaseException as exc:
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
        finally:
            self.sender = None
            for *_, future in self.pending:  # only left when cancelled
                future.cancel()
            if self.pending:
                self.pending = []

    async def _send_batch(self, batch: list[Pending]) -> None:
        keys, counts, intervals, periods = [], [], [], []
        for key, count, interval, period, _ in batch:
            keys.append(key)
            counts.append(count)
            intervals.append(interval)
            periods.append(period)
        arguments = {
            "keys": keys,
            "counts": counts,
            "interval_seconds": intervals,
            "period_seconds": periods,
        }
        rows = await self.db.fetch(self.query, self.query.arguments(arguments))
        outcome = {row[0]: (row[1], row[2]) for row in rows}
        left = {key: taken for key, (taken, _) in outcome.items()}
        for key, count, _, _, future in batch:
            given = min(count, left[key])  # in the order they were asked
            left[key] -= given
            if not future.done():  # else its request went away meanwhile
                future.set_result((given, 0.0 if given else float(outcome[key][1])))
