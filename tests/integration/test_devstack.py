"""The local PostgreSQL that `broker dev`, the tests and the bench start: database, no leftovers."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import asyncpg

from broker.dev import devstack


def test_a_removed_throwaway_cluster_leaves_no_folder(tmp_path: Path) -> None:
    # pytest's tmp_path is private to its user (0700): as root, the cluster then lives in the
    # /var/tmp fallback, which only remove() knows to delete.
    postgres = devstack.LocalPostgres(
        tmp_path / "pg", devstack.free_port(), secrets.token_hex(8), durable=False
    )
    postgres.start()
    assert (postgres.data_dir / "PG_VERSION").exists()

    postgres.remove()

    assert not postgres.base_dir.exists()
    assert not devstack.port_in_use(postgres.port)


def test_start_creates_the_database_once_and_a_restart_finds_it(tmp_path: Path) -> None:
    postgres = devstack.LocalPostgres(
        tmp_path / "pg", devstack.free_port(), secrets.token_hex(8), durable=False
    )
    try:
        postgres.start()
        postgres.stop()
        postgres.start()  # the database exists now: created only when missing

        async def current_database() -> str:
            conn = await asyncpg.connect(postgres.url)
            try:
                return str(await conn.fetchval("SELECT current_database()"))
            finally:
                await conn.close()

        assert asyncio.run(current_database()) == postgres.database
    finally:
        postgres.remove()
