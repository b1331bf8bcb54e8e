"""The fault suite: uploads through the replica topology (tests/topology.py) while one fault
is injected, then a count of what was lost. `make chaos` runs it in full (1,000 uploads per
fault); tests/integration/test_faults.py runs it with 200 in every `make test`.

Each fault prints one line: uploads attempted, PUTs storage accepted, finalized, lost
(accepted by storage but not finalized once healed, after the reconciler's passes),
finalized twice (two 'finalized' history rows for one upload), 5xx answers other than 503,
and recovery: seconds from the heal (process or service back, network restored) to the
first 201.

    python -m tests.faults [--uploads 1000] [--faults broker_sigkill,network_cut]
"""

from __future__ import annotations

import argparse
import http.server
import json
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests import topology as topo

# What the replicas run with in the fault suite: the reconciler every second, URLs that
# expire after 20 s (an upload whose events were all lost is checked against storage
# 21 s after its creation), and the sender off (no app webhooks are registered).
FAULT_ENV = {
    "reconcile_interval_seconds": "1",
    "upload_url_ttl_seconds": "20",
    "webhook_sender": "false",
}
# How long the healed system gets to finalize every accepted upload: the URL lifetime, the
# check grace, a few reconciler passes, and slack for a loaded 2-core machine.
SETTLE_SECONDS = 60
NETWORK_CUT_SECONDS = 10
STORM_REPEATS = 10


@dataclass
class FaultResult:
    """One fault's figures."""

    fault: str
    attempted: int
    accepted: int
    finalized: int
    by_reconciler: int  # of the finalized: settled by the reconciler (their events were lost)
    lost: int
    finalized_twice: int
    bad_5xx: int
    lb_errors: dict[int, int]
    recovery_seconds: float | None  # from the heal to the first 201
    outage_seconds: float | None  # from the fault to the first 201 after the heal
    seconds: float
    replays: int  # event storm: webhook calls replayed (each real event 10 times)
    statuses: dict[int, int]
    failures: dict[str, int]

    def line(self) -> str:
        recovery = "-" if self.recovery_seconds is None else f"{self.recovery_seconds:.2f}"
        outage = "-" if self.outage_seconds is None else f"{self.outage_seconds:.2f}"
        return (
            f"{self.fault:<17} attempted={self.attempted} accepted={self.accepted}"
            f" finalized={self.finalized} (by_reconciler={self.by_reconciler}) lost={self.lost}"
            f" finalized_twice={self.finalized_twice} 5xx_not_503={self.bad_5xx}"
            f" lb_errors={sum(self.lb_errors.values())}"
            f" recovery_s={recovery} outage_s={outage} took_s={self.seconds:.1f}"
            + (f" replayed={self.replays}" if self.replays else "")
        )

    def details(self) -> str:
        """What the clients saw, for a failing run's message."""
        return (
            f"statuses={self.statuses} lb_errors={self.lb_errors} client_failures={self.failures}"
        )


# ---- the faults: each injects its fault into a running load and returns when it healed it
# (a monotonic time), or None when there is nothing to heal.


def broker_sigkill(stack: topo.Topology, load: topo.Load) -> float | None:
    """Every replica SIGKILLed at once (no drain, leases left behind), then started again."""
    for replica in stack.replicas:
        replica.signal(signal.SIGKILL)
    for replica in stack.replicas:
        replica.wait(timeout=10)
    healed = time.monotonic()
    stack.restart(*stack.replicas)
    return healed


def postgres_restart(stack: topo.Topology, load: topo.Load) -> float | None:
    """PostgreSQL stopped (fast: sessions ended) and started again."""
    stack.postgres.stop()
    stack.postgres.start()
    return time.monotonic()


def minio_restart(stack: topo.Topology, load: topo.Load) -> float | None:
    """MinIO stopped and started again: its queued target replays what it had not delivered."""
    stack.minio.stop()
    stack.minio.start()
    return time.monotonic()


def network_cut(stack: topo.Topology, load: topo.Load) -> float | None:
    """Every connection between the replicas and PostgreSQL broken, none possible, for 10 s."""
    stack.pg_proxy.cut()
    cut_until = time.monotonic() + NETWORK_CUT_SECONDS
    while time.monotonic() < cut_until:  # the fault's length, not a synchronisation
        time.sleep(0.1)
    stack.pg_proxy.restore()
    return time.monotonic()


