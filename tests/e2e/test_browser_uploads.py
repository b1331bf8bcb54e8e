"""Uploads from a real headless Chromium: the TypeScript client (clients/ts) and Uppy's
@uppy/aws-s3 through the Companion routes, against the real broker, PostgreSQL and MinIO.

The pages and bundles are built by npm beforehand (the Makefile does it before pytest):
    cd clients/ts && npm ci && npm run build
    cd tests/e2e/web && npm ci && npm run build
They are served over HTTP from the origin the broker's and MinIO's CORS allow
(`found_services.page_port`), and from one that neither allows (`found_services.foreign_port`).
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page

from broker import auth, config
from tests import services
from tests.e2e import chromium

ROOT = Path(__file__).parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CLIENT_DIST = ROOT / "clients" / "ts" / "dist"
WEB = ROOT / "tests" / "e2e" / "web"
# Looked up in this order: the pages, the Uppy bundle, the client's browser bundle.
SERVED = (WEB / "pages", WEB / "dist", CLIENT_DIST)
BUILT = (
    CLIENT_DIST / "broker-client.browser.js",
    WEB / "dist" / "uppy.js",
    WEB / "dist" / "uppy.css",
)
BUILD_HINT = (
    "the browser bundles are not built; run\n"
    "    (cd clients/ts && npm ci && npm run build)\n"
    "    (cd tests/e2e/web && npm ci && npm run build)\n"
    "(make test runs these before pytest)"
)
MiB = 1024 * 1024


class _PagesHandler(SimpleHTTPRequestHandler):
    """Serves a file from the first of SERVED that has it; nothing is cached."""

    def translate_path(self, path: str) -> str:
        name = unquote(urlsplit(path).path).lstrip("/")
        for root in SERVED:
            candidate = (root / name).resolve()
            if candidate.is_relative_to(root.resolve()) and candidate.is_file():
                return str(candidate)
        return str(SERVED[0] / "does-not-exist")

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def static_server(port: int) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", port), _PagesHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass(frozen=True)
class Origins:
    allowed: str  # allowed by BROKER_CORS_ORIGINS and MinIO's CORS
    foreign: str  # allowed by neither


@pytest.fixture(scope="module")
def origins(found_services: services.Services) -> Iterator[Origins]:
    missing = [str(path.relative_to(ROOT)) for path in BUILT if not path.is_file()]
    if missing:
        pytest.fail(f"{BUILD_HINT}\nmissing: {', '.join(missing)}", pytrace=False)
    with (
        static_server(found_services.page_port) as allowed,
        static_server(found_services.foreign_port) as foreign,
    ):
        yield Origins(allowed=allowed, foreign=foreign)


@dataclass
class Opened:
    page: Page
    console: list[str]
    errors: list[str]


@contextmanager
def open_page(
    browser: Browser, url: str, upload_bytes_per_second: int | None = None
) -> Iterator[Opened]:
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    page = context.new_page()
    if upload_bytes_per_second is not None:
        # Loopback sends 10 MiB before Chromium's first upload progress tick (50 ms); a
        # bandwidth like a real link's lets progress show, as it does for users.
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": 0,
                "downloadThroughput": -1,
                "uploadThroughput": upload_bytes_per_second,
            },
        )
    opened = Opened(page, [], [])
    page.on("console", lambda message: opened.console.append(message.text))
    page.on("pageerror", lambda error: opened.errors.append(str(error)))
    page.goto(url)
    try:
        yield opened
    finally:
        context.close()


def page_result(opened: Opened, timeout_ms: float) -> dict[str, Any]:
    """What the page wrote to window.__result once it is done."""
    opened.page.wait_for_function("() => window.__result !== undefined", timeout=timeout_ms)
    result: dict[str, Any] = opened.page.evaluate("window.__result")
    assert not opened.errors, opened.errors
    return result


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    shot.unlink(missing_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(chromium.PNG_SIGNATURE)
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert width >= 1000 and height >= 600


def helper_url(origin: str, broker: str, token: str, size: int, mode: str, **more: Any) -> str:
    query = urlencode({"broker": broker, "token": token, "size": size, "mode": mode, **more})
    return f"{origin}/helper.html?{query}"


@pytest.mark.parametrize(
    ("mode", "transfer"), [("put", "put"), ("post", "post"), ("multipart", "multipart")]
)
def test_the_typescript_client_uploads_a_file_from_the_browser(
    origins: Origins,
    broker: str,
    settings: config.Settings,
    owner: str,
    sql: Callable[..., list[Any]],
    mode: str,
    transfer: str,
) -> None:
    size = 10 * MiB
    token = auth.issue_token(settings.jwt_secret, owner)
    url = helper_url(origins.allowed, broker, token, size, mode)
    with (
        chromium.browser() as browser,
        open_page(browser, url, upload_bytes_per_second=40 * MiB) as opened,
    ):
        result = page_result(opened, timeout_ms=45_000)
        assert result.get("error") is None, (result.get("error"), opened.console)
        screenshot(
            opened.page, "browser-helper.png" if mode == "put" else f"browser-helper-{mode}.png"
        )

    # Progress came in several events and ended at the whole file.
    assert result["progressEvents"] > 1, result
    assert result["lastProgress"] == [size, size]
    # uploadFile resolved on the stream's word: its last status event says finalized.
    assert result["statuses"], result
    assert result["statuses"][-1] == {"status": "finalized", "via": "events"}
    record = result["record"]
    assert (record["status"], record["transfer"], record["size"]) == ("finalized", transfer, size)
    if mode == "multipart":
        assert record["part_count"] == 2  # the test broker's 5 MiB parts
    # The bytes that came back from MinIO are the bytes the page made.
    assert result["hashesEqual"] is True
    assert result["shaDownloaded"] == result["shaSent"]
    assert result["ok"] is True

    rows = sql("SELECT id, owner, status, transfer, size, filename FROM uploads")
    assert [tuple(row) for row in rows] == [
        (uuid.UUID(record["id"]), owner, "finalized", transfer, size, f"helper-{mode}.bin")
    ]


def test_aborting_a_multipart_upload_in_the_browser_deletes_it(
    origins: Origins,
    broker: str,
    settings: config.Settings,
    owner: str,
    sql: Callable[..., list[Any]],
    s3: Any,
) -> None:
    size = 10 * MiB
    token = auth.issue_token(settings.jwt_secret, owner)
    url = helper_url(origins.allowed, broker, token, size, "multipart", abort=0.3)
    with (
        chromium.browser() as browser,
        open_page(browser, url, upload_bytes_per_second=20 * MiB) as opened,
    ):
        result = page_result(opened, timeout_ms=45_000)

    # uploadFile rejected with the signal's AbortError, after deleting the upload.
    assert result["ok"] is False
    assert result["error"]["name"] == "AbortError", result["error"]
    assert 0 < result["lastProgress"][0] < size
    rows = sql("SELECT owner, status, transfer, object_key FROM uploads")
    assert [tuple(row)[:3] for row in rows] == [(owner, "deleted", "multipart")]
    # ...which aborted the multipart upload in MinIO: no parts are kept.
    key = rows[0]["object_key"]
    listed = s3.list_multipart_uploads(Bucket=settings.s3_bucket, Prefix=key)
    assert listed.get("Uploads", []) == []


def test_uppy_uploads_single_and_multipart_files_through_the_companion_routes(
    origins: Origins,
    broker: str,
    settings: config.Settings,
    owner: str,
    sql: Callable[..., list[Any]],
) -> None:
    uppy_token = auth.issue_token(settings.jwt_secret, owner, scope=auth.UPPY_SCOPE)
    url = f"{origins.allowed}/uppy.html?{urlencode({'broker': broker, 'token': uppy_token})}"
    with chromium.browser() as browser, open_page(browser, url) as opened:
        result = page_result(opened, timeout_ms=50_000)
        assert result["failed"] == [] and "error" not in result, (result, opened.console)
        # The Dashboard shows both files done.
        opened.page.locator(".uppy-StatusBar.is-complete").wait_for(timeout=10_000)
        screenshot(opened.page, "browser-uppy.png")

    sent = {file["name"]: file for file in result["successful"]}
    assert sorted(sent) == ["large-30MiB.bin", "small-2MiB.bin"]
    for file in sent.values():
        # The key Uppy reports ends with the upload's id (docs/uppy.md).
        assert file["key"] and uuid.UUID(file["key"].rsplit("/", 1)[-1])

    expected = {
        ("small-2MiB.bin", "post", 2 * MiB),
        ("large-30MiB.bin", "multipart", 30 * MiB),
    }
    deadline = time.monotonic() + 20
    while True:
        rows = sql("SELECT id, owner, status, transfer, size, filename FROM uploads")
        if len(rows) == 2 and all(row["status"] == "finalized" for row in rows):
            break
        assert time.monotonic() < deadline, [dict(row) for row in rows]
        time.sleep(0.1)
    assert {(row["filename"], row["transfer"], row["size"]) for row in rows} == expected
    assert {row["owner"] for row in rows} == {owner}
    assert {str(row["id"]) for row in rows} == {f["key"].rsplit("/", 1)[-1] for f in sent.values()}

    # And MinIO holds exactly the bytes the page made.
    headers = {"Authorization": f"Bearer {auth.issue_token(settings.jwt_secret, owner)}"}
    with httpx.Client(base_url=broker, headers=headers, timeout=30) as api:
        for row in rows:
            link = api.get(f"/v1/uploads/{row['id']}/download")
            assert link.status_code == 200, link.text
            body = httpx.get(link.json()["url"], timeout=30).content
            assert hashlib.sha256(body).hexdigest() == sent[row["filename"]]["sha256"]


def test_a_page_on_a_foreign_origin_is_refused_by_the_browser(
    origins: Origins,
    broker: str,
    settings: config.Settings,
    owner: str,
    sql: Callable[..., list[Any]],
) -> None:
    token = auth.issue_token(settings.jwt_secret, owner)
    url = helper_url(origins.foreign, broker, token, 64 * 1024, "put")
    with chromium.browser() as browser, open_page(browser, url) as opened:
        result = page_result(opened, timeout_ms=20_000)
        console = list(opened.console)

    # The preflight of POST /v1/uploads is refused: the script sees only fetch's TypeError,
    # and Chromium says why on the console.
    assert result["ok"] is False
    error = result["error"]
    assert error["network"] is True and error["name"] == "TypeError", error
    assert error["message"] == "Failed to fetch"
    assert any(
        "has been blocked by CORS policy" in line and origins.foreign in line for line in console
    ), console
    assert sql("SELECT count(*) FROM uploads")[0][0] == 0
