"""Routes for a user's own uploads."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Literal

import pydantic
import pydantic_core
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError

from broker import auth
from broker.api import schemas, security_doc
from broker.api.deps import (
    AuthenticatedRoute,
    OriginDep,
    PrincipalDep,
    UploadsDep,
    authenticate,
    check_policy_granted,
    flows_of,
)
from broker.api.direct_route import DirectRoute
from broker.api.errors_doc import responses
from broker.domain.model import UploadStatus
from broker.flows import uploads

router = APIRouter(prefix="/v1/uploads", tags=["uploads"], route_class=AuthenticatedRoute)


IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
IDEMPOTENCY_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Retrying with the same key and body returns the same upload.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[!-~]+$"},
}


def idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header, if any; read by hand on the hot path (see create_upload)."""
    key = request.headers.get("idempotency-key")
    if key is not None and not IDEMPOTENCY_KEY.match(key):
        raise RequestValidationError(
            [
                {
                    "type": "string_pattern_mismatch",
                    "loc": ("header", "Idempotency-Key"),
                    "msg": "must be 1-255 printable ASCII characters without spaces",
                    "input": key,
                }
            ]
        )
    return key


def instructions(created: uploads.Created) -> schemas.UploadInstructions | None:
    """The `upload` block of a create response."""
    if created.put is not None:
        return schemas.PresignedRequestOut.of(created.put)
    if created.form is not None:
        return schemas.PresignedFormOut(
            url=created.form.url, fields=created.form.fields, expires_at=created.form.expires_at
        )
    if created.multipart is not None:
        plan = created.multipart
        # Only Uppy's uploads may lack a part plan, and they are not created here.
        assert plan.part_size is not None and plan.part_count is not None
        return schemas.MultipartOut(
            upload_id=plan.upload_id,
            part_size=plan.part_size,
            part_count=plan.part_count,
            checksum_algorithm=plan.checksum_algorithm,
        )
    return None


async def create_body(request: Request) -> schemas.CreateUpload:
    """The request body, validated straight from its bytes (FastAPI's generic body handling
    costs more than the rest of this route); errors go to the usual validation handler."""
    try:
        return schemas.CreateUpload.model_validate_json(await request.body())
    except pydantic.ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None


async def create_upload(request: Request) -> Response:
    """Create a pending upload and get how to send its bytes straight to storage."""
    # The hot path: body, dependencies and response are handled by hand here, because
    # FastAPI's generic machinery for them costs more than the rest of the request.
    principal = await authenticate(request)  # before the body, as AuthenticatedRoute does
    body = await create_body(request)
    check_policy_granted(principal, body.policy)
    service = flows_of(request).uploads
    created = await service.create(
        principal.owner,
        uploads.NewUpload(
            filename=body.filename,
            content_type=body.content_type,
            size=body.size,
            sha256=body.sha256.lower() if body.sha256 else None,
            metadata=body.metadata,
            policy=body.policy,
            method=body.method,
            multipart=body.multipart,
            checksum_algorithm=body.checksum_algorithm,
        ),
        idempotency_key(request),
    )
    upload_id = str(created.record.id)
    token = auth.issue_events_token(
        request.app.state.settings.jwt_secret, principal.owner, upload_id
    )
    # Serialized straight from a dict (no model to build and validate): every value comes
    # from the database or the presigner; a test checks the body against its schema.
    put = created.put
    payload = {
        **schemas.upload_fields(created.record),
        "upload": (
            {"method": "PUT", "url": put.url, "headers": put.headers, "expires_at": put.expires_at}
            if put is not None
            else _dump(instructions(created))
        ),
        "events_url": f"/v1/uploads/{upload_id}/events?token={token}",
    }
    if created.replayed:
        return Response(
            pydantic_core.to_json(payload),
            status_code=status.HTTP_200_OK,
            media_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    return Response(
        pydantic_core.to_json(payload),
        status_code=status.HTTP_201_CREATED,
        media_type="application/json",
    )


# The body's schema, as FastAPI would describe it; the enums it uses are components of the
# document already (the response models use them too).
CREATE_UPLOAD_SCHEMA = {
    key: value
    for key, value in schemas.CreateUpload.model_json_schema(
        ref_template="#/components/schemas/{model}"
    ).items()
    if key != "$defs"
}

router.add_api_route(
    "",
    create_upload,
    methods=["POST"],
    route_class_override=DirectRoute,
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.CreatedUpload,
    responses={
        200: {"model": schemas.CreatedUpload, "description": "Replay of an Idempotency-Key"},
        **responses(400, 401, 403, 409, 413, 415, 422, 503),
    },
    openapi_extra={
        "security": security_doc.BEARER,  # checked by hand, as AuthenticatedRoute does
        "parameters": [IDEMPOTENCY_KEY_PARAMETER],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CREATE_UPLOAD_SCHEMA}},
        },
    },
)


def _dump(model: pydantic.BaseModel | None) -> dict[str, object] | None:
    return model.model_dump() if model is not None else None


METADATA_PREFIX = "metadata."
MAX_METADATA_FILTERS = 16  # as many as an upload may carry
METADATA_VALUE_MAX = 512

