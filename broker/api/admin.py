"""Routes for operators (tokens with the admin claim)."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from broker.api import schemas
from broker.api.deps import AdminDep, AdminRoute, PrincipalDep
from broker.api.download_audit import Download
from broker.api.errors_doc import responses
from broker.domain import model
from broker.domain.model import AdminSort, Outcome, UploadFilters, UploadStatus
from broker.domain.model import Upload as UploadRecord

router = APIRouter(prefix="/v1/admin", tags=["admin"], route_class=AdminRoute)
PENDING_LONGER_THAN_MAX = 100 * 366 * 86400
ADMIN_ERRORS = responses(401, 403, 404, 422, 503)


def _searchable(text: str | None) -> str | None:
    if text is not None and not model.searchable(text):
        raise ValueError(model.SEARCH_RULE)
    return text


class AdminUpload(schemas.Upload):
    """An upload record with the fields only operators see."""

    owner: str
    updated_at: datetime

    @classmethod
    def of(cls, upload: UploadRecord) -> AdminUpload:
        return cls(
            **schemas.upload_fields(upload), owner=upload.owner, updated_at=upload.updated_at
        )


class AdminUploadPage(BaseModel):
    items: list[AdminUpload]
    next_cursor: str | None


class HistoryEntry(BaseModel):
    status: UploadStatus
    actor: str = Field(description="owner, webhook, reconciler, scanner, or admin:<name>")
    detail: dict[str, Any]
    at: datetime


class StorageState(BaseModel):
    """What MinIO holds for the upload's key right now."""

    exists: bool
    size: int | None = None
    etag: str | None = None
    content_type: str | None = None
    checksum: str | None = None
    multipart_parts: int | None = Field(
        default=None, description="Parts held so far, for a pending multipart upload."
    )


class DownloadsSummary(BaseModel):
    """The upload's download audit in short; the whole list is at `listing`."""

    count: int = Field(description="URLs issued for the upload (rows still kept).")
    last_issued_at: datetime | None
    latest: list[Download] = Field(description="The latest few, newest first.")
    listing: str = Field(description="The route listing them all, page by page.")


class Inspection(BaseModel):
    upload: AdminUpload
    history: list[HistoryEntry]
    storage: StorageState
    downloads: DownloadsSummary


class ActionResult(BaseModel):
    outcome: Outcome
    upload: AdminUpload


@router.get(
    "/uploads", response_model=AdminUploadPage, responses=responses(400, 401, 403, 422, 503)
)
async def list_uploads(
    service: AdminDep,
    status: UploadStatus | None = None,
    owner: str | None = None,
    policy: str | None = None,
    content_type: str | None = None,
    created_before: datetime | None = None,
    created_after: datetime | None = None,
    pending_longer_than: Annotated[
        float | None,
        # Bounded: now() minus a larger interval is out of PostgreSQL's timestamp range.
        Query(
            ge=0,
            le=PENDING_LONGER_THAN_MAX,
            description="Seconds pending (implies status=pending), at most 100 years.",
        ),
    ] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=3,
            max_length=model.SEARCH_MAX,
            description=(
                "Part of the filename, any case: `holi` finds `Holiday Photo.JPG`. It "
                "must hold 3 letters or digits in a row (the trigram index needs them)."
            ),
        ),
        AfterValidator(_searchable),
    ] = None,
    sort: AdminSort = "-created_at",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=300)] = None,
) -> AdminUploadPage:
    """List every owner's uploads with filters, a filename search, a sort order and keyset
    pagination."""
    filters = UploadFilters(
        status=status,
        owner=owner,
        policy=policy,
        content_type=content_type,
        created_before=created_before,
        created_after=created_after,
        pending_longer_than_seconds=pending_longer_than,
        search=q,
    )
    page = await service.list(filters, sort, limit, cursor)
    return AdminUploadPage(
        items=[AdminUpload.of(row) for row in page.items], next_cursor=page.next_cursor
    )


