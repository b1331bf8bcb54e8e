"""`make bench`: the broker against a minimal baseline, and upload-to-finalized latency.

One run, everything on 127.0.0.1, in a temporary folder, a few minutes at most:

1. start PostgreSQL (durable: fsync and synchronous_commit on, as in production) and
   MinIO (its webhook targets point at the broker's port, chosen in advance), migrate,
   create and subscribe the bucket;
2. start the broker (`broker serve --workers 1`) and the baseline (bench/baseline_app.py:
   the same body shape, the same INSERT, no auth, no presign), each with a pool of 10;
3. warm both up, then wrk them in rounds (baseline then broker, broker then baseline, ...)
   and compare the medians over rounds of requests/s, p50 and p99;
4. upload files one after the other through the real flow (create, PUT to the presigned
   URL) and measure how long after the PUT returned each record was finalized, next to
   plain PUTs to a bucket without notifications;
5. the sections of bench/webhooks.py, bench/multipart.py, bench/listing.py and
   bench/content.py (sniffing's cost, scan throughput against a local clamd, which this
   run starts and the broker scans with: BROKER_CLAMD_ADDRESS);
6. print a report; stop everything that was started, also on Ctrl-C.

Exit status: 0 when the run completed (targets may still read MISS), 1 when the run
itself failed (a non-2xx answer, a socket error, an upload never finalized, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from bench import content, downloads, listing, missed, multipart, ratelimit, sse, webhooks
from broker import auth, config
from broker.adapters import migrate, storage
from broker.dev import clamd, devstack

REPO = Path(__file__).resolve().parent.parent
# BENCH_QUICK=1: the create-upload throughput only, to compare changes while working on them.
QUICK = os.environ.get("BENCH_QUICK") == "1"
# BENCH_ONLY=listing: the listing and search section alone (1,000,000 rows, EXPLAIN, p99s).
# BENCH_ONLY=webhooks: the app-webhook section alone (bench/webhooks.py).
# BENCH_ONLY=webhook-burst: its burst of deliveries alone.
# BENCH_ONLY=content: content sniffing's cost and malware-scan throughput (bench/content.py).
# BENCH_ONLY=sse: 10,000 idle live-status streams: memory, idle CPU, fan-out (bench/sse.py).
# BENCH_ONLY=missed: both webhook targets off; PUT -> finalized by the reconciler (~2 min).
# BENCH_ONLY=downloads: the download route with its audit row against without (~2.5 min).
# BENCH_ONLY=ratelimit: create throughput with rate limits off and on, same run (~3 min).
ONLY = os.environ.get("BENCH_ONLY", "")
KNOWN_ONLY = (
    "",
    "listing",
    "webhooks",
    "webhook-burst",
    "content",
    "sse",
    "missed",
    "ratelimit",
    "downloads",
)
if ONLY not in KNOWN_ONLY:
    raise SystemExit(f"BENCH_ONLY={ONLY!r}: only {', '.join(map(repr, KNOWN_ONLY[1:]))} are known")
BIN = Path(sys.executable).parent
LUA_SCRIPT = Path(__file__).with_name("create_upload.lua")
GET_SCRIPT = Path(__file__).with_name("get_with_token.lua")

POOL_SIZE = 10  # both apps: BROKER_DB_POOL_MIN = BROKER_DB_POOL_MAX
WRK_THREADS = 2
WRK_CONNECTIONS = 32
WRK_SECONDS = 10
WARMUP_SECONDS = 3
ROUNDS = 6  # baseline/broker rounds, each going first in turn: medians settle the noise
FINALIZE_UPLOADS = 500
UPLOAD_BYTES = 1024
FINALIZE_DEADLINE_SECONDS = 30

TARGET_THROUGHPUT_RATIO = 0.85  # broker req/s >= 85% of the baseline's
TARGET_P99_RATIO = 1.2  # broker p99 <= 1.2x the baseline's
TARGET_FINALIZE_P99_MS = 250.0

SUBJECT = "bench"
BUCKET = "uploads"
CONTROL_BUCKET = "control"  # no notification subscription: plain PUT cost


class BenchError(Exception):
    """The run itself failed; the message says what went wrong."""


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non2xx: int
    socket_errors: int
    app_cpu_ms: float = 0.0  # CPU time of the app process per request
    db_cpu_ms: float = 0.0  # CPU time of all PostgreSQL processes per request


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    base_url: str


# ----------------------------------------------------------------------------- helpers


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


def ensure_wrk() -> str:
    """The wrk binary; installed with apt-get when missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchError("wrk is not installed and we are not root: sudo apt-get install -y wrk")
    print("wrk not found: apt-get install -y wrk ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
        subprocess.run(install, env=env, check=False)
    found = shutil.which("wrk")
    if not found:
        raise BenchError("could not install wrk with apt-get; install it and run again")
    return found


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """Our environment without any BROKER_* setting of the caller, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    return {**env, **extra}


def start_server(
    name: str, command: list[str], env: dict[str, str], workdir: Path, port: int, health: str
) -> Server:
    """Start an HTTP server process and wait until `health` answers 200."""
    log = workdir / f"{name}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=workdir,  # no stray .env file is read from here
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop it in order
        )
    server = Server(name, process, log, f"http://127.0.0.1:{port}")

    def up() -> bool:
        if process.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise BenchError(f"{name} exited with code {process.returncode} ({log}):\n{tail}")
        try:
            return (
                httpx.get(server.base_url + health, timeout=1, trust_env=False).status_code == 200
            )
        except httpx.HTTPError:
            return False

    devstack.wait_until(up, 60, f"{name} on port {port} (log: {log})")
    return server


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """user + system CPU time a process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def postgres_cpu(postgres: devstack.LocalPostgres) -> dict[int, float]:
    """CPU seconds of the postmaster and each of its children, by pid."""
    postmaster = int((postgres.data_dir / "postmaster.pid").read_text().split()[0])
    usage = {postmaster: cpu_seconds(postmaster)}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                usage[int(stat.parent.name)] = cpu_seconds(int(stat.parent.name))
    return usage


# ----------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    postgres: devstack.LocalPostgres
    minio: devstack.LocalMinio
    broker: Server
    baseline: Server
    settings: config.Settings
    token: str
    receiver: Server  # the app server of the webhook section (bench/webhook_receiver.py)


@contextlib.contextmanager
def running_stack(workdir: Path) -> Iterator[Stack]:
    """PostgreSQL, MinIO, the broker and the baseline; all stopped on the way out."""
    broker_port = devstack.free_port()
    baseline_port = devstack.free_port()
    webhook_token = secrets.token_hex(24)
    jwt_secret = secrets.token_hex(32)
    postgres = devstack.LocalPostgres(
        workdir / "pg", devstack.free_port(), secrets.token_hex(16), durable=True
    )
    minio = devstack.LocalMinio(
        data_dir=workdir / "minio" / "data",
        port=devstack.free_port(),
        root_user="broker-bench",
        root_password=secrets.token_hex(16),
        webhook_endpoint=f"http://127.0.0.1:{broker_port}/v1/webhooks/minio",
        webhook_token=webhook_token,
    )
    with contextlib.ExitStack() as stack:
        print(f"starting PostgreSQL (durable) on 127.0.0.1:{postgres.port} ...", flush=True)
        stack.callback(postgres.remove)
        postgres.start()
        print(f"starting MinIO on 127.0.0.1:{minio.port} ...", flush=True)
        stack.callback(minio.stop)
        minio.start()

        settings = config.Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=postgres.url,
            s3_endpoint=minio.endpoint,
            s3_access_key=minio.root_user,
            s3_secret_key=minio.root_password,
            s3_bucket=BUCKET,
            jwt_secret=jwt_secret,
            webhook_token=webhook_token,
            db_pool_min=POOL_SIZE,
            db_pool_max=POOL_SIZE,
            log_level="WARNING",
        )
        asyncio.run(migrate_database(postgres.url))
        storage.Storage(settings).ensure_bucket(list(settings.s3_notify_arns))
        policies_file = workdir / "policies.toml"
        # the default policy stays the built-in one
        policies_file.write_text(content.POLICIES + missed.POLICIES + ratelimit.POLICIES)

        env = child_environment(
            {
                "BROKER_DATABASE_URL": postgres.url,
                "BROKER_S3_ENDPOINT": minio.endpoint,
                "BROKER_S3_ACCESS_KEY": minio.root_user,
                "BROKER_S3_SECRET_KEY": minio.root_password,
                "BROKER_S3_BUCKET": BUCKET,
                "BROKER_JWT_SECRET": jwt_secret,
                "BROKER_WEBHOOK_TOKEN": webhook_token,
                "BROKER_DB_POOL_MIN": str(POOL_SIZE),
                "BROKER_DB_POOL_MAX": str(POOL_SIZE),
                "BROKER_LOG_LEVEL": "WARNING",
                "BROKER_POLICIES_FILE": str(policies_file),
            }
        )
        if ONLY in ("", "content"):  # the content section's scans; no other section scans
            local_clamd = clamd.LocalClamd(workdir / "clamd")
            print("starting clamd (local signature database) ...", flush=True)
            stack.callback(local_clamd.remove)
            local_clamd.start()
            env["BROKER_CLAMD_ADDRESS"] = local_clamd.address
        receiver_port = devstack.free_port()
        env["BROKER_WEBHOOK_ALLOWED_HOSTS"] = f"127.0.0.1:{receiver_port}"
        print(f"starting the webhook receiver on 127.0.0.1:{receiver_port} ...", flush=True)
        receiver_cmd = [
            sys.executable,
            "-m",
            "bench.webhook_receiver",
            "--port",
            str(receiver_port),
        ]
        receiver = start_server(
            "receiver",
            receiver_cmd,
            {**env, "PYTHONPATH": str(REPO)},
            workdir,
            receiver_port,
            "/received",
        )
        stack.callback(stop_process, receiver.process)

        print(f"starting the broker on 127.0.0.1:{broker_port} ...", flush=True)
        broker_cmd = [str(BIN / "broker"), "serve", "--port", str(broker_port), "--workers", "1"]
        broker = start_server("broker", broker_cmd, env, workdir, broker_port, "/healthz")
        stack.callback(stop_process, broker.process)

        print(f"starting the baseline on 127.0.0.1:{baseline_port} ...", flush=True)
        baseline_cmd = [sys.executable, "-m", "bench.baseline_app", "--port", str(baseline_port)]
        baseline_env = {**env, "PYTHONPATH": str(REPO)}
        baseline = start_server(
            "baseline", baseline_cmd, baseline_env, workdir, baseline_port, "/baseline/healthz"
        )
        stack.callback(stop_process, baseline.process)

        token = auth.issue_token(jwt_secret, SUBJECT, ttl_seconds=3600)
        yield Stack(postgres, minio, broker, baseline, settings, token, receiver)
        print("stopping the broker, the baseline, MinIO and PostgreSQL ...", flush=True)