# The `metadata.<key>=<value>` query parameters, described the one way OpenAPI can: an
# object exploded into one parameter per property (style form), the property names being
# the parameters' names. FastAPI cannot declare parameters with arbitrary names itself.
METADATA_FILTER_PARAMETER = {
    "name": "metadata",
    "in": "query",
    "required": False,
    "style": "form",
    "explode": True,
    "description": (
        "Only uploads whose metadata has this key with exactly this value: "
        "`metadata.post_id=42`. Several keys must all match. Keys are 1-64 letters, digits, "
        "`_`, `.` or `-` (as in `metadata` at create), values at most 512 characters, at "
        "most 16 keys; values are compared as strings, case and all."
    ),
    "schema": {
        "type": "object",
        "patternProperties": {
            r"^metadata\.[A-Za-z0-9_.-]{1,64}$": {"type": "string", "maxLength": 512}
        },
        "additionalProperties": False,
        "maxProperties": MAX_METADATA_FILTERS,
    },
    "examples": {
        "one key": {"value": {"metadata.post_id": "42"}},
        "two keys": {"value": {"metadata.post_id": "42", "metadata.tenant": "acme"}},
    },
}


def metadata_filter(request: Request) -> dict[str, str]:
    """The `metadata.<key>=<value>` query parameters, validated as metadata is at create;
    422 ERR_VALIDATION naming each bad parameter otherwise."""
    wanted: dict[str, str] = {}
    problems: list[dict[str, object]] = []

    def refuse(name: str, message: str, value: str) -> None:
        problems.append(
            {"type": "value_error", "loc": ("query", name), "msg": message, "input": value}
        )

    for name, value in request.query_params.multi_items():
        if not name.startswith(METADATA_PREFIX):
            continue
        key = name.removeprefix(METADATA_PREFIX)
        if not schemas.METADATA_KEY.match(key):
            refuse(name, "metadata key must be 1-64 letters, digits, '_', '.' or '-'", value)
        elif len(value) > METADATA_VALUE_MAX:
            refuse(name, f"value is longer than {METADATA_VALUE_MAX} characters", value)
        elif key in wanted:
            refuse(name, "given more than once", value)
        else:
            wanted[key] = value
    if len(wanted) > MAX_METADATA_FILTERS:
        refuse("metadata", f"at most {MAX_METADATA_FILTERS} metadata keys", "")
    if problems:
        raise RequestValidationError(problems)
    return wanted


@router.get(
    "",
    response_model=schemas.UploadPage,
    responses=responses(400, 401, 422, 503),
    openapi_extra={"parameters": [METADATA_FILTER_PARAMETER]},
)
async def list_uploads(
    request: Request,
    principal: PrincipalDep,
    service: UploadsDep,
    status: UploadStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> schemas.UploadPage:
    """List your uploads, newest first; follow next_cursor for the next page.

    Filter by your own metadata with `metadata.<key>=<value>` (several keys: all must match).
    """
    page = await service.list(principal.owner, status, limit, cursor, metadata_filter(request))
    return schemas.UploadPage(
        items=[schemas.Upload.of(row) for row in page.items], next_cursor=page.next_cursor
    )


@router.get("/{upload_id}", response_model=schemas.Upload, responses=responses(401, 404, 422, 503))
async def get_upload(
    upload_id: uuid.UUID, principal: PrincipalDep, service: UploadsDep
) -> schemas.Upload:
    """Read one of your uploads."""
    return schemas.Upload.of(await service.get(principal.owner, upload_id))


@router.get(
    "/{upload_id}/download",
    response_model=schemas.DownloadLink,
    responses=responses(401, 404, 409, 422, 503),
)
async def download_upload(
    upload_id: uuid.UUID,
    principal: PrincipalDep,
    service: UploadsDep,
    origin: OriginDep,
    disposition: Annotated[
        Literal["attachment", "inline"],
        Query(
            description="inline: show an image, audio, video or PDF in the browser. Other "
            "types, and every file of a policy with attachment_only, are attachments; active "
            "content (HTML, SVG, XML, JavaScript) is always an application/octet-stream "
            "attachment."
        ),
    ] = "attachment",
) -> schemas.DownloadLink:
    """Get a presigned GET URL for a finalized upload; it downloads under the original name.
    Uploads still being scanned (ERR_UPLOAD_SCANNING) or quarantined
    (ERR_UPLOAD_QUARANTINED) are refused with 409. Every URL given is recorded in the
    download audit (who, when, its lifetime, the request id and client address)."""
    get = await service.download(
        principal.owner, upload_id, origin=origin, inline=disposition == "inline"
    )
    return schemas.DownloadLink(url=get.url, expires_at=get.expires_at)


@router.delete(
    "/{upload_id}", response_model=schemas.Upload, responses=responses(401, 404, 422, 503)
)
async def delete_upload(
    upload_id: uuid.UUID, principal: PrincipalDep, service: UploadsDep
) -> schemas.Upload:
    """Delete an upload and its object; repeating the call is harmless."""
    return schemas.Upload.of(await service.delete(principal.owner, upload_id))
