"""MinIO bucket notifications (JSON) -> typed object events. Pure: no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import unquote_plus

CREATED_EVENTS = frozenset(
    {"s3:ObjectCreated:Put", "s3:ObjectCreated:Post", "s3:ObjectCreated:CompleteMultipartUpload"}
)
# A delete of a missing key emits NoOP: nothing was removed, so it must not change a record.
REMOVED_EVENTS = frozenset(
    {
        "s3:ObjectRemoved:Delete",
        "s3:ObjectRemoved:DeleteMarkerCreated",
        "s3:ObjectRemoved:DeleteAllVersions",
    }
)


class EventKind(Enum):
    """What an event means for the upload stored under its key."""

    CREATED = "created"
    REMOVED = "removed"


class MalformedNotification(ValueError):
    """The body is not a MinIO notification."""


@dataclass(frozen=True)
class ObjectEvent:
    """One object-level change reported by storage."""

    kind: EventKind
    name: str
    bucket: str
    key: str
    size: int
    etag: str | None
    content_type: str | None


def parse_notification(body: bytes) -> list[ObjectEvent]:
    """Decode a webhook body; events we do not act on are left out.

    An empty body (old MinIO releases sent one as a ping) holds no events.
    """
    if not body.strip():
        return []
    try:
        document = json.loads(body)
        records = document.get("Records") or []
        return [event for record in records if (event := _parse_record(record)) is not None]
    except (ValueError, AttributeError, TypeError, KeyError) as exc:
        raise MalformedNotification(str(exc)) from exc


def _parse_record(record: dict[str, Any]) -> ObjectEvent | None:
    name = record["eventName"]
    if name in CREATED_EVENTS:
        kind = EventKind.CREATED
    elif name in REMOVED_EVENTS:
        kind = EventKind.REMOVED
    else:
        return None
    s3 = record["s3"]
    obj = s3["object"]
    return ObjectEvent(
        kind=kind,
        name=name,
        bucket=s3["bucket"]["name"],
        key=unquote_plus(obj["key"]),
        # MinIO omits size for a 0-byte object.
        size=int(obj.get("size") or 0),
        etag=obj.get("eTag") or None,
        content_type=obj.get("contentType") or None,
    )
