"""make bench's app-webhook section (issue 10), against the running stack and a receiver:

1. create throughput with no endpoint and with one endpoint subscribed to every event (each
   create then queues a delivery that the broker POSTs), rounds taking turns;
2. time from finalization to the receiver's 2xx, over sequential uploads (create, PUT,
   MinIO's webhook finalizes, the broker's sender delivers `upload.finalized`);
3. a burst of 10,000 state changes (history rows written in one transaction) delivered by
   the one broker process, in deliveries per second.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx

from broker import auth

TARGET_CREATE_RATIO = 0.9  # create throughput with one endpoint / with none
TARGET_LATENCY_P99_MS = 100.0
TARGET_BURST_PER_SECOND = 1000.0
ROUNDS = 3
LATENCY_UPLOADS = 200
BURST = 10_000
DEADLINE_SECONDS = 120

# run.py's wrk runner for the broker's create route: (seconds) -> requests per second
CreateRun = Callable[[int], float]


class WebhookBenchError(Exception):
    """The section could not run; the message says why."""


def run(
    base_url: str, receiver_url: str, database_url: str, jwt_secret: str, owner_token: str,
    create_run: CreateRun, seconds: int,
) -> list[str]:  # fmt: skip
    """Run the three measures and return the report's lines."""
    admin = {"authorization": f"Bearer {auth.issue_token(jwt_secret, 'bench-admin', admin=True)}"}
    with httpx.Client(base_url=base_url, timeout=30, trust_env=False) as api:
        endpoint = _request(
            api, "POST", "/v1/admin/webhook-endpoints", admin, json={"url": receiver_url}
        )
        path = f"/v1/admin/webhook-endpoints/{endpoint['id']}"
        _request(api, "POST", f"{path}/disable", admin, json={})

        create_run(3)  # warm-up
        # none: no endpoint enabled; finalized: one endpoint that takes upload.finalized, as
        # an app that attaches files does (a create queues nothing); every: one endpoint
        # that takes every event (each create queues a delivery the broker POSTs).
        variants: dict[str, list[str] | None] = {
            "none": None,
            "finalized": ["upload.finalized"],
            "every": [],
        }
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for round_number in range(1, ROUNDS + 1):
            order = list(variants.items())
            if round_number % 2 == 0:
                order.reverse()
            for name, event_types in order:
                if event_types is None:
                    _request(api, "POST", f"{path}/disable", admin, json={})
                else:
                    _request(api, "PATCH", path, admin, json={"event_types": event_types})
                    _request(api, "POST", f"{path}/enable", admin, json={})
                rate = create_run(seconds)
                rates[name].append(rate)
                print(f"webhooks round {round_number}/{ROUNDS} endpoint={name:9} {rate:6.0f} "
                      "creates/s", flush=True)  # fmt: skip
                asyncio.run(_drained(database_url))

        _request(api, "PATCH", path, admin, json={"event_types": ["upload.finalized"]})
        _request(api, "POST", f"{path}/enable", admin)
        latencies = _finalize_to_2xx(api, receiver_url, database_url, owner_token)

        _request(api, "PATCH", path, admin, json={"event_types": ["upload.expired"]})
        burst_seconds = asyncio.run(_burst(database_url, receiver_url))

    medians = {name: statistics.median(values) for name, values in rates.items()}
    ratio = medians["finalized"] / medians["none"]
    every = medians["every"] / medians["none"]
    p50 = statistics.median(latencies)
    p99 = sorted(latencies)[max(0, round(0.99 * len(latencies)) - 1)]
    rate = BURST / burst_seconds
    return [
        "App webhooks (one endpoint: a receiver process on 127.0.0.1 answering 204):",
        f"  create throughput, median of {ROUNDS} alternating rounds: no endpoint "
        f"{medians['none']:.0f}/s; one endpoint taking upload.finalized "
        f"{medians['finalized']:.0f}/s; one taking every event {medians['every']:.0f}/s",
        f"  one endpoint (upload.finalized) / none  {ratio:.2f}x   target >= "
        f"{TARGET_CREATE_RATIO:.2f}x   {_verdict(ratio >= TARGET_CREATE_RATIO)}",
        f"  one endpoint (every event: a POST per create) / none  {every:.2f}x   target >= "
        f"{TARGET_CREATE_RATIO:.2f}x   {_verdict(every >= TARGET_CREATE_RATIO)}",
        f"  finalized -> receiver 2xx, {len(latencies)} sequential uploads: p50 {p50:.1f} ms,"
        f" p99 {p99:.1f} ms   target p99 < {TARGET_LATENCY_P99_MS:.0f} ms   "
        f"{_verdict(p99 < TARGET_LATENCY_P99_MS)}",
        f"  burst of {BURST} state changes delivered in {burst_seconds:.1f} s: {rate:.0f}/s"
        f" by one process   target >= {TARGET_BURST_PER_SECOND:.0f}/s   "
        f"{_verdict(rate >= TARGET_BURST_PER_SECOND)}",
    ]


