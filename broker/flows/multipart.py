"""Multipart uploads: sign parts just in time, list what storage holds, complete."""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Mapping

import asyncpg

from broker.adapters import storage
from broker.domain import errors
from broker.flows.uploads import MAX_PARTS, Uploads, part_length

log = logging.getLogger("broker.multipart")
DIGEST_BYTES = {"SHA256": 32, "CRC32C": 4}


class Multipart:
    """The part-level operations of a pending multipart upload, for its owner."""

    def __init__(self, uploads: Uploads) -> None:
        self.uploads = uploads
        self.storage = uploads.storage

    async def _pending_multipart(self, owner: str, upload_id: uuid.UUID) -> asyncpg.Record:
        row = await self.uploads.get(owner, upload_id)
        if row["transfer"] != "multipart":
            raise errors.NotMultipart()
        if row["status"] != "pending":
            raise errors.UploadNotPending(
                f"upload is {row['status']}", details={"status": row["status"]}
            )
        return row

    async def sign_parts(
        self,
        owner: str,
        upload_id: uuid.UUID,
        part_numbers: list[int],
        checksums: Mapping[int, str],
    ) -> list[tuple[int, storage.PresignedRequest]]:
        """Presigned UploadPart requests for just these parts, each pinned to its exact length."""
        row = await self._pending_multipart(owner, upload_id)
        algorithm = row["checksum_algorithm"]
        # Of unknown size (Uppy): any part number S3 allows, lengths checked at completion.
        last = row["part_count"] or MAX_PARTS
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
        ttl = self.uploads.url_ttl(row)
        return [
            (
                number,
                self.storage.presign_part(
                    row["object_key"],
                    upload_id=row["multipart_upload_id"],
                    part_number=number,
                    size=(
                        part_length(row["size"], row["part_size"], row["part_count"], number)
                        if row["size"] is not None
                        else None
                    ),
                    checksum=(algorithm, checksums[number]) if algorithm else None,
                    expires_in=ttl,
                ),
            )
            for number in part_numbers
        ]

    async def list_parts(self, owner: str, upload_id: uuid.UUID) -> list[storage.StoredPart]:
        """The parts storage already holds, so a client can resume where it stopped."""
        row = await self._pending_multipart(owner, upload_id)
        parts = await self.storage.list_parts(row["object_key"], row["multipart_upload_id"])
        if parts is None:
            raise errors.UploadNotPending("storage no longer has this multipart upload")
        return parts

    async def complete(
        self, owner: str, upload_id: uuid.UUID, claimed: Mapping[int, str]
    ) -> asyncpg.Record:
        """Join the parts in storage; finalization follows through the webhook, as for a PUT.

        The claimed part list (number -> etag) must be every part, each as storage holds
        it; otherwise nothing is completed and the upload stays resumable.
        """
        row = await self.uploads.get(owner, upload_id)
        if row["transfer"] == "multipart" and row["status"] == "finalized":
            return row  # a repeated complete after success
        row = await self._pending_multipart(owner, upload_id)
        held = await self.storage.list_parts(row["object_key"], row["multipart_upload_id"])
        if held is None:
            return await self.uploads.get(owner, upload_id)  # completed meanwhile
        by_number = {part.part_number: part for part in held}
        problems = []
        if row["size"] is None:
            return await self._complete_unknown_size(owner, row, held, claimed)
        for number in range(1, row["part_count"] + 1):
            expected = part_length(row["size"], row["part_size"], row["part_count"], number)
            part = by_number.get(number)
            if number not in claimed:
                problems.append({"part_number": number, "problem": "not in the list"})
            elif part is None:
                problems.append({"part_number": number, "problem": "not uploaded"})
            elif part.etag != claimed[number].strip('"'):
                problems.append({"part_number": number, "problem": "etag does not match"})
            elif part.size != expected:
                problems.append({"part_number": number, "problem": f"size is not {expected}"})
        unknown = sorted(set(claimed) - set(range(1, row["part_count"] + 1)))
        problems += [{"part_number": n, "problem": "no such part"} for n in unknown]
        if problems:
            raise errors.InvalidParts(details=problems)
        await self._join(row, [by_number[n] for n in range(1, row["part_count"] + 1)])
        return await self.uploads.get(owner, upload_id)

    async def _complete_unknown_size(
        self,
        owner: str,
        row: asyncpg.Record,
        held: list[storage.StoredPart],
        claimed: Mapping[int, str],
    ) -> asyncpg.Record:
        """Complete an upload whose size was not declared: the claimed parts must be exactly
        the parts storage holds, 1..N, and together fit the size limit set at creation."""
        by_number = {part.part_number: part for part in held}
        problems: list[dict[str, object]] = [
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
        if total > row["size_limit"]:
            problems.append({"part_number": None, "problem": f"{total} bytes exceed the limit"})
        if problems:
            raise errors.InvalidParts(details=problems)
        await self._join(row, [by_number[n] for n in numbers])
        return await self.uploads.get(owner, row["id"])

    async def _join(self, row: asyncpg.Record, parts: list[storage.StoredPart]) -> None:
        """Complete the multipart upload in storage; a refusal leaves it resumable (400)."""
        try:
            await self.storage.complete_multipart(
                row["object_key"], row["multipart_upload_id"], parts, row["checksum_algorithm"]
            )
        except storage.MultipartError as exc:
            log.warning(
                "multipart.complete_refused", extra={"upload_id": str(row["id"]), "code": exc.code}
            )
            raise errors.InvalidParts(
                f"storage refused to complete: {exc.code}", details={"storage_code": exc.code}
            ) from exc