async def migrate_database(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate.upgrade(conn)
    finally:
        await conn.close()


# ----------------------------------------------------------------------------- throughput

_PERCENTILE_LINE = re.compile(r"^\s*(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(output: str) -> WrkResult:
    """The figures of one `wrk --latency` run with create_upload.lua."""
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1])  # type: ignore[index]
        requests = int(re.search(r"(\d+) requests in", output)[1])  # type: ignore[index]
        non2xx = int(re.search(r"BENCH_NON2XX (\d+)", output)[1])  # type: ignore[index]
    except TypeError:
        raise BenchError(f"could not read wrk's output:\n{output}") from None
    latency = {int(q): float(v) * _UNIT_MS[unit] for q, v, unit in _PERCENTILE_LINE.findall(output)}
    if 50 not in latency or 99 not in latency:
        raise BenchError(f"no latency distribution in wrk's output:\n{output}")
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors = sum(int(n) for n in errors.groups()) if errors else 0
    return WrkResult(rps, latency[50], latency[99], requests, non2xx, socket_errors)


def run_wrk(
    wrk: str,
    server: Server,
    path: str,
    stack: Stack,
    seconds: int,
    policy: str | None = None,
    script: Path = LUA_SCRIPT,
) -> WrkResult:
    """One wrk run of `script` (creates under `policy`, if given); also the CPU time the app
    and PostgreSQL spent per request meanwhile."""
    url = server.base_url + path
    command = [
        wrk,
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        stack.token,
        *([policy] if policy else []),
    ]
    app_before, db_before = cpu_seconds(server.process.pid), postgres_cpu(stack.postgres)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
    app_after, db_after = cpu_seconds(server.process.pid), postgres_cpu(stack.postgres)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    result = parse_wrk(done.stdout)
    if result.non2xx or result.socket_errors or result.requests == 0:
        raise BenchError(
            f"wrk against {url}: {result.non2xx} non-2xx answers, {result.socket_errors} "
            f"socket errors of {result.requests} requests:\n{done.stdout}"
        )
    db_used = sum(cpu - db_before.get(pid, 0.0) for pid, cpu in db_after.items())
    result.app_cpu_ms = (app_after - app_before) * 1000 / result.requests
    result.db_cpu_ms = db_used * 1000 / result.requests
    return result


