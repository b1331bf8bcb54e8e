"""Upload a large file through the broker with plain HTTP: multipart, parallel, resumable.

    python examples/resumable_upload.py BIG.iso --broker http://127.0.0.1:8000 --token "$TOKEN"

Each part carries its SHA-256, which MinIO verifies. The upload's id is kept in
BIG.iso.upload.json; run the same command again after an interruption and it asks the broker
which parts storage already holds and sends only the rest.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

SIGN_BATCH = 32  # parts signed per request: URLs are made just before they are used


class Interrupted(Exception):
    """Raised by --stop-after-parts, to demonstrate a resume."""


def read_part(path: Path, part_size: int, number: int) -> bytes:
    with path.open("rb") as file:
        file.seek((number - 1) * part_size)
        return file.read(part_size)


def b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def start_or_resume(api: httpx.Client, path: Path, state: Path, policy: str | None) -> dict:
    if state.exists():
        upload = api.get(f"/v1/uploads/{json.loads(state.read_text())['id']}").raise_for_status()
        record = upload.json()
        if record["status"] == "pending":
            print(f"resuming upload {record['id']}")
            return record
        state.unlink()
    body = {
        "filename": path.name,
        "content_type": "application/octet-stream",
        "size": path.stat().st_size,
        "multipart": True,
        "checksum_algorithm": "SHA256",
        **({"policy": policy} if policy else {}),
    }
    record = api.post("/v1/uploads", json=body).raise_for_status().json()
    state.write_text(json.dumps({"id": record["id"]}))
    print(f"created upload {record['id']}: {record['part_count']} x {record['part_size']} bytes")
    return record


def send_part(path: Path, part_size: int, part: dict, attempts: int = 5) -> tuple[int, str]:
    data = read_part(path, part_size, part["part_number"])
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.put(part["url"], content=data, headers=part["headers"], timeout=120)
            response.raise_for_status()
            return part["part_number"], response.headers["etag"]
        except httpx.HTTPError:
            if attempt == attempts:
                raise
            time.sleep(min(2**attempt, 10))
    raise AssertionError("unreachable")


def upload(args: argparse.Namespace) -> dict:
    path = Path(args.file)
    state = Path(f"{path}.upload.json")
    headers = {"Authorization": f"Bearer {args.token}"}
    with httpx.Client(base_url=args.broker, headers=headers, timeout=60) as api:
        record = start_or_resume(api, path, state, args.policy)
        upload_id = record["id"]
        part_size, part_count = record["part_size"], record["part_count"]
        held = api.get(f"/v1/uploads/{upload_id}/parts").raise_for_status().json()["parts"]
        etags = {p["part_number"]: p["etag"] for p in held}
        missing = [n for n in range(1, part_count + 1) if n not in etags]
        print(f"{len(etags)} parts already stored, {len(missing)} to send")
        if args.stop_after_parts:
            missing = missing[: args.stop_after_parts]
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            for start in range(0, len(missing), SIGN_BATCH):
                batch = missing[start : start + SIGN_BATCH]
                checksums = {n: b64_sha256(read_part(path, part_size, n)) for n in batch}
                signed = (
                    api.post(
                        f"/v1/uploads/{upload_id}/parts",
                        json={"part_numbers": batch, "checksums": checksums},
                    )
                    .raise_for_status()
                    .json()["parts"]
                )
                for number, etag in pool.map(lambda p: send_part(path, part_size, p), signed):
                    etags[number] = etag
        if args.stop_after_parts:
            raise Interrupted(f"stopped after {len(missing)} parts, as asked")
        parts = [{"part_number": n, "etag": etags[n]} for n in sorted(etags)]
        api.post(f"/v1/uploads/{upload_id}/complete", json={"parts": parts}).raise_for_status()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            record = api.get(f"/v1/uploads/{upload_id}").raise_for_status().json()
            if record["status"] != "pending":
                break
            time.sleep(0.2)
        state.unlink(missing_ok=True)
        return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file")
    parser.add_argument("--broker", default=os.environ.get("BROKER_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("BROKER_TOKEN"), required=False)
    parser.add_argument("--policy")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--stop-after-parts", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.token:
        parser.error("--token (or BROKER_TOKEN) is required")
    try:
        record = upload(args)
    except Interrupted as exc:
        print(exc)
        return 3
    print(json.dumps({k: record[k] for k in ("id", "status", "size", "checksum", "etag")}))
    return 0 if record["status"] == "finalized" else 1


if __name__ == "__main__":
    sys.exit(main())
