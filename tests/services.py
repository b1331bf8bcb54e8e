"""The real PostgreSQL and MinIO the suite runs against, and the broker serving on a real port.

Services come from, in order: environment variables (BROKER_TEST_*), testcontainers when
a Docker engine answers, or the local binaries started by the same code as `make run`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import uvicorn

from broker import config
from broker.adapters import migrate, storage
from broker.app import create_app
from broker.dev import devstack


@dataclass
class Services:
    """Where PostgreSQL and MinIO answer, and what MinIO's webhook targets point at."""

    database_url: str  # a role that may CREATE DATABASE
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    webhook_token: str
    broker_port: int
    # Browser tests serve their pages from this origin (allowed by the broker's and MinIO's
    # CORS) and from the foreign one (allowed by neither).
    page_port: int
    foreign_port: int
    minio: devstack.LocalMinio | None = None  # set when the suite controls the MinIO process

    @property
    def page_origin(self) -> str:
        return f"http://127.0.0.1:{self.page_port}"


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=20)
    return probe.returncode == 0


@contextmanager
def from_environment() -> Iterator[Services]:
    env = os.environ
    yield Services(
        database_url=env["BROKER_TEST_DATABASE_URL"],
        s3_endpoint=env["BROKER_TEST_S3_ENDPOINT"],
        s3_access_key=env["BROKER_TEST_S3_ACCESS_KEY"],
        s3_secret_key=env["BROKER_TEST_S3_SECRET_KEY"],
        webhook_token=env["BROKER_TEST_WEBHOOK_TOKEN"],
        broker_port=int(env["BROKER_TEST_BROKER_PORT"]),
        page_port=int(env["BROKER_TEST_PAGE_PORT"]),
        foreign_port=devstack.free_port(),
    )


@contextmanager
def from_containers() -> Iterator[Services]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.postgres import PostgresContainer

    port, page_port = devstack.free_port(), devstack.free_port()
    token = secrets.token_hex(24)
    minio_env = devstack.LocalMinio(
        data_dir=Path("/data/minio"),
        port=9000,
        root_user="broker-test",
        root_password=secrets.token_hex(16),
        webhook_endpoint=f"http://host.docker.internal:{port}/v1/webhooks/minio",
        webhook_token=token,
        cors_origins=f"http://127.0.0.1:{page_port}",
    ).environment()
    minio = DockerContainer(os.environ.get("BROKER_TEST_MINIO_IMAGE", "minio/minio:latest"))
    for key, value in minio_env.items():
        minio.with_env(key, value)
    minio.with_command("server /data/minio").with_exposed_ports(9000)
    minio.with_kwargs(extra_hosts={"host.docker.internal": "host-gateway"})
    with PostgresContainer("postgres:15", driver=None) as pg, minio:
        wait_for_logs(minio, "API:")
        yield Services(
            database_url=pg.get_connection_url(),
            s3_endpoint=f"http://{minio.get_container_host_ip()}:{minio.get_exposed_port(9000)}",
            s3_access_key=minio_env["MINIO_ROOT_USER"],
            s3_secret_key=minio_env["MINIO_ROOT_PASSWORD"],
            webhook_token=token,
            broker_port=port,
            page_port=page_port,
            foreign_port=devstack.free_port(),
        )


@contextmanager
def from_local_binaries(state_dir: Path) -> Iterator[Services]:
    port, page_port = devstack.free_port(), devstack.free_port()
    token = secrets.token_hex(24)
    postgres = devstack.LocalPostgres(
        state_dir / "pg", devstack.free_port(), secrets.token_hex(16), durable=False
    )
    minio = devstack.LocalMinio(
        data_dir=state_dir / "minio",
        port=devstack.free_port(),
        root_user="broker-test",
        root_password=secrets.token_hex(16),
        webhook_endpoint=f"http://127.0.0.1:{port}/v1/webhooks/minio",
        webhook_token=token,
        cors_origins=f"http://127.0.0.1:{page_port}",
    )
    postgres.start()
    try:
        minio.start()
        try:
            yield Services(
                database_url=postgres.url,
                s3_endpoint=minio.endpoint,
                s3_access_key=minio.root_user,
                s3_secret_key=minio.root_password,
                webhook_token=token,
                broker_port=port,
                page_port=page_port,
                foreign_port=devstack.free_port(),
                minio=minio,
            )
        finally:
            minio.stop()
    finally:
        postgres.remove()


@contextmanager
def services(state_dir: Path) -> Iterator[Services]:
    """The services for this run, by the order of preference in the module docstring."""
    if os.environ.get("BROKER_TEST_DATABASE_URL"):
        with from_environment() as found:
            yield found
    elif _docker_answers():
        with from_containers() as found:
            yield found
    else:
        with from_local_binaries(state_dir) as found:
            yield found


async def create_database(admin_url: str, name: str) -> str:
    """A fresh, empty database next to `admin_url`'s; returns its URL."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


async def migrate_database(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate.upgrade(conn)
    finally:
        await conn.close()


TEST_POLICIES = """
[policies.avatars]
content_types = ["image/png", "image/jpeg"]
max_size = "64 KiB"
key_prefix = "avatars/"
multipart = false
url_ttl_seconds = 120

[policies.limited]
max_size = "1 MiB"
quota = { count = 10, bytes = "10 MiB" }
"""


def broker_settings(
    found: Services, database_url: str, bucket: str, policies_file: Path
) -> config.Settings:
    """Settings for a broker on the test services (explicit: the environment is not read)."""
    policies_file.write_text(TEST_POLICIES)
    return config.Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        s3_endpoint=found.s3_endpoint,
        s3_access_key=found.s3_access_key,
        s3_secret_key=found.s3_secret_key,
        s3_bucket=bucket,
        jwt_secret=secrets.token_hex(32),
        webhook_token=found.webhook_token,
        max_upload_bytes=64 * 1024 * 1024,
        allowed_content_types=("text/*", "image/*", "application/octet-stream"),
        startup_timeout_seconds=10,
        policies_file=policies_file,
        reconcile_interval_seconds=0,  # tests run reconciler passes themselves
        sse_heartbeat_seconds=0.5,
        cors_origins=(found.page_origin,),
        multipart_part_size_bytes=5 * 1024 * 1024,
        db_pool_min=1,
        db_pool_max=5,
    )


def subscribe_bucket(settings: config.Settings) -> storage.Storage:
    store = storage.Storage(settings)
    store.ensure_bucket(list(settings.s3_notify_arns))
    return store


class BrokerServer:
    """The broker app served by uvicorn on a real port, in a background thread."""

    def __init__(self, settings: config.Settings, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings),
                host="127.0.0.1",
                port=port,
                log_config=None,
                access_log=False,
                lifespan="on",
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        devstack.wait_until(
            lambda: self.server.started or not self.thread.is_alive(),
            30,
            f"the broker on {self.url}",
        )
        if not self.server.started:
            raise RuntimeError(f"the broker on {self.url} did not start; see the log above")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def run(coro: object) -> object:
    """Run a coroutine to completion from synchronous test code."""
    return asyncio.run(coro)  # type: ignore[arg-type]
