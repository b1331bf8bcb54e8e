"""make bench's live-status section (issue 12): many idle SSE streams on one broker process.

STREAMS streams are opened from a client process of their own (raw asyncio sockets, so the
client costs little), FANOUT_ROUNDS x FANOUT_WATCHERS of them on a few uploads and the
rest one per upload. Reported, against the broker process:
- memory per idle stream: its RSS with every stream open minus before, divided by STREAMS;
- idle CPU: its CPU time over IDLE_SECONDS with every stream open and nothing changing
  (heartbeats only), as a share of one core;
- fan-out: an upload watched by FANOUT_WATCHERS streams changes state (a history row is
  written, as finalization does); the time from the change's commit to each watcher
  receiving it, p50 and p99 over every watcher of every round.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg

OWNER = "bench"  # bench/run.py's SUBJECT: its token reads these streams
STREAMS = int(os.environ.get("BENCH_SSE_STREAMS", "10000"))
FANOUT_WATCHERS = 100
FANOUT_ROUNDS = 10
IDLE_SECONDS = 30
TARGET_KIB_PER_STREAM = 16
TARGET_FANOUT_P99_MS = 50
TARGET_IDLE_CORE_SHARE = 0.05
OPEN_DEADLINE_SECONDS = 180


class SseBenchError(Exception):
    """The section could not run; the message says why."""


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise SseBenchError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _create_uploads(database_url: str, owner: str, count: int) -> list[uuid.UUID]:
    """Pending uploads with their first history row, as the create route writes them."""
    conn = await asyncpg.connect(database_url)
    try:
        ids = [uuid.uuid4() for _ in range(count)]
        await conn.execute(
            "INSERT INTO uploads (id, owner, filename, content_type, size, bucket, object_key,"
            " policy, transfer, expires_at)"
            " SELECT u, $2, 'live.txt', 'text/plain', 1, 'bench', 'sse/' || u, 'default', 'put',"
            " now() + interval '1 day' FROM unnest($1::uuid[]) AS u",
            ids,
            owner,
        )
        await conn.execute(
            "INSERT INTO upload_history (upload_id, status, actor)"
            " SELECT u, 'pending', 'owner' FROM unnest($1::uuid[]) AS u",
            ids,
        )
        return ids
    finally:
        await conn.close()


async def _finalize(database_url: str, upload_id: uuid.UUID) -> float:
    """The state change, as finalization writes it; its commit time (epoch seconds)."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute(
                "UPDATE uploads SET status = 'finalized', finalized_at = now() WHERE id = $1",
                upload_id,
            )
            at = await conn.fetchval(
                "INSERT INTO upload_history (upload_id, status, actor) VALUES ($1, 'finalized',"
                " 'bench') RETURNING extract(epoch FROM clock_timestamp())",
                upload_id,
            )
        return float(at)
    finally:
        await conn.close()