def check_one_request(url: str, token: str) -> None:
    """One request by hand first, so a wrong setup says why instead of counting non-2xx."""
    body = {"filename": "bench.bin", "content_type": "application/octet-stream", "size": 1024}
    headers = {"authorization": f"Bearer {token}"}
    response = httpx.post(url, json=body, headers=headers, timeout=10, trust_env=False)
    if response.status_code != 201:
        raise BenchError(f"POST {url} answered {response.status_code}: {response.text}")


def throughput(stack: Stack, wrk: str) -> dict[str, list[WrkResult]]:
    """Warm up both apps, then ROUNDS rounds of one wrk run each, taking turns going first."""
    targets = {
        "baseline": (stack.baseline, "/baseline/uploads"),
        "broker": (stack.broker, "/v1/uploads"),
    }
    for name, (server, path) in targets.items():
        check_one_request(server.base_url + path, stack.token)
        print(f"warming up {name} ({WARMUP_SECONDS}s) ...", flush=True)
        run_wrk(wrk, server, path, stack, WARMUP_SECONDS)
    results: dict[str, list[WrkResult]] = {name: [] for name in targets}
    for round_number in range(1, ROUNDS + 1):
        # Every insert makes the next one a little dearer (the table and its indexes grow):
        # whoever always went second would always meet the bigger table. Take turns.
        order = list(targets.items())
        if round_number % 2 == 0:
            order.reverse()
        for name, (server, path) in order:
            result = run_wrk(wrk, server, path, stack, WRK_SECONDS)
            results[name].append(result)
            print(
                f"round {round_number}/{ROUNDS} {name:8} {result.requests_per_second:6.0f} req/s"
                f"  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms"
                f"  CPU/req app {result.app_cpu_ms:.2f} ms, PostgreSQL {result.db_cpu_ms:.2f} ms",
                flush=True,
            )
    return results


