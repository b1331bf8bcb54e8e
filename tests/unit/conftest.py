"""Unit-suite fixtures: the use cases on in-memory fakes, and `async def` tests, each run to
completion on a fresh event loop.

Nothing here starts PostgreSQL or MinIO: the session fixtures of tests/conftest.py start them
only for tests that ask for them, and no unit test does.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.wired import Flows, flows_in


@pytest.fixture
def make_flows(tmp_path: Path) -> Callable[..., Flows]:
    """Flows for a policies file (TOML text) and settings other than the suite's."""
    return functools.partial(flows_in, tmp_path)


@pytest.fixture
def flows(tmp_path: Path) -> Flows:
    """The use cases under the suite's POLICIES and SETTINGS."""
    return flows_in(tmp_path)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an `async def` test with asyncio.run (no plugin needed for one event loop)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = inspect.signature(pyfuncitem.obj).parameters
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True
