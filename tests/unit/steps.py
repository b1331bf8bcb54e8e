"""What clients and storage do around the use cases, one call each, for the unit suite."""

from __future__ import annotations

from typing import Any

from broker.domain import minio_events
from broker.domain.downloads import RequestOrigin
from broker.domain.model import Outcome, Upload
from broker.flows.uploads import Created, NewUpload
from tests.unit.wired import Flows

OWNER = "alice"
ORIGIN = RequestOrigin(request_id="req-0001", client_address="192.0.2.7")  # of a download
DATA = b"hello"


def a_file(data: bytes = DATA, **fields: Any) -> NewUpload:
    """A request to upload `data` as text/plain, with any field replaced."""
    values: dict[str, Any] = {
        "filename": "hello.txt",
        "content_type": "text/plain",
        "size": len(data),
    }
    return NewUpload(**(values | fields))


def created_event(
    flows: Flows,
    key: str,
    *,
    bucket: str | None = None,
    name: str = "s3:ObjectCreated:Put",
    **overrides: Any,
) -> minio_events.ObjectEvent:
    """The event MinIO sends once an object is stored under `key` (as it holds it now)."""
    held = flows.store.objects.get(key)
    values: dict[str, Any] = {
        "kind": minio_events.EventKind.CREATED,
        "name": name,
        "bucket": bucket or flows.store.bucket,
        "key": key,
        "size": held[0].size if held else 0,
        "etag": held[0].etag if held else None,
        "content_type": held[0].content_type if held else None,
    }
    return minio_events.ObjectEvent(**(values | overrides))


def removed_event(flows: Flows, key: str) -> minio_events.ObjectEvent:
    """The event MinIO sends once the object under `key` is deleted."""
    return minio_events.ObjectEvent(
        kind=minio_events.EventKind.REMOVED,
        name="s3:ObjectRemoved:Delete",
        bucket=flows.store.bucket,
        key=key,
        size=0,
        etag=None,
        content_type=None,
    )


async def create(flows: Flows, data: bytes = DATA, owner: str = OWNER, **fields: Any) -> Created:
    """Create an upload for `data` (nothing is stored yet)."""
    return await flows.uploads.create(owner, a_file(data, **fields))


async def put_and_notify(
    flows: Flows, upload: Upload, data: bytes = DATA, **put: Any
) -> tuple[Outcome, Upload]:
    """The client PUTs `data` for the upload and storage's webhook arrives."""
    flows.store.put(upload.object_key, data, **({"content_type": upload.content_type} | put))
    outcome = await flows.finalizer.apply_event(created_event(flows, upload.object_key))
    changed = await flows.queries.get_upload(upload.id)
    assert changed is not None
    return outcome, changed


async def finalized(flows: Flows, data: bytes = DATA, owner: str = OWNER, **fields: Any) -> Upload:
    """An upload of `data`, created, stored and finalized by its webhook."""
    created = await create(flows, data, owner, **fields)
    outcome, upload = await put_and_notify(flows, created.record, data)
    assert outcome is Outcome.FINALIZED
    return upload