# ----------------------------------------------------------------------------- finalize


@dataclass
class FinalizeResult:
    create_ms: list[float]
    put_ms: list[float]
    control_put_ms: list[float]
    finalize_after_put_ms: list[float]  # finalized_at - PUT end; negative = before it returned


def finalize_latency(stack: Stack) -> FinalizeResult:
    """Sequential uploads through the real flow, each followed by a PUT to CONTROL_BUCKET."""
    control_settings = stack.settings.model_copy(update={"s3_bucket": CONTROL_BUCKET})
    control = storage.Storage(control_settings)
    control.client.create_bucket(Bucket=CONTROL_BUCKET)  # no notification configuration

    create_ms: list[float] = []
    put_ms: list[float] = []
    control_put_ms: list[float] = []
    put_end: dict[uuid.UUID, float] = {}
    auth_header = {"authorization": f"Bearer {stack.token}"}
    with httpx.Client(timeout=30, trust_env=False) as client:
        for index in range(FINALIZE_UPLOADS):
            data = os.urandom(UPLOAD_BYTES)
            body = {"filename": f"f{index}.bin", "content_type": "application/octet-stream"}
            started = time.perf_counter()
            created = client.post(
                stack.broker.base_url + "/v1/uploads",
                json={**body, "size": len(data)},
                headers=auth_header,
            )
            create_ms.append((time.perf_counter() - started) * 1000)
            if created.status_code != 201:
                raise BenchError(f"create answered {created.status_code}: {created.text}")
            upload = created.json()

            started = time.perf_counter()
            put = client.put(
                upload["upload"]["url"], content=data, headers=upload["upload"]["headers"]
            )
            ended = time.time()
            put_ms.append((time.perf_counter() - started) * 1000)
            if put.status_code != 200:
                raise BenchError(f"PUT answered {put.status_code}: {put.text}")
            put_end[uuid.UUID(upload["id"])] = ended

            presigned = control.presign_put(
                f"control/{index}",
                content_type=body["content_type"],
                size=len(data),
                sha256_base64=None,
                expires_in=900,
            )
            started = time.perf_counter()
            plain = client.put(presigned.url, content=data, headers=presigned.headers)
            control_put_ms.append((time.perf_counter() - started) * 1000)
            if plain.status_code != 200:
                raise BenchError(f"control PUT answered {plain.status_code}: {plain.text}")

    finalized_at = asyncio.run(wait_finalized(stack.postgres.url, list(put_end)))
    after_put = [(finalized_at[i] - put_end[i]) * 1000 for i in put_end]
    return FinalizeResult(create_ms, put_ms, control_put_ms, after_put)


