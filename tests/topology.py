"""A production-shaped deployment on loopback, for the replica tests and the fault suite.

One PostgreSQL (a cluster of its own, so a fault can restart it), MinIO erasure-coded over
4 drives, N `broker serve` replicas behind HAProxy, which health-checks each one's /readyz,
and MinIO's webhook targets pointing at HAProxy (not at one replica). Every piece is a real
process the tests can kill, stop or cut (the broker reaches PostgreSQL through a TcpProxy).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import httpx

from broker import auth
from broker.dev import devstack
from tests import services
from tests.tcp_proxy import TcpProxy
from tests.waiting import query, until

BROKER = str(Path(sys.executable).with_name("broker"))
HAPROXY = "/usr/sbin/haproxy"

# Health checks every 500 ms, out after 2 failures, back after 1 success: a SIGTERMed replica
# (its /readyz answers 503 at once) leaves the rotation within about a second, inside its
# 1 s drain. A request that could not reach a replica (connection refused, closed without an
# answer, or 503) is sent again, to another replica (redispatch): safe because the broker's
# writes are idempotent (an event's write is guarded by the upload's expected state, a create
# by the client's Idempotency-Key).
HAPROXY_CONFIG = """\
global
    maxconn 4096
    stats socket {socket} mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout queue 30s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response 503
    # The client's address for the replicas (trusted with BROKER_FORWARDED_ALLOW_IPS).
    option forwardfor

frontend api
    bind 127.0.0.1:{port}
    default_backend brokers

