"""Multipart uploads: sign parts just in time, list what storage holds, complete."""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Mapping

from broker.domain import errors
from broker.domain.model import Transfer, Upload, UploadStatus
from broker.domain.objects import MultipartRefused, PresignedRequest, StoredPart
from broker.domain.rate_limits import Action
from broker.flows.uploads import MAX_PARTS, Uploads, part_length

log = logging.getLogger("broker.multipart")
DIGEST_BYTES = {"SHA256": 32, "CRC32C": 4}


class Multipart:
    """The part-level operations of a pending multipart upload, for its owner."""

    def __init__(self, uploads: Uploads) -> None:
        self.uploads = uploads
        self.storage = uploads.storage

    async def _pending_multipart(self, owner: str, upload_id: uuid.UUID) -> Upload:
        upload = await self.uploads.get(owner, upload_id)
        if upload.transfer is not Transfer.MULTIPART:
            raise errors.NotMultipart()
        if upload.status is not UploadStatus.PENDING:
            raise errors.UploadNotPending(
                f"upload is {upload.status}", details={"status": upload.status}
            )
        return upload

    async def sign_parts(
        self,
        owner: str,
        upload_id: uuid.UUID,
        part_numbers: list[int],
        checksums: Mapping[int, str],
    ) -> list[tuple[int, PresignedRequest]]:
        """Presigned UploadPart requests for just these parts, each pinned to its exact length."""
        upload = await self._pending_multipart(owner, upload_id)
        algorithm = upload.checksum_algorithm
        # Of unknown size (Uppy): any part number S3 allows, lengths checked at completion.
        last = upload.part_count or MAX_PARTS
        problems = [
            f"checksum of part {number} is not a base64 {algorithm} digest"
            for number, value in checksums.items()
            if algorithm is not None and len(base64.b64decode(value)) != DIGEST_BYTES[algorithm]
        ]
        for number in part_numbers:
            if not 1 <= number <= last:
                problems.append(f"part {number} is outside 1..{last}")
            elif algorithm is not None and number not in checksums:
                problems.append(f"part {number} needs its {algorithm} checksum")
        extra = set(checksums) - set(part_numbers)
        if algorithm is None and checksums:
            problems.append("this upload was created without checksum_algorithm")
        elif extra:
            problems.append(f"checksums given for parts not asked for: {sorted(extra)}")
        if problems:
            raise errors.InvalidRequest(
                details=[{"field": "part_numbers", "in": "body", "message": p} for p in problems]
            )
        policy = self.uploads.policy_of(upload)
        limit = policy.rate_limits.parts
        await self.uploads.limiter.take(Action.PARTS, limit, policy.name, owner)
        ttl = policy.url_ttl_seconds
        assert upload.multipart_upload_id is not None
        return [
            (
                number,
                self.storage.presign_part(
                    upload.object_key,
                    upload_id=upload.multipart_upload_id,
                    part_number=number,
                    size=_part_length(upload, number),
                    checksum=(algorithm, checksums[number]) if algorithm else None,
                    expires_in=ttl,
                ),
            )
            for number in part_numbers
        ]

    async def list_parts(self, owner: str, upload_id: uuid.UUID) -> list[StoredPart]:
        """The parts storage already holds, so a client can resume where it stopped."""
        upload = await self._pending_multipart(owner, upload_id)
        assert upload.multipart_upload_id is not None
        parts = await self.storage.list_parts(upload.object_key, upload.multipart_upload_id)
        if parts is None:
            raise errors.UploadNotPending("storage no longer has this multipart upload")
        return parts

    async def complete(
        self, owner: str, upload_id: uuid.UUID, claimed: Mapping[int, str]
    ) -> Upload:
        """Join the parts in storage; finalization follows through the webhook, as for a PUT.

        The claimed part list (number -> etag) must be every part, each as storage holds
        it; otherwise nothing is completed and the upload stays resumable.
        """
        upload = await self.uploads.get(owner, upload_id)
        if upload.transfer is Transfer.MULTIPART and upload.status is UploadStatus.FINALIZED:
            return upload  # a repeated complete after success
        upload = await self._pending_multipart(owner, upload_id)
        assert upload.multipart_upload_id is not None
        held = await self.storage.list_parts(upload.object_key, upload.multipart_upload_id)
        if held is None:
            return await self.uploads.get(owner, upload_id)  # completed meanwhile
        if upload.size is None or upload.part_count is None:
            min_size = self.uploads.policy_of(upload).min_size
            problems, numbers = _check_unknown_size(upload, min_size, held, claimed)
        else:
            problems, numbers = _check_planned(upload, upload.part_count, held, claimed)
        if problems:
            raise errors.InvalidParts(details=problems)
        by_number = {part.part_number: part for part in held}
        joined = [by_number[n] for n in numbers]
        if upload.size is None:
            # Recorded before the join: MinIO's webhook finalizes during it.
            await self.uploads.queries.record_part_plan(
                upload.id, part_size=joined[0].size, part_count=len(joined)
            )
        # If the webhook of the joined object never comes, the reconciler looks soon.
        await self.uploads.queries.schedule_upload_check(
            upload.id, seconds=self.uploads.check_grace
        )
        await self._join(upload, joined)
        return await self.uploads.get(owner, upload_id)

    async def _join(self, upload: Upload, parts: list[StoredPart]) -> None:
        """Complete the multipart upload in storage; a refusal leaves it resumable (400)."""
        assert upload.multipart_upload_id is not None
        try:
            await self.storage.complete_multipart(
                upload.object_key, upload.multipart_upload_id, parts, upload.checksum_algorithm
            )
        except MultipartRefused as exc:
            log.warning(
                "multipart.complete_refused", extra={"upload_id": str(upload.id), "code": exc.code}
            )
            raise errors.InvalidParts(
                f"storage refused to complete: {exc.code}", details={"storage_code": exc.code}
            ) from exc


