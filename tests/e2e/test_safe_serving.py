"""Safe serving in a real headless Chromium: an SVG and an HTML page whose scripts would call
a recorder on loopback are uploaded through the real API and presigned PUT to MinIO, and
their download links (GET /v1/uploads/{id}/download, with and without ?disposition=inline)
opened in the browser. Each one must be a download, never a rendered page: the recorder
hears nothing from them, while the same bytes served as a page by the recorder itself do
call it (so the probe works). A PNG asked for inline is shown inline, as users expect.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import BrowserContext, Download, Page
from playwright.sync_api import Error as PlaywrightError

from broker.dev import devstack
from tests import samples
from tests.conftest import create_upload, put_bytes, wait_for_status
from tests.e2e import chromium

DEADLINE_SECONDS = 15


@dataclass
class Recorder:
    """An HTTP server on loopback that notes every request for /ran (with its query), and
    serves the samples as pages at /control/<name> for the positive control."""

    url: str
    pages: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    heard: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[str]:
        with self.lock:
            return list(self.heard)

    def wait_for(self, wanted: str) -> None:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while wanted not in self.snapshot():
            assert time.monotonic() < deadline, (wanted, self.snapshot())
            time.sleep(0.02)


@contextmanager
def recorder() -> Iterator[Recorder]:
    port = devstack.free_port()
    made = Recorder(url=f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path.startswith("/control/"):
                content_type, body = made.pages[path.removeprefix("/control/")]
                self.send_response(200)
                self.send_header("Content-Type", content_type)
            else:  # /ran from a script; also the control pages' /favicon.ico
                if path == "/ran":
                    with made.lock:
                        made.heard.append(self.path)
                body = b""
                self.send_response(204)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield made
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def uploaded(
    api: httpx.Client, headers: dict[str, str], data: bytes, filename: str, content_type: str
) -> str:
    """Create, PUT to MinIO, wait until finalized; the upload's id."""
    created = create_upload(api, headers, data, filename=filename, content_type=content_type)
    put = put_bytes(created, data)
    assert put.status_code == 200, put.text
    wait_for_status(api, headers, created["id"], "finalized")
    return str(created["id"])


def download_link(
    api: httpx.Client, headers: dict[str, str], upload_id: str, disposition: str | None
) -> str:
    params = {"disposition": disposition} if disposition else {}
    link = api.get(f"/v1/uploads/{upload_id}/download", params=params, headers=headers)
    assert link.status_code == 200, link.text
    return str(link.json()["url"])


def open_as_download(context: BrowserContext, url: str) -> tuple[Page, Download]:
    """Navigate a fresh tab to `url`, which must start a download (Chromium then aborts the
    navigation: page.goto raises)."""
    page = context.new_page()
    with page.expect_download(timeout=DEADLINE_SECONDS * 1000) as started:
        try:
            page.goto(url, timeout=DEADLINE_SECONDS * 1000)
        except PlaywrightError as exc:
            assert "Download is starting" in str(exc) or "ERR_ABORTED" in str(exc), exc
    return page, started.value


@pytest.fixture
def probe() -> Iterator[Recorder]:
    with recorder() as made:
        yield made


def test_active_content_downloads_and_never_runs_while_an_image_shows_inline(
    broker: str,
    api: httpx.Client,
    auth_headers: dict[str, str],
    probe: Recorder,
    tmp_path: Path,
) -> None:
    ran = f"{probe.url}/ran"
    svg, html = samples.svg_calling(ran), samples.html_calling(ran)
    # The test broker's default policy takes text/* and image/*, sniffing on (reject): these
    # files are what they say they are, so they pass, and only serving keeps users safe.
    svg_id = uploaded(api, auth_headers, svg, "drawing.svg", "image/svg+xml")
    html_id = uploaded(api, auth_headers, html, "page.html", "text/html")
    png_id = uploaded(api, auth_headers, samples.PNG, "dot.png", "image/png")
    hostile = {
        (name, disposition): download_link(api, auth_headers, upload_id, disposition)
        for name, upload_id in (("drawing.svg", svg_id), ("page.html", html_id))
        for disposition in (None, "inline")
    }
    png_inline = download_link(api, auth_headers, png_id, "inline")
    probe.pages = {"drawing.svg": ("image/svg+xml", svg), "page.html": ("text/html", html)}

    with chromium.browser() as browser:
        context = browser.new_context(accept_downloads=True)
        downloads: list[Download] = []

        def note(download: Download) -> None:
            downloads.append(download)

        context.on("page", lambda page: page.on("download", note))

        for (filename, disposition), url in hostile.items():
            page, download = open_as_download(context, url)
            # The tab never left about:blank: nothing was rendered, the file was saved.
            assert page.url == "about:blank", (filename, disposition, page.url)
            assert download.suggested_filename == filename
            saved = tmp_path / f"{uuid.uuid4().hex}-{filename}"
            download.save_as(saved)
            assert saved.read_bytes() == (svg if filename.endswith(".svg") else html)

        # The image asked for inline is shown in the tab, not downloaded.
        before = len(downloads)
        page = context.new_page()
        response = page.goto(png_inline, timeout=DEADLINE_SECONDS * 1000)
        assert response is not None and response.status == 200
        assert response.headers["content-type"] == "image/png"
        assert page.evaluate("document.contentType") == "image/png"
        assert page.locator("img").count() == 1  # Chromium's image viewer document
        assert page.evaluate("document.images[0].naturalWidth") == 1

        # The control, last: the same bytes served as pages do run, and call the recorder.
        for name in ("drawing.svg", "page.html"):
            context.new_page().goto(f"{probe.url}/control/{name}")
        probe.wait_for("/ran?from=svg")
        probe.wait_for("/ran?from=html")
        assert len(downloads) == before == len(hostile)
        context.close()

    # Only the control pages called: not one of the downloaded files ran its script.
    assert sorted(probe.snapshot()) == ["/ran?from=html", "/ran?from=svg"]

    # What the browser was told, as any client sees it.
    for (filename, _), url in hostile.items():
        answer = httpx.get(url, timeout=10)
        assert answer.headers["content-type"] == "application/octet-stream", filename
        assert answer.headers["content-disposition"].startswith("attachment"), filename
    answer = httpx.get(png_inline, timeout=10)
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["content-disposition"].startswith("inline")
