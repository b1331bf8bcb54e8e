"""PostgreSQL access: the pool, the named queries of queries.sql, driver errors as domain errors."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from broker.domain import errors

QUERIES_FILE = Path(__file__).with_name("queries.sql")
_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)

# Failures that mean "the database is not there right now", as opposed to a bug in a query.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


def load_queries(path: Path = QUERIES_FILE) -> dict[str, str]:
    """Split queries.sql into {name: statement}; each block starts with '-- name: x'."""
    text = path.read_text()
    names = list(_NAME_LINE.finditer(text))
    queries: dict[str, str] = {}
    for match, following in zip(names, [*names[1:], None], strict=True):
        body = text[match.end() : following.start() if following else len(text)]
        statement = "\n".join(
            line for line in body.strip().splitlines() if not line.startswith("--")
        ).strip()
        if not statement or match.group(1) in queries:
            raise ValueError(f"{path}: query {match.group(1)!r} is empty or defined twice")
        queries[match.group(1)] = statement
    return queries


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset-on-release round trip: no handler changes session state."""


class Database:
    """Runs the named queries on a pool; connection failures become DatabaseUnavailable."""

    def __init__(self, pool: asyncpg.Pool, queries: dict[str, str]) -> None:
        self.pool = pool
        self.queries = queries
        # Callers take turns for a connection in arrival order. asyncpg's pool hands a freed
        # connection to whoever asks next, so under load a request can lose it again and
        # again to newcomers (a long latency tail); this FIFO semaphore, as large as the
        # pool, lets nobody ask the pool before it is their turn.
        self.turns = asyncio.Semaphore(pool.get_max_size())

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int, max_size: int) -> Database:
        """Open a pool; raises the driver's error if the database cannot be reached."""
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            reset=_keep_session,
            command_timeout=30,
        )
        return cls(pool, load_queries())

    async def close(self) -> None:
        """Close every connection of the pool."""
        await self.pool.close()

    @asynccontextmanager
    async def _unavailable_as_error(self) -> AsyncIterator[None]:
        try:
            yield
        except UNAVAILABLE_ERRORS as exc:
            raise errors.DatabaseUnavailable() from exc

    async def fetchrow(self, name: str, *args: Any) -> asyncpg.Record | None:
        """Run a named query and return its first row, if any."""
        # try/except rather than _unavailable_as_error: this is on every request's path.
        try:
            async with self.turns:
                return await self.pool.fetchrow(self.queries[name], *args)
        except UNAVAILABLE_ERRORS as exc:
            raise errors.DatabaseUnavailable() from exc

    async def fetch(self, name: str, *args: Any) -> list[asyncpg.Record]:
        """Run a named query and return all its rows."""
        async with self._unavailable_as_error(), self.turns:
            return await self.pool.fetch(self.queries[name], *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        """Run several named queries on one connection, committed together."""
        async with self.session() as session, session.conn.transaction():
            yield session

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        """Run several named queries on one connection, each committed on its own: for work
        that holds a session-level lock between them."""
        async with self._unavailable_as_error(), self.turns, self.pool.acquire() as conn:
            yield Session(conn, self.queries)

    async def fetch_planned_per_call(
        self, name: str, fragments: dict[str, str], *args: Any
    ) -> list[asyncpg.Record]:
        """Run a named query whose {placeholders} are filled from a fixed table of fragments,
        planned for this call's values (see use_custom_plans)."""
        statement = self.queries[name].format(**fragments)
        async with self.transaction() as tx:
            await tx.conn.execute(self.queries["use_custom_plans"])
            return await tx.conn.fetch(statement, *args)

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless a trivial query answers."""
        async with self._unavailable_as_error(), self.turns:
            await self.pool.fetchval(self.queries["ping"])


class Executor(Protocol):
    """Runs named queries: the pool (each on its own) or an open transaction."""

    async def fetchrow(self, name: str, *args: Any) -> asyncpg.Record | None: ...


class Session:
    """Named queries on one connection (in a transaction or not)."""

    def __init__(self, conn: asyncpg.Connection, queries: dict[str, str]) -> None:
        self.conn = conn
        self.queries = queries

    async def fetchrow(self, name: str, *args: Any) -> asyncpg.Record | None:
        """Run a named query and return its first row, if any."""
        return await self.conn.fetchrow(self.queries[name], *args)

    async def fetch(self, name: str, *args: Any) -> list[asyncpg.Record]:
        """Run a named query and return all its rows."""
        return await self.conn.fetch(self.queries[name], *args)
