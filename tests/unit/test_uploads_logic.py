"""Pure helpers of the upload use cases: headers, cursors, verification."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.domain import errors
from broker.domain.objects import StoredObject
from broker.flows import finalization, uploads
from tests.unit.fakes import an_upload

MIB = 1024**2


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
    upload = an_upload(created_at=datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC))
    assert uploads.decode_cursor(uploads.encode_cursor(upload)) == (upload.created_at, upload.id)


@pytest.mark.parametrize("cursor", ["", "garbage", "W10", "WyJ4IiwgInkiXQ"])
def test_cursor_that_was_not_issued_is_invalid(cursor):
    with pytest.raises(errors.InvalidCursor):
        uploads.decode_cursor(cursor)


RECORD: dict[str, object] = {}
SHA = hashlib.sha256(b"hello").hexdigest()


def _stored(size=5, content_type="text/plain", checksum=None):
    return StoredObject(size=size, etag="e", content_type=content_type, checksum=checksum)


@pytest.mark.parametrize(
    ("record", "stored", "reason"),
    [
        (RECORD, _stored(), None),
        (RECORD, _stored(content_type=None), None),
        (RECORD, _stored(size=6), "size_mismatch"),
        (RECORD, _stored(size=0), "size_mismatch"),
        (RECORD, _stored(content_type="text/html"), "content_type_mismatch"),
        ({**RECORD, "sha256": SHA}, _stored(checksum=uploads.sha256_base64(SHA)), None),
        ({**RECORD, "sha256": SHA}, _stored(checksum=None), "checksum_mismatch"),
        ({**RECORD, "sha256": SHA}, _stored(checksum="AAAA"), "checksum_mismatch"),
        ({**RECORD, "checksum_algorithm": "SHA256"}, _stored(checksum="x-3"), None),
        ({**RECORD, "checksum_algorithm": "SHA256"}, _stored(), "checksum_missing"),
    ],
)
def test_rejection_reason(record, stored, reason):
    assert finalization.rejection_reason(an_upload(**record), stored) == reason


@pytest.mark.parametrize(
    ("size", "preferred", "plan"),
    [
        (1, 16 * MIB, (16 * MIB, 1)),
        (64 * MIB + 1, 16 * MIB, (16 * MIB, 5)),
        (2 * 1024 * MIB, 16 * MIB, (16 * MIB, 128)),
        (5 * 1024**4, 16 * MIB, (525 * MIB, 9987)),
    ],
)
def test_plan_part_size_respects_storage_limits(size, preferred, plan):
    part_size, part_count = uploads.plan_part_size(size, preferred)
    assert (part_size, part_count) == plan
    assert part_size >= 5 * MIB and part_count <= 10_000
    last = uploads.part_length(size, part_size, part_count, part_count)
    assert 0 < last <= part_size
    assert part_size * (part_count - 1) + last == size


@pytest.mark.parametrize(
    ("value", "essence"),
    [("text/plain", "text/plain"), ("Text/HTML; charset=utf-8", "text/html"), ("a/b ;x=y", "a/b")],
)
def test_media_type_essence(value, essence):
    assert uploads.media_type_essence(value) == essence
