"""make bench's content-checks section (issue 11), against the running stack:

1. sniffing cost: sequential uploads of a real ~10 KiB PNG to a policy that sniffs
   (allow-list image/png, sniff = reject) and to one that does not (sniff = off), in
   alternating rounds; for each, the PUT's duration (MinIO's webhook is synchronous, so
   finalization, sniffing included, happens inside it) and finalized_at - PUT end;
2. scan throughput: distinct 1 MiB files of random bytes (clamd caches the verdicts of
   identical files) uploaded by a few threads to a policy with scan = true; the one broker
   process scans them against a local clamd (broker/dev/clamd.py); files/s from the first
   PUT's end to the last verdict, and PUT end -> finalized p50/p99.

The policies are in POLICIES, written by bench/run.py to the broker's BROKER_POLICIES_FILE.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field

import asyncpg
import httpx

SNIFFED = "bench-sniffed"
UNSNIFFED = "bench-unsniffed"
SCANNED = "bench-scanned"
POLICIES = f"""
[policies.{SNIFFED}]
content_types = ["image/png"]
max_size = "1 MiB"
sniff = "reject"

[policies.{UNSNIFFED}]
content_types = ["image/png"]
max_size = "1 MiB"
sniff = "off"

[policies.{SCANNED}]
content_types = ["application/octet-stream"]
max_size = "2 MiB"
scan = true
"""

SNIFF_UPLOADS = 200  # per variant
SNIFF_ROUNDS = 4  # alternating: each variant goes first in turn
PNG_BYTES = 10 * 1024
SCAN_FILES = 200
SCAN_FILE_BYTES = 1024 * 1024
SCAN_UPLOADERS = 8  # threads PUTting, so the scanner always has a backlog
DEADLINE_SECONDS = 300
TARGET_FINALIZE_P99_MS = 250.0


class ContentBenchError(Exception):
    """The section could not run; the message says why."""


def png(padding: bytes) -> bytes:
    """A valid 8x8 RGB PNG with `padding` in an ancillary chunk (as tests/samples.py)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    width = height = 8
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\0" + b"\xff\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"zzPd", padding)
        + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


