"""The local PostgreSQL that tests and the bench start for themselves leaves nothing behind."""

from __future__ import annotations

import secrets
from pathlib import Path

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
