"""Real services for the tests: PostgreSQL and MinIO for the session; for each test that uses
them, its own database (copied from a template migrated once), bucket and broker."""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
import botocore.config
import httpx
import hypothesis
import pytest

from broker import auth, config
from broker.adapters import storage
from broker.dev import clamd
from tests import services
from tests.tcp_proxy import TcpProxy
from tests.waiting import query

# tests/compose builds and runs the Docker images: `make compose-test` runs it on its own.
collect_ignore = [] if os.environ.get("BROKER_COMPOSE_TEST") else ["compose"]

# Property tests run in full by default (`make test`); `make test-unit`, the quick loop that
# must stay under 10 s, samples fewer examples with --hypothesis-profile=quick.
hypothesis.settings.register_profile("thorough", max_examples=300)
hypothesis.settings.register_profile("quick", max_examples=50)
hypothesis.settings.load_profile("thorough")


@pytest.fixture(scope="session")
def found_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Services]:
    with services.services(tmp_path_factory.mktemp("stack")) as found:
        yield found


@pytest.fixture(scope="session")
def clamd_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[clamd.LocalClamd]:
    """clamd for the session, on a unix socket (`.address`) and 127.0.0.1 TCP
    (`.tcp_address`), with the test signature only (clamd.EICAR -> clamd.TEST_SIGNATURE).
    Local whatever the other services' source: it starts in about 0.1 s. A test may stop it
    (`with tests.clamd.down(clamd_service): ...`); the next `clamd_address` starts it again."""
    local = clamd.LocalClamd(
        tmp_path_factory.mktemp("clamd"), tcp_port=services.devstack.free_port()
    )
    local.start()
    yield local
    local.remove()


@pytest.fixture
def clamd_address(clamd_service: clamd.LocalClamd) -> str:
    """BROKER_CLAMD_ADDRESS of the session's clamd, running (restarted if a test left it down)."""
    if clamd_service.process is None or clamd_service.process.poll() is not None:
        clamd_service.start()
    return clamd_service.address


@pytest.fixture(scope="session")
def databases(found_services: services.Services) -> Iterator[services.Databases]:
    """Where each test's database comes from: the template is migrated once per session."""
    made = services.Databases(found_services.database_url)
    yield made
    made.close()


@pytest.fixture
def database_url(databases: services.Databases) -> Iterator[str]:
    """This test's own migrated database, dropped afterwards: what a test counts in it is
    exactly what the test made."""
    name, url = databases.create()
    yield url
    databases.drop(name)


@pytest.fixture(scope="session")
def pg_proxy(found_services: services.Services) -> Iterator[TcpProxy]:
    """The broker reaches PostgreSQL through this proxy, so a test can take the database away."""
    parts = urlsplit(found_services.database_url)
    proxy = TcpProxy(
        services.devstack.free_port(), parts.hostname or "127.0.0.1", parts.port or 5432
    )
    yield proxy
    proxy.close()


@pytest.fixture(scope="session")
def policies_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config") / "policies.toml"


def _bucket_settings(found: services.Services, bucket: str, policies_file: Path) -> config.Settings:
    """Settings for creating and subscribing `bucket` (no broker runs on them)."""
    return services.broker_settings(found, found.database_url, bucket, policies_file)


@pytest.fixture(scope="session")
def session_bucket(found_services: services.Services, policies_file: Path) -> Iterator[str]:
    """The bucket tests share, subscribed to the webhook for the whole session: each test
    touches only the keys its uploads were given."""
    settings = _bucket_settings(found_services, f"test-{secrets.token_hex(4)}", policies_file)
    with services.own_bucket(settings), services.subscribed(settings):
        yield settings.s3_bucket


@pytest.fixture
def bucket(
    request: pytest.FixtureRequest,
    found_services: services.Services,
    policies_file: Path,
    session_bucket: str,
) -> Iterator[str]:
    """The shared bucket, or one of the test's own if it is marked `own_bucket`: for tests
    that count what the whole bucket holds (the reconciler's orphan sweep lists all of it)."""
    if request.node.get_closest_marker("own_bucket") is None:
        yield session_bucket
        return
    settings = _bucket_settings(found_services, f"own-{secrets.token_hex(4)}", policies_file)
    with services.own_bucket(settings), services.subscribed(settings):
        yield settings.s3_bucket


