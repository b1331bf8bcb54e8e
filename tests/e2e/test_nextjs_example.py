"""The Next.js example (examples/nextjs) as built for production: `next start` on a loopback
port, its webhook route fed events signed by the reference library (standardwebhooks on PyPI),
its pages opened in a real headless Chromium, and the whole flow (sign in, upload to the test
broker and MinIO, the broker's own webhook recorded by the app) driven from that browser.

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
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks
from playwright.sync_api import expect

from broker import auth, config
from broker.dev import devstack
from tests import services
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
    folder = tmp_path_factory.mktemp("nextjs")
    app = NextApp(
        url=f"http://127.0.0.1:{devstack.free_port()}",
        secret="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        store_file=folder / "webhook-store.json",
        log=folder / "next.log",
    )
    env = {
        "BROKER_WEBHOOK_SECRET": app.secret,
        "BROKER_JWT_SECRET": secrets.token_urlsafe(32),  # so /api/broker-token answers
    }
    with next_start(app, env):
        yield app


@contextmanager
def next_start(app: NextApp, env: dict[str, str]) -> Iterator[None]:
    """`next start` serving `app.url` (loopback) with `env` on top of this process's
    environment, stopped with its workers at the end of the block."""
    if not (EXAMPLE / ".next" / "BUILD_ID").is_file() or not NEXT.is_file():
        pytest.fail(BUILD_HINT)
    full_env = {
        **os.environ,
        **env,
        "WEBHOOK_STORE_FILE": str(app.store_file),
        "NEXT_TELEMETRY_DISABLED": "1",
    }
    port = app.url.rsplit(":", 1)[1]
    with app.log.open("wb") as log:
        process = subprocess.Popen(
            ["node", str(NEXT), "start", "-H", "127.0.0.1", "-p", port],
            cwd=EXAMPLE,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops its workers
        )
    try:
        _wait_until_serving(app, process)
        yield
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


# The whole flow: the example served by `next start` with the test broker's address and
# secrets, a real sign-in and upload in Chromium, and the broker's own signed webhook.

WAIT_MS = 30_000  # the deadline of every wait in the browser


@pytest.fixture
def settings(settings: config.Settings, found_services: services.Services) -> config.Settings:
    """The test's broker sending app webhooks (its sender runs; the outbox NOTIFY wakes it, the
    poll is a backstop), to the example served from the page origin on loopback."""
    return settings.model_copy(
        update={
            "webhook_sender": True,
            "webhook_poll_seconds": 0.5,
            "webhook_allowed_hosts": (f"127.0.0.1:{found_services.page_port}",),
        }
    )


def test_nextjs_example_uploads_through_the_broker_and_records_the_webhook(
    settings: config.Settings,
    broker: str,
    found_services: services.Services,
    tmp_path: Path,
) -> None:
    """Sign in, upload through the example's page to the real broker and MinIO, see it
    finalized; the broker's webhook reaches the example's route, which records the file on the
    user's record. The example runs on the page origin, which the broker's and MinIO's CORS
    allow; it learns the broker's address (a new port every run) when it starts, not when built.
    """
    app = NextApp(
        url=found_services.page_origin,
        secret="",
        store_file=tmp_path / "webhook-store.json",
        log=tmp_path / "next.log",
    )
    admin = {"Authorization": f"Bearer {auth.issue_token(settings.jwt_secret, 'ops', admin=True)}"}
    created = httpx.post(
        f"{broker}/v1/admin/webhook-endpoints",
        json={"url": f"{app.url}/api/broker-webhook", "description": "nextjs example"},
        headers=admin,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    app.secret = created.json()["secret"]
    user = f"dora-{uuid.uuid4().hex[:8]}"
    content = b"hello from the Next.js example\n"
    env = {
        "BROKER_URL": broker,
        "BROKER_JWT_SECRET": settings.jwt_secret,
        "BROKER_WEBHOOK_SECRET": app.secret,
    }
    failed: list[str] = []
    console_errors: list[str] = []
    with next_start(app, env), chromium.browser() as browser:
        context = browser.new_context()
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console_errors.append(str(e)))
        page.on(
            "response", lambda r: failed.append(f"{r.url} {r.status}") if r.status >= 400 else None
        )
        # Leaving a page aborts its prefetches and the status stream (net::ERR_ABORTED): not a
        # failure. A CORS refusal or a refused connection is.
        page.on(
            "requestfailed",
            lambda r: (
                failed.append(f"{r.url} {r.failure}") if r.failure != "net::ERR_ABORTED" else None
            ),
        )

        page.goto(f"{app.url}/login")
        page.fill("input[name=name]", user)
        page.click("button[type=submit]")
        page.wait_for_url(f"{app.url}/")
        shown_broker = page.locator("p.note code").first.inner_text()

        upload_button = page.get_by_role("button", name="Upload", exact=True)
        expect(upload_button).to_be_disabled()  # no file chosen yet
        page.set_input_files(
            "input[type=file]",
            files=[{"name": "hello.txt", "mimeType": "text/plain", "buffer": content}],
        )
        expect(upload_button).to_be_enabled()
        upload_button.click()
        expect(page.locator("span.status-finalized")).to_be_visible()
        upload_id = page.locator("span.status-finalized ~ code").inner_text()
        # The settled file is forgotten: Upload waits for another file (no duplicate upload).
        expect(upload_button).to_be_disabled()
        expect(page.get_by_role("button", name="Cancel")).to_be_disabled()

        # The files page: the broker's list, and (server side) what the webhook recorded. The
        # webhook may land a moment after the page saw `finalized`: reload until it shows.
        page.goto(f"{app.url}/files")
        expect(page.locator(f"tr:has(code:text-is('{upload_id}')) span.status")).to_have_text(
            "finalized"
        )
        recorded = page.locator("tr.recorded-file code")
        deadline = time.monotonic() + WAIT_MS / 1000
        while recorded.all_inner_texts() != [upload_id] and time.monotonic() < deadline:
            page.wait_for_timeout(250)  # polling with a deadline
            page.reload()
        recorded_on_page = recorded.all_inner_texts()
        context.close()
        stored = json.loads(app.store_file.read_text()) if app.store_file.exists() else None

    assert shown_broker == broker
    assert recorded_on_page == [upload_id], (recorded_on_page, app.log.read_text()[-2000:])
    # Nothing the page asked for failed: no favicon 404, no CORS or broker error.
    assert failed == [] and console_errors == [], (failed, console_errors)
    # The broker's record, read as the user (its owner: another user's GET answers 404).
    response = httpx.get(
        f"{broker}/v1/uploads/{upload_id}",
        headers={"Authorization": f"Bearer {auth.issue_token(settings.jwt_secret, user)}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    record = response.json()
    assert (record["status"], record["size"]) == ("finalized", len(content))
    # On the user's record, as the broker reported it (the client sent no checksum here, so
    # sha256 is whatever the broker's record says).
    files = (stored or {}).get("users", {}).get(user, {}).get("files", [])
    assert [(f["id"], f["size"], f["content_type"], f["sha256"]) for f in files] == [
        (upload_id, len(content), "text/plain", record["sha256"])
    ], stored