@router.get("/uploads/{upload_id}", response_model=Inspection, responses=ADMIN_ERRORS)
async def inspect_upload(upload_id: uuid.UUID, service: AdminDep) -> Inspection:
    """One upload, its state history, what storage holds for its key right now, and its
    download audit in short (count, the latest few)."""
    found = await service.inspect(upload_id)
    stored = found.stored
    return Inspection(
        upload=AdminUpload.of(found.record),
        history=[
            HistoryEntry(status=e.status, actor=e.actor, detail=e.detail, at=e.at)
            for e in found.history
        ],
        storage=StorageState(
            exists=stored is not None,
            size=stored.size if stored else None,
            etag=stored.etag if stored else None,
            content_type=stored.content_type if stored else None,
            checksum=stored.checksum if stored else None,
            multipart_parts=len(found.parts) if found.parts is not None else None,
        ),
        downloads=DownloadsSummary(
            count=found.downloads.downloads,
            last_issued_at=found.downloads.last_issued_at,
            latest=[Download.of(r) for r in found.recent_downloads],
            listing=f"/v1/admin/uploads/{upload_id}/downloads",
        ),
    )


class StatusPolicyCount(BaseModel):
    status: UploadStatus
    policy: str
    uploads: int
    bytes: int


class HourlyCount(BaseModel):
    hour: datetime
    created: int
    finalized: int


class ReconcilerRun(BaseModel):
    started_at: datetime
    finished_at: datetime
    dry_run: bool
    trigger: str
    counts: dict[str, int] = Field(description="How many times each outcome happened.")


class Stats(BaseModel):
    """Counts and bytes by status and policy, pending ages, hourly activity, reconciler runs."""

    by_status_and_policy: list[StatusPolicyCount]
    pending: int
    stuck: int = Field(description="Pending uploads past their deadline.")
    oldest_pending_age_seconds: float | None
    hourly: list[HourlyCount] = Field(description="The last 24 hours (UTC), oldest first.")
    reconciler_runs: list[ReconcilerRun] = Field(description="The last 10 passes, newest first.")


@router.get("/stats", response_model=Stats, responses=responses(401, 403, 503))
async def stats(service: AdminDep) -> Stats:
    """Counts and bytes by status and policy, pending ages, hourly activity, reconciler runs."""
    found = await service.stats()
    return Stats(
        by_status_and_policy=[StatusPolicyCount(**asdict(c)) for c in found.by_status_and_policy],
        pending=found.pending.pending,
        stuck=found.pending.stuck,
        oldest_pending_age_seconds=found.oldest_pending_age_seconds,
        hourly=[HourlyCount(**asdict(h)) for h in found.hourly],
        reconciler_runs=[ReconcilerRun(**asdict(r)) for r in found.reconciler_runs],
    )


@router.post("/uploads/{upload_id}/reconcile", response_model=ActionResult, responses=ADMIN_ERRORS)
async def reconcile_upload(
    upload_id: uuid.UUID, service: AdminDep, principal: PrincipalDep
) -> ActionResult:
    """Check one pending upload against storage now (settles it, or expires it if overdue)."""
    outcome, row = await service.reconcile(upload_id, f"admin:{principal.owner}")
    return ActionResult(outcome=outcome, upload=AdminUpload.of(row))


class Decision(BaseModel):
    """Why an admin releases or deletes an upload (kept in its history)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)


@router.post(
    "/uploads/{upload_id}/release",
    response_model=AdminUpload,
    responses=responses(400, 401, 403, 404, 409, 422, 503),
)
async def release_upload(
    upload_id: uuid.UUID, decision: Decision, service: AdminDep, principal: PrincipalDep
) -> AdminUpload:
    """Release a quarantined upload: it becomes finalized and downloadable; the reason and
    your name are recorded in its history. Anything else is 409 ERR_UPLOAD_NOT_QUARANTINED."""
    upload = await service.release(upload_id, f"admin:{principal.owner}", decision.reason)
    return AdminUpload.of(upload)


@router.post(
    "/uploads/{upload_id}/delete",
    response_model=ActionResult,
    responses=responses(400, 401, 403, 404, 422, 503),
)
async def delete_upload(
    upload_id: uuid.UUID, decision: Decision, service: AdminDep, principal: PrincipalDep
) -> ActionResult:
    """Delete any live upload (pending, scanning, finalized or quarantined) and its object;
    the reason and your name are recorded in its history."""
    outcome, row = await service.delete(upload_id, f"admin:{principal.owner}", decision.reason)
    return ActionResult(outcome=outcome, upload=AdminUpload.of(row))


@router.post("/uploads/{upload_id}/expire", response_model=ActionResult, responses=ADMIN_ERRORS)
async def expire_upload(
    upload_id: uuid.UUID, service: AdminDep, principal: PrincipalDep
) -> ActionResult:
    """Expire a pending upload now and remove whatever it stored."""
    outcome, row = await service.expire(upload_id, f"admin:{principal.owner}")
    return ActionResult(outcome=outcome, upload=AdminUpload.of(row))
