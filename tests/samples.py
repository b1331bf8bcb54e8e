"""Real files of the types the tests upload: content sniffing (libmagic) reads the bytes, so
a signature followed by zeros is no longer a PNG."""

from __future__ import annotations

import struct
import zlib


def png(width: int = 1, height: int = 1, padding: int = 0) -> bytes:
    """A valid RGB PNG; `padding` bytes in an ancillary chunk make it as large as needed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\0" + b"\xff\x00\x00" * width for _ in range(height))
    extra = chunk(b"zzPd", b"\0" * padding) if padding else b""
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra
        + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )  # fmt: skip


PNG = png()
# A JPEG/JFIF header as cameras and browsers write it (SOI, APP0 JFIF, a quantization table).
JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b0b"
    "0c1912130f141d1a1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e333432ff"
    "d9"
)
SVG_WITH_SCRIPT = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>document.title = 'script ran'</script></svg>"
)
HTML_WITH_SCRIPT = (
    b"<!DOCTYPE html><html><body><script>document.title = 'ran'</script></body></html>"
)
# The standard antivirus test string; the local clamd's signature database matches it.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def svg_calling(url: str) -> bytes:
    """An SVG whose script, if a browser ever runs it, requests `url` (a recorder on
    loopback), so a test can tell that it ran."""
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        f'<script>fetch("{url}?from=svg", {{mode: "no-cors"}})</script></svg>'
    ).encode()


def html_calling(url: str) -> bytes:
    """An HTML page whose script, if a browser ever runs it, requests `url`."""
    return (
        "<!DOCTYPE html><html><head><title>page</title></head><body><p>hello</p>"
        f'<script>fetch("{url}?from=html", {{mode: "no-cors"}})</script></body></html>'
    ).encode()
