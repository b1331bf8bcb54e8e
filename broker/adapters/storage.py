"""Object storage (MinIO over S3): presigned URLs, HEAD, DELETE, bucket setup. Only boto3 user.

Implements the ObjectStore port of broker/flows/ports.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from broker.adapters import sigv4
from broker.config import Settings
from broker.domain import errors
from broker.domain.objects import (
    MultipartRefused,
    PresignedForm,
    PresignedRequest,
    StoredObject,
    StoredPart,
)

SUBSCRIBED_EVENTS = [
    "s3:ObjectCreated:Put",
    "s3:ObjectCreated:Post",
    "s3:ObjectCreated:CompleteMultipartUpload",
    "s3:ObjectRemoved:*",
]


CHECKSUM_HEADERS = {"SHA256": "x-amz-checksum-sha256", "CRC32C": "x-amz-checksum-crc32c"}
CHECKSUM_FIELDS = {"SHA256": "ChecksumSHA256", "CRC32C": "ChecksumCRC32C"}


class Storage:
    """One bucket: boto3 for calls the broker makes, a SigV4 presigner for the client's calls."""

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint,
            aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=settings.s3_secret_key,
            region_name=settings.s3_region,
            config=botocore.config.Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=3,
                read_timeout=10,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )
        # Browsers may reach MinIO by another host name than the broker does; the
        # signature covers the host, so client URLs are signed for the public one.
        self.public_endpoint = settings.public_endpoint
        self.presigner = sigv4.Presigner(
            settings.public_endpoint,
            settings.s3_access_key,
            settings.s3_secret_key,
            settings.s3_region,
        )

    def presign_put(
        self,
        key: str,
        *,
        content_type: str,
        size: int,
        sha256_base64: str | None,
        expires_in: int,
        now: datetime | None = None,
    ) -> PresignedRequest:
        """A single PUT whose type, exact length and (optional) SHA-256 are fixed by the signature.

        If-None-Match: * makes the URL single-use: once the object exists, MinIO refuses
        another PUT, so finalized bytes cannot be overwritten with the same URL.
        """
        headers = {
            "content-type": content_type,
            "content-length": str(size),
            "if-none-match": "*",
        }
        if sha256_base64 is not None:
            headers["x-amz-checksum-sha256"] = sha256_base64
        return self._presign("PUT", key, headers=headers, query={}, expires_in=expires_in, now=now)

    def presign_part(
        self,
        key: str,
        *,
        upload_id: str,
        part_number: int,
        size: int | None,
        checksum: tuple[str, str] | None,
        expires_in: int,
    ) -> PresignedRequest:
        """An UploadPart PUT whose exact length (unless unknown) and checksum (as (algorithm,
        base64)) are signed."""
        headers = {"content-length": str(size)} if size is not None else {}
        if checksum is not None:
            headers[CHECKSUM_HEADERS[checksum[0]]] = checksum[1]
        query = {"partNumber": str(part_number), "uploadId": upload_id}
        return self._presign("PUT", key, headers=headers, query=query, expires_in=expires_in)

    def presign_post(
        self,
        key: str,
        *,
        content_type: str,
        sizes: tuple[int, int],
        sha256_base64: str | None,
        expires_in: int,
    ) -> PresignedForm:
        """A form POST whose policy pins key, type and length: `sizes` is the accepted
        (min, max), both the exact size when it is known (content-length-range)."""
        fields = {"Content-Type": content_type}
        conditions: list[Any] = [
            {"Content-Type": content_type},
            ["content-length-range", sizes[0], sizes[1]],
        ]
        if sha256_base64 is not None:
            fields["x-amz-checksum-sha256"] = sha256_base64
            conditions.append({"x-amz-checksum-sha256": sha256_base64})
        now = datetime.now(UTC)
        form = self.client.generate_presigned_post(
            self.bucket, key, Fields=fields, Conditions=conditions, ExpiresIn=expires_in
        )
        # The policy signature does not cover the host, so only the URL needs the public one.
        return PresignedForm(
            url=f"{self.public_endpoint}/{self.bucket}",
            fields=form["fields"],
            expires_at=now.replace(microsecond=0) + timedelta(seconds=expires_in),
        )

    def presign_get(
        self, key: str, *, content_disposition: str, content_type: str, expires_in: int
    ) -> PresignedRequest:
        """A GET that makes MinIO answer with the given Content-Disposition and Content-Type."""
        query = {
            "response-content-disposition": content_disposition,
            "response-content-type": content_type,
        }
        return self._presign("GET", key, headers={}, query=query, expires_in=expires_in)

    def _presign(
        self,
        method: str,
        key: str,
        *,
        headers: dict[str, str],
        query: dict[str, str],
        expires_in: int,
        now: datetime | None = None,
    ) -> PresignedRequest:
        now = now or datetime.now(UTC)
        url = self.presigner.presign(
            method, self.bucket, key, expires_in=expires_in, headers=headers, query=query, now=now
        )
        expires_at = now.replace(microsecond=0) + timedelta(seconds=expires_in)
        return PresignedRequest(method=method, url=url, headers=headers, expires_at=expires_at)

    async def head(self, key: str) -> StoredObject | None:
        """What is stored under `key` (with its checksum, if it has one), or None."""
        try:
            response = await self._call(
                "head_object", Bucket=self.bucket, Key=key, ChecksumMode="ENABLED"
            )
        except botocore.exceptions.ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return StoredObject(
            size=response["ContentLength"],
            etag=response["ETag"].strip('"'),
            content_type=response.get("ContentType"),
            checksum=response.get("ChecksumSHA256") or response.get("ChecksumCRC32C"),
        )

    async def read_head(self, key: str, length: int) -> bytes | None:
        """The first `length` bytes under `key` (fewer if it is shorter), or None if gone."""
        try:
            response = await self._call(
                "get_object", Bucket=self.bucket, Key=key, Range=f"bytes=0-{length - 1}"
            )
            return await asyncio.to_thread(response["Body"].read)  # type: ignore[no-any-return]
        except botocore.exceptions.ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            if _error_code(exc) == "InvalidRange":  # an empty object has no byte 0
                return b""
            raise

    def stream(self, key: str, chunk_size: int) -> Iterator[bytes]:
        """The object's bytes in chunks, read as they are consumed (blocking: run it in a
        thread). Raises errors.ObjectMissing if it is gone, StorageUnavailable on failure."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise errors.ObjectMissing() from exc
            raise errors.StorageUnavailable() from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise errors.StorageUnavailable() from exc
        body = response["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise errors.StorageUnavailable() from exc
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        """Remove the object under `key`; a missing object is not an error."""
        await self._call("delete_object", Bucket=self.bucket, Key=key)

    async def create_multipart(
        self, key: str, *, content_type: str, checksum_algorithm: str | None
    ) -> str:
        """Start a multipart upload; returns storage's upload id."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ContentType": content_type}
        if checksum_algorithm is not None:
            params["ChecksumAlgorithm"] = checksum_algorithm
        response = await self._call("create_multipart_upload", **params)
        return str(response["UploadId"])

    async def list_parts(self, key: str, upload_id: str) -> list[StoredPart] | None:
        """Every part storage holds for the upload, in order; None if the upload is gone."""
        parts: list[StoredPart] = []
        marker = 0
        while True:
            try:
                response = await self._call(
                    "list_parts",
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumberMarker=marker,
                    MaxParts=1000,
                )
            except botocore.exceptions.ClientError as exc:
                if _error_code(exc) == "NoSuchUpload":
                    return None
                raise
            for part in response.get("Parts", []):
                parts.append(
                    StoredPart(
                        part_number=part["PartNumber"],
                        etag=part["ETag"].strip('"'),
                        size=part["Size"],
                        checksum=part.get("ChecksumSHA256") or part.get("ChecksumCRC32C"),
                    )
                )
            if not response.get("IsTruncated"):
                return parts
            marker = int(response["NextPartNumberMarker"])

    async def complete_multipart(
        self, key: str, upload_id: str, parts: list[StoredPart], checksum_algorithm: str | None
    ) -> None:
        """Join the parts into the object; raises MultipartRefused when storage refuses."""
        listed = []
        for part in parts:
            entry: dict[str, Any] = {"PartNumber": part.part_number, "ETag": f'"{part.etag}"'}
            if checksum_algorithm is not None:
                entry[CHECKSUM_FIELDS[checksum_algorithm]] = part.checksum
            listed.append(entry)
        try:
            await self._call(
                "complete_multipart_upload",
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": listed},
            )
        except botocore.exceptions.ClientError as exc:
            message = exc.response.get("Error", {}).get("Message", "")
            raise MultipartRefused(_error_code(exc), message) from exc

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload and free its parts; an unknown upload is not an error."""
        try:
            await self._call(
                "abort_multipart_upload", Bucket=self.bucket, Key=key, UploadId=upload_id
            )
        except botocore.exceptions.ClientError as exc:
            if _error_code(exc) != "NoSuchUpload":
                raise

    async def list_objects(self, prefix: str) -> AsyncIterator[list[tuple[str, datetime]]]:
        """(key, last modified) of every object under `prefix`, a page at a time."""
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
            if token:
                params["ContinuationToken"] = token
            response = await self._call("list_objects_v2", **params)
            yield [(obj["Key"], obj["LastModified"]) for obj in response.get("Contents", [])]
            token = response.get("NextContinuationToken")
            if not response.get("IsTruncated") or not token:
                return

    async def list_multipart_uploads(self) -> AsyncIterator[list[tuple[str, str, datetime]]]:
        """(key, upload id, started) of every multipart upload in the bucket, a page at a time.

        Not by prefix: MinIO lists multipart uploads for an empty prefix or an exact key only.
        """
        markers: dict[str, str] = {}
        while True:
            response = await self._call("list_multipart_uploads", Bucket=self.bucket, **markers)
            yield [
                (upload["Key"], upload["UploadId"], upload["Initiated"])
                for upload in response.get("Uploads", [])
            ]
            if not response.get("IsTruncated"):
                return
            markers = {
                "KeyMarker": response["NextKeyMarker"],
                "UploadIdMarker": response["NextUploadIdMarker"],
            }

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the bucket answers."""
        try:
            await self._call("head_bucket", Bucket=self.bucket)
        except botocore.exceptions.ClientError as exc:
            raise errors.StorageUnavailable(f"bucket {self.bucket!r} is not usable") from exc

    async def _call(self, operation: str, **params: Any) -> Any:
        method = getattr(self.client, operation)
        try:
            return await asyncio.to_thread(method, **params)
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise errors.StorageUnavailable() from exc

    def ensure_bucket(self, notify_arns: list[str]) -> None:
        """Create the bucket if missing and subscribe it to the events the broker handles.

        Subscribing replaces the bucket's whole notification configuration.
        """
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError:
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except botocore.exceptions.ClientError as exc:
                # Another `broker init` started at the same moment created it first.
                if _error_code(exc) != "BucketAlreadyOwnedByYou":
                    raise
        queues: list[Any] = [
            {"Id": f"broker-{index}", "QueueArn": arn, "Events": SUBSCRIBED_EVENTS}
            for index, arn in enumerate(notify_arns)
        ]
        self.client.put_bucket_notification_configuration(
            Bucket=self.bucket, NotificationConfiguration={"QueueConfigurations": queues}
        )


def _error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
