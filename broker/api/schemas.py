"""Request and response bodies of the HTTP API, with the validation a client sees."""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from broker import storage

MEDIA_TYPE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
    r"(\s*;\s*[A-Za-z0-9!#$&^_.+-]+=([A-Za-z0-9!#$&^_.+-]+|\"[^\"\\\r\n]*\"))*$"
)
METADATA_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Bidirectional overrides can disguise a name ("gpj.exe" shown as "exe.jpg").
BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
Status = Literal["pending", "finalized", "rejected", "expired", "deleted"]


def _check_filename(value: str) -> str:
    if value in (".", "..") or "/" in value or "\\" in value:
        raise ValueError("must be a plain file name without path separators")
    if any(unicodedata.category(ch) == "Cc" or ch in BIDI_CONTROLS for ch in value):
        raise ValueError("must not contain control characters")
    return value


def _check_content_type(value: str) -> str:
    if not MEDIA_TYPE.match(value):
        raise ValueError("must be a media type like image/png")
    return value


def _check_metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > 16:
        raise ValueError("at most 16 entries")
    for key, item in value.items():
        if not METADATA_KEY.match(key):
            raise ValueError(f"key {key!r} must be 1-64 letters, digits, '_', '.' or '-'")
        if len(item) > 512:
            raise ValueError(f"value of {key!r} is longer than 512 characters")
    return value


Filename = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_check_filename)]
ContentType = Annotated[
    str, Field(min_length=3, max_length=255), AfterValidator(_check_content_type)
]
Metadata = Annotated[dict[str, str], AfterValidator(_check_metadata)]


class CreateUpload(BaseModel):
    """Ask for an upload."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "filename": "holiday.jpg",
                    "content_type": "image/jpeg",
                    "size": 482133,
                    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "metadata": {"album": "summer"},
                }
            ]
        },
    )

    filename: Filename
    content_type: ContentType
    size: int = Field(ge=1, description="Exact size in bytes; the PUT must send exactly this many.")
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="Hex SHA-256 of the whole file; MinIO refuses bytes that do not match.",
    )
    metadata: Metadata = Field(default_factory=dict)


class PresignedRequestOut(BaseModel):
    """A request the client sends to storage itself, with exactly these headers."""

    method: str
    url: str
    headers: dict[str, str]
    expires_at: datetime

    @classmethod
    def of(cls, request: storage.PresignedRequest) -> PresignedRequestOut:
        return cls(
            method=request.method,
            url=request.url,
            headers=request.headers,
            expires_at=request.expires_at,
        )


class Upload(BaseModel):
    """An upload record."""

    id: uuid.UUID
    status: Status
    filename: str
    content_type: str
    size: int
    sha256: str | None
    metadata: dict[str, Any]
    key: str
    etag: str | None
    reject_reason: str | None
    created_at: datetime
    expires_at: datetime
    finalized_at: datetime | None
    deleted_at: datetime | None

    @classmethod
    def of(cls, row: asyncpg.Record) -> Upload:
        return cls(
            id=row["id"],
            status=row["status"],
            filename=row["filename"],
            content_type=row["content_type"],
            size=row["size"],
            sha256=row["sha256"],
            metadata=row["metadata"],
            key=row["object_key"],
            etag=row["etag"],
            reject_reason=row["reject_reason"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            finalized_at=row["finalized_at"],
            deleted_at=row["deleted_at"],
        )


class CreatedUpload(Upload):
    """A new pending upload and the request that sends its bytes."""

    upload: PresignedRequestOut


class UploadPage(BaseModel):
    """One page of uploads, newest first."""

    items: list[Upload]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null at the end."
    )


class DownloadLink(BaseModel):
    """A presigned GET for the file."""

    url: str
    expires_at: datetime


class WebhookResult(BaseModel):
    """What the broker did with each event of a notification."""

    outcomes: list[str]


class ErrorBody(BaseModel):
    """The body of every error response."""

    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """{"error": {...}}"""

    error: ErrorBody
