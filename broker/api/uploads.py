"""Routes for a user's own uploads."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from broker import uploads
from broker.api import schemas
from broker.api.deps import PrincipalDep, UploadsDep
from broker.api.errors_doc import responses

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.CreatedUpload,
    responses=responses(400, 401, 413, 415, 422, 503),
)
async def create_upload(
    body: schemas.CreateUpload, principal: PrincipalDep, service: UploadsDep
) -> schemas.CreatedUpload:
    """Create a pending upload and get the presigned PUT that sends its bytes to storage."""
    row, put = await service.create(
        principal.subject,
        uploads.NewUpload(
            filename=body.filename,
            content_type=body.content_type,
            size=body.size,
            sha256=body.sha256.lower() if body.sha256 else None,
            metadata=body.metadata,
        ),
    )
    return schemas.CreatedUpload(
        **schemas.Upload.of(row).model_dump(), upload=schemas.PresignedRequestOut.of(put)
    )


@router.get("", response_model=schemas.UploadPage, responses=responses(400, 401, 422, 503))
async def list_uploads(
    principal: PrincipalDep,
    service: UploadsDep,
    status: schemas.Status | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> schemas.UploadPage:
    """List your uploads, newest first; follow next_cursor for the next page."""
    page = await service.list(principal.subject, status, limit, cursor)
    return schemas.UploadPage(
        items=[schemas.Upload.of(row) for row in page.items], next_cursor=page.next_cursor
    )


@router.get("/{upload_id}", response_model=schemas.Upload, responses=responses(401, 404, 422, 503))
async def get_upload(
    upload_id: uuid.UUID, principal: PrincipalDep, service: UploadsDep
) -> schemas.Upload:
    """Read one of your uploads."""
    return schemas.Upload.of(await service.get(principal.subject, upload_id))


@router.get(
    "/{upload_id}/download",
    response_model=schemas.DownloadLink,
    responses=responses(401, 404, 409, 422, 503),
)
async def download_upload(
    upload_id: uuid.UUID, principal: PrincipalDep, service: UploadsDep
) -> schemas.DownloadLink:
    """Get a presigned GET URL for a finalized upload; it downloads under the original name."""
    get = await service.download(principal.subject, upload_id)
    return schemas.DownloadLink(url=get.url, expires_at=get.expires_at)


@router.delete(
    "/{upload_id}", response_model=schemas.Upload, responses=responses(401, 404, 422, 503)
)
async def delete_upload(
    upload_id: uuid.UUID, principal: PrincipalDep, service: UploadsDep
) -> schemas.Upload:
    """Delete an upload and its object; repeating the call is harmless."""
    return schemas.Upload.of(await service.delete(principal.subject, upload_id))
