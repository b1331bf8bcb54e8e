"""A copy of the repository run with `docker compose`, as a user runs it: `.env` made from
`.env.example` with the secrets filled in, the compose files and Dockerfiles untouched."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
BROKER = "http://127.0.0.1:8000"  # the ports compose.yaml publishes
MINIO = "http://127.0.0.1:9000"
# compose.yaml names the project `broker`; the test runs under its own name, so a user's
# stack (and its volumes) on the same engine is never touched.
PROJECT = "broker-compose-test"


def good_secrets() -> dict[str, str]:
    """What a user fills into .env (hex, as the docs say: the password goes into a URL)."""
    return {
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "MINIO_ROOT_USER": "broker",
        "MINIO_ROOT_PASSWORD": secrets.token_hex(16),
        "BROKER_JWT_SECRET": secrets.token_hex(32),
        "BROKER_WEBHOOK_TOKEN": secrets.token_hex(24),
    }


def copy_repository(dest: Path) -> Path:
    """The repository's files as a clone would have them (with uncommitted changes)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def write_env(folder: Path, values: dict[str, str]) -> None:
    """`cp .env.example .env`, then each value set on its line (or added)."""
    lines = (folder / ".env.example").read_text().splitlines()
    missing = dict(values)
    for i, line in enumerate(lines):
        key = line.split("=", 1)[0]
        if key in missing:
            lines[i] = f"{key}={missing.pop(key)}"
    lines += [f"{key}={value}" for key, value in missing.items()]
    (folder / ".env").write_text("\n".join(lines) + "\n")


class Stack:
    """`docker compose` in `folder` with these compose files, under PROJECT."""

    def __init__(self, folder: Path, *files: str) -> None:
        self.folder = folder
        self.files = files or ("compose.yaml",)

    def compose(
        self, *args: str, check: bool = True, timeout: float = 1800
    ) -> subprocess.CompletedProcess[str]:
        command = ["docker", "compose", "--project-name", PROJECT, "--progress", "plain"]
        for name in self.files:
            command += ["--file", name]
        done = subprocess.run(
            [*command, *args],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
            )
        return done

    def up(self) -> None:
        done = self.compose("up", "--build", "--wait", "--detach", check=False)
        if done.returncode != 0:
            logs = self.compose("logs", "--no-color", "--tail", "30", check=False).stdout
            raise AssertionError(
                f"docker compose up --build --wait exited {done.returncode}:\n"
                f"{done.stderr[-3000:]}\n--- logs ---\n{logs}"
            )

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", service, check=False).stdout

    def health(self, service: str) -> str:
        """Docker's health status of the service's container (`healthy`, `unhealthy`, ...)."""
        container = self.compose("ps", "--all", "--quiet", service).stdout.strip()
        state = subprocess.run(
            ["docker", "inspect", "--format", "{{json .State}}", container],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        parsed: dict[str, Any] = json.loads(state)
        return str(parsed.get("Health", {}).get("Status", parsed["Status"]))

    def token(self, subject: str) -> str:
        """A bearer token minted inside the broker container, as the docs tell users."""
        done = self.compose("exec", "-T", "broker", "broker", "token", "--sub", subject)
        return done.stdout.strip()


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Poll `check` until true; the seconds it took. Fails naming `what` at the deadline."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.25)
    return time.monotonic() - start


def answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def round_trip(token: str, data: bytes) -> str:
    """A whole upload from the host, as a browser's app does it; returns the upload's id."""
    auth = {"Authorization": f"Bearer {token}"}
    created = httpx.post(
        f"{BROKER}/v1/uploads",
        headers=auth,
        json={"filename": "hello.txt", "content_type": "text/plain", "size": len(data)},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    upload = created.json()
    # Signed for the public host (BROKER_S3_PUBLIC_ENDPOINT), which the host reaches through
    # the published port; the broker itself talks to http://minio:9000.
    assert upload["upload"]["url"].startswith("http://localhost:9000/uploads/"), upload
    put = httpx.put(
        upload["upload"]["url"], content=data, headers=upload["upload"]["headers"], timeout=30
    )
    assert put.status_code == 200, put.text

    def finalized() -> bool:
        record = httpx.get(f"{BROKER}/v1/uploads/{upload['id']}", headers=auth, timeout=10)
        return bool(record.json()["status"] == "finalized")

    # MinIO's webhook reaches http://broker:8000 across the compose network.
    wait_for(f"upload {upload['id']} finalized by MinIO's webhook", finalized, timeout=30)
    download = httpx.get(f"{BROKER}/v1/uploads/{upload['id']}/download", headers=auth, timeout=10)
    assert download.status_code == 200, download.text
    assert httpx.get(download.json()["url"], timeout=10).content == data
    return str(upload["id"])
