"""The local clamd the suite scans with: Debian's clamd on the test signature only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from broker.dev import clamd


@contextmanager
def down(local: clamd.LocalClamd) -> Iterator[None]:
    """clamd stopped for the block (its socket refuses connections), then started again and
    answering PING before the block's caller goes on."""
    local.stop()
    try:
        yield
    finally:
        local.start()
