"""Database hands out its connections in arrival order, whatever the pool underneath does."""

from __future__ import annotations

import asyncio
from typing import Any

from broker.adapters.db import Database, Query


class GreedyPool:
    """A one-connection pool that serves whoever asks while it is free, as asyncpg's does
    (a caller that asks just as the connection comes back overtakes the ones waiting)."""

    def __init__(self) -> None:
        self.busy = False
        self.served: list[str] = []
        self.overlaps = 0

    def get_max_size(self) -> int:
        return 1

    async def fetchrow(self, query: str, caller: str) -> Any:
        if self.busy:
            self.overlaps += 1
        self.busy = True
        self.served.append(caller)
        for _ in range(3):  # the round trip: the event loop runs others meanwhile
            await asyncio.sleep(0)
        self.busy = False
        return None


def test_callers_get_the_connection_in_arrival_order() -> None:
    pool = asyncio.run(queue_up())

    assert pool.served == [*[f"early-{n}" for n in range(5)], "late"]
    assert pool.overlaps == 0  # nobody asked the pool while its connection was busy


async def queue_up() -> GreedyPool:
    pool = GreedyPool()
    query = Query.compile("q", "SELECT :caller")
    db = Database(pool, {"q": query})  # type: ignore[arg-type]
    callers = [f"early-{n}" for n in range(5)]
    tasks = [asyncio.create_task(db.fetchrow(query, [name])) for name in callers]
    await tasks[0]  # the first query is done; the others still queue or run
    late = asyncio.create_task(db.fetchrow(query, ["late"]))
    await asyncio.gather(*tasks, late)
    return pool
