"""`make compose-test`: compose.yaml, Dockerfile and Dockerfile.minio built and run as users
run them, from a copy of the repository, with a round trip from the host through the
containers; the dev override's hot reload; and what bad configuration does.

The tests share the published ports, so they run one at a time, each taking its stack down
(`docker compose down --volumes`) before the next starts.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.compose import stack
from tests.compose.stack import BROKER, Stack
from tests.e2e import chromium

PROJECT_LABEL = f"com.docker.compose.project={stack.PROJECT}"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return stack.copy_repository(tmp_path / "broker")


@pytest.fixture
def user_stack(folder: Path) -> Iterator[Stack]:
    """compose.yaml with a .env as the docs say to write it; taken down afterwards."""
    stack.write_env(folder, stack.good_secrets())
    running = Stack(folder)
    try:
        yield running
    finally:
        running.down()


def test_compose_stack_round_trip_survives_a_broker_restart(user_stack: Stack) -> None:
    user_stack.up()
    for service in ("postgres", "minio", "broker"):
        assert user_stack.health(service) == "healthy"
    assert "exited (0)" in user_stack.compose("ps", "--all", "migrate").stdout.lower()
    token = user_stack.token("alice")
    first = stack.round_trip(token, b"hello, broker\n")

    # /docs renders from the image's own Swagger UI files, with no internet access.
    assert chromium.api_docs_offline(BROKER, "compose-api-docs.png") > 20
    # CORS is set up for a Next.js dev server on localhost:3000 (broker and MinIO).
    origin = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}
    preflight = httpx.options(f"{BROKER}/v1/uploads", headers=origin, timeout=10)
    assert preflight.headers.get("access-control-allow-origin") == "http://localhost:3000"
    minio_preflight = httpx.options(
        f"{stack.MINIO}/uploads/x", headers={**origin, "Access-Control-Request-Method": "PUT"}
    )
    assert minio_preflight.headers.get("access-control-allow-origin") == "http://localhost:3000"

    user_stack.compose("restart", "broker")
    stack.wait_for(
        "the broker healthy after its restart",
        lambda: user_stack.health("broker") == "healthy",
        timeout=90,
    )
    stack.round_trip(user_stack.token("bob"), uuid.uuid4().bytes * 1000)
    # The first upload outlived the restart (PostgreSQL and MinIO kept their volumes).
    record = httpx.get(
        f"{BROKER}/v1/uploads/{first}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert record.json()["status"] == "finalized"


def test_compose_dev_override_serves_a_saved_change_within_seconds(folder: Path) -> None:
    stack.write_env(folder, stack.good_secrets())
    dev = Stack(folder, "compose.yaml", "compose.dev.yaml")
    try:
        dev.up()
        assert httpx.get(f"{BROKER}/openapi.json", timeout=10).json()["info"]["version"]
        marker = f"hot reload {uuid.uuid4().hex[:8]}"
        app_py = folder / "broker" / "app.py"
        source = app_py.read_text()
        summary = 'summary="Presigned-URL uploads to MinIO, recorded in PostgreSQL.",'
        assert summary in source
        app_py.write_text(source.replace(summary, f'summary="{marker}",'))

        def served() -> bool:
            try:
                info = httpx.get(f"{BROKER}/openapi.json", timeout=2).json()["info"]
            except (httpx.HTTPError, ValueError):
                return False
            return bool(info.get("summary") == marker)

        took = stack.wait_for("the saved change served", served, timeout=20)
        print(f"hot reload: the change was served {took:.1f} s after saving")
        # The restarted app is a whole broker: still ready, still minting tokens.
        stack.wait_for("the reloaded broker ready", stack.answers(f"{BROKER}/readyz"), 30)
        assert dev.token("carol").count(".") == 2
    finally:
        dev.down()


@pytest.mark.parametrize("variable", ["BROKER_JWT_SECRET", "POSTGRES_PASSWORD"])
def test_compose_up_refuses_a_missing_secret_naming_it(folder: Path, variable: str) -> None:
    values = stack.good_secrets()
    values[variable] = ""  # as left by `cp .env.example .env`
    stack.write_env(folder, values)
    refused = Stack(folder)
    try:
        done = refused.compose("up", "--wait", "--detach", check=False, timeout=120)
        assert done.returncode != 0
        assert f"{variable}" in done.stderr and "set it in .env" in done.stderr, done.stderr
        # Not even created (docker compose ps would refuse the same file).
        containers = subprocess.run(
            ["docker", "ps", "--all", "--quiet", "--filter", f"label={PROJECT_LABEL}"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert containers.stdout.strip() == ""
    finally:
        refused.down()


def test_compose_up_refuses_a_weak_secret_naming_it(folder: Path) -> None:
    values = stack.good_secrets()
    values["BROKER_JWT_SECRET"] = "too-short"
    stack.write_env(folder, values)
    refused = Stack(folder)
    try:
        done = refused.compose("up", "--wait", "--detach", check=False, timeout=600)
        assert done.returncode != 0
        # `migrate` (broker init) checks the settings first and says which one is wrong; the
        # broker, which waits for it to complete, never starts.
        assert "BROKER_JWT_SECRET" in refused.logs("migrate")
        assert refused.compose("ps", "--quiet", "broker").stdout.strip() == ""
    finally:
        refused.down()


def test_compose_broker_exits_and_health_names_the_dependency_that_never_answers(
    user_stack: Stack,
) -> None:
    user_stack.up()
    # PostgreSQL frozen (docker pause: the container runs, its server answers nothing).
    user_stack.compose("pause", "postgres")
    try:
        late = user_stack.compose(
            "run", "--rm", "--no-deps", "--no-TTY", "--env", "BROKER_STARTUP_TIMEOUT_SECONDS=5",
            "broker",
            check=False, timeout=120,
        )  # fmt: skip
        said = late.stdout + late.stderr
        assert late.returncode != 0, said
        assert '"event": "startup.failed", "for": "postgres"' in said, said
        assert "within 5 s (BROKER_STARTUP_TIMEOUT_SECONDS)" in said, said
        stack.wait_for(
            "postgres reported unhealthy",
            lambda: user_stack.health("postgres") == "unhealthy",
            timeout=120,
        )
        assert user_stack.health("minio") == "healthy"
    finally:
        user_stack.compose("unpause", "postgres")
    stack.wait_for("postgres healthy again", lambda: user_stack.health("postgres") == "healthy", 60)

    # MinIO gone: the running broker's /readyz names it, and a starting broker gives up.
    user_stack.compose("stop", "minio")

    def names_minio() -> bool:
        ready = httpx.get(f"{BROKER}/readyz", timeout=10)
        return ready.status_code == 503 and ready.json()["error"]["details"]["unavailable"] == [
            "minio"
        ]

    stack.wait_for("/readyz naming minio", names_minio, timeout=30)
    late = user_stack.compose(
        "run", "--rm", "--no-deps", "--no-TTY", "--env", "BROKER_STARTUP_TIMEOUT_SECONDS=5",
        "broker",
        check=False, timeout=120,
    )  # fmt: skip
    said = late.stdout + late.stderr
    assert late.returncode != 0, said
    assert '"event": "startup.failed", "for": "minio"' in said, said
