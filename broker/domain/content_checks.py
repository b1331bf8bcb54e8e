"""What stored bytes may be, and how they may be served: the rules, with no I/O.

Finalization reads an object's first bytes (SNIFF_BYTES) and a detector (libmagic, in
broker/adapters/sniffer.py) names their type. `mismatch` decides whether that type
contradicts the declared one; `serving` decides how a download presents a file. Both are
documented for users in docs/security.md.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

SNIFF_BYTES = 8192  # what libmagic needs for every type it tells apart reliably

OCTET_STREAM = "application/octet-stream"

# Types a browser runs or renders as a page: never served inline, never accepted under
# another declared type.
ACTIVE_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "text/ecmascript",
        "application/x-shockwave-flash",
    }
)

# Formats with a strong signature in their first bytes: the detector names them reliably,
# so a disagreement with the declared type is a real one.
SIGNED_FORMATS = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/tiff",
        "image/avif",
        "image/heic",
        "application/pdf",
        "application/zip",
        "application/gzip",
        "application/x-7z-compressed",
        "application/x-rar",
        "application/x-bzip2",
        "application/x-xz",
        "application/zstd",
        "video/mp4",
        "video/webm",
        "video/quicktime",
        "audio/mpeg",
        "audio/ogg",
        "audio/wav",
        "audio/flac",
        "application/x-executable",
        "application/x-sharedlib",
        "application/x-dosexec",
        "application/x-mach-binary",
    }
)

# Containers that are zip files inside: the detector may name only the zip.
ZIP_CONTAINERS = frozenset(
    {
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.oasis.opendocument.presentation",
        "application/epub+zip",
        "application/java-archive",
        "application/vnd.android.package-archive",
    }
)

# Non-text types whose content is text (the detector says text/plain or similar).
TEXT_LIKE = frozenset({"application/json", "application/x-ndjson", "application/csv"})

ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/x-ms-bmp": "image/bmp",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/mp3": "audio/mpeg",
    "audio/x-flac": "audio/flac",
    "application/x-zip-compressed": "application/zip",
    "application/x-gzip": "application/gzip",
    "application/x-pdf": "application/pdf",
    "application/vnd.rar": "application/rar",
    "application/x-rar-compressed": "application/x-rar",
}


def essence(content_type: str) -> str:
    """The lower-case `type/subtype` of a media type, parameters dropped, aliases resolved."""
    bare = content_type.split(";", 1)[0].strip().lower()
    return ALIASES.get(bare, bare)


def is_text(media_type: str) -> bool:
    """Text that is not active content: what the detector reports as text/*."""
    return (media_type.startswith("text/") or media_type in TEXT_LIKE) and (
        media_type not in ACTIVE_TYPES
    )


def mismatch(declared: str, detected: str) -> bool:
    """Whether bytes detected as `detected` contradict the `declared` type. The rules:

    1. the same type (after aliases) always agrees;
    2. active content (HTML, SVG, XML, JavaScript) never passes as another type;
    3. a text type (text/plain, text/csv, application/json...) takes any text, as the
       detector cannot tell CSV, JSON or source code from plain text reliably; a declared
       script type (text/javascript) takes text too: it is never served inline anyway;
    4. a zip-based document (docx, odt, epub, jar...) takes what the detector calls a zip;
    5. application/octet-stream takes anything but active content;
    6. otherwise, if either type has a strong signature (PNG, JPEG, PDF, zip...), they
       disagree; two types without one (a custom type, a weak guess such as image/x-tga
       for random bytes) do not, since the detector has no reliable opinion.
    """
    declared, detected = essence(declared), essence(detected)
    if declared == detected:
        return False
    if detected in ACTIVE_TYPES:
        return True
    if is_text(declared) or declared in ACTIVE_TYPES:
        return not is_text(detected)
    if declared in ZIP_CONTAINERS and detected == "application/zip":
        return False
    if declared == OCTET_STREAM:
        return False
    return declared in SIGNED_FORMATS or detected in SIGNED_FORMATS or is_text(detected)


def shown_inline(media_type: str) -> bool:
    """Types a browser displays without running anything: images (not SVG), audio, video
    and PDF."""
    if media_type in ACTIVE_TYPES:
        return False
    return media_type.split("/", 1)[0] in ("image", "audio", "video") or (
        media_type == "application/pdf"
    )


class Serving(NamedTuple):
    """How a presigned GET presents a file: the Content-Disposition kind and Content-Type
    storage answers with."""

    disposition: Literal["inline", "attachment"]
    content_type: str


def serving(
    declared: str, detected: str | None, *, inline_asked: bool, attachment_only: bool
) -> Serving:
    """Active content (by its declared or its detected type) is always an attachment of
    type application/octet-stream; images, audio, video and PDF are inline when asked for
    and the policy allows it; everything else is an attachment of its declared type."""
    types = {essence(declared)} | ({essence(detected)} if detected else set())
    if types & ACTIVE_TYPES:
        return Serving("attachment", OCTET_STREAM)
    if inline_asked and not attachment_only and all(shown_inline(t) for t in types):
        return Serving("inline", declared)
    return Serving("attachment", declared)
