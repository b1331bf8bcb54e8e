"""Local PostgreSQL and MinIO as plain processes, for `broker dev` and the test suite."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# broker/dev/devstack.py -> the checkout (`make run` and the tests run from one).
REPO_ROOT = Path(__file__).resolve().parents[2]
MINIO_VERSION_FILE = REPO_ROOT / ".minio-version"
MINIO_MODULE = "github.com/minio/minio"
# The two MinIO webhook targets the broker subscribes its bucket to (see README, "Webhook").
QUEUED_TARGET = "QUEUED"
DIRECT_TARGET = "DIRECT"


class StackError(Exception):
    """A local service could not be installed or started; the message says what to do."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def terminate(process: subprocess.Popen[bytes]) -> None:
    """Stop a process: SIGTERM, then SIGKILL if it is still there after 20 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(check: object, timeout: float, what: str) -> None:
    """Poll `check()` until it is true, or raise StackError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")


def postgres_bin_dir() -> Path:
    """The directory of the newest installed PostgreSQL server binaries."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise StackError("PostgreSQL server binaries not found: apt-get install -y postgresql")


def minio_binary() -> Path:
    """The minio binary, built with `go install` at the pinned version when none is found."""
    found = shutil.which("minio")
    gobin = Path(os.environ.get("GOBIN") or _go_env("GOPATH") + "/bin") / "minio"
    if found:
        return Path(found)
    if gobin.exists():
        return gobin
    version = MINIO_VERSION_FILE.read_text().strip()
    print(f"building MinIO {version} with go install (a few minutes, once)...", flush=True)
    result = subprocess.run(["go", "install", f"{MINIO_MODULE}@{version}"], check=False)
    if result.returncode != 0 or not gobin.exists():
        raise StackError(f"go install {MINIO_MODULE}@{version} failed; is Go >= 1.24 installed?")
    return gobin


def _go_env(name: str) -> str:
    if not shutil.which("go"):
        raise StackError("no minio binary and no Go toolchain to build one: install Go >= 1.24")
    return subprocess.run(
        ["go", "env", name], capture_output=True, text=True, check=True
    ).stdout.strip()


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: run its commands as the 'postgres' user then."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster under `base_dir`, listening on 127.0.0.1:`port` only."""

    base_dir: Path
    port: int
    password: str
    user: str = "broker"
    database: str = "broker"
    durable: bool = True

    def __post_init__(self) -> None:
        self.base_dir = self._reachable(self.base_dir.resolve())

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @staticmethod
    def _reachable(base_dir: Path) -> Path:
        """As root the server runs as 'postgres', which may not reach a folder under /root;
        then the cluster lives in /var/tmp under a name derived from the wanted folder."""
        if os.geteuid() != 0:
            return base_dir
        base_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(base_dir, "postgres")
        probe = subprocess.run([*_as_postgres_user(), "test", "-w", str(base_dir)], check=False)
        if probe.returncode == 0:
            return base_dir
        digest = hashlib.sha256(str(base_dir.resolve()).encode()).hexdigest()[:12]
        fallback = Path("/var/tmp") / f"broker-pg-{digest}"
        fallback.mkdir(parents=True, exist_ok=True)
        shutil.chown(fallback, "postgres")
        return fallback

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*_as_postgres_user(), *args], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise StackError(
                f"{Path(args[0]).name} failed: {result.stderr.strip() or result.stdout.strip()}"
            )

    def start(self) -> None:
        """Create the cluster on first use, then start it and wait until it accepts connections."""
        self.stop()  # a server left running by a run that crashed
        if port_in_use(self.port):
            raise StackError(f"port {self.port} is taken; pick another PostgreSQL port")
        bin_dir = postgres_bin_dir()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / "PG_VERSION").exists():
            pwfile = self.base_dir / "pgpass.tmp"
            pwfile.write_text(self.password)
            if os.geteuid() == 0:
                shutil.chown(pwfile, "postgres")
            try:
                self._run(
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.user,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                )
            finally:
                pwfile.unlink()
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k ''"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.base_dir / "postgres.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self._create_database()

    def _create_database(self) -> None:
        """Create the database unless it exists, with the cluster's own psql (\\gexec runs
        the CREATE only when the SELECT returns it): no database driver needed here."""
        script = (
            "SELECT format('CREATE DATABASE %I', :'name') "
            "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name')\\gexec\n"
        )
        result = subprocess.run(
            [
                str(postgres_bin_dir() / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                f"name={self.database}",
                f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres",
            ],
            input=script,
            # In the environment, not the command line, where `ps` would show it.
            env={**os.environ, "PGPASSWORD": self.password},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"creating database {self.database!r} failed: {result.stderr.strip()}")

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended)."""
        if not (self.data_dir / "postmaster.pid").exists():
            return
        pg_ctl = str(postgres_bin_dir() / "pg_ctl")
        running = subprocess.run(
            [*_as_postgres_user(), pg_ctl, "-D", str(self.data_dir), "status"],
            capture_output=True,
            check=False,
        )
        if running.returncode == 0:
            self._run(pg_ctl, "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stop the server and delete the cluster: for throwaway clusters (tests, bench),
        whose folder may be the /var/tmp fallback that nobody else would delete."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


@dataclass
class LocalMinio:
    """A single-node MinIO in `data_dir` whose bucket events go to the broker's webhook.

    With `drives` > 1 it runs erasure-coded over that many data paths (`data_dir`/drive1...),
    the layout of a server with several disks.
    """

    data_dir: Path
    port: int
    root_user: str
    root_password: str
    webhook_endpoint: str
    webhook_token: str
    cors_origins: str = "*"
    drives: int = 1
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """The server's settings: credentials, and two webhook targets for the broker.

        QUEUED spools events to disk and retries until the broker answers 2xx (no loss, up
        to ~3 s late); DIRECT posts at once but drops an event it cannot deliver. With
        MINIO_API_SYNC_EVENTS=on a PUT returns only after both have taken the event.
        """
        env = {
            "MINIO_ROOT_USER": self.root_user,
            "MINIO_ROOT_PASSWORD": self.root_password,
            "MINIO_BROWSER": "off",
            "MINIO_API_SYNC_EVENTS": "on",
            "MINIO_SYNC_BOOT": "on",
            "MINIO_API_CORS_ALLOW_ORIGIN": self.cors_origins,
            "MINIO_UPDATE": "off",
        }
        for target in (QUEUED_TARGET, DIRECT_TARGET):
            env[f"MINIO_NOTIFY_WEBHOOK_ENABLE_{target}"] = "on"
            env[f"MINIO_NOTIFY_WEBHOOK_ENDPOINT_{target}"] = self.webhook_endpoint
            env[f"MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_{target}"] = self.webhook_token
        if self.drives > 1:
            # Erasure-coded MinIO refuses drives on the root disk ("drive not found"), as all
            # of a test's folders are; MINIO_CI_CD lifts that check, for tests only.
            env["MINIO_CI_CD"] = "on"
        env[f"MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_{QUEUED_TARGET}"] = str(
            (self.data_dir.parent / "minio-queue").resolve()
        )
        return env

    @property
    def data_paths(self) -> list[Path]:
        """The folders MinIO stores objects in: `data_dir`, or one per drive under it."""
        if self.drives == 1:
            return [self.data_dir]
        return [self.data_dir / f"drive{n}" for n in range(1, self.drives + 1)]

    @property
    def pid_file(self) -> Path:
        return self.data_dir.parent / "minio.pid"

    def _stop_leftover(self) -> None:
        """Stop a server on our data folder left running by a run that crashed."""
        try:
            pid = int(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if str(self.data_paths[0]).encode() in cmdline:
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), 20, "the old MinIO to exit")

    def start(self) -> None:
        """Start the server and wait until /minio/health/cluster says it can take writes."""
        self._stop_leftover()
        if port_in_use(self.port):
            raise StackError(f"port {self.port} is taken; pick another MinIO port")
        for path in self.data_paths:
            path.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir.parent / "minio.log", "ab")
        self.process = subprocess.Popen(
            [
                str(minio_binary()),
                "server",
                *(str(path) for path in self.data_paths),
                "--address",
                f"127.0.0.1:{self.port}",
                "--quiet",
            ],
            env={**os.environ, **self.environment()},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid_file.write_text(str(self.process.pid))
        wait_until(self._healthy, 60, f"MinIO on port {self.port} (log: {log.name})")

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise StackError(f"MinIO exited with code {self.process.returncode}; see minio.log")
        try:
            with urllib.request.urlopen(f"{self.endpoint}/minio/health/cluster", timeout=1) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """Stop the server and wait for it to exit."""
        if self.process is not None:
            terminate(self.process)
        self.process = None
