"""Routes for the parts of a multipart upload."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from broker.api import schemas
from broker.api.deps import AuthenticatedRoute, MultipartDep, PrincipalDep
from broker.api.errors_doc import responses

router = APIRouter(prefix="/v1/uploads", tags=["multipart"], route_class=AuthenticatedRoute)


@router.post(
    "/{upload_id}/parts",
    response_model=schemas.SignedParts,
    responses=responses(400, 401, 404, 409, 422, 503),
)
async def sign_parts(
    upload_id: uuid.UUID, body: schemas.SignParts, principal: PrincipalDep, service: MultipartDep
) -> schemas.SignedParts:
    """Presign UploadPart requests for just these parts (sign just in time, a batch at a time)."""
    signed = await service.sign_parts(
        principal.owner, upload_id, list(dict.fromkeys(body.part_numbers)), body.checksums
    )
    return schemas.SignedParts(
        parts=[
            schemas.SignedPart(
                part_number=number, url=put.url, headers=put.headers, expires_at=put.expires_at
            )
            for number, put in signed
        ]
    )


@router.get(
    "/{upload_id}/parts",
    response_model=schemas.StoredParts,
    responses=responses(401, 404, 409, 422, 503),
)
async def list_parts(
    upload_id: uuid.UUID, principal: PrincipalDep, service: MultipartDep
) -> schemas.StoredParts:
    """List the parts storage already holds, to resume an interrupted upload."""
    parts = await service.list_parts(principal.owner, upload_id)
    return schemas.StoredParts(
        parts=[
            schemas.StoredPartOut(
                part_number=p.part_number, etag=p.etag, size=p.size, checksum=p.checksum
            )
            for p in parts
        ]
    )


@router.post(
    "/{upload_id}/complete",
    response_model=schemas.Upload,
    responses=responses(400, 401, 404, 409, 422, 503),
)
async def complete(
    upload_id: uuid.UUID,
    body: schemas.CompleteMultipart,
    principal: PrincipalDep,
    service: MultipartDep,
) -> schemas.Upload:
    """Complete the multipart upload in storage; it is finalized by the webhook, like a PUT."""
    claimed = {part.part_number: part.etag for part in body.parts}
    return schemas.Upload.of(await service.complete(principal.owner, upload_id, claimed))
