"""The start gives up on a dependency after BROKER_STARTUP_TIMEOUT_SECONDS, even one that
accepts connections and never answers, with one log line naming it."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Iterator

import pytest

from broker import config, wiring


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (a frozen server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_startup_timeout_bounds_a_database_that_never_answers(
    silent_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    settings = config.Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"postgresql://broker:pw@127.0.0.1:{silent_port}/broker",
        s3_endpoint="http://127.0.0.1:9",
        s3_access_key="broker",
        s3_secret_key=secrets.token_hex(8),
        jwt_secret=secrets.token_hex(32),
        webhook_token=secrets.token_hex(16),
        startup_timeout_seconds=0.5,
    )

    async def start() -> None:
        async with wiring.connected(settings, pool_min=1, pool_max=1):
            pass

    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="broker.wiring"), pytest.raises(TimeoutError):
        asyncio.run(start())
    assert time.monotonic() - started < 5  # not asyncpg's own 60 s connect timeout
    failed = [r for r in caplog.records if r.getMessage() == "startup.failed"]
    assert len(failed) == 1
    assert failed[0].__dict__["for"] == "postgres"
    assert "BROKER_STARTUP_TIMEOUT_SECONDS" in failed[0].__dict__["detail"]