def _part_length(upload: Upload, number: int) -> int | None:
    """The exact length of a part of a planned upload; None when its size is not known."""
    if upload.size is None or upload.part_size is None or upload.part_count is None:
        return None
    return part_length(upload.size, upload.part_size, upload.part_count, number)


Problems = list[dict[str, object]]


def _check_planned(
    upload: Upload, part_count: int, held: list[StoredPart], claimed: Mapping[int, str]
) -> tuple[Problems, list[int]]:
    """Every planned part, claimed with the etag storage holds and at its exact length."""
    by_number = {part.part_number: part for part in held}
    problems: Problems = []
    for number in range(1, part_count + 1):
        part = by_number.get(number)
        if number not in claimed:
            problems.append({"part_number": number, "problem": "not in the list"})
        elif part is None:
            problems.append({"part_number": number, "problem": "not uploaded"})
        elif part.etag != claimed[number].strip('"'):
            problems.append({"part_number": number, "problem": "etag does not match"})
        elif part.size != (expected := _part_length(upload, number)):
            problems.append({"part_number": number, "problem": f"size is not {expected}"})
    unknown = sorted(set(claimed) - set(range(1, part_count + 1)))
    problems += [{"part_number": n, "problem": "no such part"} for n in unknown]
    return problems, list(range(1, part_count + 1))


def _check_unknown_size(
    upload: Upload, min_size: int, held: list[StoredPart], claimed: Mapping[int, str]
) -> tuple[Problems, list[int]]:
    """Of an upload whose size was not declared: the claimed parts must be exactly the parts
    storage holds, 1..N, and together fit the policy's minimum and the size limit set at
    creation."""
    by_number = {part.part_number: part for part in held}
    problems: Problems = [
        {"part_number": n, "problem": "not uploaded"} for n in claimed if n not in by_number
    ]
    problems += [
        {"part_number": n, "problem": "not in the list"} for n in by_number if n not in claimed
    ]
    problems += [
        {"part_number": n, "problem": "etag does not match"}
        for n, etag in claimed.items()
        if n in by_number and by_number[n].etag != etag.strip('"')
    ]
    numbers = sorted(claimed)
    if numbers != list(range(1, len(numbers) + 1)):
        problems.append({"part_number": None, "problem": "parts must be numbered 1..N"})
    total = sum(part.size for part in held)
    if total > (upload.size_limit or 0):
        problems.append({"part_number": None, "problem": f"{total} bytes exceed the limit"})
    if total < min_size:
        problems.append({"part_number": None, "problem": f"{total} bytes are below the minimum"})
    return problems, numbers
