"""The real PostgreSQL and MinIO the suite runs against, and the broker serving on a real port.

Services come from, in order: environment variables (BROKER_TEST_*), testcontainers when
a Docker engine answers and already holds the real PostgreSQL and MinIO images, or the local
binaries started by the same code as `make run`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import uvicorn
from starlette.types import ASGIApp

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


POSTGRES_IMAGE = "postgres:15"
# The label tests/compose/ puts on the stand-in base images it builds from Debian packages
# where no registry answers: they are for the compose test only, never for testcontainers.
STAND_IN_LABEL = "org.broker.stand-in"


def _minio_image() -> str:
    return os.environ.get("BROKER_TEST_MINIO_IMAGE", "minio/minio:latest")


def _real_image_present(image: str) -> bool:
    """Whether the engine holds `image` locally and it is not one of our stand-ins.

    Only local images count: a pull may hang where no registry is reachable, and a Docker
    engine answering does not mean the images the containers need can be had.
    """
    probe = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image],
        capture_output=True,
        check=False,
        text=True,
        timeout=20,
    )
    return probe.returncode == 0 and STAND_IN_LABEL not in probe.stdout


def _containers_available() -> bool:
    """A Docker engine answers and already has the real PostgreSQL and MinIO images."""
    if not shutil.which("docker"):
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=20)
    if probe.returncode != 0:
        return False
    return all(_real_image_present(image) for image in (POSTGRES_IMAGE, _minio_image()))


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
    minio = DockerContainer(_minio_image())
    for key, value in minio_env.items():
        minio.with_env(key, value)
    minio.with_command("server /data/minio").with_exposed_ports(9000)
    minio.with_kwargs(extra_hosts={"host.docker.internal": "host-gateway"})
    with PostgresContainer(POSTGRES_IMAGE, driver=None) as pg, minio:
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
    elif _containers_available():
        with from_containers() as found:
            yield found
    else:
        with from_local_binaries(state_dir) as found:
            yield found


async def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """A fresh database next to `admin_url`'s, empty or a copy of `template`; returns its URL."""
    conn = await asyncpg.connect(admin_url)
    try:
        copy_of = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{copy_of}')
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


async def seal_template(admin_url: str, name: str) -> None:
    """Refuse connections to `name`: CREATE DATABASE ... TEMPLATE fails while any is open."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    finally:
        await conn.close()


async def drop_database(admin_url: str, name: str) -> None:
    """Drop `name`, ending whatever sessions a test left on it (WITH FORCE: PostgreSQL 13+)."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def migrate_database(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate.upgrade(conn)
    finally:
        await conn.close()


class Databases:
    """Each test's own database: a copy of one template migrated once (CREATE DATABASE ...
    TEMPLATE), dropped afterwards.

    Copies and drops are made on two worker threads, out of the tests' way: the next test's
    copy is made while the current test runs, and a drop waits (PostgreSQL checks every
    100 ms) for the sessions the test's broker has just closed to end, which must not hold up
    the next copy. close() drops what is left and reports the first drop that failed.
    """

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.template = f"broker_template_{secrets.token_hex(4)}"
        url = run(create_database(admin_url, self.template))
        run(migrate_database(url))  # type: ignore[arg-type]
        run(seal_template(admin_url, self.template))
        self.copying = concurrent.futures.ThreadPoolExecutor(1, "copy-database")
        self.dropping = concurrent.futures.ThreadPoolExecutor(1, "drop-database")
        self.drops: list[concurrent.futures.Future[object]] = []
        self.next = self.copying.submit(self._copy)

    def _copy(self) -> tuple[str, str]:
        name = f"broker_test_{secrets.token_hex(4)}"
        url = run(create_database(self.admin_url, name, template=self.template))
        return name, url  # type: ignore[return-value]

    def create(self) -> tuple[str, str]:
        """A fresh migrated database: its name and URL."""
        made, self.next = self.next, self.copying.submit(self._copy)
        return made.result()

    def drop(self, name: str) -> None:
        self.drops.append(self.dropping.submit(run, drop_database(self.admin_url, name)))

    def close(self) -> None:
        spare, _ = self.next.result()
        self.copying.shutdown(wait=True)
        self.drop(spare)
        self.dropping.shutdown(wait=True)
        run(drop_database(self.admin_url, self.template))
        for drop in self.drops:
            drop.result()  # raises what a drop raised


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
        webhook_sender=False,  # and webhook sending rounds, unless they start a sender
        sse_heartbeat_seconds=0.5,
        cors_origins=(found.page_origin,),
        multipart_part_size_bytes=5 * 1024 * 1024,
        db_pool_min=1,
        db_pool_max=5,
    )


