"""Parsing MinIO notifications (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.domain import minio_events as events

DATA = Path(__file__).parent.parent / "data"


def test_parse_put_event_decodes_the_key_and_reads_the_facts():
    [event] = events.parse_notification((DATA / "minio_put_event.json").read_bytes())
    assert event == events.ObjectEvent(
        kind=events.EventKind.CREATED,
        name="s3:ObjectCreated:Put",
        bucket="uploads",
        key="uploads/a b+c/ü.txt",
        size=12,
        etag="6f5902ac237024bdd0c176cb93063dc4",
        content_type="text/plain",
    )


def test_parse_zero_byte_object_has_size_zero():
    document = json.loads((DATA / "minio_put_event.json").read_text())
    del document["Records"][0]["s3"]["object"]["size"]
    [event] = events.parse_notification(json.dumps(document).encode())
    assert event.size == 0


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("s3:ObjectCreated:Post", events.EventKind.CREATED),
        ("s3:ObjectCreated:CompleteMultipartUpload", events.EventKind.CREATED),
        ("s3:ObjectRemoved:Delete", events.EventKind.REMOVED),
        ("s3:ObjectRemoved:DeleteMarkerCreated", events.EventKind.REMOVED),
    ],
)
def test_parse_event_kinds(name, kind):
    document = json.loads((DATA / "minio_put_event.json").read_text())
    document["Records"][0]["eventName"] = name
    assert events.parse_notification(json.dumps(document).encode())[0].kind is kind


@pytest.mark.parametrize(
    "name", ["s3:ObjectRemoved:NoOP", "s3:ObjectCreated:PutTagging", "s3:ObjectAccessed:Get"]
)
def test_parse_leaves_out_events_that_change_no_upload(name):
    document = json.loads((DATA / "minio_put_event.json").read_text())
    document["Records"][0]["eventName"] = name
    assert events.parse_notification(json.dumps(document).encode()) == []


@pytest.mark.parametrize("body", [b"", b"  \n"])
def test_parse_empty_body_is_no_events(body):
    assert events.parse_notification(body) == []


@pytest.mark.parametrize("body", [b"nope", b"[]", b'{"Records": [{}]}', b'{"Records": 5}'])
def test_parse_malformed_body_raises(body):
    with pytest.raises(events.MalformedNotification):
        events.parse_notification(body)