backend brokers
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 1
{servers}
"""

# URLs that expire soon: the reconciler's early check takes an upload whose webhooks were
# missed a few seconds after its PUT (URL expiry + BROKER_RECONCILE_CHECK_GRACE_SECONDS).
SHORT_POLICY = """
[policies.short]
url_ttl_seconds = 3
"""


class Replica:
    """One `broker serve` on a fixed port (HAProxy's config names it), restartable."""

    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.port = devstack.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [BROKER, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def events(self, name: str) -> list[dict[str, Any]]:
        """This replica's JSON log lines whose event is `name`."""
        found = []
        for line in self.log.read_text().splitlines():
            if f'"{name}"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == name:
                found.append(entry)
        return found


class HAProxy:
    """Debian's haproxy in the foreground, with an admin socket for the tests."""

    def __init__(self, base: Path, port: int, replicas: list[Replica]) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.socket = base / "haproxy.sock"
        self.config = base / "haproxy.cfg"
        self.log = base / "haproxy.log"
        servers = "\n".join(f"    server {r.name} 127.0.0.1:{r.port} check" for r in replicas)
        self.config.write_text(
            HAPROXY_CONFIG.format(socket=self.socket, port=port, servers=servers)
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        until("HAProxy's admin socket", self.socket.exists, 10, self.log)

    def command(self, line: str) -> str:
        """One command on the admin socket (`show stat`, `set server b/r0 state drain`)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self) -> dict[str, str]:
        """Each replica's status as HAProxy's health checks see it (UP, DOWN, DRAIN...)."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        states = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "brokers" and row.get("svname") not in ("BACKEND", None):
                states[row["svname"]] = row["status"]
        return states

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@dataclass
class Topology:
    """What the tests drive: the replicas, HAProxy, MinIO, PostgreSQL and the proxy to it."""

    base: Path
    postgres: devstack.LocalPostgres
    minio: devstack.LocalMinio
    pg_proxy: TcpProxy
    haproxy: HAProxy
    replicas: list[Replica]
    jwt_secret: str
    bucket: str
    migrate_outputs: list[str]
    env: dict[str, str]

    @property
    def url(self) -> str:
        """The load balancer: where clients and MinIO's webhook targets go."""
        return self.haproxy.url

    @property
    def database_url(self) -> str:
        """PostgreSQL directly (not through the proxy): for the tests' own checks."""
        return self.postgres.url

    def headers(self, subject: str, admin: bool = False) -> dict[str, str]:
        token = auth.issue_token(self.jwt_secret, subject, admin=admin)
        return {"authorization": f"Bearer {token}"}

    def all_up(self) -> bool:
        states = self.haproxy.server_states()
        return len(states) == len(self.replicas) and all(s == "UP" for s in states.values())

    def restart(self, *replicas: Replica) -> None:
        """Start stopped replicas again, on their ports, and wait until HAProxy sends to them."""
        for replica in replicas:
            replica.start()
        for replica in replicas:
            until(f"{replica.name} is ready", replica.ready, 30, replica.log)
        until("HAProxy sees every replica up", self.all_up, 10, self.haproxy.log)


def _proxied(url: str, port: int) -> str:
    user, _, rest = url.removeprefix("postgresql://").partition("@")
    database = rest.partition("/")[2]
    return f"postgresql://{user}@127.0.0.1:{port}/{database}"


def replica_env(
    found: services.Services, database_url: str, bucket: str, policies: Path, **extra: str
) -> dict[str, str]:
    """The environment of a `broker serve` on the topology (the tests' settings otherwise)."""
    settings = services.broker_settings(found, database_url, bucket, policies)
    policies.write_text(policies.read_text() + SHORT_POLICY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            env[f"BROKER_{name.upper()}"] = text
    env.update(
        BROKER_LOG_LEVEL="INFO",
        BROKER_WEBHOOK_SENDER="true",
        BROKER_DB_POOL_MAX="10",
        BROKER_STARTUP_TIMEOUT_SECONDS="30",
    )
    env.update({f"BROKER_{k.upper()}": v for k, v in extra.items()})
    return env


@contextmanager
def topology(
    base: Path, replicas: int = 3, durable: bool = False, **extra_env: str
) -> Iterator[Topology]:
    """Start everything (see the module docstring); stop everything at the end. `durable`:
    PostgreSQL with fsync on (the fault suite; the replica tests run without, for speed).

    The replicas' schema comes from `broker init` run by every replica at the same moment on
    the empty database, as replicas whose start command migrates would: the advisory lock
    lets one apply each migration and the others find it done (outputs in migrate_outputs).
    """
    base.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(24)
    lb_port = devstack.free_port()
    postgres = devstack.LocalPostgres(
        base / "pg", devstack.free_port(), secrets.token_hex(16), durable=durable
    )
    minio = devstack.LocalMinio(
        data_dir=base / "minio",
        port=devstack.free_port(),
        root_user="broker-topology",
        root_password=secrets.token_hex(16),
        webhook_endpoint=f"http://127.0.0.1:{lb_port}/v1/webhooks/minio",
        webhook_token=token,
        drives=4,
    )
    found = services.Services(
        database_url="",
        s3_endpoint=minio.endpoint,
        s3_access_key=minio.root_user,
        s3_secret_key=minio.root_password,
        webhook_token=token,
        broker_port=lb_port,
        page_port=devstack.free_port(),
        foreign_port=devstack.free_port(),
    )
    started: list[Replica] = []
    haproxy: HAProxy | None = None
    pg_proxy: TcpProxy | None = None
    postgres.start()
    try:
        minio.start()
        pg_proxy = TcpProxy(devstack.free_port(), "127.0.0.1", postgres.port)
        bucket = f"topology-{secrets.token_hex(4)}"
        env = replica_env(
            found, _proxied(postgres.url, pg_proxy.listen_port), bucket, base / "policies.toml",
            **extra_env,
        )  # fmt: skip
        migrate_outputs = _init_at_once(env, replicas, base)
        started = [Replica(f"r{n}", env, base / f"r{n}.log") for n in range(replicas)]
        for replica in started:
            replica.start()
        for replica in started:
            until(f"{replica.name} is ready", replica.ready, 60, replica.log)
        haproxy = HAProxy(base, lb_port, started)
        haproxy.start()
        made = Topology(
            base=base, postgres=postgres, minio=minio, pg_proxy=pg_proxy, haproxy=haproxy,
            replicas=started, jwt_secret=env["BROKER_JWT_SECRET"], bucket=bucket,
            migrate_outputs=migrate_outputs, env=env,
        )  # fmt: skip
        until("HAProxy sees every replica up", made.all_up, 20, haproxy.log)
        yield made
    finally:
        for replica in started:
            replica.kill()
        if haproxy is not None:
            haproxy.stop()
        if pg_proxy is not None:
            pg_proxy.close()
        minio.stop()
        postgres.remove()


def _init_at_once(env: dict[str, str], count: int, base: Path) -> list[str]:
    """`broker init` (migrate, bucket, subscription) `count` times at the same moment."""
    processes = [
        subprocess.Popen(
            [BROKER, "init"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(count)
    ]
    outputs = []
    for process in processes:
        out, _ = process.communicate(timeout=120)
        text = out.decode()
        if process.returncode != 0:
            raise AssertionError(f"broker init failed: {text}")
        outputs.append(text)
    (base / "init.log").write_text("\n---\n".join(outputs))
    return outputs


# ---- load: uploads through the load balancer, as a client that retries would make them


@dataclass
class LoadReport:
    """What clients saw: per upload, its id and whether storage accepted its PUT."""

    attempted: int = 0
    created: dict[int, str] = field(default_factory=dict)  # upload number -> id
    accepted: set[str] = field(default_factory=set)  # ids whose PUT storage answered 200
    statuses: Counter[int] = field(default_factory=Counter)  # every broker answer's status
    # Errors HAProxy answered itself (502: the replica died with the request in flight and
    # every retry failed too; 503: no replica up): counted apart from the broker's answers.
    lb_errors: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # connection errors by kind
    created_at: list[float] = field(default_factory=list)  # monotonic times of each 201
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def bad_5xx(self) -> int:
        """5xx answers other than 503 (which means 'try again': not a failure)."""
        return sum(n for status, n in self.statuses.items() if status >= 500 and status != 503)

    def first_201_after(self, moment: float) -> float | None:
        with self.lock:
            later = [t for t in self.created_at if t >= moment]
        return min(later) - moment if later else None


class Load:
    """`count` uploads (create through `url`, PUT to storage) on `threads` client threads.

    A client retries a create that got no answer, a 502 or a 503 with the same
    Idempotency-Key, and a PUT that storage did not answer, until `patience` seconds have
    passed for that upload; what it saw is in `report`.
    """

    def __init__(
        self, url: str, headers: dict[str, str], count: int, threads: int = 12,
        patience: float = 60, size: int = 64,
    ) -> None:  # fmt: skip
        self.url = url
        self.headers = headers
        self.count = count
        self.threads = threads
        self.patience = patience
        self.size = size
        self.report = LoadReport()
        self.done = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> LoadReport:
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(self._chunk, range(self.threads)))
        self.done.set()
        return self.report

    def start(self) -> None:
        """Run in the background; `finish()` waits for it."""
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()

    def finish(self, timeout: float = 300) -> LoadReport:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the load did not finish"
        return self.report

    def completed(self) -> int:
        with self.report.lock:
            return len(self.report.created)

    def _chunk(self, worker: int) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=30) as api:
            with httpx.Client(timeout=30) as storage:
                for number in range(worker, self.count, self.threads):
                    self._one(api, storage, number)

    def _one(self, api: httpx.Client, storage: httpx.Client, number: int) -> None:
        data = os.urandom(self.size)
        key = str(uuid.uuid4())
        body = {"filename": f"f{number}.bin", "content_type": "application/octet-stream",
                "size": len(data)}  # fmt: skip
        with self.report.lock:
            self.report.attempted += 1
        deadline = time.monotonic() + self.patience
        created = None
        while created is None and time.monotonic() < deadline:
            try:
                response = api.post("/v1/uploads", json=body, headers={"idempotency-key": key})
            except httpx.HTTPError as exc:
                self._failed(type(exc).__name__)
                continue
            with self.report.lock:
                if response.status_code >= 500 and response.text.startswith("<html>"):
                    self.report.lb_errors[response.status_code] += 1  # HAProxy's own page
                else:
                    self.report.statuses[response.status_code] += 1
            # 200: the same Idempotency-Key was answered before (a retry of a create whose
            # answer was lost): the upload the first attempt created.
            if response.status_code in (200, 201):
                created = response.json()
                with self.report.lock:
                    self.report.created[number] = created["id"]
                    self.report.created_at.append(time.monotonic())
            elif response.status_code not in (502, 503, 504):
                self._failed(f"create {response.status_code} {response.text[:120]}")
                return  # a refusal: the client gives up on this file
            else:
                time.sleep(0.1)  # back off before trying again (not synchronisation)
        if created is None:
            self._failed("create: out of patience")
            return
        upload = created["upload"]
        while time.monotonic() < deadline:
            try:
                put = storage.put(upload["url"], content=data, headers=upload["headers"])
            except httpx.HTTPError as exc:
                self._failed(f"PUT {type(exc).__name__}")
                time.sleep(0.1)
                continue
            if put.status_code == 200:
                with self.report.lock:
                    self.report.accepted.add(created["id"])
                return
            if put.status_code < 499:  # 499: MinIO stopped while reading the body
                self._failed(f"PUT {put.status_code} {put.text[:120]}")
                return
            self._failed(f"PUT {put.status_code}")
            time.sleep(0.1)

    def _failed(self, kind: str) -> None:
        with self.report.lock:
            self.report.failures[kind] += 1


def stored(stack: Topology, ids: set[str]) -> set[str]:
    """Of the uploads `ids`, those whose object storage holds (whatever their clients saw:
    a PUT whose answer was lost, and whose retry got 412, still stored the object)."""
    rows = query(
        stack.database_url,
        "SELECT id::text AS id, object_key FROM uploads WHERE id = ANY($1::uuid[])",
        list(ids),
    )
    by_key = {row["object_key"]: row["id"] for row in rows}
    client = boto3.client(
        "s3",
        endpoint_url=stack.minio.endpoint,
        aws_access_key_id=stack.minio.root_user,
        aws_secret_access_key=stack.minio.root_password,
        region_name="us-east-1",
        config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    found = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket):
        for item in page.get("Contents", []):
            if item["Key"] in by_key:
                found.add(by_key[item["Key"]])
    return found


def finalized_counts(database_url: str, ids: set[str]) -> dict[str, int]:
    """For each upload in `ids`: how many 'finalized' rows its history holds."""
    rows = query(
        database_url,
        "SELECT u.id::text AS id, count(h.id) AS n FROM uploads u"
        " LEFT JOIN upload_history h ON h.upload_id = u.id AND h.status = 'finalized'"
        " WHERE u.id = ANY($1::uuid[]) GROUP BY u.id",
        list(ids),
    )
    return {row["id"]: row["n"] for row in rows}


def statuses(database_url: str, ids: set[str]) -> Counter[str]:
    rows = query(database_url, "SELECT status FROM uploads WHERE id = ANY($1::uuid[])", list(ids))
    return Counter(row["status"] for row in rows)


def settle(database_url: str, accepted: set[str], timeout: float) -> set[str]:
    """Wait (up to `timeout`) until every accepted upload is finalized; the ones still not."""
    deadline = time.monotonic() + timeout
    missing = set(accepted)
    while missing and time.monotonic() < deadline:
        rows = query(
            database_url,
            "SELECT id::text AS id FROM uploads WHERE id = ANY($1::uuid[])"
            " AND status = 'finalized'",
            list(missing),
        )
        missing -= {row["id"] for row in rows}
        if missing:
            time.sleep(0.2)
    return missing


def sigterm(replica: Replica) -> None:
    replica.signal(signal.SIGTERM)
