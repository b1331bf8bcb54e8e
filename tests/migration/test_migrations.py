"""Migrations on a real PostgreSQL: up, down, up again; locking; checksums; file rules."""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from broker.adapters import migrate
from broker.domain.model import (
    SUBSCRIBABLE_EVENT_TYPES,
    ChecksumAlgorithm,
    DeliveryStatus,
    Transfer,
    UploadStatus,
    WebhookEventType,
)
from tests import services

TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
SCHEMA = """
SELECT table_name, column_name, data_type, is_nullable, column_default
FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, column_name
"""


@pytest.fixture
def empty_database(found_services) -> Iterator[str]:
    """A database with no tables at all (not a copy of the migrated template), dropped after."""
    name = f"migr_{secrets.token_hex(4)}"
    yield services.run(services.create_database(found_services.database_url, name))  # type: ignore[misc]
    services.run(services.drop_database(found_services.database_url, name))


async def _with_connection(url: str, work):
    conn = await asyncpg.connect(url)
    try:
        return await work(conn)
    finally:
        await conn.close()


def test_migrations_go_up_down_and_up_again_to_the_same_schema(empty_database):
    async def scenario(conn):
        applied = await migrate.upgrade(conn)
        assert applied == [m.name for m in migrate.load_migrations()]
        schema_after_up = await conn.fetch(SCHEMA)
        assert "uploads" in [r["tablename"] for r in await conn.fetch(TABLES)]
        assert await migrate.upgrade(conn) == []

        reverted = await migrate.downgrade(conn, len(applied))
        assert reverted == list(reversed(applied))
        assert [r["tablename"] for r in await conn.fetch(TABLES)] == ["schema_migrations"]
        assert all(s.applied_at is None for s in await migrate.status(conn))

        assert await migrate.upgrade(conn) == applied
        assert await conn.fetch(SCHEMA) == schema_after_up

    services.run(_with_connection(empty_database, scenario))


def test_two_processes_migrating_at_once_apply_each_migration_once(empty_database):
    async def scenario():
        first, second = await asyncpg.connect(empty_database), await asyncpg.connect(empty_database)
        try:
            results = await asyncio.gather(migrate.upgrade(first), migrate.upgrade(second))
            rows = await first.fetch("SELECT version FROM schema_migrations")
        finally:
            await first.close()
            await second.close()
        assert sorted(results, key=len) == [[], [m.name for m in migrate.load_migrations()]]
        assert len(rows) == len(migrate.load_migrations())

    services.run(scenario())


def test_a_changed_applied_migration_is_refused(empty_database, tmp_path: Path):
    directory = tmp_path / "migrations"
    shutil.copytree(migrate.DEFAULT_DIR, directory)

    async def scenario(conn):
        await migrate.upgrade(conn, directory)
        first = sorted(directory.glob("*.sql"))[0]
        first.write_text(first.read_text().replace("-- migrate:down", "-- edited\n-- migrate:down"))
        with pytest.raises(migrate.MigrationError, match="changed after it was applied"):
            await migrate.upgrade(conn, directory)

    services.run(_with_connection(empty_database, scenario))


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("1_x.sql", "-- migrate:up\n-- migrate:down\n", "named NNNN_snake_case.sql"),
        ("0001_x.sql", "CREATE TABLE t ();", "needs one"),
        ("0002_x.sql", "-- migrate:up\n-- migrate:down\n", "expected version 0001"),
    ],
)
def test_malformed_migration_files_are_refused(tmp_path: Path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(migrate.MigrationError, match=message):
        migrate.load_migrations(tmp_path)


def test_every_named_query_prepares_against_the_migrated_schema(database_url):
    """A typo in broker/adapters/queries.sql fails here, not as a 500 in production."""
    from broker.adapters import db

    statements = {name: query.sql for name, query in db.load_queries().items()}

    async def prepare_all(conn):
        async with conn.transaction():
            for name, sql in statements.items():
                if sql.upper().startswith("SET "):
                    continue
                try:
                    await conn.prepare(sql)
                except asyncpg.PostgresError as exc:
                    raise AssertionError(f"query {name!r} does not prepare: {exc}") from exc

    services.run(_with_connection(database_url, prepare_all))


def test_queries_returning_uploads_list_the_columns_of_the_domain_value(database_url):
    """The database adapter builds Upload from a row by position: the columns must be
    Upload's fields, in order, for every statement that returns uploads."""
    from broker.adapters import db
    from broker.domain.model import Upload

    fields = list(Upload._fields)
    queries = db.load_queries()

    async def columns_of_upload_queries(conn):
        found = {}
        for name, query in queries.items():
            if query.sql.upper().startswith("SET "):
                continue
            names = [a.name for a in (await conn.prepare(query.sql)).get_attributes()]
            if "object_key" in names and "owner" in names:
                found[name] = names
        return found

    found = services.run(_with_connection(database_url, columns_of_upload_queries))
    assert len(found) >= 12
    assert {name: names for name, names in found.items() if names != fields} == {}


@pytest.mark.parametrize(
    ("constraint", "values"),
    [
        ("uploads_status_check", {s.value for s in UploadStatus}),
        ("uploads_transfer_check", {t.value for t in Transfer}),
        ("uploads_checksum_algorithm_check", {a.value for a in ChecksumAlgorithm}),
        ("webhook_deliveries_status_check", {s.value for s in DeliveryStatus}),
        ("webhook_deliveries_type_check", {t.value for t in WebhookEventType}),
        ("webhook_endpoints_event_types_check", {t.value for t in SUBSCRIBABLE_EVENT_TYPES}),
    ],
)
def test_the_schema_allows_exactly_the_values_of_the_domain_enums(database_url, constraint, values):
    """The enums of broker/domain/model.py are the one definition; the schema must agree."""

    async def definition(conn):
        return await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1", constraint
        )

    text = services.run(_with_connection(database_url, definition))
    assert set(re.findall(r"'([^']+)'::text", text)) == values