class Recorder:
    """Between MinIO and the load balancer: forwards each webhook call and keeps its body."""

    def __init__(self, upstream: str) -> None:
        self.bodies: list[tuple[bytes, str]] = []  # (body, authorization)
        self.lock = threading.Lock()
        recorder = self
        client = httpx.Client(timeout=30)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                authorization = self.headers.get("authorization", "")
                try:
                    answer = client.post(
                        upstream + self.path,
                        content=body,
                        headers={"authorization": authorization,
                                 "content-type": "application/json"},
                    )  # fmt: skip
                    status, text = answer.status_code, answer.content
                except httpx.HTTPError:
                    status, text = 502, b""
                if status < 300:
                    with recorder.lock:
                        recorder.bodies.append((body, authorization))
                self.send_response(status)
                self.send_header("content-length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

            def handle_error(self, request: Any, client_address: Any) -> None:
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)  # MinIO stopping is not

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/webhooks/minio"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def taken(self, start: int) -> list[tuple[bytes, str]]:
        with self.lock:
            return self.bodies[start:]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def storm(stack: topo.Topology, load: topo.Load, recorder: Recorder) -> int:
    """The event storm: MinIO's real events, captured on their way to the broker, each sent
    again 10 times, shuffled, to the webhook endpoint through the load balancer, while the
    load goes on (so repeats also arrive before and between the originals' retries). The
    answers count with the clients' (report.statuses); returns how many were sent."""
    seen = sent = 0
    replayed: set[bytes] = set()
    local = threading.local()

    def post(item: tuple[bytes, str]) -> None:
        body, authorization = item
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=30)
        try:
            answer = local.client.post(
                f"{stack.url}/v1/webhooks/minio",
                content=body,
                headers={"authorization": authorization, "content-type": "application/json"},
                timeout=30,
            )
        except httpx.HTTPError as exc:
            load._failed(f"storm {type(exc).__name__}")
            return
        with load.report.lock:
            load.report.statuses[answer.status_code] += 1

    with ThreadPoolExecutor(6) as pool:
        while True:
            finished = load.done.is_set()
            batch = recorder.taken(seen)
            seen += len(batch)
            # MinIO's two targets deliver the same event: one real event, replayed 10 times.
            fresh = {body: auth for body, auth in batch if body not in replayed}
            replayed.update(fresh)
            replays = [item for item in fresh.items() for _ in range(STORM_REPEATS)]
            random.shuffle(replays)
            list(pool.map(post, replays))
            sent += len(replays)
            if finished and not recorder.taken(seen):
                return sent
            if not batch:
                time.sleep(0.1)  # nothing new captured yet: look again shortly


FAULTS: dict[str, Callable[[topo.Topology, topo.Load], float | None]] = {
    "broker_sigkill": broker_sigkill,
    "postgres_restart": postgres_restart,
    "minio_restart": minio_restart,
    "network_cut": network_cut,
}
# The storm is no fault of one component: run_fault reconfigures MinIO for it.
ALL_FAULTS = (*FAULTS, "event_storm")


def run_fault(stack: topo.Topology, fault: str, uploads: int) -> FaultResult:
    """`uploads` uploads through the load balancer with `fault` injected a third of the way."""
    started = time.monotonic()
    recorder = None
    injected = healed = None
    replays = 0
    if fault == "event_storm":
        recorder = Recorder(stack.url)
        _point_minio_at(stack, recorder.url)
    try:
        load = topo.Load(stack.url, stack.headers(f"{fault}-{uuid.uuid4()}"), uploads, patience=90)
        load.start()
        if recorder is not None:
            replays = storm(stack, load, recorder)
            healed = None
        else:
            topo.until("the load is under way", lambda: load.completed() >= uploads // 3, 120)
            injected = time.monotonic()
            healed = FAULTS[fault](stack, load)
        report = load.finish(timeout=300)
    finally:
        if recorder is not None:
            _point_minio_at(stack, f"{stack.url}/v1/webhooks/minio")
            recorder.close()
    created = set(report.created.values())
    # Accepted by storage: a 200 to the PUT, or the object found there (a PUT whose answer
    # was lost in the fault still stored it, and the broker must still finalize it).
    accepted = report.accepted | topo.stored(stack, created)
    missing = topo.settle(stack.database_url, accepted, SETTLE_SECONDS)
    counts = topo.finalized_counts(stack.database_url, created)
    reconciled = topo.query(
        stack.database_url,
        "SELECT count(*) AS n FROM upload_history WHERE upload_id = ANY($1::uuid[])"
        " AND status = 'finalized' AND actor = 'reconciler'",
        list(created),
    )[0]["n"]
    return FaultResult(
        fault=fault,
        attempted=report.attempted,
        accepted=len(accepted),
        finalized=len(accepted) - len(missing),
        lost=len(missing),
        by_reconciler=reconciled,
        finalized_twice=sum(1 for n in counts.values() if n > 1),
        bad_5xx=report.bad_5xx,
        lb_errors=dict(report.lb_errors),
        recovery_seconds=None if healed is None else report.first_201_after(healed),
        outage_seconds=None if healed is None else _outage(report, injected, healed),
        seconds=time.monotonic() - started,
        replays=replays,
        statuses=dict(report.statuses),
        failures=dict(report.failures),
    )


def _outage(report: topo.LoadReport, injected: float | None, healed: float) -> float | None:
    after = report.first_201_after(healed)
    if injected is None or after is None:
        return None
    return healed + after - injected


def _point_minio_at(stack: topo.Topology, endpoint: str) -> None:
    """Restart MinIO with both webhook targets calling `endpoint`."""
    stack.minio.stop()
    stack.minio.webhook_endpoint = endpoint
    stack.minio.start()
    topo.until("every replica is up", stack.all_up, 20, stack.haproxy.log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=1000, help="per fault")
    parser.add_argument("--faults", default=",".join(ALL_FAULTS), help="comma-separated")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="broker-chaos-") as base:
        with topo.topology(Path(base), durable=True, **FAULT_ENV) as stack:
            print(f"topology up: {len(stack.replicas)} replicas behind HAProxy", flush=True)
            for fault in args.faults.split(","):
                result = run_fault(stack, fault, args.uploads)
                results.append(result)
                print(result.line(), flush=True)
                if result.lost or result.finalized_twice or result.bad_5xx:
                    print("  " + result.details(), flush=True)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    bad = [r for r in results if r.lost or r.finalized_twice or r.bad_5xx]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
