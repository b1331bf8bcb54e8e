"""The upload use cases and their state machine. No HTTP, no SQL text."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

import asyncpg

from broker import errors, events, storage
from broker.config import Settings
from broker.db import Database

log = logging.getLogger("broker.uploads")

STATUSES = ("pending", "finalized", "rejected", "expired", "deleted")
# A created event for a record in one of these states means bytes arrived that no record
# keeps; they are deleted so that no object stays in the bucket without a live record.
DEAD_STATUSES = frozenset({"rejected", "expired", "deleted"})
KEY_PREFIX = "uploads/"


@dataclass(frozen=True)
class NewUpload:
    """What a client asks to upload (already validated for shape by the API layer)."""

    filename: str
    content_type: str
    size: int
    sha256: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    """One page of a listing and the cursor for the next, if any."""

    items: list[asyncpg.Record]
    next_cursor: str | None


def media_type_essence(content_type: str) -> str:
    """`type/subtype` of a media type, lower-cased, without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


def content_disposition(filename: str) -> str:
    """An attachment header carrying any filename safely (RFC 6266 with RFC 5987 encoding).

    The quoted fallback keeps printable ASCII only, so quotes, backslashes, CR and LF can
    never end the value early; filename* carries the exact name percent-encoded as UTF-8.
    """
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "_" for ch in filename)
    exact = quote(filename, safe="!#$&+-.^_`|~")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}"


def rejection_reason(upload: asyncpg.Record, event: events.ObjectEvent) -> str | None:
    """Why the stored object does not match what the record promised, or None if it does."""
    if event.size != upload["size"]:
        return "size_mismatch"
    if event.content_type is not None and event.content_type != upload["content_type"]:
        return "content_type_mismatch"
    return None


def encode_cursor(row: asyncpg.Record) -> str:
    """An opaque cursor pointing just after `row` in (created_at, id) order."""
    raw = json.dumps([row["created_at"].isoformat(), str(row["id"])]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Undo encode_cursor; anything else is an InvalidCursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, upload_id = json.loads(raw)
        return datetime.fromisoformat(created_at), uuid.UUID(upload_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise errors.InvalidCursor() from exc


class Uploads:
    """Create, read, list, download, delete uploads, and apply storage events to them."""

    def __init__(self, db: Database, store: storage.Storage, settings: Settings) -> None:
        self.db = db
        self.storage = store
        self.settings = settings

    async def create(
        self, owner: str, new: NewUpload
    ) -> tuple[asyncpg.Record, storage.PresignedRequest]:
        """Check the request against the limits, record it as pending, presign its PUT."""
        if new.size > self.settings.max_upload_bytes:
            raise errors.UploadTooLarge(
                f"size {new.size} exceeds the limit of {self.settings.max_upload_bytes} bytes",
                details={"max_size": self.settings.max_upload_bytes},
            )
        if not self.settings.content_type_allowed(media_type_essence(new.content_type)):
            raise errors.ContentTypeNotAllowed(
                f"content type {new.content_type!r} is not allowed",
                details={"allowed": list(self.settings.allowed_content_types)},
            )
        upload_id = uuid.uuid4()
        key = f"{KEY_PREFIX}{upload_id}"
        row = await self.db.fetchrow(
            "insert_upload",
            upload_id,
            owner,
            new.filename,
            new.content_type,
            new.size,
            new.sha256,
            new.metadata,
            self.storage.bucket,
            key,
            float(self.settings.pending_ttl_seconds),
        )
        assert row is not None
        put = self.storage.presign_put(
            key,
            content_type=new.content_type,
            size=new.size,
            sha256_base64=(
                base64.b64encode(bytes.fromhex(new.sha256)).decode() if new.sha256 else None
            ),
            expires_in=self.settings.upload_url_ttl_seconds,
        )
        return row, put

    async def get(self, owner: str, upload_id: uuid.UUID) -> asyncpg.Record:
        """The owner's upload; someone else's is reported as not found."""
        row = await self.db.fetchrow("get_upload_for_owner", upload_id, owner)
        if row is None:
            raise errors.UploadNotFound()
        return row

    async def list(self, owner: str, status: str | None, limit: int, cursor: str | None) -> Page:
        """The owner's uploads, newest first, one page at a time."""
        after_created, after_id = decode_cursor(cursor) if cursor else (None, None)
        rows = await self.db.fetch(
            "list_uploads_for_owner", owner, status, after_created, after_id, limit + 1
        )
        next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
        return Page(items=rows[:limit], next_cursor=next_cursor)

    async def download(self, owner: str, upload_id: uuid.UUID) -> storage.PresignedRequest:
        """A presigned GET for a finalized upload, named after the original file."""
        row = await self.get(owner, upload_id)
        if row["status"] != "finalized":
            raise errors.UploadNotFinalized(
                f"upload is {row['status']}, not finalized", details={"status": row["status"]}
            )
        return self.storage.presign_get(
            row["object_key"],
            content_disposition=content_disposition(row["filename"]),
            content_type=row["content_type"],
            expires_in=self.settings.download_url_ttl_seconds,
        )

    async def delete(self, owner: str, upload_id: uuid.UUID) -> asyncpg.Record:
        """Mark the upload deleted, then remove its object. Repeating it is harmless.

        The record changes first: if removing the object fails, nothing points at it any
        more and the object is only an orphan for the reconciler, never a dangling record.
        """
        row = await self.db.fetchrow("mark_upload_deleted", upload_id, owner)
        if row is None:
            row = await self.get(owner, upload_id)
        else:
            log.info("upload.deleted", extra={"upload_id": str(upload_id), "by": "owner"})
        if row["status"] == "deleted":
            await self.storage.delete(row["object_key"])
        return row

    async def apply_event(self, event: events.ObjectEvent) -> str:
        """Move the upload under the event's key to the state the event proves; return the outcome.

        Every write is guarded by the expected state, so duplicates, late and out-of-order
        deliveries change nothing that an earlier event already settled.
        """
        if event.bucket != self.storage.bucket:
            return "ignored_other_bucket"
        row = await self.db.fetchrow("get_upload_by_key", event.bucket, event.key)
        if row is None:
            return "ignored_unknown_key"
        if event.kind is events.EventKind.REMOVED:
            changed = await self.db.fetchrow("mark_upload_deleted_by_key", event.bucket, event.key)
            return "deleted" if changed else "ignored_not_live"
        if row["status"] in DEAD_STATUSES:
            await self._delete_quietly(row)
            return "removed_dead_object"
        if row["status"] != "pending":
            return "ignored_already_final"
        reason = rejection_reason(row, event)
        if reason is None:
            changed = await self.db.fetchrow("mark_upload_finalized", row["id"], event.etag)
            return "finalized" if changed else "ignored_already_final"
        changed = await self.db.fetchrow("mark_upload_rejected", row["id"], reason)
        if changed is None:
            return "ignored_already_final"
        log.warning(
            "upload.rejected",
            extra={
                "upload_id": str(row["id"]),
                "reason": reason,
                "expected_size": row["size"],
                "stored_size": event.size,
                "expected_content_type": row["content_type"],
                "stored_content_type": event.content_type,
            },
        )
        await self._delete_quietly(row)
        return "rejected"

    async def _delete_quietly(self, row: asyncpg.Record) -> None:
        """Remove an object nobody may keep; if storage is down it stays an orphan for later."""
        try:
            await self.storage.delete(row["object_key"])
        except errors.StorageUnavailable:
            log.warning("object.delete_failed", extra={"upload_id": str(row["id"])})
