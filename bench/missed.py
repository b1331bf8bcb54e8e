"""make bench's missed-webhook section (issue 12): with both of MinIO's webhook targets
switched off, how long an upload waits before the reconciler finalizes it.

UPLOADS uploads to a policy whose URLs live URL_TTL_SECONDS are PUT to MinIO while the
bucket sends no events; the broker's own reconciler (every 60 s, its default) checks each
one once its URL has expired plus BROKER_RECONCILE_CHECK_GRACE_SECONDS (30 s). Reported:
time from each PUT to its finalization, p50 and max, against the target of 2 minutes.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx

from broker import config
from broker.adapters import storage

POLICY = "bench-missed"
URL_TTL_SECONDS = 20
POLICIES = f"""
[policies.{POLICY}]
url_ttl_seconds = {URL_TTL_SECONDS}
"""
UPLOADS = 20
TARGET_SECONDS = 120
DEADLINE_SECONDS = 300


class MissedBenchError(Exception):
    """The section could not run; the message says why."""


def run(base_url: str, settings: config.Settings, token: str) -> list[str]:
    store = storage.Storage(settings)
    headers = {"authorization": f"Bearer {token}"}
    put_at: dict[str, float] = {}
    store.client.put_bucket_notification_configuration(
        Bucket=settings.s3_bucket, NotificationConfiguration={}
    )
    try:
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as api:
            for index in range(UPLOADS):
                data = f"missed {index}\n".encode()
                created = _create(api, data)
                response = httpx.put(
                    created["upload"]["url"], content=data, headers=created["upload"]["headers"]
                )
                if response.status_code != 200:
                    raise MissedBenchError(f"PUT answered {response.status_code}")
                put_at[created["id"]] = time.time()
            waited = _until_finalized(api, put_at)
    finally:
        store.ensure_bucket(list(settings.s3_notify_arns))
    p50, worst = statistics.median(waited), max(waited)
    return [
        f"Missed webhooks: both MinIO targets off, {UPLOADS} uploads, URL lifetime"
        f" {URL_TTL_SECONDS} s, check grace 30 s, reconciler every 60 s:",
        f"  PUT -> finalized by the reconciler: p50 {p50:.0f} s, max {worst:.0f} s"
        f"   target < {TARGET_SECONDS} s   {'PASS' if worst < TARGET_SECONDS else 'MISS'}",
    ]


def _create(api: httpx.Client, data: bytes) -> dict[str, Any]:
    body = {"filename": "m.txt", "content_type": "text/plain", "size": len(data),
            "policy": POLICY}  # fmt: skip
    response = api.post("/v1/uploads", json=body)
    if response.status_code != 201:
        raise MissedBenchError(f"create answered {response.status_code}: {response.text}")
    return response.json()  # type: ignore[no-any-return]


def _until_finalized(api: httpx.Client, put_at: dict[str, float]) -> list[float]:
    waited: dict[str, float] = {}
    deadline = time.monotonic() + DEADLINE_SECONDS
    while len(waited) < len(put_at):
        if time.monotonic() > deadline:
            raise MissedBenchError(f"{len(put_at) - len(waited)} uploads never finalized")
        for upload_id, at in put_at.items():
            if upload_id in waited:
                continue
            record = api.get(f"/v1/uploads/{upload_id}").json()
            if record["status"] == "finalized":
                waited[upload_id] = time.time() - at
            elif record["status"] != "pending":
                raise MissedBenchError(f"upload {upload_id} became {record['status']}")
        time.sleep(1)  # a poll every second, against a target of minutes
    return list(waited.values())