@contextmanager
def own_bucket(settings: config.Settings) -> Iterator[None]:
    """settings.s3_bucket, created for the block (not subscribed to the webhook), then emptied
    and removed."""
    store = storage.Storage(settings)
    store.client.create_bucket(Bucket=settings.s3_bucket)
    try:
        yield
    finally:
        remove_bucket(store.client, settings.s3_bucket)


@contextmanager
def subscribed(settings: config.Settings) -> Iterator[None]:
    """MinIO reports settings.s3_bucket's events to the webhook targets during the block (and
    not afterwards, so emptying the bucket sends no events)."""
    store = storage.Storage(settings)
    store.ensure_bucket(list(settings.s3_notify_arns))
    try:
        yield
    finally:
        store.ensure_bucket([])


def remove_bucket(s3: Any, bucket: str) -> None:
    """Delete every object and unfinished multipart upload in `bucket`, then the bucket."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    s3.delete_bucket(Bucket=bucket)


class BrokerServer:
    """The broker app served by uvicorn on a real port, in a background thread: a second
    broker next to the test's own (which BrokerSlot serves).

    A response still streaming at stop (an SSE stream a test left open) is cancelled after a
    second instead of being waited for.
    """

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
                timeout_graceful_shutdown=1,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        _wait_started(self.server, self.thread, self.url)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class BrokerSlot:
    """One uvicorn server on the port MinIO's webhook targets call, serving for the whole
    session whichever broker app the running test has plugged in.

    Each test plugs in a fresh app from create_app(its settings), and the slot runs that app's
    lifespan the way uvicorn does (ASGI lifespan messages), so the test gets its own pool,
    clients and LISTEN connection on its own database. This costs ~0.04 s a test, where
    stopping a uvicorn server costs ~0.15 s (its tick and shutdown pauses); and the port never
    closes between tests. With no app plugged in, requests get 503, as from a broker whose
    database is down (MinIO's queued webhook target retries those).
    """

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.app: ASGIApp | None = None
        self.state: dict[str, Any] = {}
        self.lifespan: _Lifespan | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server = uvicorn.Server(
            uvicorn.Config(
                self,
                host="127.0.0.1",
                port=port,
                log_config=None,
                access_log=False,
                lifespan="off",  # the plugged-in apps' lifespans are run by plug() and unplug()
                timeout_graceful_shutdown=1,
            )
        )
        self.thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self.app
        if app is None:
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": 503, "headers": []})
                await send({"type": "http.response.body", "body": b"no broker plugged in"})
            return
        await app({**scope, "state": dict(self.state)}, receive, send)

    def start(self) -> None:
        self.thread.start()
        _wait_started(self.server, self.thread, self.url)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def plug(self, settings: config.Settings) -> None:
        """Serve a fresh broker app for `settings`, once its lifespan has started."""
        app = create_app(settings)
        lifespan = _Lifespan(app)
        self._on_loop(lifespan.startup())
        self.app, self.state, self.lifespan = app, lifespan.state, lifespan

    def unplug(self) -> None:
        """Stop serving the app and run its lifespan's shutdown."""
        lifespan, self.app, self.state, self.lifespan = self.lifespan, None, {}, None
        if lifespan is not None:
            self._on_loop(lifespan.shutdown())

    def _on_loop(self, coro: Any) -> None:
        assert self.loop is not None, "the slot is not serving"
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)


class _Lifespan:
    """An ASGI app's lifespan, driven by messages as a server drives it (ASGI lifespan spec)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self.to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self.task = asyncio.create_task(self.app(scope, self.to_app.get, self.from_app.put))
        try:
            await self._exchange("lifespan.startup")
        except RuntimeError:
            with contextlib.suppress(Exception):
                await self.task  # it re-raises what the failure message already shows
            raise

    async def shutdown(self) -> None:
        await self._exchange("lifespan.shutdown")
        assert self.task is not None
        await self.task

    async def _exchange(self, event: str) -> None:
        await self.to_app.put({"type": event})
        reply = await self.from_app.get()
        if reply["type"] != f"{event}.complete":
            raise RuntimeError(f"{event} failed: {reply.get('message', reply)}")


def _wait_started(server: uvicorn.Server, thread: threading.Thread, url: str) -> None:
    """Poll (every few ms, so a test's start stays short) until uvicorn listens on `url`."""
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the broker on {url} did not start within 30 s")
        time.sleep(0.002)
    if not server.started:
        raise RuntimeError(f"the broker on {url} did not start; see the log above")


def run(coro: object) -> object:
    """Run a coroutine to completion from synchronous test code."""
    return asyncio.run(coro)  # type: ignore[arg-type]
