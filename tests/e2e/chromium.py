"""Debian's Chromium for the browser tests, started the way this machine allows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

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