def run_burst(
    base_url: str, receiver_url: str, database_url: str, jwt_secret: str, create_run: CreateRun
) -> list[str]:
    """The burst alone (BENCH_ONLY=webhook-burst): creates pending uploads until there are
    BURST of them, then measures their delivery as in run()."""
    admin = {"authorization": f"Bearer {auth.issue_token(jwt_secret, 'bench-admin', admin=True)}"}
    with httpx.Client(base_url=base_url, timeout=30, trust_env=False) as api:
        body = {"url": receiver_url, "event_types": ["upload.expired"]}
        _request(api, "POST", "/v1/admin/webhook-endpoints", admin, json=body)
    while asyncio.run(_pending_uploads(database_url)) < BURST:
        create_run(5)
    seconds = asyncio.run(_burst(database_url, receiver_url))
    return [
        f"burst of {BURST} state changes delivered in {seconds:.1f} s: {BURST / seconds:.0f}/s"
        f" by one process   target >= {TARGET_BURST_PER_SECOND:.0f}/s   "
        f"{_verdict(BURST / seconds >= TARGET_BURST_PER_SECOND)}"
    ]


async def _pending_uploads(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM uploads WHERE status = 'pending'"))
    finally:
        await conn.close()


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _request(api: httpx.Client, method: str, path: str, headers: dict[str, str], **kw: Any) -> Any:
    response = api.request(method, path, headers=headers, **kw)
    if response.status_code >= 300:
        raise WebhookBenchError(f"{method} {path} answered {response.status_code}: {response.text}")
    return response.json()


def _received(receiver_url: str) -> dict[str, float]:
    response = httpx.get(f"{receiver_url}/received", timeout=10, trust_env=False)
    return response.json()  # type: ignore[no-any-return]


async def _drained(database_url: str) -> None:
    """Wait until no delivery is pending, so the next round starts from an idle sender."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'"
        ):
            if time.monotonic() > deadline:
                raise WebhookBenchError(f"deliveries still pending after {DEADLINE_SECONDS}s")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


def _finalize_to_2xx(
    api: httpx.Client, receiver_url: str, database_url: str, token: str
) -> list[float]:
    """Sequential uploads; for each, receiver arrival of upload.finalized - finalized_at."""
    ids = []
    headers = {"authorization": f"Bearer {token}"}
    for index in range(LATENCY_UPLOADS):
        data = os.urandom(1024)
        body = {"filename": f"w{index}.bin", "content_type": "application/octet-stream",
                "size": len(data)}  # fmt: skip
        created = _request(api, "POST", "/v1/uploads", headers, json=body)
        put = httpx.put(
            created["upload"]["url"],
            content=data,
            headers=created["upload"]["headers"],
            timeout=30,
            trust_env=False,
        )
        if put.status_code != 200:
            raise WebhookBenchError(f"PUT answered {put.status_code}: {put.text}")
        ids.append(uuid.UUID(created["id"]))
    finalized = asyncio.run(_finalized_messages(database_url, ids))
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        received = _received(receiver_url)
        if all(message in received for message in finalized):
            return [(received[m] - at) * 1000 for m, at in finalized.items()]
        if time.monotonic() > deadline:
            missing = sum(1 for m in finalized if m not in received)
            raise WebhookBenchError(f"{missing} upload.finalized events never arrived")
        time.sleep(0.2)


async def _finalized_messages(database_url: str, ids: list[uuid.UUID]) -> dict[str, float]:
    """webhook-id -> finalized_at (epoch seconds) of each upload's upload.finalized delivery."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            rows = await conn.fetch(
                "SELECT d.message_id, extract(epoch FROM u.finalized_at) AS at"
                " FROM webhook_deliveries d JOIN uploads u ON u.id = d.upload_id"
                " WHERE d.type = 'upload.finalized' AND d.upload_id = ANY($1::uuid[])",
                ids,
            )
            if len(rows) == len(ids):
                return {row["message_id"]: float(row["at"]) for row in rows}
            if time.monotonic() > deadline:
                raise WebhookBenchError(f"{len(ids) - len(rows)} uploads never finalized")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def _burst(database_url: str, receiver_url: str) -> float:
    """BURST state changes in one transaction (history rows of pending uploads marked
    `expired`, the type the endpoint now takes); seconds from commit to the last arrival."""
    conn = await asyncpg.connect(database_url)
    try:
        before = len(_received(receiver_url))
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO upload_history (upload_id, status, actor)"
                " SELECT id, 'expired', 'bench' FROM uploads WHERE status = 'pending' LIMIT $1",
                BURST,
            )
        committed = time.time()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            received = _received(receiver_url)
            if len(received) - before >= BURST:
                return max(received.values()) - committed
            if time.monotonic() > deadline:
                raise WebhookBenchError(f"{len(received) - before} of {BURST} burst deliveries")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