async def wait_finalized(url: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, float]:
    """finalized_at (epoch seconds) of every upload, polling until all are finalized."""
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + FINALIZE_DEADLINE_SECONDS
        while True:
            rows = await conn.fetch(
                "SELECT id, status, finalized_at FROM uploads WHERE id = ANY($1::uuid[])", ids
            )
            finalized = {r["id"]: r["finalized_at"].timestamp() for r in rows if r["finalized_at"]}
            if len(finalized) == len(ids):
                return finalized
            if time.monotonic() > deadline:
                statuses: dict[str, int] = {}
                for row in rows:
                    statuses[row["status"]] = statuses.get(row["status"], 0) + 1
                raise BenchError(
                    f"{len(ids) - len(finalized)} of {len(ids)} uploads not finalized after "
                    f"{FINALIZE_DEADLINE_SECONDS}s (statuses: {statuses}, "
                    f"{len(ids) - len(rows)} records missing)"
                )
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


# ----------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def machine_facts(wrk: str, load_before: float) -> list[str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout
    pg_version = devstack.postgres_bin_dir().parent.name
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"date      {now}",
        f"machine   nproc {len(os.sched_getaffinity(0))} ({cpu}), {platform.platform()}",
        f"          load average (1 min) {load_before:.2f} before the run,"
        f" {os.getloadavg()[0]:.2f} after",
        f"python    {platform.python_version()} ({sys.executable})",
        f"wrk       {wrk_version.split(' [')[0].strip()}; PostgreSQL {pg_version}",
        "setup     all on 127.0.0.1, wrk on the same machine as the servers; PostgreSQL",
        "          durable (fsync=on, synchronous_commit=on, as in production); each app:",
        f"          1 uvicorn worker (uvloop, httptools), asyncpg pool {POOL_SIZE}/{POOL_SIZE},",
        "          no reset on release, gc.freeze() after start-up",
    ]


def throughput_table(runs: dict[str, list[WrkResult]]) -> list[str]:
    lines = [
        f"Throughput: wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s --latency,"
        f" median of {ROUNDS} alternating rounds (CPU = ms per request)",
        f"  {'endpoint':32} {'req/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'app CPU':>8}"
        f" {'PG CPU':>7}   req/s by round",
    ]
    medians = {}
    for name, path in (("baseline", "POST /baseline/uploads"), ("broker", "POST /v1/uploads")):
        rounds = runs[name]
        rps = statistics.median(r.requests_per_second for r in rounds)
        p50 = statistics.median(r.p50_ms for r in rounds)
        p99 = statistics.median(r.p99_ms for r in rounds)
        app_cpu = statistics.median(r.app_cpu_ms for r in rounds)
        db_cpu = statistics.median(r.db_cpu_ms for r in rounds)
        medians[name] = (rps, p99)
        each = " ".join(f"{r.requests_per_second:.0f}" for r in rounds)
        lines.append(
            f"  {name + ' ' + path:32} {rps:6.0f} {p50:7.2f} {p99:7.2f} {app_cpu:8.3f}"
            f" {db_cpu:7.3f}   {each}"
        )
    total = sum(r.requests for rounds in runs.values() for r in rounds)
    rps_ratio = medians["broker"][0] / medians["baseline"][0]
    p99_ratio = medians["broker"][1] / medians["baseline"][1]
    return [
        *lines,
        f"  ({total} requests measured: all 2xx, no socket errors)",
        f"  throughput broker/baseline {rps_ratio:5.2f}x   target >= {TARGET_THROUGHPUT_RATIO:.2f}x"
        f"   {verdict(rps_ratio >= TARGET_THROUGHPUT_RATIO)}",
        f"  p99        broker/baseline {p99_ratio:5.2f}x   target <= {TARGET_P99_RATIO:.2f}x"
        f"   {verdict(p99_ratio <= TARGET_P99_RATIO)}",
    ]


