"""The content sniffer: libmagic (through python-magic) names the type of an object's first
bytes.

libmagic rather than a pure-Python table (puremagic): it tells text from binary and knows
HTML, SVG and XML by their content, not only by a leading signature, which is what the
active-content rules of broker/domain/content_checks.py need. Debian ships it as libmagic1.
A libmagic handle is not safe to share between threads, so each thread has its own, and
detection runs in a thread: text takes libmagic about 1.4 ms per 8 KiB (binary formats
about 15 us), too long to hold the event loop.
"""

from __future__ import annotations

import asyncio
import threading

import magic

_handles = threading.local()


def _detect(head: bytes) -> str:
    handle = getattr(_handles, "magic", None)
    if handle is None:
        handle = _handles.magic = magic.Magic(mime=True)
    return str(handle.from_buffer(head))


async def detect(head: bytes) -> str:
    """The media type of these first bytes of a file (application/x-empty for none)."""
    return await asyncio.to_thread(_detect, head)
