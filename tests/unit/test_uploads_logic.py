"""Pure helpers of the upload use cases: headers, cursors, verification."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import errors, events, uploads


@given(st.text(min_size=1, max_size=255))
def test_content_disposition_never_breaks_the_header(filename):
    header = uploads.content_disposition(filename)
    assert header.isascii() and "\r" not in header and "\n" not in header
    fallback, exact = header.split("; filename*=UTF-8''")
    assert fallback.count('"') == 2 and fallback.endswith('"')
    assert unquote(exact, errors="strict") == filename


def test_content_disposition_of_a_plain_name():
    assert uploads.content_disposition("report 2026.pdf") == (
        "attachment; filename=\"report 2026.pdf\"; filename*=UTF-8''report%202026.pdf"
    )


def test_cursor_round_trips():
    row = {"created_at": datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC), "id": uuid.uuid4()}
    assert uploads.decode_cursor(uploads.encode_cursor(row)) == (row["created_at"], row["id"])


@pytest.mark.parametrize("cursor", ["", "garbage", "W10", "WyJ4IiwgInkiXQ"])
def test_cursor_that_was_not_issued_is_invalid(cursor):
    with pytest.raises(errors.InvalidCursor):
        uploads.decode_cursor(cursor)


def _event(size=5, content_type="text/plain"):
    return events.ObjectEvent(
        events.EventKind.CREATED, "s3:ObjectCreated:Put", "b", "k", size, "e", content_type
    )


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (_event(), None),
        (_event(content_type=None), None),
        (_event(size=6), "size_mismatch"),
        (_event(size=0), "size_mismatch"),
        (_event(content_type="text/html"), "content_type_mismatch"),
    ],
)
def test_rejection_reason(event, reason):
    assert uploads.rejection_reason({"size": 5, "content_type": "text/plain"}, event) == reason


@pytest.mark.parametrize(
    ("value", "essence"),
    [("text/plain", "text/plain"), ("Text/HTML; charset=utf-8", "text/html"), ("a/b ;x=y", "a/b")],
)
def test_media_type_essence(value, essence):
    assert uploads.media_type_essence(value) == essence
