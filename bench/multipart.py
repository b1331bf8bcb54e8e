"""A 1 GiB file through the broker's presigned multipart parts, beside boto3's upload_file
straight to the same MinIO with root credentials, in the same run."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import botocore.config
import httpx
import urllib3
from boto3.s3.transfer import TransferConfig

from broker import auth, config

SIZE = 1024**3
PARALLEL = 8
PART_SIZE = 16 * 1024**2  # the broker's default part size; boto3 is given the same
ROUNDS = 4
TARGET = 0.90


def make_file(workdir: Path) -> Path:
    path = workdir / "one-gib.bin"
    with path.open("wb") as file:
        for _ in range(SIZE // (64 * 1024**2)):
            file.write(os.urandom(64 * 1024**2))
    return path


def through_broker(broker_url: str, token: str, path: Path) -> float:
    """Seconds from the create request to the record being finalized, parts 8 at a time."""
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    with httpx.Client(base_url=broker_url, headers=headers, timeout=120) as api:
        body = {
            "filename": path.name,
            "content_type": "application/octet-stream",
            "size": SIZE,
            "multipart": True,
        }
        record = api.post("/v1/uploads", json=body).raise_for_status().json()
        count, size = record["part_count"], record["part_size"]
        signed = api.post(
            f"/v1/uploads/{record['id']}/parts", json={"part_numbers": list(range(1, count + 1))}
        ).raise_for_status()

        # The parts go through urllib3, the HTTP client under boto3, with a pool of the same
        # size, so that the comparison is about the broker's steps, not about HTTP clients.
        pool_manager = urllib3.PoolManager(maxsize=PARALLEL)

        def send(part: dict) -> tuple[int, str]:
            with path.open("rb") as file:
                file.seek((part["part_number"] - 1) * size)
                data = file.read(size)
            response = pool_manager.request("PUT", part["url"], body=data, headers=part["headers"])
            if response.status != 200:
                raise RuntimeError(f"part {part['part_number']}: {response.status}")
            return part["part_number"], response.headers["etag"]

        with ThreadPoolExecutor(PARALLEL) as pool:
            etags = dict(pool.map(send, signed.json()["parts"]))
        parts = [{"part_number": n, "etag": etags[n]} for n in sorted(etags)]
        api.post(f"/v1/uploads/{record['id']}/complete", json={"parts": parts}).raise_for_status()
        while api.get(f"/v1/uploads/{record['id']}").json()["status"] == "pending":
            time.sleep(0.01)
    return time.perf_counter() - started


def through_boto3(settings: config.Settings, path: Path) -> float:
    """Seconds for boto3's managed upload of the same file, same part size and parallelism."""
    client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        region_name=settings.s3_region,
        # No checksums on either side: the broker run sends none either.
        config=botocore.config.Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            max_pool_connections=PARALLEL,
        ),
    )
    transfer = TransferConfig(
        multipart_threshold=PART_SIZE,
        multipart_chunksize=PART_SIZE,
        max_concurrency=PARALLEL,
        use_threads=True,
    )
    started = time.perf_counter()
    client.upload_file(str(path), settings.s3_bucket, "bench/boto3-direct.bin", Config=transfer)
    return time.perf_counter() - started


def run(workdir: Path, settings: config.Settings, broker_url: str) -> list[str]:
    print("multipart: writing a 1 GiB file ...", flush=True)
    path = make_file(workdir)
    token = auth.issue_token(settings.jwt_secret, "bench-multipart")
    broker_times, boto_times = [], []
    try:
        for round_number in range(1, ROUNDS + 1):
            print(f"multipart: round {round_number}/{ROUNDS} ...", flush=True)
            # Whoever goes second meets the first one's 1 GiB still being flushed by MinIO:
            # take turns going first.
            if round_number % 2:
                boto_times.append(through_boto3(settings, path))
                broker_times.append(through_broker(broker_url, token, path))
            else:
                broker_times.append(through_broker(broker_url, token, path))
                boto_times.append(through_boto3(settings, path))
    finally:
        path.unlink()
    mib = SIZE / 1024**2
    best_broker, best_boto = min(broker_times), min(boto_times)
    ratio = best_boto / best_broker
    verdict = "PASS" if ratio >= TARGET else "MISS"
    return [
        f"Multipart: 1 GiB, {PART_SIZE // 1024**2} MiB parts, {PARALLEL} in parallel, best of "
        f"{ROUNDS} alternating rounds:",
        f"  {'path':52} {'seconds':>8} {'MiB/s':>8}",
        f"  {'boto3 upload_file, root credentials, straight to MinIO':52} "
        f"{best_boto:8.2f} {mib / best_boto:8.0f}",
        f"  {'broker: create, sign parts, PUT parts, complete, final':52} "
        f"{best_broker:8.2f} {mib / best_broker:8.0f}",
        f"  broker/boto3 throughput {ratio:.2f}x   target >= {TARGET:.2f}x   {verdict}",
    ]
