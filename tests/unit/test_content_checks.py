"""The rules of domain/content_checks.py: when detected bytes contradict a declared type,
and how a download presents a file."""

from __future__ import annotations

import pytest

from broker.domain.content_checks import Serving, mismatch, serving


@pytest.mark.parametrize(
    ("declared", "detected"),
    [
        ("image/png", "image/png"),
        ("image/jpg", "image/jpeg"),  # an alias
        ("image/png; charset=binary", "image/png"),
        ("text/plain", "text/plain"),
        ("text/csv", "text/plain"),  # libmagic cannot tell CSV from text
        ("application/json", "text/plain"),
        ("text/plain", "text/x-script.python"),
        ("text/javascript", "text/plain"),  # never inline anyway
        ("application/octet-stream", "image/png"),
        ("application/octet-stream", "image/x-tga"),  # a weak guess for random bytes
        ("application/x-custom", "image/x-tga"),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document",
         "application/zip"),
        ("image/svg+xml", "image/svg+xml"),
    ],
)  # fmt: skip
def test_these_bytes_agree_with_their_declared_type(declared, detected):
    assert not mismatch(declared, detected)


@pytest.mark.parametrize(
    ("declared", "detected"),
    [
        ("image/jpeg", "image/png"),
        ("image/png", "text/html"),
        ("image/png", "image/svg+xml"),
        ("text/plain", "text/html"),
        ("application/octet-stream", "text/html"),
        ("application/pdf", "application/octet-stream"),  # a real PDF is always recognised
        ("text/plain", "application/octet-stream"),  # binary is not text
        ("text/plain", "image/png"),
        ("application/x-custom", "application/pdf"),
        ("application/zip",
         "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ],
)  # fmt: skip
def test_these_bytes_contradict_their_declared_type(declared, detected):
    assert mismatch(declared, detected)


def test_active_content_is_always_an_octet_stream_attachment():
    for declared, detected in [("image/svg+xml", None), ("image/png", "image/svg+xml"),
                               ("text/html", "text/html"), ("text/xml", None)]:  # fmt: skip
        for inline in (True, False):
            assert serving(declared, detected, inline_asked=inline, attachment_only=False) == (
                Serving("attachment", "application/octet-stream")
            )


def test_images_and_pdf_are_inline_only_when_asked_and_allowed():
    assert serving("image/png", "image/png", inline_asked=True, attachment_only=False) == (
        Serving("inline", "image/png")
    )
    assert serving("application/pdf", None, inline_asked=True, attachment_only=False) == (
        Serving("inline", "application/pdf")
    )
    assert serving("image/png", None, inline_asked=False, attachment_only=False) == (
        Serving("attachment", "image/png")
    )
    assert serving("image/png", None, inline_asked=True, attachment_only=True) == (
        Serving("attachment", "image/png")
    )
    assert serving("text/plain", "text/plain", inline_asked=True, attachment_only=False) == (
        Serving("attachment", "text/plain")
    )