@dataclass
class Sent:
    """Uploads PUT so far: PUT durations (ms) and PUT end (epoch seconds) by id."""

    put_ms: list[float] = field(default_factory=list)
    put_end: dict[uuid.UUID, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def upload(client: httpx.Client, base_url: str, token: str, policy: str, data: bytes,
           content_type: str, name: str, sent: Sent) -> None:  # fmt: skip
    """Create through the API, then PUT to the presigned URL; note the PUT in `sent`."""
    body = {"filename": name, "content_type": content_type, "size": len(data), "policy": policy}
    created = client.post(
        f"{base_url}/v1/uploads", json=body, headers={"authorization": f"Bearer {token}"}
    )
    if created.status_code != 201:
        raise ContentBenchError(f"create answered {created.status_code}: {created.text}")
    record = created.json()
    started = time.perf_counter()
    put = client.put(record["upload"]["url"], content=data, headers=record["upload"]["headers"])
    ended = time.time()
    if put.status_code != 200:
        raise ContentBenchError(f"PUT answered {put.status_code}: {put.text}")
    with sent.lock:
        sent.put_ms.append((time.perf_counter() - started) * 1000)
        sent.put_end[uuid.UUID(record["id"])] = ended


async def finalized_at(database_url: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, float]:
    """finalized_at (epoch seconds) of every upload, polling until all are finalized clean
    (scanned) or unscanned; anything else (rejected, quarantined) fails the run."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            rows = await conn.fetch(
                "SELECT id, status, scan_result, finalized_at FROM uploads"
                " WHERE id = ANY($1::uuid[])",
                ids,
            )
            wrong = [r for r in rows if r["status"] not in ("pending", "scanning", "finalized")]
            wrong += [r for r in rows if r["scan_result"] not in (None, "clean")]
            if wrong:
                raise ContentBenchError(f"{len(wrong)} uploads ended wrong: {dict(wrong[0])}")
            done = {r["id"]: r["finalized_at"].timestamp() for r in rows if r["finalized_at"]}
            if len(done) == len(ids):
                return done
            if time.monotonic() > deadline:
                raise ContentBenchError(
                    f"{len(ids) - len(done)} of {len(ids)} uploads not finalized after "
                    f"{DEADLINE_SECONDS}s"
                )
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


def sniff_rounds(
    base_url: str, database_url: str, token: str
) -> dict[str, tuple[Sent, list[float]]]:
    """SNIFF_ROUNDS alternating rounds per variant; (PUTs, finalized - PUT end ms) by policy."""
    results: dict[str, tuple[Sent, list[float]]] = {SNIFFED: (Sent(), []), UNSNIFFED: (Sent(), [])}
    per_round = SNIFF_UPLOADS // SNIFF_ROUNDS
    with httpx.Client(timeout=30, trust_env=False) as client:
        for policy in results:  # warm-up: libmagic's handle, connections
            warm = Sent()
            upload(client, base_url, token, policy, png(os.urandom(PNG_BYTES)), "image/png",
                   "warm.png", warm)  # fmt: skip
            asyncio.run(finalized_at(database_url, list(warm.put_end)))
        for round_number in range(1, SNIFF_ROUNDS + 1):
            order = list(results)
            if round_number % 2 == 0:
                order.reverse()
            for policy in order:
                sent = Sent()
                for index in range(per_round):
                    data = png(os.urandom(PNG_BYTES))
                    upload(client, base_url, token, policy, data, "image/png",
                           f"p{index}.png", sent)  # fmt: skip
                done = asyncio.run(finalized_at(database_url, list(sent.put_end)))
                late = [(done[i] - sent.put_end[i]) * 1000 for i in sent.put_end]
                total, after = results[policy]
                total.put_ms.extend(sent.put_ms)
                total.put_end.update(sent.put_end)
                after.extend(late)
                print(
                    f"content round {round_number}/{SNIFF_ROUNDS} {policy:15} PUT p50 "
                    f"{percentile(sent.put_ms, 50):6.2f} ms p99 {percentile(sent.put_ms, 99):6.2f}"
                    f" ms  finalized after PUT p99 {percentile(late, 99):6.2f} ms",
                    flush=True,
                )
    return results


def scan_throughput(
    base_url: str, database_url: str, token: str
) -> tuple[list[float], float, float]:
    """(PUT end -> finalized ms of each file, seconds from the first PUT start to the last
    PUT end, seconds from the first PUT end to the last finalized_at)."""
    sent = Sent()
    local = threading.local()

    def one(index: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=60, trust_env=False)
        data = os.urandom(SCAN_FILE_BYTES)  # distinct: clamd caches verdicts by content
        upload(client, base_url, token, SCANNED, data, "application/octet-stream",
               f"s{index}.bin", sent)  # fmt: skip

    warm = Sent()
    with httpx.Client(timeout=60, trust_env=False) as client:
        upload(client, base_url, token, SCANNED, os.urandom(SCAN_FILE_BYTES),
               "application/octet-stream", "warm.bin", warm)  # fmt: skip
    asyncio.run(finalized_at(database_url, list(warm.put_end)))

    began = time.time()
    with concurrent.futures.ThreadPoolExecutor(SCAN_UPLOADERS) as pool:
        for future in [pool.submit(one, index) for index in range(SCAN_FILES)]:
            future.result()
    uploaded = max(sent.put_end.values()) - began
    done = asyncio.run(finalized_at(database_url, list(sent.put_end)))
    scanned = max(done.values()) - min(sent.put_end.values())
    latency = [(done[i] - sent.put_end[i]) * 1000 for i in sent.put_end]
    return latency, uploaded, scanned


async def what_was_checked(database_url: str) -> dict[tuple[str, str | None, str | None], int]:
    """How many uploads of each policy have which detected type and scan result."""
    conn = await asyncpg.connect(database_url)
    try:
        # Random bytes are whatever libmagic's weakest rule makes of them (now and then
        # application/x-dosexec): the scanned files' detected type is not counted.
        rows = await conn.fetch(
            "SELECT policy, CASE WHEN policy = $2 THEN NULL ELSE detected_content_type END,"
            " scan_result, count(*) AS n FROM uploads WHERE policy = ANY($1::text[])"
            " GROUP BY 1, 2, 3",
            [SNIFFED, UNSNIFFED, SCANNED],
            SCANNED,
        )
        return {(r[0], r[1], r[2]): r["n"] for r in rows}
    finally:
        await conn.close()


def run(base_url: str, database_url: str, token: str) -> list[str]:
    """Run both measures and return the report's lines."""
    sniffing = sniff_rounds(base_url, database_url, token)
    print(f"content: scanning {SCAN_FILES} files of 1 MiB ...", flush=True)
    scan_ms, upload_seconds, scan_seconds = scan_throughput(base_url, database_url, token)
    # The figures are only worth something if the checks ran: every sniffed PNG has its
    # detected type recorded, no unsniffed one has, and every scanned file has a verdict.
    checked = asyncio.run(what_was_checked(database_url))
    expected = {
        (SNIFFED, "image/png", None): SNIFF_UPLOADS + 1,  # + the warm-up upload
        (UNSNIFFED, None, None): SNIFF_UPLOADS + 1,
        (SCANNED, None, "clean"): SCAN_FILES + 1,
    }
    if checked != expected:
        raise ContentBenchError(f"uploads by (policy, detected type, scan result): {checked}")

    lines = [
        f"Content checks: sniffing, {SNIFF_UPLOADS} sequential uploads of a {PNG_BYTES // 1024}"
        f" KiB PNG per policy, {SNIFF_ROUNDS} alternating rounds",
        "  (MinIO's webhook is synchronous: finalization, sniff included, runs inside the PUT)",
        f"  {'policy':34} {'PUT p50':>8} {'PUT p99':>8} {'fin p50':>8} {'fin p99':>8}",
    ]
    for policy, label in ((UNSNIFFED, "sniff = off"), (SNIFFED, "sniff = reject (image/png)")):
        sent, after = sniffing[policy]
        late = [max(0.0, ms) for ms in after]
        lines.append(
            f"  {label:34} {percentile(sent.put_ms, 50):8.2f} {percentile(sent.put_ms, 99):8.2f}"
            f" {percentile(late, 50):8.2f} {percentile(late, 99):8.2f}"
        )
    off, on = sniffing[UNSNIFFED][0], sniffing[SNIFFED][0]
    cost = percentile(on.put_ms, 50) - percentile(off.put_ms, 50)
    late_on = [max(0.0, ms) for ms in sniffing[SNIFFED][1]]
    # What a user waits for: PUT start -> finalized, i.e. the PUT plus any lag after it.
    whole = [put + lag for put, lag in zip(on.put_ms, late_on, strict=True)]
    p99_late, p99_whole = percentile(late_on, 99), percentile(whole, 99)
    lines += [
        "  (ms; fin = max(0, finalized_at - PUT end), PostgreSQL's clock vs ours, same host)",
        f"  sniffing adds ~{cost:.2f} ms to the median PUT",
        f"  sniff on: PUT end -> finalized p99 {p99_late:.2f} ms   target < "
        f"{TARGET_FINALIZE_P99_MS:.0f} ms   {_verdict(p99_late < TARGET_FINALIZE_P99_MS)}",
        f"  sniff on: PUT start -> finalized p99 {p99_whole:.2f} ms (what the uploader waits)",
        "",
        f"Content checks: malware scanning, {SCAN_FILES} distinct files of 1 MiB (random bytes),"
        f" PUT by {SCAN_UPLOADERS} threads,",
        "  scanned by the one broker process (BROKER_SCAN_CONCURRENCY default) against a local"
        " clamd",
        f"  uploads took {upload_seconds:.1f} s ({SCAN_FILES / upload_seconds:.0f} files/s"
        " offered)",
        f"  first PUT end -> last verdict {scan_seconds:.1f} s: {SCAN_FILES / scan_seconds:.1f}"
        " files/s, all clean",
        f"  PUT end -> finalized (scanned): p50 {percentile(scan_ms, 50):.0f} ms,"
        f" p99 {percentile(scan_ms, 99):.0f} ms (includes waiting behind the backlog)",
    ]
    return lines
