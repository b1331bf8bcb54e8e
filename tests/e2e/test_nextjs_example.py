"""The Next.js example (examples/nextjs) as built for production: `next start` on a free loopback
port, its webhook route fed events signed by the reference library (standardwebhooks on PyPI),
and its pages opened in a real headless Chromium.

The app is installed and built by npm beforehand (the Makefile's `web` target does it):
    cd clients/ts && npm ci && npm run build
    cd examples/nextjs && npm ci && npm run build
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks

from broker.dev import devstack
from tests.e2e import chromium

EXAMPLE = Path(__file__).parents[2] / "examples" / "nextjs"
NEXT = EXAMPLE / "node_modules" / "next" / "dist" / "bin" / "next"
BUILD_HINT = (
    "the Next.js example is not built; run\n"
    "    (cd clients/ts && npm ci && npm run build)\n"
    "    (cd examples/nextjs && npm ci && npm run build)\n"
    "(make test runs these before pytest)"
)


@dataclass
class NextApp:
    url: str
    secret: str
    store_file: Path
    log: Path


@pytest.fixture(scope="module")
def next_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NextApp]:
    """`next start` of the example's production build, with a webhook secret of its own."""
    if not (EXAMPLE / ".next" / "BUILD_ID").is_file() or not NEXT.is_file():
        pytest.fail(BUILD_HINT)
    folder = tmp_path_factory.mktemp("nextjs")
    app = NextApp(
        url=f"http://127.0.0.1:{devstack.free_port()}",
        secret="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        store_file=folder / "webhook-store.json",
        log=folder / "next.log",
    )
    env = {
        **os.environ,
        "BROKER_WEBHOOK_SECRET": app.secret,
        "BROKER_JWT_SECRET": secrets.token_urlsafe(32),  # so /api/broker-token answers
        "WEBHOOK_STORE_FILE": str(app.store_file),
        "NEXT_TELEMETRY_DISABLED": "1",
    }
    port = app.url.rsplit(":", 1)[1]
    with app.log.open("wb") as log:
        process = subprocess.Popen(
            ["node", str(NEXT), "start", "-H", "127.0.0.1", "-p", port],
            cwd=EXAMPLE,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops its workers
        )
    try:
        _wait_until_serving(app, process)
        yield app
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_until_serving(app: NextApp, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"next start exited {process.returncode}:\n{app.log.read_text()}")
        try:
            if httpx.get(f"{app.url}/login", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling with a deadline
    pytest.fail(f"next start did not answer within 60 s:\n{app.log.read_text()}")


def _event(owner: str, upload_id: str, seq: int, kind: str = "upload.finalized") -> bytes:
    status = {"upload.finalized": "finalized", "upload.deleted": "deleted"}.get(kind, "pending")
    return json.dumps(
        {
            "type": kind,
            "timestamp": datetime.now(UTC).isoformat(),
            "data": {
                "id": upload_id,
                "owner": owner,
                "policy": "default",
                "status": status,
                "size": 11,
                "content_type": "text/plain",
                "sha256": "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
                "metadata": {"post_id": "42"},
                "seq": seq,
            },
        }
    ).encode()


def _signed(
    app: NextApp, body: bytes, webhook_id: str, secret: str = "", at: datetime | None = None
) -> dict[str, str]:
    """The headers the broker sends with `body`, signed by the reference library."""
    at = at or datetime.now(UTC)
    signature = standardwebhooks.Webhook(secret or app.secret).sign(webhook_id, at, body.decode())
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def _post(app: NextApp, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{app.url}/api/broker-webhook", content=body, headers=headers, timeout=10)


def _recorded_ids(app: NextApp, user: str) -> list[str]:
    """The upload ids the files page shows under "Recorded by the webhook", as served."""
    page = httpx.get(f"{app.url}/files", cookies={"user": user}, timeout=10)
    assert page.status_code == 200, page.text[:500]
    return re.findall(r'<tr class="recorded-file"><td><code>([^<]+)</code>', page.text)


def _outcome(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["outcome"]


def test_nextjs_webhook_records_a_finalized_upload_once(next_app: NextApp) -> None:
    user, upload_id = f"alice-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    body = _event(user, upload_id, seq=7)
    headers = _signed(next_app, body, f"msg_{uuid.uuid4().hex}")
    assert _recorded_ids(next_app, user) == []

    assert _outcome(_post(next_app, body, headers)) == "applied"
    # The broker sends it again, same webhook-id, when it did not get the 2xx in time.
    assert _outcome(_post(next_app, body, headers)) == "duplicate"
    assert _recorded_ids(next_app, user) == [upload_id]
    assert _recorded_ids(next_app, f"bob-{uuid.uuid4().hex[:8]}") == []

    # An older event of the same upload (seq 5 < 7) arriving late changes nothing...
    late = _event(user, upload_id, seq=5, kind="upload.created")
    assert _outcome(_post(next_app, late, _signed(next_app, late, "msg_late"))) == "stale"
    assert _recorded_ids(next_app, user) == [upload_id]
    # ...a newer one applies: deleted, so no longer on the user's record.
    deleted = _event(user, upload_id, seq=9, kind="upload.deleted")
    assert _outcome(_post(next_app, deleted, _signed(next_app, deleted, "msg_del"))) == "applied"
    assert _recorded_ids(next_app, user) == []


def test_nextjs_webhook_refuses_what_the_broker_did_not_sign(next_app: NextApp) -> None:
    user = f"mallory-{uuid.uuid4().hex[:8]}"
    body = _event(user, str(uuid.uuid4()), seq=1)
    other_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    six_minutes_ago = datetime.now(UTC) - timedelta(minutes=6)
    refused = {
        "wrong secret": _post(next_app, body, _signed(next_app, body, "msg_a", other_secret)),
        "too old": _post(next_app, body, _signed(next_app, body, "msg_b", at=six_minutes_ago)),
        "tampered body": _post(
            next_app, _event(user, str(uuid.uuid4()), seq=1), _signed(next_app, body, "msg_c")
        ),
        "unsigned": _post(next_app, body, {"content-type": "application/json"}),
    }
    codes = {why: (r.status_code, r.json()["error"]["code"]) for why, r in refused.items()}
    assert codes == {
        "wrong secret": (400, "ERR_WEBHOOK_BAD_SIGNATURE"),
        "too old": (400, "ERR_WEBHOOK_TIMESTAMP_TOO_OLD"),
        "tampered body": (400, "ERR_WEBHOOK_BAD_SIGNATURE"),
        "unsigned": (400, "ERR_WEBHOOK_MISSING_HEADER"),
    }
    assert _recorded_ids(next_app, user) == []


def test_nextjs_pages_load_with_no_failed_request(next_app: NextApp) -> None:
    """The pages load with nothing missing from the app (there was no favicon: a console 404 on
    every page), and the files page shows what the webhook recorded for the signed-in user."""
    user = f"carol-{uuid.uuid4().hex[:8]}"
    body = _event(user, str(uuid.uuid4()), seq=3)
    assert _outcome(_post(next_app, body, _signed(next_app, body, "msg_page"))) == "applied"
    # Only the app's own requests: no broker runs here, so the files list's calls to it fail.
    own = f"{next_app.url}/"
    failed: list[str] = []
    not_found: list[str] = []
    with chromium.browser() as browser:
        context = browser.new_context()
        context.add_cookies([{"name": "user", "value": user, "url": next_app.url}])
        page = context.new_page()
        page.on("console", lambda m: not_found.append(m.text) if "404" in m.text else None)
        page.on(
            "response",
            lambda r: (
                failed.append(f"{r.url} {r.status}")
                if r.url.startswith(own) and r.status >= 400
                else None
            ),
        )
        for path in ("/login", "/", "/files"):
            page.goto(f"{next_app.url}{path}")
            page.wait_for_load_state("networkidle")
        recorded = page.locator("tr.recorded-file code").all_inner_texts()
        # Without a <link rel="icon">, Chromium asks for /favicon.ico: the 404 users saw.
        icon = page.evaluate("document.querySelector('link[rel~=icon]')?.getAttribute('href')")
        icon_response = page.request.get(f"{next_app.url}{icon or '/favicon.ico'}")
        icon_type = icon_response.headers.get("content-type", "")
        context.close()
    assert failed == [] and not_found == [], (failed, not_found)
    assert recorded == [json.loads(body)["data"]["id"]]
    assert icon is not None and icon_response.ok and icon_type.startswith("image/svg+xml"), icon
