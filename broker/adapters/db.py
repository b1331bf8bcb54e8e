"""PostgreSQL: the pool, the named statements of queries.sql, the LISTEN connection.

With queries.py (the statements as typed methods) and migrate.py, the only modules that
speak to asyncpg.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import operator
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

from broker.domain import errors
from broker.domain.model import (
    NewUploadRecord,
    QuotaLimits,
)

log = logging.getLogger("broker.db")

QUERIES_FILE = Path(__file__).with_name("queries.sql")
_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
# `:name`, but not the second half of a `::type` cast nor a colon inside a word or string.
_PARAMETER = re.compile(r"(?<![:\w']):([a-z_][a-z0-9_]*)")

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
    # A pooled connection the server closed during a restart, found half-way through a
    # statement: asyncpg reports its protocol state ("cannot switch to state 12; another
    # operation is in progress", MagicStack/asyncpg#1069). Its transport is gone, so the
    # pool replaces it; the request is answered 503 like any other outage.
    asyncpg.InternalClientError,
)

# The operators' listing: (ORDER BY, keyset condition) per sort order. Fixed text only:
# these fill the {order} and {after} slots of admin_list_uploads, one statement per sort.
ADMIN_SORTS: dict[str, tuple[str, str]] = {
    "-created_at": (
        "created_at DESC, id DESC",
        "(:after_value::timestamptz IS NULL"
        " OR (created_at, id) < (:after_value::timestamptz, :after_id::uuid))",
    ),
    "created_at": (
        "created_at ASC, id ASC",
        "(:after_value::timestamptz IS NULL"
        " OR (created_at, id) > (:after_value::timestamptz, :after_id::uuid))",
    ),
    # Sizes are NULL until finalized for uploads of undeclared size; PostgreSQL sorts NULL
    # above every value (first descending, last ascending), and a cursor may point at one.
    "-size": (
        "size DESC, id DESC",
        "(:after_id::uuid IS NULL OR CASE WHEN :after_value::bigint IS NULL"
        " THEN size IS NOT NULL OR id < :after_id::uuid"
        " ELSE (size, id) < (:after_value::bigint, :after_id::uuid) END)",
    ),
    "size": (
        "size ASC, id ASC",
        "(:after_id::uuid IS NULL OR CASE WHEN :after_value::bigint IS NULL"
        " THEN size IS NULL AND id > :after_id::uuid"
        " ELSE size IS NULL OR (size, id) > (:after_value::bigint, :after_id::uuid) END)",
    ),
}


@dataclasses.dataclass(frozen=True)
class Query:
    """A statement with asyncpg's $n placeholders and the parameter name behind each."""

    name: str
    sql: str
    parameters: tuple[str, ...]

    @classmethod
    def compile(cls, name: str, text: str) -> Query:
        """Turn :name parameters into $1.. (the same name is the same $n)."""
        order: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in order:
                order.append(match.group(1))
            return f"${order.index(match.group(1)) + 1}"

        return cls(name, _PARAMETER.sub(number, text), tuple(order))

    def binder(self, fields: Sequence[str]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
        """For values that come as a tuple of these fields: their arguments in $n order
        (one C call per statement, for the create path)."""
        missing = set(self.parameters) - set(fields)
        if missing or len(self.parameters) < 2:
            raise TypeError(f"query {self.name!r} needs {sorted(missing)} too")
        return operator.itemgetter(*(list(fields).index(p) for p in self.parameters))

    def arguments(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The positional arguments for these named values; every parameter is needed."""
        if len(values) != len(self.parameters) or not all(p in values for p in self.parameters):
            raise TypeError(
                f"query {self.name!r} takes {sorted(self.parameters)}, got {sorted(values)}"
            )
        return tuple(values[p] for p in self.parameters)


def load_queries(path: Path = QUERIES_FILE) -> dict[str, Query]:
    """Split queries.sql into {name: Query}; each block starts with '-- name: x'.

    admin_list_uploads becomes one statement per sort order, `admin_list_uploads:<sort>`.
    """
    text = path.read_text()
    names = list(_NAME_LINE.finditer(text))
    queries: dict[str, Query] = {}
    for match, following in zip(names, [*names[1:], None], strict=True):
        body = text[match.end() : following.start() if following else len(text)]
        statement = "\n".join(
            line for line in body.strip().splitlines() if not line.startswith("--")
        ).strip()
        name = match.group(1)
        if not statement or name in queries:
            raise ValueError(f"{path}: query {name!r} is empty or defined twice")
        if name == "admin_list_uploads":
            for sort, (order, after) in ADMIN_SORTS.items():
                filled = statement.format(order=order, after=after)
                queries[f"{name}:{sort}"] = Query.compile(name, filled)
        else:
            queries[name] = Query.compile(name, statement)
    return queries


# PostgreSQL's text holds no NUL character (and nothing its encoding cannot): a value the
# client sent with one cannot be stored or matched, so the request is invalid, not a 500.
UNSTORABLE_TEXT = (
    asyncpg.exceptions.CharacterNotInRepertoireError,
    asyncpg.exceptions.UntranslatableCharacterError,
)


def unstorable_text() -> errors.InvalidRequest:
    return errors.InvalidRequest(details=[{"message": "text must not contain NUL characters"}])


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset-on-release round trip: no handler changes session state."""


class Database:
    """The pool; connection failures become DatabaseUnavailable."""

    def __init__(self, pool: asyncpg.Pool, queries: dict[str, Query]) -> None:
        self.pool = pool
        self.queries = queries
        # Callers take turns for a connection in arrival order. asyncpg's pool hands a freed
        # connection to whoever asks next, so under load a request can lose it again and
        # again to newcomers (a long latency tail); this FIFO semaphore, as large as the
        # pool, lets nobody ask the pool before it is their turn.
        self.turns = asyncio.Semaphore(pool.get_max_size())

    @functools.cached_property
    def bind_insert(self) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
        """insert_upload's arguments, straight from a NewUploadRecord."""
        return self.queries["insert_upload"].binder(NewUploadRecord._fields)

    @functools.cached_property
    def bind_insert_within_quota(self) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
        """insert_upload_within_quota's arguments, from a NewUploadRecord + QuotaLimits."""
        fields = NewUploadRecord._fields + QuotaLimits._fields
        return self.queries["insert_upload_within_quota"].binder(fields)

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int, max_size: int) -> Database:
        """Open a pool; raises DatabaseUnavailable if the database cannot be reached."""
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                reset=_keep_session,
                command_timeout=30,
            )
        except UNAVAILABLE_ERRORS as exc:
            raise errors.DatabaseUnavailable() from exc
        return cls(pool, load_queries())

    async def close(self) -> None:
        """Close every connection of the pool."""
        await self.pool.close()

    async def fetchrow(self, query: Query, arguments: Sequence[Any]) -> asyncpg.Record | None:
        # try/except rather than a context manager: this is on every request's path.
        try:
            async with self.turns:
                return await self.pool.fetchrow(query.sql, *arguments)
        except UNAVAILABLE_ERRORS as exc:
            raise errors.DatabaseUnavailable() from exc
        except UNSTORABLE_TEXT as exc:
            raise unstorable_text() from exc

    async def fetch(self, query: Query, arguments: Sequence[Any]) -> list[asyncpg.Record]:
        try:
            async with self.turns:
                return await self.pool.fetch(query.sql, *arguments)
        except UNAVAILABLE_ERRORS as exc:
            raise errors.DatabaseUnavailable() from exc
        except UNSTORABLE_TEXT as exc:
            raise unstorable_text() from exc

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """One connection of the pool, for statements that must share it."""
        try:
            async with self.turns, self.pool.acquire() as conn:
                yield conn
        except UNAVAILABLE_ERRORS as exc:
            raise errors.DatabaseUnavailable() from exc
        except UNSTORABLE_TEXT as exc:
            raise unstorable_text() from exc


async def listen_forever(
    dsn: str, channel: str, on_notify: Callable[[str], None], on_connected: Callable[[], None]
) -> None:
    """LISTEN on `channel` on a connection of its own until cancelled, reconnecting with
    backoff. `on_connected` runs after each (re)connect: anything may have changed while
    nobody listened."""
    delay = 0.2
    while True:
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(dsn)
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
            await conn.add_listener(channel, lambda _conn, _pid, _channel, text: on_notify(text))
            delay = 0.2
            on_connected()
            await lost.wait()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("live.listen_failed", extra={"error": repr(exc)})
        finally:
            if conn is not None and not conn.is_closed():
                await conn.close()
        await asyncio.sleep(delay)  # backoff before reconnecting
        delay = min(delay * 2, 5)
