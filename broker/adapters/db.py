"""PostgreSQL: the pool, the named queries of queries.sql, rows as domain values.

This module and migrate.py are the only ones that speak to asyncpg. `Queries` implements
the Queries port of broker/flows/ports.py: every method runs one named statement and
returns domain values (broker.domain.model), never driver records.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import operator
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from broker.domain import errors
from broker.domain.model import (
    AdminSort,
    ChecksumAlgorithm,
    HistoryEntry,
    HourlyCount,
    NewUploadRecord,
    Outcome,
    PendingSummary,
    QuotaLimits,
    ReconcilerRun,
    StatusPolicyCount,
    Transfer,
    Upload,
    UploadFilters,
    UploadStatus,
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
    "-size": (
        "size DESC, id DESC",
        "(:after_value::bigint IS NULL OR (size, id) < (:after_value::bigint, :after_id::uuid))",
    ),
    "size": (
        "size ASC, id ASC",
        "(:after_value::bigint IS NULL OR (size, id) > (:after_value::bigint, :after_id::uuid))",
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

    async def fetch(self, query: Query, arguments: Sequence[Any]) -> list[asyncpg.Record]:
        try:
            async with self.turns:
                return await self.pool.fetch(query.sql, *arguments)
        except UNAVAILABLE_ERRORS as exc:
            raise errors.DatabaseUnavailable() from exc

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """One connection of the pool, for statements that must share it."""
        try:
            async with self.turns, self.pool.acquire() as conn:
                yield conn
        except UNAVAILABLE_ERRORS as exc:
            raise errors.DatabaseUnavailable() from exc


# Enum members by value: a dict lookup, where calling the enum class costs ten times more.
_STATUSES = {status.value: status for status in UploadStatus}
_TRANSFERS = {transfer.value: transfer for transfer in Transfer}
_CHECKSUM_ALGORITHMS: dict[str | None, ChecksumAlgorithm | None] = {
    None: None,
    **{a.value: a for a in ChecksumAlgorithm},
}


def _upload(row: asyncpg.Record | None) -> Upload | None:
    """An uploads row, in the column order of queries.sql, as the domain value."""
    if row is None:
        return None
    values = list(row)
    values[2] = _STATUSES[values[2]]
    values[12] = _TRANSFERS[values[12]]
    values[16] = _CHECKSUM_ALGORITHMS[values[16]]
    return Upload._make(values)


def _uploads(rows: list[asyncpg.Record]) -> list[Upload]:
    return [_upload(row) for row in rows]  # type: ignore[misc]


def _filter_values(filters: UploadFilters) -> dict[str, Any]:
    return {field.name: getattr(filters, field.name) for field in dataclasses.fields(filters)}


def _history(row: asyncpg.Record) -> HistoryEntry:
    return HistoryEntry(
        id=row["id"],
        status=UploadStatus(row["status"]),
        actor=row["actor"],
        detail=row["detail"],
        at=row["at"],
    )


class Queries:
    """The broker's statements, on the pool (each on its own) or on one connection."""

    def __init__(self, db: Database, conn: asyncpg.Connection | None = None) -> None:
        self.db = db
        self.conn = conn

    async def _row(self, name: str, **values: Any) -> asyncpg.Record | None:
        query = self.db.queries[name]
        arguments = query.arguments(values)
        if self.conn is None:
            return await self.db.fetchrow(query, arguments)
        return await self.conn.fetchrow(query.sql, *arguments)

    async def _rows(self, name: str, **values: Any) -> list[asyncpg.Record]:
        query = self.db.queries[name]
        arguments = query.arguments(values)
        if self.conn is None:
            return await self.db.fetch(query, arguments)
        return await self.conn.fetch(query.sql, *arguments)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Queries]:
        """These statements on one connection, committed together."""
        async with self.db.connection() as conn, conn.transaction():
            yield Queries(self.db, conn)

    @asynccontextmanager
    async def orphan_sweep_lock(self) -> AsyncIterator[Queries | None]:
        """The process-wide sweep lock, held by one connection that runs the sweep's queries;
        None when another process holds it."""
        async with self.db.connection() as conn:
            session = Queries(self.db, conn)
            locked = await session._row("try_lock_orphan_sweep")
            if not locked or not locked[0]:
                yield None
                return
            try:
                yield session
            finally:
                await session._row("unlock_orphan_sweep")

    async def ping(self) -> None:
        await self._row("ping")

    # ------------------------------------------------------------ creating

    async def insert_upload(self, record: NewUploadRecord, quota: QuotaLimits) -> Upload | None:
        """Record a new pending upload; None if its idempotency key exists or a quota is full.

        With quotas, the owner's quota lock is taken first in the same transaction, so
        concurrent creates of one owner are checked one after the other.
        """
        if quota.unlimited:
            query = self.db.queries["insert_upload"]
            return _upload(await self.db.fetchrow(query, self.db.bind_insert(record)))
        query = self.db.queries["insert_upload_within_quota"]
        arguments = self.db.bind_insert_within_quota((*record, *quota))
        async with self.transaction() as tx:
            await tx._row("lock_owner_quota", owner=record.owner)
            assert tx.conn is not None
            return _upload(await tx.conn.fetchrow(query.sql, *arguments))

    # ------------------------------------------------------------ reading

    async def get_upload(self, upload_id: uuid.UUID) -> Upload | None:
        return _upload(await self._row("get_upload", id=upload_id))

    async def get_upload_for_owner(self, upload_id: uuid.UUID, owner: str) -> Upload | None:
        return _upload(await self._row("get_upload_for_owner", id=upload_id, owner=owner))

    async def get_upload_owner(self, upload_id: uuid.UUID) -> str | None:
        row = await self._row("get_upload_owner", id=upload_id)
        return row[0] if row is not None else None

    async def get_upload_by_idempotency_key(self, owner: str, key: str) -> Upload | None:
        return _upload(
            await self._row("get_upload_by_idempotency_key", owner=owner, idempotency_key=key)
        )

    async def get_upload_by_key(self, bucket: str, object_key: str) -> Upload | None:
        return _upload(await self._row("get_upload_by_key", bucket=bucket, object_key=object_key))

    async def list_uploads_for_owner(
        self,
        owner: str,
        status: UploadStatus | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Upload]:
        after_created_at, after_id = after or (None, None)
        rows = await self._rows(
            "list_uploads_for_owner",
            owner=owner,
            status=status,
            after_created_at=after_created_at,
            after_id=after_id,
            limit=limit,
        )
        return _uploads(rows)

    async def admin_list_uploads(
        self,
        filters: UploadFilters,
        sort: AdminSort,
        after: tuple[Any, uuid.UUID] | None,
        limit: int,
    ) -> list[Upload]:
        """Operators' listing, planned for this call's values (see use_custom_plans)."""
        after_value, after_id = after or (None, None)
        query = self.db.queries[f"admin_list_uploads:{sort}"]
        arguments = query.arguments(
            {
                **_filter_values(filters),
                "after_value": after_value,
                "after_id": after_id,
                "limit": limit,
            }
        )
        async with self.db.connection() as conn, conn.transaction():
            await conn.execute(self.db.queries["use_custom_plans"].sql)
            return _uploads(await conn.fetch(query.sql, *arguments))

    async def get_upload_history(
        self, upload_id: uuid.UUID, after_id: int | None = None
    ) -> list[HistoryEntry]:
        """The upload's states, oldest first; only those after `after_id` when given."""
        if after_id is None:
            rows = await self._rows("get_upload_history", id=upload_id)
        else:
            rows = await self._rows("get_upload_history_after", id=upload_id, after_id=after_id)
        return [_history(row) for row in rows]

    # ------------------------------------------------------------ state changes

    async def mark_upload_finalized(
        self,
        upload_id: uuid.UUID,
        *,
        etag: str,
        checksum: str | None,
        size: int,
        actor: str,
        detail: Mapping[str, Any],
    ) -> Upload | None:
        return _upload(
            await self._row(
                "mark_upload_finalized",
                id=upload_id,
                etag=etag,
                checksum=checksum,
                size=size,
                actor=actor,
                detail=detail,
            )
        )

    async def mark_upload_rejected(
        self, upload_id: uuid.UUID, *, reason: str, actor: str, detail: Mapping[str, Any]
    ) -> Upload | None:
        return _upload(
            await self._row(
                "mark_upload_rejected", id=upload_id, reason=reason, actor=actor, detail=detail
            )
        )

    async def mark_upload_deleted(self, upload_id: uuid.UUID, owner: str) -> Upload | None:
        return _upload(await self._row("mark_upload_deleted", id=upload_id, owner=owner))

    async def mark_upload_deleted_by_key(
        self, bucket: str, object_key: str, *, actor: str, detail: Mapping[str, Any]
    ) -> Upload | None:
        return _upload(
            await self._row(
                "mark_upload_deleted_by_key",
                bucket=bucket,
                object_key=object_key,
                actor=actor,
                detail=detail,
            )
        )

    async def mark_upload_expired(
        self, upload_id: uuid.UUID, *, force: bool, actor: str, detail: Mapping[str, Any]
    ) -> Upload | None:
        return _upload(
            await self._row(
                "mark_upload_expired", id=upload_id, force=force, actor=actor, detail=detail
            )
        )

    # ------------------------------------------------------------ reconciler

    async def claim_stale_pending_upload(self) -> Upload | None:
        """In a transaction: lock one pending upload past its deadline that nobody holds."""
        return _upload(await self._row("claim_stale_pending_upload"))

    async def claim_pending_upload(self, upload_id: uuid.UUID) -> Upload | None:
        """In a transaction: lock this upload if it is pending."""
        return _upload(await self._row("claim_pending_upload", id=upload_id))

    async def list_stale_pending_uploads(self, limit: int) -> list[Upload]:
        return _uploads(await self._rows("list_stale_pending_uploads", limit=limit))

    async def find_live_object_keys(self, bucket: str, object_keys: list[str]) -> set[str]:
        rows = await self._rows("find_live_object_keys", bucket=bucket, object_keys=object_keys)
        return {row[0] for row in rows}

    async def find_pending_multipart_ids(self, multipart_upload_ids: list[str]) -> set[str]:
        rows = await self._rows(
            "find_pending_multipart_ids", multipart_upload_ids=multipart_upload_ids
        )
        return {row[0] for row in rows}

    async def insert_reconciler_run(
        self, started_at: datetime, dry_run: bool, trigger: str, counts: Mapping[Outcome, int]
    ) -> None:
        await self._row(
            "insert_reconciler_run",
            started_at=started_at,
            dry_run=dry_run,
            trigger=trigger,
            counts=counts,
        )

    async def recent_reconciler_runs(self, limit: int) -> list[ReconcilerRun]:
        rows = await self._rows("recent_reconciler_runs", limit=limit)
        return [ReconcilerRun(*row) for row in rows]

    # ------------------------------------------------------------ statistics

    async def stats_by_status_and_policy(self) -> list[StatusPolicyCount]:
        rows = await self._rows("stats_by_status_and_policy")
        return [StatusPolicyCount(UploadStatus(r[0]), r[1], r[2], r[3]) for r in rows]

    async def stats_pending(self) -> PendingSummary:
        row = await self._row("stats_pending")
        assert row is not None  # an aggregate always has its row
        return PendingSummary(*row)

    async def stats_hourly(self) -> list[HourlyCount]:
        return [HourlyCount(*row) for row in await self._rows("stats_hourly")]


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
