"""The upload use cases: create (policies, quotas, idempotency), read, list, download, delete.

No HTTP, no SQL text. Storage events are applied in finalization.py, multipart parts in
multipart.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, NamedTuple
from urllib.parse import quote

from broker import metrics
from broker.domain import content_checks, errors
from broker.domain.downloads import RequestOrigin
from broker.domain.model import (
    Actor,
    ChecksumAlgorithm,
    NewUploadRecord,
    QuotaLimits,
    Transfer,
    Upload,
    UploadStatus,
)
from broker.domain.objects import PresignedForm, PresignedRequest
from broker.domain.policies import Policies, Policy
from broker.domain.rate_limits import Action
from broker.flows.ports import ObjectStore, Queries
from broker.flows.rate_limits import RateLimiter

log = logging.getLogger("broker.uploads")

MIB = 1024**2
MAX_PARTS = 10_000


class NewUpload(NamedTuple):
    """What a client asks to upload (already validated for shape by the API layer); a
    NamedTuple, as Upload: built on every create."""

    filename: str
    content_type: str
    size: int | None  # None: known only once stored (Uppy); then capped by the policy
    sha256: str | None = None
    metadata: dict[str, str] = {}  # noqa: RUF012 (never mutated)
    policy: str | None = None
    method: Literal["PUT", "POST"] = "PUT"
    multipart: bool = False
    checksum_algorithm: ChecksumAlgorithm | None = None

    def fingerprint(self) -> str:
        """Identifies the request, so a reused Idempotency-Key with another body is caught."""
        canonical = json.dumps(self._asdict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class MultipartPlan:
    """How the client sends a multipart upload: parts of part_size bytes, the last one shorter."""

    upload_id: str
    part_size: int | None  # None: of undeclared size, parts are cut by the client
    part_count: int | None
    checksum_algorithm: ChecksumAlgorithm | None


@dataclass(frozen=True)
class Created:
    """A created (or, for a retried Idempotency-Key, found) upload and how to send its bytes.

    `put`, `form` or `multipart` is set while the upload is pending, per its transfer.
    """

    record: Upload
    replayed: bool = False
    put: PresignedRequest | None = None
    form: PresignedForm | None = None
    multipart: MultipartPlan | None = None


@dataclass(frozen=True)
class Page:
    """One page of a listing and the cursor for the next, if any."""

    items: list[Upload]
    next_cursor: str | None


def media_type_essence(content_type: str) -> str:
    """`type/subtype` of a media type, lower-cased, without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


def plan_part_size(size: int, preferred: int) -> tuple[int, int]:
    """(part_size, part_count) within S3's limits: >= 5 MiB parts, at most 10,000 of them."""
    smallest = math.ceil(size / MAX_PARTS / MIB) * MIB
    part_size = max(preferred, smallest)
    return part_size, math.ceil(size / part_size)


def part_length(size: int, part_size: int, part_count: int, part_number: int) -> int:
    """The exact byte count of one part: part_size, except the remainder in the last."""
    return part_size if part_number < part_count else size - part_size * (part_count - 1)


def content_disposition(filename: str, kind: str = "attachment") -> str:
    """An attachment (or inline) header carrying any filename safely (RFC 6266 with RFC 5987
    encoding).

    The quoted fallback keeps printable ASCII only, so quotes, backslashes, CR and LF can
    never end the value early; filename* carries the exact name percent-encoded as UTF-8.
    """
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "_" for ch in filename)
    exact = quote(filename, safe="!#$&+-.^_`|~")
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{exact}"