def run(base_url: str, database_url: str, token: str, broker_pid: int) -> list[str]:
    """Open the streams from a client process, measure, and return the report's lines."""
    watched = asyncio.run(_create_uploads(database_url, OWNER, FANOUT_ROUNDS))
    single = asyncio.run(
        _create_uploads(database_url, OWNER, STREAMS - FANOUT_ROUNDS * FANOUT_WATCHERS)
    )
    targets = [str(u) for u in watched for _ in range(FANOUT_WATCHERS)] + [str(u) for u in single]
    rss_before = rss_bytes(broker_pid)
    client = subprocess.Popen(
        [sys.executable, "-m", "bench.sse", "client", base_url, token],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdin is not None and client.stdout is not None
    client.stdin.write(json.dumps(targets) + "\n")
    client.stdin.flush()
    opened = json.loads(client.stdout.readline())
    if opened["open"] != STREAMS:
        raise SseBenchError(f"only {opened['open']} of {STREAMS} streams opened: {opened}")
    rss_open = rss_bytes(broker_pid)
    cpu_start, idle_start = cpu_seconds(broker_pid), time.monotonic()
    time.sleep(IDLE_SECONDS)  # the measured interval itself: nothing to wait for
    idle_share = (cpu_seconds(broker_pid) - cpu_start) / (time.monotonic() - idle_start)
    latencies: list[float] = []
    for upload_id in watched:
        at = asyncio.run(_finalize(database_url, upload_id))
        client.stdin.write(json.dumps({"watch": str(upload_id), "at": at}) + "\n")
        client.stdin.flush()
        latencies += json.loads(client.stdout.readline())["latencies_ms"]
    client.stdin.close()
    client.wait(timeout=60)
    per_stream_kib = (rss_open - rss_before) / STREAMS / 1024
    p50 = statistics.median(latencies)
    p99 = sorted(latencies)[max(0, round(0.99 * len(latencies)) - 1)]
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return [
        f"Live status: {STREAMS} idle SSE streams on one broker process (file limit {limit}):",
        f"  memory per idle stream {per_stream_kib:.1f} KiB (RSS {rss_before / 2**20:.0f} ->"
        f" {rss_open / 2**20:.0f} MiB)   target < {TARGET_KIB_PER_STREAM} KiB   "
        f"{_verdict(per_stream_kib < TARGET_KIB_PER_STREAM)}",
        f"  idle CPU {idle_share * 100:.1f}% of a core over {IDLE_SECONDS} s   target <"
        f" {TARGET_IDLE_CORE_SHARE * 100:.0f}%   {_verdict(idle_share < TARGET_IDLE_CORE_SHARE)}",
        f"  fan-out to {FANOUT_WATCHERS} watchers of one upload, {FANOUT_ROUNDS} rounds:"
        f" p50 {p50:.1f} ms, p99 {p99:.1f} ms   target p99 < {TARGET_FANOUT_P99_MS} ms   "
        f"{_verdict(p99 < TARGET_FANOUT_P99_MS)}",
    ]


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# ----------------------------------------------------------------- the client process


async def _stream(
    host: str, port: int, token: str, upload_id: str, ready: asyncio.Queue[str],
    finals: dict[str, list[float]],
) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET /v1/uploads/{upload_id}/events HTTP/1.1\r\nhost: {host}\r\n"
        f"authorization: Bearer {token}\r\naccept: text/event-stream\r\n\r\n".encode()
    )
    first = True
    while line := await reader.readline():
        if line.startswith(b"data: "):
            if first:
                first = False
                await ready.put(upload_id)
            elif b'"finalized"' in line:
                finals.setdefault(upload_id, []).append(time.time())
                break
    writer.close()


async def client(base_url: str, token: str) -> None:
    host, port = base_url.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=2**24)  # the list of targets is one long line
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    targets = json.loads(await stdin.readline())
    ready: asyncio.Queue[str] = asyncio.Queue()
    finals: dict[str, list[float]] = {}
    tasks = []
    for index, upload_id in enumerate(targets):
        tasks.append(asyncio.create_task(_stream(host, int(port), token, upload_id, ready, finals)))
        if index % 200 == 199:
            await asyncio.sleep(0)  # let connections settle rather than flood the backlog
    open_count = 0
    deadline = time.monotonic() + OPEN_DEADLINE_SECONDS
    while open_count < len(targets) and time.monotonic() < deadline:
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                await ready.get()
            open_count += 1
        except TimeoutError:
            break
    print(json.dumps({"open": open_count}), flush=True)
    while line := await stdin.readline():
        order = json.loads(line)
        deadline = time.monotonic() + 30
        while len(finals.get(order["watch"], [])) < FANOUT_WATCHERS:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        arrivals = finals.get(order["watch"], [])
        print(json.dumps({"latencies_ms": [(t - order["at"]) * 1000 for t in arrivals]}),
              flush=True)  # fmt: skip
    for task in tasks:
        task.cancel()


if __name__ == "__main__" and sys.argv[1:2] == ["client"]:
    asyncio.run(client(sys.argv[2], sys.argv[3]))