def finalize_table(fin: FinalizeResult) -> list[str]:
    late = [max(0.0, ms) for ms in fin.finalize_after_put_ms]
    rows = [
        ("create: POST /v1/uploads", fin.create_ms),
        ("PUT to the subscribed bucket (sync webhook)", fin.put_ms),
        ("PUT to a bucket without notifications", fin.control_put_ms),
        ("finalized after the PUT returned, max(0, d)", late),
    ]
    lines = [
        f"Finalize: {FINALIZE_UPLOADS} uploads of {UPLOAD_BYTES} B, sequential (concurrency 1):",
        "  create -> PUT to the presigned URL -> d = finalized_at (PostgreSQL) - PUT end",
        f"  {'measure':46} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    for label, values in rows:
        lines.append(
            f"  {label:46} {percentile(values, 50):8.2f} {percentile(values, 99):8.2f}"
            f" {max(values):8.2f}"
        )
    before = sum(1 for ms in fin.finalize_after_put_ms if ms <= 0) / len(fin.finalize_after_put_ms)
    webhook_cost = percentile(fin.put_ms, 50) - percentile(fin.control_put_ms, 50)
    late_p99 = percentile(late, 99)
    return [
        *lines,
        f"  finalized before the PUT returned: {before:.1%}"
        " (MINIO_API_SYNC_EVENTS=on, DIRECT target)",
        f"  the synchronous webhook adds ~{webhook_cost:.2f} ms to the median PUT",
        f"  finalize p99 {late_p99:.2f} ms   target < {TARGET_FINALIZE_P99_MS:.0f} ms"
        f"   {verdict(late_p99 < TARGET_FINALIZE_P99_MS)}",
    ]


def report(
    wrk: str,
    load_before: float,
    runs: dict[str, list[WrkResult]],
    fin: FinalizeResult,
    sections: list[list[str]],
) -> str:
    rule = "=" * 88
    return "\n".join(
        [
            "",
            rule,
            "broker bench",
            rule,
            *machine_facts(wrk, load_before),
            "",
            *throughput_table(runs),
            "",
            *finalize_table(fin),
            *[line for section in sections for line in ["", *section]],
            rule,
        ]
    )


# ----------------------------------------------------------------------------- main


def listing_section(stack: Stack) -> list[str]:
    return listing.run(stack.postgres.url, stack.broker.base_url, stack.settings.jwt_secret)


def webhook_section(stack: Stack, wrk: str) -> list[str]:
    """bench/webhooks.py on this stack, its create rounds run by this file's wrk runner."""

    def create_run(seconds: int) -> float:
        return run_wrk(wrk, stack.broker, "/v1/uploads", stack, seconds).requests_per_second

    try:
        return webhooks.run(
            stack.broker.base_url, stack.receiver.base_url, stack.postgres.url,
            stack.settings.jwt_secret, stack.token, create_run, WRK_SECONDS,
        )  # fmt: skip
    except webhooks.WebhookBenchError as exc:
        raise BenchError(str(exc)) from exc


def webhook_burst(stack: Stack, wrk: str) -> list[str]:
    def create_run(seconds: int) -> float:
        return run_wrk(wrk, stack.broker, "/v1/uploads", stack, seconds).requests_per_second

    try:
        return webhooks.run_burst(
            stack.broker.base_url, stack.receiver.base_url, stack.postgres.url,
            stack.settings.jwt_secret, create_run,
        )  # fmt: skip
    except webhooks.WebhookBenchError as exc:
        raise BenchError(str(exc)) from exc


def downloads_section(stack: Stack, wrk: str) -> list[str]:
    def measure(path: str, seconds: int) -> WrkResult:
        return run_wrk(wrk, stack.broker, path, stack, seconds, script=GET_SCRIPT)

    try:
        return downloads.run(stack.postgres.url, SUBJECT, BUCKET, measure, WRK_SECONDS)
    except RuntimeError as exc:
        raise BenchError(str(exc)) from exc


def sse_section(stack: Stack) -> list[str]:
    try:
        return sse.run(
            stack.broker.base_url, stack.postgres.url, stack.token, stack.broker.process.pid
        )
    except sse.SseBenchError as exc:
        raise BenchError(str(exc)) from exc


def missed_section(stack: Stack) -> list[str]:
    try:
        return missed.run(stack.broker.base_url, stack.settings, stack.token)
    except missed.MissedBenchError as exc:
        raise BenchError(str(exc)) from exc


def ratelimit_section(stack: Stack, wrk: str) -> list[str]:
    """bench/ratelimit.py: create rounds without and with a rate limit, by this file's wrk."""

    def create_run(seconds: int, policy: str | None) -> WrkResult:
        return run_wrk(wrk, stack.broker, "/v1/uploads", stack, seconds, policy)

    return ratelimit.run(stack.postgres.url, create_run, WARMUP_SECONDS, WRK_SECONDS, ROUNDS)


def content_section(stack: Stack) -> list[str]:
    try:
        return content.run(stack.broker.base_url, stack.postgres.url, stack.token)
    except content.ContentBenchError as exc:
        raise BenchError(str(exc)) from exc


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # run the same clean-up as Ctrl-C


def main() -> int:
    # Ctrl-C and SIGTERM both end in the clean-up below, even if the parent ignored SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    # Every request of this run goes to 127.0.0.1: never through a proxy.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    workdir.chmod(0o755)  # as root, PostgreSQL runs as 'postgres' and must reach its folder
    keep = True
    try:
        wrk = ensure_wrk()
        with running_stack(workdir) as stack:
            if ONLY:
                only: dict[str, Callable[[], list[str]]] = {
                    "listing": lambda: listing_section(stack),
                    "webhooks": lambda: webhook_section(stack, wrk),
                    "webhook-burst": lambda: webhook_burst(stack, wrk),
                    "content": lambda: content_section(stack),
                    "sse": lambda: sse_section(stack),
                    "missed": lambda: missed_section(stack),
                    "ratelimit": lambda: ratelimit_section(stack, wrk),
                    "downloads": lambda: downloads_section(stack, wrk),
                }
                load_before = os.getloadavg()[0]
                print("\n".join(only[ONLY]()))
                print(
                    f"load average (1 min) {load_before:.2f} before the section,"
                    f" {os.getloadavg()[0]:.2f} after; nproc {len(os.sched_getaffinity(0))}"
                )
                keep = False
                return 0
            runs = throughput(stack, wrk)
            if QUICK:
                print("\n".join(throughput_table(runs)))
                keep = False
                return 0
            print(f"finalize: {FINALIZE_UPLOADS} sequential uploads ...", flush=True)
            fin = finalize_latency(stack)
            sections = [
                webhook_section(stack, wrk),
                downloads_section(stack, wrk),
                multipart.run(workdir, stack.settings, stack.broker.base_url),
                listing_section(stack),
                content_section(stack),
                sse_section(stack),
                missed_section(stack),
                ratelimit_section(stack, wrk),
            ]
        print(report(wrk, load_before, runs, fin, sections))
        print(f"run took {time.monotonic() - started:.0f}s")
        keep = False
        return 0
    except (BenchError, devstack.StackError) as exc:
        print(f"\nbench FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        keep = False
        return 130
    finally:
        if keep:
            print(f"logs and data kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
