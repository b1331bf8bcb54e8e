"""Uppy's Companion S3 protocol, mapped onto the upload use cases. No HTTP here.

@uppy/aws-s3 asks a "Companion" server to sign its S3 requests (see docs/uppy.md for the
supported versions and the exact calls). The broker answers those calls with its own records:
a single upload is a pending record with a presigned form POST, a multipart upload is a
pending multipart record whose storage upload id is Companion's `uploadId`, and finalization
is the same webhook path as for the native API.

Uppy cuts a multipart file into parts by its own rule and signs each part by number only,
so uploads created here use that rule for their part plan (see `uppy_part_size`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from urllib.parse import quote

from broker.domain import errors
from broker.domain.model import Upload, UploadStatus
from broker.domain.objects import PresignedForm, PresignedRequest, StoredPart
from broker.flows.multipart import Multipart
from broker.flows.uploads import MultipartPlan, NewUpload, Uploads

MIB = 1024**2
# @uppy/aws-s3 (5.x and 6.x): parts of at least 5 MiB, at most 10,000 of them.
UPPY_MIN_PART_SIZE = 5 * MIB
UPPY_MAX_PARTS = 10_000
# Up to here Uppy's default parts are exactly 5 MiB, like the broker's plan below; above
# it Uppy's part size is not a whole number of MiB while the broker's plan would be.
UPPY_MULTIPART_MAX_SIZE = UPPY_MIN_PART_SIZE * UPPY_MAX_PARTS


def uppy_part_size(size: int) -> int:
    """The part size @uppy/aws-s3 uses by default: max(5 MiB, ceil(size / 10,000))."""
    return max(UPPY_MIN_PART_SIZE, math.ceil(size / UPPY_MAX_PARTS))


class Companion:
    """Companion's S3 operations for one owner's uploads, on the broker's own records."""

    def __init__(self, uploads: Uploads) -> None:
        """`uploads` must plan multipart uploads in parts of UPPY_MIN_PART_SIZE."""
        assert uploads.part_size == UPPY_MIN_PART_SIZE
        self.uploads = uploads
        self.multipart = Multipart(uploads)
        self.storage = uploads.storage

    async def create_form(self, owner: str, new: NewUpload) -> tuple[Upload, PresignedForm]:
        """GET /s3/params: a pending single upload and the form POST that sends its bytes."""
        created = await self.uploads.create(owner, new._replace(method="POST", multipart=False))
        assert created.form is not None  # a new pending POST upload always has its form
        return created.record, created.form

    async def create_multipart(self, owner: str, new: NewUpload) -> tuple[Upload, MultipartPlan]:
        """POST /s3/multipart: a pending multipart upload, its parts cut as Uppy cuts them."""
        if new.size is not None and new.size > UPPY_MULTIPART_MAX_SIZE:
            raise errors.UploadTooLarge(
                f"size {new.size} is above {UPPY_MULTIPART_MAX_SIZE} bytes, where Uppy's "
                "default part size stops being whole MiB; use the native API for such files",
                details={"max_size": UPPY_MULTIPART_MAX_SIZE},
            )
        created = await self.uploads.create(owner, new._replace(method="PUT", multipart=True))
        # Up to UPPY_MULTIPART_MAX_SIZE the broker's plan and Uppy's rule both give 5 MiB;
        # of an unknown size, parts are signed without a length and checked at completion.
        assert created.multipart is not None
        assert new.size is None or created.multipart.part_size == uppy_part_size(new.size)
        return created.record, created.multipart

    async def find(self, owner: str, key: str, upload_id: str) -> Upload:
        """The owner's multipart upload under `key` with this storage upload id, or not found."""
        upload = await self.uploads.get_by_key(owner, key)
        if upload.multipart_upload_id != upload_id:
            raise errors.UploadNotFound()
        return upload

    async def sign_parts(
        self, owner: str, key: str, upload_id: str, part_numbers: list[int]
    ) -> list[tuple[int, PresignedRequest]]:
        """Presigned UploadPart requests, each pinned to the exact length of its part."""
        upload = await self.find(owner, key, upload_id)
        return await self.multipart.sign_parts(owner, upload.id, part_numbers, {})

    async def list_parts(self, owner: str, key: str, upload_id: str) -> list[StoredPart]:
        """The parts storage already holds (Uppy asks when it resumes an upload)."""
        upload = await self.find(owner, key, upload_id)
        return await self.multipart.list_parts(owner, upload.id)

    async def complete(
        self, owner: str, key: str, upload_id: str, claimed: Mapping[int, str]
    ) -> Upload:
        """Join the parts; the webhook then finalizes the record, as for the native API."""
        upload = await self.find(owner, key, upload_id)
        return await self.multipart.complete(owner, upload.id, claimed)

    async def abort(self, owner: str, key: str, upload_id: str) -> Upload:
        """Cancel a multipart upload: the record is deleted and storage's upload aborted.

        A finalized upload is refused, so a late abort never removes a finished file; an
        upload that is already over (deleted, expired, rejected) is left as it is.
        """
        upload = await self.find(owner, key, upload_id)
        if upload.status is UploadStatus.FINALIZED:
            raise errors.UploadNotPending("upload is finalized", details={"status": upload.status})
        if upload.status is not UploadStatus.PENDING:
            return upload
        return await self.uploads.delete(owner, upload.id)

    def location(self, key: str) -> str:
        """The object's URL in the bucket, as S3 reports it for a completed upload."""
        return f"{self.storage.public_endpoint}/{self.storage.bucket}/{quote(key)}"
