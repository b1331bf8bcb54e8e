"""Debian's Chromium for the browser tests, started the way this machine allows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Route, expect, sync_playwright

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXECUTABLE = "/usr/bin/chromium"  # Debian's package; never a downloaded browser
# Without the background-networking flags Chromium keeps trying hosts this sandbox refuses.
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def browser() -> Iterator[Browser]:
    """Headless Chromium with a fresh profile. Enter it after the test's own setup and leave
    it before SQL checks: while it is open, Playwright's event loop runs in this thread, so
    helpers that call asyncio.run (the `sql` fixture) cannot."""
    with sync_playwright() as playwright:
        started = playwright.chromium.launch(executable_path=EXECUTABLE, args=ARGS)
        try:
            yield started
        finally:
            started.close()


def api_docs_offline(base_url: str, screenshot: str) -> int:
    """Open `base_url`/docs with every request off its origin refused (a machine without
    internet access); the number of operations Swagger UI rendered. Fails if the page asked
    for anything elsewhere (a CDN) or rendered no POST /v1/uploads."""
    own_origin = urlsplit(base_url).netloc
    refused: list[str] = []

    def offline(route: Route) -> None:
        if urlsplit(route.request.url).netloc == own_origin:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    with browser() as started:
        page = started.new_page(viewport={"width": 1280, "height": 900})
        page.route("**/*", offline)
        page.goto(f"{base_url}/docs")
        # Swagger UI renders one block per operation once it has loaded /openapi.json.
        create = page.locator(".opblock-post").filter(has_text="/v1/uploads").first
        expect(create).to_be_visible(timeout=15_000)
        expect(page.locator(".info .title")).to_contain_text("broker")
        operations = page.locator(".opblock").count()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / screenshot))
    assert refused == [], f"/docs asked for assets off the broker: {refused}"
    return operations
