"""Schema migrations: numbered SQL files applied in order under an advisory lock, checksummed."""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg


def _default_dir() -> Path:
    """migrations/ of the repository: installed as the broker.migrations package (see
    pyproject.toml), or beside broker/ in a source tree put on the path without installing
    it (compose.dev.yaml's hot-reloading broker runs the mounted source that way)."""
    try:
        return Path(str(importlib.resources.files("broker.migrations")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "migrations"


DEFAULT_DIR = _default_dir()
FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
UP_MARK = "-- migrate:up"
DOWN_MARK = "-- migrate:down"
# Any constant works; it only has to be the same in every broker process.
LOCK_ID = 0x62726F6B6572  # "broker"

# The bookkeeping statements live here rather than in queries.sql: they run before the
# schema exists and belong to the migration runner alone.
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
SELECT_APPLIED = (
    "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
)
INSERT_APPLIED = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"
DELETE_APPLIED = "DELETE FROM schema_migrations WHERE version = $1"


class MigrationError(Exception):
    """The migrations on disk and in the database disagree, or a file is malformed."""


@dataclass(frozen=True)
class Migration:
    """One migration file split into its up and down parts."""

    version: int
    name: str
    up: str
    down: str
    checksum: str


@dataclass(frozen=True)
class MigrationStatus:
    """A migration on disk and whether (and when) it was applied."""

    version: int
    name: str
    applied_at: str | None


def load_migrations(directory: Path = DEFAULT_DIR) -> list[Migration]:
    """Read and validate every migration file, in version order."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_snake_case.sql")
        text = path.read_text()
        if text.count(UP_MARK) != 1 or text.count(DOWN_MARK) != 1:
            raise MigrationError(f"{path.name}: needs one '{UP_MARK}' and one '{DOWN_MARK}'")
        up, down = text.split(UP_MARK, 1)[1].split(DOWN_MARK, 1)
        migrations.append(
            Migration(
                version=int(match.group(1)),
                name=path.stem,
                up=up.strip(),
                down=down.strip(),
                checksum=hashlib.sha256(text.encode()).hexdigest(),
            )
        )
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(f"{migration.name}: expected version {expected:04d} (no gaps)")
    return migrations


async def _applied(conn: asyncpg.Connection, migrations: list[Migration]) -> dict[int, str]:
    """Applied versions with their apply time; refuse if an applied file changed or vanished."""
    await conn.execute(CREATE_TABLE)
    on_disk = {m.version: m for m in migrations}
    applied = {}
    for row in await conn.fetch(SELECT_APPLIED):
        migration = on_disk.get(row["version"])
        if migration is None:
            raise MigrationError(f"{row['name']} is applied but its file is missing")
        if migration.checksum != row["checksum"]:
            raise MigrationError(f"{migration.name}.sql changed after it was applied; refusing")
        applied[row["version"]] = row["applied_at"].isoformat()
    return applied


async def _locked(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)


async def _unlock(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)


async def upgrade(conn: asyncpg.Connection, directory: Path = DEFAULT_DIR) -> list[str]:
    """Apply every pending migration, each in its own transaction; return their names."""
    migrations = load_migrations(directory)
    await _locked(conn)
    try:
        applied = await _applied(conn, migrations)
        done: list[str] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.up)
                await conn.execute(
                    INSERT_APPLIED, migration.version, migration.name, migration.checksum
                )
            done.append(migration.name)
        return done
    finally:
        await _unlock(conn)


async def downgrade(
    conn: asyncpg.Connection, steps: int, directory: Path = DEFAULT_DIR
) -> list[str]:
    """Revert the last `steps` applied migrations, newest first; return their names."""
    migrations = load_migrations(directory)
    await _locked(conn)
    try:
        applied = await _applied(conn, migrations)
        done: list[str] = []
        for migration in reversed(migrations):
            if len(done) == steps:
                break
            if migration.version not in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.down)
                await conn.execute(DELETE_APPLIED, migration.version)
            done.append(migration.name)
        return done
    finally:
        await _unlock(conn)


async def status(conn: asyncpg.Connection, directory: Path = DEFAULT_DIR) -> list[MigrationStatus]:
    """Every migration on disk with its apply time, or None when pending."""
    migrations = load_migrations(directory)
    await _locked(conn)
    try:
        applied = await _applied(conn, migrations)
    finally:
        await _unlock(conn)
    return [MigrationStatus(m.version, m.name, applied.get(m.version)) for m in migrations]


async def run(database_url: str, action: str, steps: int = 1) -> list[str]:
    """`broker migrate up | down | status` on its own connection; return the lines to print."""
    conn = await asyncpg.connect(database_url)
    try:
        if action == "up":
            done = await upgrade(conn)
            return [f"applied {name}" for name in done] or ["nothing to apply"]
        if action == "down":
            done = await downgrade(conn, steps)
            return [f"reverted {name}" for name in done] or ["nothing to revert"]
        if action == "status":
            return [f"{item.name:40} {item.applied_at or 'pending'}" for item in await status(conn)]
        raise MigrationError(f"unknown action {action!r}: up, down or status")
    finally:
        await conn.close()
