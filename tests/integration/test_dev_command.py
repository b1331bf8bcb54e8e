"""`broker dev` (what `make run` runs): its PostgreSQL, MinIO and clamd stop with it, even
when a second signal forces it out (as `timeout make run` delivers: to make and to it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from broker.dev import devstack
from tests.waiting import until


def test_a_forced_stop_of_broker_dev_still_stops_its_services(tmp_path: Path) -> None:
    port, pg_port, minio_port = (devstack.free_port() for _ in range(3))
    env = {key: value for key, value in os.environ.items() if not key.startswith("BROKER_")} | {
        "BROKER_DEV_PG_PORT": str(pg_port),
        "BROKER_DEV_MINIO_PORT": str(minio_port),
    }
    log = tmp_path / "dev.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "dev", "--state-dir", str(tmp_path / "state"),
             "--port", str(port)],
            cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            until(
                "broker dev answers",
                lambda: _answers(f"http://127.0.0.1:{port}/readyz"),
                120,
                log,
            )
            assert devstack.port_in_use(pg_port) and devstack.port_in_use(minio_port)
            process.send_signal(signal.SIGTERM)
            until("the broker drains", lambda: "shutdown.draining" in log.read_text(), 10, log)
            process.send_signal(signal.SIGTERM)  # the second forces the exit
            assert process.wait(timeout=60) == 1
        finally:
            if process.poll() is None:
                process.kill()
    text = log.read_text()
    assert "shutdown.forced" in text
    assert "stopped clamd, MinIO and PostgreSQL" in text, text[-3000:]
    until("PostgreSQL's and MinIO's ports are free", lambda: not (
        devstack.port_in_use(pg_port) or devstack.port_in_use(minio_port)), 20, log)  # fmt: skip
    # As root, the cluster lives in a /var/tmp fallback that only remove() knows to delete.
    devstack.LocalPostgres(tmp_path / "state" / "pg", pg_port, "unused").remove()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
