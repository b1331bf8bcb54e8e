"""Operators' route for the download audit: who was given a URL for an upload, and when."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from broker.api.deps import AdminRoute, DownloadAuditDep
from broker.api.errors_doc import responses
from broker.domain.downloads import DownloadRecord

router = APIRouter(prefix="/v1/admin", tags=["admin"], route_class=AdminRoute)


class Download(BaseModel):
    """One presigned GET the broker issued."""

    upload_id: uuid.UUID
    requester: str = Field(description="The owner the bearer token spoke for.")
    issued_at: datetime
    expires_in_seconds: int = Field(description="The URL's lifetime from issued_at.")
    url_expires_at: datetime
    request_id: str | None = Field(description="X-Request-ID of the request (in the logs too).")
    client_address: str | None = Field(
        description="The peer address the broker saw (a proxy's, behind one)."
    )

    @classmethod
    def of(cls, record: DownloadRecord) -> Download:
        return cls(
            upload_id=record.upload_id,
            requester=record.requester,
            issued_at=record.issued_at,
            expires_in_seconds=record.expires_in_seconds,
            url_expires_at=record.url_expires_at,
            request_id=record.request_id,
            client_address=record.client_address,
        )


class DownloadPage(BaseModel):
    items: list[Download]
    next_cursor: str | None


@router.get(
    "/uploads/{upload_id}/downloads",
    response_model=DownloadPage,
    responses=responses(400, 401, 403, 404, 422, 503),
)
async def list_downloads(
    upload_id: uuid.UUID,
    service: DownloadAuditDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=300)] = None,
) -> DownloadPage:
    """Every download URL issued for the upload, newest first, with keyset pagination;
    rows older than BROKER_DOWNLOAD_AUDIT_RETENTION_DAYS are gone."""
    page = await service.list_for_upload(upload_id, limit, cursor)
    return DownloadPage(items=[Download.of(r) for r in page.items], next_cursor=page.next_cursor)
