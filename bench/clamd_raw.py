"""clamd on its own: start time, memory, and raw scan throughput of ClamdScanner (200 files of
1 MiB, one after the other, no PostgreSQL or MinIO). Run: .venv/bin/python -m bench.clamd_raw

The database is the local test signature only (broker/dev/clamd.py): these figures are the
floor of clamd's cost, not what it costs with the official signatures (see
docs/operations.md, "Malware scanning engines").
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from broker.adapters import scanners
from broker.dev import clamd, devstack

FILES = 200
FILE_BYTES = 1024 * 1024
CHUNK = 64 * 1024
STARTS = 5
ROUNDS = 2


def file_chunks(body: bytes, n: int) -> list[bytes]:
    """A distinct 1 MiB file (its number up front), in 64 KiB chunks as a streaming GET gives.
    Distinct matters: clamd caches the hashes of clean files, and a file it has seen before
    comes back from that cache several times faster."""
    data = n.to_bytes(8, "big") + body[8:]
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def scan_all(scanner: scanners.ClamdScanner, body: bytes, first: int) -> tuple[float, list[float]]:
    latencies = []
    began = time.monotonic()
    for n in range(first, first + FILES):
        started = time.monotonic()
        verdict = scanner.scan(file_chunks(body, n))
        latencies.append(time.monotonic() - started)
        assert not verdict.infected, verdict
    return time.monotonic() - began, latencies


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-clamd-") as tmp:
        local = clamd.LocalClamd(Path(tmp) / "clamd", tcp_port=devstack.free_port())
        starts = []
        for _ in range(STARTS):
            local.start()
            starts.append(local.started_in_seconds)
            local.stop()
        local.start()
        try:
            rss_idle = local.rss_bytes()
            bodies = {
                "random": os.urandom(FILE_BYTES),  # like compressed media and archives
                "text": b"".join(
                    f"{i:08d} the quick brown fox jumps over the lazy dog\n".encode()
                    for i in range(FILE_BYTES // 52 + 1)
                )[:FILE_BYTES],
            }
            print(f"clamd {clamd.CLAMD_BINARY}, test signature only, {os.cpu_count()} CPUs")
            print(
                f"start (spawn to first PONG), {STARTS} starts: "
                f"median {statistics.median(starts) * 1000:.0f} ms, "
                f"max {max(starts) * 1000:.0f} ms"
            )
            print(f"RSS idle: {rss_idle / 2**20:.1f} MiB")
            # Rounds alternate between the sockets, so a burst of load from elsewhere on the
            # machine shows as one slow round instead of skewing one socket's figure.
            rates: dict[tuple[str, str], list[float]] = {}
            first = 0
            for round_number in range(1, ROUNDS + 1):
                for kind, body in bodies.items():
                    for label, address in (("unix", local.address), ("tcp", local.tcp_address)):
                        scanner = scanners.ClamdScanner(address, timeout_seconds=60)
                        total, latencies = scan_all(scanner, body, first)
                        first += FILES
                        latencies.sort()
                        rates.setdefault((kind, label), []).append(FILES / total)
                        print(
                            f"round {round_number} {kind:6} {label:4} {FILES} x 1 MiB: "
                            f"{FILES / total:5.1f} files/s, per file "
                            f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
                            f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms"
                        )
            for (kind, label), found in rates.items():
                print(
                    f"{kind:6} {label:4} files/s over {ROUNDS} rounds: median "
                    f"{statistics.median(found):.1f}, best {max(found):.1f}"
                )
            print(f"RSS after scanning: {local.rss_bytes() / 2**20:.1f} MiB")
        finally:
            local.stop()


if __name__ == "__main__":
    main()
