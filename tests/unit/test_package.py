"""The wheel a normal install builds carries the SQL files the runtime reads from the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_wheel_ships_every_migration_queries_sql_and_the_console_script(tmp_path: Path) -> None:
    # Built from a copy, so setuptools' build/ and *.egg-info never land in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    for folder in ("broker", "migrations"):
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    # No build isolation: the venv's setuptools (a dev dependency) builds it, offline.
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*command, str(source), "--wheel-dir", str(tmp_path / "dist")], check=True)

    (wheel,) = (tmp_path / "dist").glob("broker-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    migrations = {f"broker/migrations/{p.name}" for p in (ROOT / "migrations").glob("*.sql")}
    assert "broker/migrations/0001_create_uploads.sql" in migrations
    assert migrations <= names
    assert {"broker/migrations/__init__.py", "broker/adapters/queries.sql"} <= names
    assert "broker = broker.cli:main" in scripts