@pytest.fixture
def settings(
    found_services: services.Services,
    database_url: str,
    bucket: str,
    pg_proxy: TcpProxy,
    policies_file: Path,
) -> config.Settings:
    """This test's broker settings: its own database, reached through pg_proxy."""
    parts = urlsplit(database_url)
    netloc = parts.netloc.rsplit("@", 1)
    proxied = f"{netloc[0]}@127.0.0.1:{pg_proxy.listen_port}" if len(netloc) == 2 else netloc[0]
    return services.broker_settings(
        found_services, urlunsplit(parts._replace(netloc=proxied)), bucket, policies_file
    )


@pytest.fixture(scope="session")
def broker_slot(found_services: services.Services) -> Iterator[services.BrokerSlot]:
    """The HTTP server on the fixed port MinIO's webhook targets call."""
    slot = services.BrokerSlot(found_services.broker_port)
    slot.start()
    yield slot
    slot.stop()


@pytest.fixture
def broker(settings: config.Settings, broker_slot: services.BrokerSlot) -> Iterator[str]:
    """The base URL of this test's broker: a fresh app on the test's database and bucket."""
    broker_slot.plug(settings)
    yield broker_slot.url
    broker_slot.unplug()


@pytest.fixture
def api(broker: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=broker, timeout=15) as client:
        yield client


@pytest.fixture
def owner() -> str:
    """Whose uploads the test makes (a fresh name, so it never matches another test's)."""
    return f"user-{uuid.uuid4()}"


@pytest.fixture
def token_for(settings: config.Settings) -> Callable[[str], dict[str, str]]:
    def headers(subject: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {auth.issue_token(settings.jwt_secret, subject)}"}

    return headers


@pytest.fixture
def auth_headers(owner: str, token_for: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return token_for(owner)


@pytest.fixture(scope="session")
def s3(found_services: services.Services) -> Any:
    """A root-credential S3 client, for what only an operator (or an attacker) could do."""
    return boto3.client(
        "s3",
        endpoint_url=found_services.s3_endpoint,
        aws_access_key_id=found_services.s3_access_key,
        aws_secret_access_key=found_services.s3_secret_key,
        region_name="us-east-1",
        config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def create_upload(
    api: httpx.Client, headers: dict[str, str], data: bytes, **fields: Any
) -> dict[str, Any]:
    """POST /v1/uploads for `data` and return the 201 body."""
    body = {"filename": "file.txt", "content_type": "text/plain", "size": len(data), **fields}
    response = api.post("/v1/uploads", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def put_bytes(upload: dict[str, Any], data: bytes, **extra_headers: str) -> httpx.Response:
    """PUT the bytes exactly as a browser would: the returned URL and headers, nothing else."""
    headers = {**upload["upload"]["headers"], **extra_headers}
    return httpx.put(upload["upload"]["url"], content=data, headers=headers, timeout=30)


def wait_for_status(
    api: httpx.Client, headers: dict[str, str], upload_id: str, status: str, timeout: float = 20
) -> dict[str, Any]:
    """Poll the record until it reaches `status`, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    record: dict[str, Any] = {}
    while time.monotonic() < deadline:
        record = api.get(f"/v1/uploads/{upload_id}", headers=headers).json()
        if record.get("status") == status:
            return record
        time.sleep(0.05)
    raise AssertionError(f"upload {upload_id} is {record.get('status')!r}, not {status!r}")


def wait_until_object_gone(s3: Any, bucket: str, key: str, timeout: float = 20) -> None:
    """Poll storage until nothing is stored under `key`, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except s3.exceptions.ClientError:
            return
        time.sleep(0.05)
    raise AssertionError(f"{key} is still in the bucket after {timeout}s")


@pytest.fixture
def sql(database_url: str) -> Callable[..., Any]:
    """Run one statement straight on the test database (for time travel and checks)."""

    def run(statement: str, *args: Any) -> list[Any]:
        return query(database_url, statement, *args)

    return run


@contextmanager
def notifications_off(store: storage.Storage, settings: config.Settings) -> Iterator[None]:
    """Unsubscribe the bucket from the webhook for a while: MinIO then reports nothing."""
    store.ensure_bucket([])
    try:
        yield
    finally:
        store.ensure_bucket(list(settings.s3_notify_arns))


@pytest.fixture
def store(settings: config.Settings) -> storage.Storage:
    return storage.Storage(settings)


@pytest.fixture
def broker_env(
    settings: config.Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commands read BROKER_* settings; point them at the test services."""
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        text = ",".join(value) if isinstance(value, tuple) else str(value)
        monkeypatch.setenv(f"BROKER_{name.upper()}", text)
    monkeypatch.setenv("BROKER_DATABASE_URL", database_url)
