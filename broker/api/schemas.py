"""Request and response bodies of the HTTP API, with the validation a client sees."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from broker.domain.model import ChecksumAlgorithm, Outcome, ScanResult, Transfer, UploadStatus
from broker.domain.model import Upload as UploadRecord
from broker.domain.objects import PresignedRequest

MEDIA_TYPE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
    r"(\s*;\s*[A-Za-z0-9!#$&^_.+-]+=([A-Za-z0-9!#$&^_.+-]+|\"[^\"\\\r\n]*\"))*$"
)
METADATA_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Control characters (Unicode category Cc: U+0000-001F, U+007F-009F), and bidirectional
# overrides, which can disguise a name ("gpj.exe" shown as "exe.jpg").
FORBIDDEN_IN_FILENAME = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _check_filename(value: str) -> str:
    if value in (".", "..") or "/" in value or "\\" in value:
        raise ValueError("must be a plain file name without path separators")
    if FORBIDDEN_IN_FILENAME.search(value):
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
    policy: str | None = Field(
        default=None, max_length=64, description="Upload policy name; `default` when omitted."
    )
    method: Literal["PUT", "POST"] = Field(
        default="PUT",
        description="PUT (a presigned URL) or POST (a browser form whose policy caps the size).",
    )
    multipart: bool = Field(
        default=False,
        description="Send the file in parts (chosen anyway above the multipart threshold).",
    )
    checksum_algorithm: ChecksumAlgorithm | None = Field(
        default=None,
        description="Multipart only: every part then carries this checksum, verified by storage.",
    )


class PresignedRequestOut(BaseModel):
    """A request the client sends to storage itself, with exactly these headers."""

    method: Literal["PUT"] = "PUT"
    url: str
    headers: dict[str, str]
    expires_at: datetime

    @classmethod
    def of(cls, request: PresignedRequest) -> PresignedRequestOut:
        return cls.model_construct(
            method="PUT", url=request.url, headers=request.headers, expires_at=request.expires_at
        )


class PresignedFormOut(BaseModel):
    """A multipart/form-data POST to `url`: these fields first, then the file as `file`."""

    method: Literal["POST"] = "POST"
    url: str
    fields: dict[str, str]
    expires_at: datetime


class MultipartOut(BaseModel):
    """Send `part_count` parts of `part_size` bytes (the last one shorter), signed per part
    by POST /v1/uploads/{id}/parts, then POST /v1/uploads/{id}/complete."""

    method: Literal["multipart"] = "multipart"
    upload_id: str
    part_size: int
    part_count: int
    checksum_algorithm: ChecksumAlgorithm | None


UploadInstructions = Annotated[
    PresignedRequestOut | PresignedFormOut | MultipartOut, Field(discriminator="method")
]


class Upload(BaseModel):
    """An upload record."""

    id: uuid.UUID
    status: UploadStatus
    filename: str
    content_type: str
    size: int | None = Field(
        description="Bytes; null until finalized for an upload whose size was not declared "
        "(Uppy's Companion routes)."
    )
    sha256: str | None
    metadata: dict[str, Any]
    key: str
    policy: str
    transfer: Transfer
    part_size: int | None = Field(description="Multipart: bytes per part (the last is shorter).")
    part_count: int | None
    etag: str | None
    checksum_algorithm: ChecksumAlgorithm | None
    checksum: str | None = Field(description="The checksum storage reported at finalization.")
    reject_reason: str | None
    detected_content_type: str | None = Field(
        description="The type the broker detected in the stored bytes (policies that sniff)."
    )
    scan_result: ScanResult | None = Field(
        description="The malware scan's verdict (policies that scan): clean, infected, or "
        "skipped when no scanner answered and the policy fails open."
    )
    scan_signature: str | None = Field(description="The malware the scanner named.")
    created_at: datetime
    expires_at: datetime
    finalized_at: datetime | None
    deleted_at: datetime | None

    @classmethod
    def of(cls, upload: UploadRecord) -> Upload:
        return cls(**upload_fields(upload))


def upload_fields(upload: UploadRecord) -> dict[str, Any]:
    """The public fields of an upload record (enums as their values: serializing an enum
    member costs pydantic_core five times what its string does, on every create)."""
    algorithm, scan = upload.checksum_algorithm, upload.scan_result
    return {
        "id": upload.id,
        "status": upload.status.value,
        "filename": upload.filename,
        "content_type": upload.content_type,
        "size": upload.size,
        "sha256": upload.sha256,
        "metadata": upload.metadata,
        "key": upload.object_key,
        "policy": upload.policy,
        "transfer": upload.transfer.value,
        "part_size": upload.part_size,
        "part_count": upload.part_count,
        "etag": upload.etag,
        "checksum_algorithm": algorithm.value if algorithm is not None else None,
        "checksum": upload.checksum,
        "reject_reason": upload.reject_reason,
        "detected_content_type": upload.detected_content_type,
        "scan_result": scan.value if scan is not None else None,
        "scan_signature": upload.scan_signature,
        "created_at": upload.created_at,
        "expires_at": upload.expires_at,
        "finalized_at": upload.finalized_at,
        "deleted_at": upload.deleted_at,
    }


class CreatedUpload(Upload):
    """A new pending upload and how to send its bytes (null once it is no longer pending)."""

    upload: UploadInstructions | None
    events_url: str = Field(
        description="Live status (Server-Sent Events), relative to the broker; its token "
        "opens this stream only and expires in 10 minutes."
    )


def _base64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError("must be base64") from exc
    return value


Base64 = Annotated[str, Field(min_length=8, max_length=44), AfterValidator(_base64)]


class SignParts(BaseModel):
    """Which parts to sign, and their checksums if the upload declared an algorithm."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"part_numbers": [1, 2, 3]}]},
    )

    part_numbers: list[Annotated[int, Field(ge=1, le=10000)]] = Field(min_length=1, max_length=1000)
    checksums: dict[int, Base64] = Field(
        default_factory=dict, description="part number -> base64 SHA-256 or CRC32C of the part"
    )


class SignedPart(BaseModel):
    """A presigned UploadPart request; send exactly these headers and read back the ETag."""

    part_number: int
    url: str
    headers: dict[str, str]
    expires_at: datetime


class SignedParts(BaseModel):
    parts: list[SignedPart]


class StoredPartOut(BaseModel):
    """A part storage already holds."""

    part_number: int
    etag: str
    size: int
    checksum: str | None


class StoredParts(BaseModel):
    parts: list[StoredPartOut]


class CompletedPart(BaseModel):
    part_number: int = Field(ge=1, le=10000)
    etag: str = Field(min_length=1, max_length=128)


class CompleteMultipart(BaseModel):
    """Every part, as the ETags storage returned for them."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"parts": [{"part_number": 1, "etag": "9b2cf5..."}]}]},
    )

    parts: list[CompletedPart] = Field(min_length=1, max_length=10000)


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

    outcomes: list[Outcome]


class ErrorBody(BaseModel):
    """The body of every error response."""

    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """{"error": {...}}"""

    error: ErrorBody