def sha256_base64(hex_digest: str | None) -> str | None:
    """The hex SHA-256 the API takes, in the base64 form S3 checksum headers use."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode() if hex_digest else None


def encode_cursor(upload: Upload) -> str:
    """An opaque cursor pointing just after `upload` in (created_at, id) order."""
    raw = json.dumps([upload.created_at.isoformat(), str(upload.id)]).encode()
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
    """Create, read, list, download and delete uploads."""

    def __init__(
        self,
        queries: Queries,
        store: ObjectStore,
        policies: Policies,
        *,
        multipart_threshold: int,
        part_size: int,
        download_ttl: int,
        check_grace: int = 30,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.queries = queries
        self.storage = store
        self.policies = policies
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.download_ttl = download_ttl
        # Seconds after a URL expires (or a multipart completes) before the reconciler
        # looks in storage for an upload whose webhook never came.
        self.check_grace = check_grace
        self.limiter = limiter or RateLimiter(queries, policies.failed_auth_limit)

    def _policy(self, name: str | None) -> Policy:
        policy = self.policies.get(name)
        if policy is None:
            raise errors.UnknownPolicy(
                f"no upload policy named {name!r}",
                details={"policies": sorted(self.policies.by_name)},
            )
        return policy

    def _transfer(self, new: NewUpload, policy: Policy) -> Transfer:
        if new.multipart and new.method == "POST":
            raise errors.InvalidRequest(
                details=[{"field": "method", "in": "body", "message": "POST is single-part"}]
            )
        if new.size is None and not (new.multipart or new.method == "POST"):
            raise errors.InvalidRequest(
                details=[{"field": "size", "in": "body", "message": "the size is required"}]
            )
        wants_multipart = new.multipart or (
            new.method == "PUT" and new.size is not None and new.size > self.multipart_threshold
        )
        if wants_multipart and not policy.multipart:
            if new.multipart:
                raise errors.MultipartNotAllowed(f"policy {policy.name!r} does not allow multipart")
            return Transfer.PUT
        if new.checksum_algorithm is not None and not wants_multipart:
            raise errors.InvalidRequest(
                details=[
                    {
                        "field": "checksum_algorithm",
                        "in": "body",
                        "message": "per-part checksums are for multipart uploads; "
                        "give sha256 for a single PUT or POST",
                    }
                ]
            )
        if wants_multipart and new.sha256 is not None:
            raise errors.InvalidRequest(
                details=[
                    {
                        "field": "sha256",
                        "in": "body",
                        "message": "a whole-file SHA-256 cannot be checked by storage for a "
                        "multipart upload; use checksum_algorithm and per-part checksums",
                    }
                ]
            )
        if wants_multipart:
            return Transfer.MULTIPART
        return Transfer.POST if new.method == "POST" else Transfer.PUT

    def _check_limits(self, new: NewUpload, policy: Policy) -> None:
        if new.size is None:
            pass  # storage enforces the policy's range, and finalization checks it again
        elif new.size > policy.max_size:
            raise errors.UploadTooLarge(
                f"size {new.size} exceeds the limit of {policy.max_size} bytes",
                details={"max_size": policy.max_size, "policy": policy.name},
            )
        if new.size is not None and new.size < policy.min_size:
            raise errors.UploadTooSmall(
                f"size {new.size} is below the minimum of {policy.min_size} bytes",
                details={"min_size": policy.min_size, "policy": policy.name},
            )
        if not policy.allows_content_type(media_type_essence(new.content_type)):
            raise errors.ContentTypeNotAllowed(
                f"content type {new.content_type!r} is not allowed",
                details={"allowed": list(policy.content_types), "policy": policy.name},
            )

    async def create(
        self, owner: str, new: NewUpload, idempotency_key: str | None = None
    ) -> Created:
        """Check the request against its policy and quota, record it pending, say how to send it.

        Storage's multipart upload is started before the record is written, so a record
        never points at a multipart upload that does not exist; if the insert then fails,
        the multipart upload is aborted (or left to storage's stale-upload cleanup).
        """
        policy = self._policy(new.policy)
        self._check_limits(new, policy)
        transfer = self._transfer(new, policy)
        if policy.rate_limits.create is not None:  # checked here: no limit costs no call
            await self.limiter.take(Action.CREATE, policy.rate_limits.create, policy.name, owner)
        fingerprint = new.fingerprint() if idempotency_key is not None else None
        if idempotency_key is not None:
            earlier = await self.queries.get_upload_by_idempotency_key(owner, idempotency_key)
            if earlier is not None:
                return self._replay(earlier, fingerprint)

        upload_id = uuid.uuid4()
        key = f"{policy.key_prefix}{upload_id}"
        multipart_id = part_size = part_count = None
        if transfer is Transfer.MULTIPART:
            if new.size is not None:
                part_size, part_count = plan_part_size(new.size, self.part_size)
            multipart_id = await self.storage.create_multipart(
                key, content_type=new.content_type, checksum_algorithm=new.checksum_algorithm
            )
        record = NewUploadRecord(
            id=upload_id,
            owner=owner,
            filename=new.filename,
            content_type=new.content_type,
            size=new.size,
            size_limit=policy.max_size if new.size is None else None,
            sha256=new.sha256,
            metadata=new.metadata,
            bucket=self.storage.bucket,
            object_key=key,
            policy=policy.name,
            transfer=transfer,
            multipart_upload_id=multipart_id,
            part_size=part_size,
            part_count=part_count,
            checksum_algorithm=new.checksum_algorithm,
            idempotency_key=idempotency_key,
            request_hash=fingerprint,
            pending_seconds=float(policy.pending_ttl_seconds),
            check_after_seconds=None
            if transfer is Transfer.MULTIPART
            else float(policy.url_ttl_seconds + self.check_grace),
        )
        try:
            upload = await self.queries.insert_upload(record, self._quota(policy))
        except BaseException:
            if multipart_id is not None:
                await self.storage.abort_multipart(key, multipart_id)
            raise
        if upload is None:
            if multipart_id is not None:
                await self.storage.abort_multipart(key, multipart_id)
            earlier = None
            if idempotency_key is not None:
                earlier = await self.queries.get_upload_by_idempotency_key(owner, idempotency_key)
            if earlier is not None:
                return self._replay(earlier, fingerprint)
            raise errors.QuotaExceeded(details=self._quota_details(policy))
        metrics.UPLOADS_CREATED.labels(policy.name, transfer).inc()
        log.info(
            "upload.created",
            extra={"upload_id": str(upload_id), "policy": policy.name, "transfer": transfer},
        )
        return self._instructions(upload)

    def _quota(self, policy: Policy) -> QuotaLimits:
        return QuotaLimits(
            policy_bytes=policy.quota.bytes,
            policy_count=policy.quota.count,
            global_bytes=self.policies.global_quota.bytes,
            global_count=self.policies.global_quota.count,
        )

    def _quota_details(self, policy: Policy) -> dict[str, object]:
        return {
            "policy": policy.name,
            "policy_quota": policy.quota.model_dump(),
            "global_quota": self.policies.global_quota.model_dump(),
        }

    def _replay(self, earlier: Upload, fingerprint: str | None) -> Created:
        if earlier.request_hash != fingerprint:
            raise errors.IdempotencyKeyReused(details={"upload_id": str(earlier.id)})
        return replace(self._instructions(earlier), replayed=True)

    def _instructions(self, upload: Upload) -> Created:
        """How to send the bytes of a pending upload (freshly signed), or nothing."""
        if upload.status is not UploadStatus.PENDING:
            return Created(record=upload)
        policy = self.policy_of(upload)
        if upload.transfer is Transfer.MULTIPART:
            assert upload.multipart_upload_id is not None  # uploads_multipart_check
            plan = MultipartPlan(
                upload_id=upload.multipart_upload_id,
                part_size=upload.part_size,
                part_count=upload.part_count,
                checksum_algorithm=upload.checksum_algorithm,
            )
            return Created(record=upload, multipart=plan)
        if upload.transfer is Transfer.POST:
            size = upload.size
            form = self.storage.presign_post(
                upload.object_key,
                content_type=upload.content_type,
                sizes=(size, size)
                if size is not None
                else (policy.min_size, upload.size_limit or 0),
                sha256_base64=sha256_base64(upload.sha256),
                expires_in=policy.url_ttl_seconds,
            )
            return Created(record=upload, form=form)
        assert upload.size is not None  # a single PUT always declares its size
        put = self.storage.presign_put(
            upload.object_key,
            content_type=upload.content_type,
            size=upload.size,
            sha256_base64=sha256_base64(upload.sha256),
            expires_in=policy.url_ttl_seconds,
        )
        return Created(record=upload, put=put)

    def policy_of(self, upload: Upload) -> Policy:
        """The upload's policy; the default one if the policy was removed since."""
        return self.policies.get(upload.policy) or self._policy(None)

    async def get(self, owner: str, upload_id: uuid.UUID) -> Upload:
        """The owner's upload; someone else's is reported as not found."""
        upload = await self.queries.get_upload_for_owner(upload_id, owner)
        if upload is None:
            raise errors.UploadNotFound()
        return upload

    async def get_by_key(self, owner: str, object_key: str) -> Upload:
        """The owner's upload stored under `object_key`; someone else's is not found."""
        upload = await self.queries.get_upload_by_key(self.storage.bucket, object_key)
        if upload is None or upload.owner != owner:
            raise errors.UploadNotFound()
        return upload

    async def list(
        self,
        owner: str,
        status: UploadStatus | None,
        limit: int,
        cursor: str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> Page:
        """The owner's uploads, newest first, one page at a time; with `metadata`, only those
        whose metadata has each of its keys with exactly that value."""
        after = decode_cursor(cursor) if cursor else None
        uploads = await self.queries.list_uploads_for_owner(
            owner, status, after, limit + 1, metadata or None
        )
        next_cursor = encode_cursor(uploads[limit - 1]) if len(uploads) > limit else None
        return Page(items=uploads[:limit], next_cursor=next_cursor)

    async def download(
        self, owner: str, upload_id: uuid.UUID, *, origin: RequestOrigin, inline: bool = False
    ) -> PresignedRequest:
        """A presigned GET for a finalized upload, named after the original file. Active
        content is always an attachment of type application/octet-stream; images, audio,
        video and PDF are shown inline when asked and the policy allows it
        (domain/content_checks.py).

        The download is recorded (who, when, the URL's lifetime, `origin`) by the statement
        that reads the upload, before anything is signed: no URL leaves without its audit
        row, and a refused download (not found, not theirs, not finalized, over its rate
        limit) records nothing. Where policies limit downloads, the upload is read once
        more before that, to know its policy's limit.
        """
        if self.policies.limit_downloads:
            policy = self.policy_of(_downloadable(await self.get(owner, upload_id)))
            limit = policy.rate_limits.downloads
            await self.limiter.take(Action.DOWNLOADS, limit, policy.name, owner)
        upload = _downloadable(
            await self.queries.get_upload_recording_download(
                upload_id, owner, expires_in=self.download_ttl, origin=origin
            )
        )
        policy = self.policy_of(upload)
        served = content_checks.serving(
            upload.content_type,
            upload.detected_content_type,
            inline_asked=inline,
            attachment_only=policy.attachment_only,
        )
        return self.storage.presign_get(
            upload.object_key,
            content_disposition=content_disposition(upload.filename, served.disposition),
            content_type=served.content_type,
            expires_in=self.download_ttl,
        )

    async def delete(self, owner: str, upload_id: uuid.UUID) -> Upload:
        """Mark the upload deleted, then remove its object (or abort its multipart upload).

        The record changes first: if storage fails afterwards, nothing points at the object
        any more and it is only an orphan for the reconciler, never a dangling record.
        Repeating the call repeats the storage clean-up, which is harmless.
        """
        upload = await self.queries.mark_upload_deleted(upload_id, owner)
        if upload is None:
            upload = await self.get(owner, upload_id)
        else:
            metrics.UPLOADS_DELETED.labels(Actor.OWNER).inc()
            log.info("upload.deleted", extra={"upload_id": str(upload_id), "by": Actor.OWNER})
        if upload.status is UploadStatus.DELETED:
            if upload.multipart_upload_id is not None:
                await self.storage.abort_multipart(upload.object_key, upload.multipart_upload_id)
            await self.storage.delete(upload.object_key)
        return upload


def _downloadable(upload: Upload | None) -> Upload:
    """The upload, if it may be downloaded; else the error that says why not."""
    if upload is None:
        raise errors.UploadNotFound()
    if upload.status is UploadStatus.SCANNING:
        raise errors.UploadScanning()
    if upload.status is UploadStatus.QUARANTINED:
        raise errors.UploadQuarantined(details={"signature": upload.scan_signature})
    if upload.status is not UploadStatus.FINALIZED:
        raise errors.UploadNotFinalized(
            f"upload is {upload.status}, not finalized", details={"status": upload.status}
        )
    return upload
