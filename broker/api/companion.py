"""Companion-compatible S3 routes, so that Uppy's @uppy/aws-s3 plugin uploads through the broker.

The plugin calls `<endpoint>/s3/...`; docs/uppy.md has the supported versions, each call's
request and response, and the front-end setup. The same routes answer under two prefixes:

- `/s3/...` with `Authorization: Bearer <jwt>` (@uppy/aws-s3 5.x: `endpoint` + `headers`);
- `/uppy/{token}/s3/...` with the same JWT in the path, for @uppy/aws-s3 6.x, whose
  `companionEndpoint` mode sends no headers of the application's.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from broker import auth
from broker.api import schemas, security_doc
from broker.api.deps import (
    AuthenticatedRoute,
    CompanionDep,
    PrincipalDep,
    authenticate,
    check_policy_granted,
    flows_of,
    token_error,
)
from broker.api.errors_doc import responses
from broker.domain import errors
from broker.flows import uploads

Scalar = str | int | float | bool | None
# Meta fields that are fields of the record, not metadata: Uppy always sends name and type.
RECORD_FIELDS = frozenset({"name", "type", "size", "policy"})
SIZE_HINT = "must be the file's size in bytes, a whole number of at least 1"
DECIMAL = re.compile(r"^[0-9]{1,16}$")
METADATA = TypeAdapter(schemas.Metadata)


async def companion_principal(request: Request) -> auth.Principal:
    """The owner named by the JWT in the path (under /uppy/{token}), else by the
    `Authorization: Bearer` header, as for the native API."""
    in_path = request.path_params.get("token")
    if not in_path:
        return await authenticate(request)
    try:
        # A URL gets logged and shared: only a token scoped to these routes goes there.
        return flows_of(request).authenticator.verify_scoped(in_path, auth.UPPY_SCOPE)
    except auth.InvalidToken as exc:
        raise token_error(exc) from None


def check_origin(request: Request) -> None:
    """Refuse a browser request from an origin BROKER_CORS_ORIGINS does not allow.

    CORS alone cannot: GET /s3/params with the token in the path is a simple request (no
    preflight), so a page on any origin makes the browser send it, and the broker would
    create a pending upload (holding the owner's quota) whose answer the page can never
    read. A request without Origin (a server, curl) is not a browser's cross-origin one.
    """
    origin = request.headers.get("origin")
    if origin is None:
        return
    allowed = request.app.state.settings.cors_origins
    if "*" in allowed or origin in allowed:
        return
    raise errors.OriginNotAllowed(details={"origin": origin[:200]})


class CompanionRoute(AuthenticatedRoute):
    """Authenticated first, by the token in the path or the bearer header, and only for
    an allowed browser origin."""

    async def identify(self, request: Request) -> auth.Principal:
        check_origin(request)
        return await companion_principal(request)


class UppyFile(BaseModel):
    """What @uppy/aws-s3 says about a file: the body of POST /s3/multipart, or the query of
    GET /s3/params (`filename`, `type`, `metadata[name]=value`)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "filename": "holiday.jpg",
                    "type": "image/jpeg",
                    "metadata": {"name": "holiday.jpg", "type": "image/jpeg", "size": 482133},
                }
            ]
        },
    )

    filename: schemas.Filename
    type: schemas.ContentType
    metadata: dict[str, Scalar] = Field(
        default_factory=dict,
        description="Uppy's file meta. `size` (required unless given at the top level) is the "
        "exact byte count, `policy` names the upload policy; `name` and `type` are ignored; "
        "the rest is stored as the upload's metadata.",
    )
    size: int | None = Field(default=None, ge=1, description="Exact size in bytes, if known.")


def new_upload(file: UppyFile, where: Literal["query", "body"]) -> uploads.NewUpload:
    """The upload a Companion request asks for, or InvalidRequest naming each problem."""
    problems: list[dict[str, str]] = []
    size = file.size
    if size is None:
        given = file.metadata.get("size")
        if isinstance(given, int) and not isinstance(given, bool):
            size = given
        elif isinstance(given, str) and DECIMAL.match(given):
            size = int(given)
        elif given is not None:
            problems.append({"field": "metadata.size", "in": where, "message": SIZE_HINT})
        # Without a size (Uppy sends none) the upload is capped by its policy instead: the
        # form's content-length-range, the multipart completion, and finalization check it.
    policy = file.metadata.get("policy")
    if policy is not None and not isinstance(policy, str):
        problems.append({"field": "metadata.policy", "in": where, "message": "must be a string"})
    metadata = {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in file.metadata.items()
        if key not in RECORD_FIELDS and value is not None
    }
    try:
        METADATA.validate_python(metadata)
    except ValidationError as exc:
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            problems.append({"field": "metadata", "in": where, "message": message})
    if problems:
        raise errors.InvalidRequest(details=problems)
    return uploads.NewUpload(
        filename=file.filename,
        content_type=file.type,
        size=size,
        metadata=metadata,
        policy=policy if isinstance(policy, str) else None,
    )


async def query_file(
    request: Request,
    filename: Annotated[str, Query(description="The file's name.")],
    content_type: Annotated[str, Query(alias="type", description="The file's media type.")],
    size: Annotated[int | None, Query(ge=1, description="Exact size in bytes.")] = None,
) -> UppyFile:
    """GET /s3/params' query, with Uppy's meta fields as `metadata[name]=value`."""
    # Uppy writes a meta field that is null (relativePath, for a file not picked from a
    # folder) as the text "null" in this query, and as null in the JSON body of the
    # multipart routes, which stores nothing: "null" here stores nothing either.
    metadata = {
        name[len("metadata[") : -1]: value
        for name, value in request.query_params.multi_items()
        if name.startswith("metadata[") and name.endswith("]") and value != "null"
    }
    raw = {"filename": filename, "type": content_type, "size": size, "metadata": metadata}
    try:
        return UppyFile.model_validate(raw)
    except ValidationError as exc:
        located = [{**error, "loc": ("query", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(located) from exc


def seconds_left(expires_at: datetime) -> int:
    """Companion's `expires`: how many seconds a signature stays valid from now."""
    return max(0, int((expires_at - datetime.now(UTC)).total_seconds()))


class UploadParameters(BaseModel):
    """A multipart/form-data POST to `url`: these fields, then the file as `file`."""

    method: Literal["POST"] = "POST"
    url: str
    fields: dict[str, str]
    expires: int = Field(description="Seconds the form stays valid.")


class MultipartCreated(BaseModel):
    """The upload Uppy refers to from now on, by key and uploadId."""

    key: str
    uploadId: str
    bucket: str


class PartUrl(BaseModel):
    """A presigned UploadPart PUT; the part must be exactly as long as Uppy cuts it."""

    url: str
    expires: int


class PartUrls(BaseModel):
    presignedUrls: dict[str, str]


class StoredPart(BaseModel):
    PartNumber: int
    Size: int
    ETag: str


class CompletedPart(BaseModel):
    PartNumber: int = Field(ge=1, le=10000)
    ETag: str = Field(min_length=1, max_length=128)


class CompleteParts(BaseModel):
    """Every part, with the ETag storage returned for it."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"parts": [{"PartNumber": 1, "ETag": '"9b2cf5..."'}]}]}
    )

    parts: list[CompletedPart] = Field(min_length=1, max_length=10000)


class Completed(BaseModel):
    """Where the object is; the upload is finalized by the webhook, as for the native API."""

    location: str
    key: str
    bucket: str


class Aborted(BaseModel):
    """Nothing: Companion answers an abort with `{}`."""


ObjectKey = Annotated[str, Query(min_length=1, max_length=1024, description="The key returned.")]
UploadId = Annotated[str, Path(min_length=1, max_length=1024)]

routes = APIRouter(prefix="/s3", tags=["uppy"], route_class=CompanionRoute)


# query_file reads Uppy's `metadata[name]=value` pairs by hand; this describes them.
METADATA_PARAMETER = {
    "name": "metadata",
    "in": "query",
    "required": False,
    "style": "deepObject",
    "explode": True,
    "description": "Uppy's file meta, as `metadata[name]=value`: `size` (the exact byte "
    "count, if known), `policy` (the upload policy's name); `name` and `type` are ignored; "
    "the rest is stored as the upload's metadata.",
    "schema": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "examples": [{"size": "482133", "album": "holidays"}],
    },
}


@routes.get(
    "/params",
    response_model=UploadParameters,
    responses=responses(401, 403, 413, 415, 422, 503),
    openapi_extra={"parameters": [METADATA_PARAMETER]},
)
async def upload_parameters(
    file: Annotated[UppyFile, Depends(query_file)],
    principal: PrincipalDep,
    service: CompanionDep,
) -> UploadParameters:
    """Companion's getUploadParameters: a pending upload and the form POST for its bytes."""
    new = new_upload(file, "query")
    check_policy_granted(principal, new.policy)
    _, form = await service.create_form(principal.owner, new)
    return UploadParameters(url=form.url, fields=form.fields, expires=seconds_left(form.expires_at))


@routes.post(
    "/multipart",
    response_model=MultipartCreated,
    responses=responses(400, 401, 403, 413, 415, 422, 503),
)
async def create_multipart_upload(
    file: UppyFile, principal: PrincipalDep, service: CompanionDep
) -> MultipartCreated:
    """Companion's createMultipartUpload: a pending multipart upload, parts cut as Uppy cuts."""
    new = new_upload(file, "body")
    check_policy_granted(principal, new.policy)
    upload, plan = await service.create_multipart(principal.owner, new)
    return MultipartCreated(key=upload.object_key, uploadId=plan.upload_id, bucket=upload.bucket)


@routes.get(
    "/multipart/{upload_id}",
    response_model=list[StoredPart],
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def list_parts(
    upload_id: UploadId, key: ObjectKey, principal: PrincipalDep, service: CompanionDep
) -> list[StoredPart]:
    """Companion's listParts: the parts storage already holds, to resume an upload."""
    parts = await service.list_parts(principal.owner, key, upload_id)
    return [StoredPart(PartNumber=p.part_number, Size=p.size, ETag=f'"{p.etag}"') for p in parts]


@routes.get(
    "/multipart/{upload_id}/batch",
    response_model=PartUrls,
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def sign_parts(
    upload_id: UploadId,
    key: ObjectKey,
    part_numbers: Annotated[
        str,
        Query(
            alias="partNumbers",
            max_length=6000,
            pattern=r"^[0-9]{1,16}(,[0-9]{1,16})*$",
            description="e.g. 1,2,3",
        ),
    ],
    principal: PrincipalDep,
    service: CompanionDep,
) -> PartUrls:
    """Companion's batch signing: presigned UploadPart PUTs for several parts."""
    numbers = list(dict.fromkeys(part_numbers.split(",")))
    if not all(DECIMAL.match(n) for n in numbers) or len(numbers) > 1000:
        raise errors.InvalidRequest(
            details=[{"field": "partNumbers", "in": "query", "message": "1 to 1000 part numbers"}]
        )
    signed = await service.sign_parts(principal.owner, key, upload_id, [int(n) for n in numbers])
    return PartUrls(presignedUrls={str(number): put.url for number, put in signed})


@routes.get(
    "/multipart/{upload_id}/{part_number}",
    response_model=PartUrl,
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def sign_part(
    upload_id: UploadId,
    part_number: Annotated[int, Path(ge=1, le=10000)],
    key: ObjectKey,
    principal: PrincipalDep,
    service: CompanionDep,
) -> PartUrl:
    """Companion's signPart: a presigned UploadPart PUT for one part."""
    [(_, put)] = await service.sign_parts(principal.owner, key, upload_id, [part_number])
    return PartUrl(url=put.url, expires=seconds_left(put.expires_at))


@routes.post(
    "/multipart/{upload_id}/complete",
    response_model=Completed,
    responses=responses(400, 401, 403, 404, 409, 422, 503),
)
async def complete_multipart_upload(
    upload_id: UploadId,
    key: ObjectKey,
    body: CompleteParts,
    principal: PrincipalDep,
    service: CompanionDep,
) -> Completed:
    """Companion's completeMultipartUpload: join the parts; the webhook then finalizes."""
    claimed = {part.PartNumber: part.ETag for part in body.parts}
    upload = await service.complete(principal.owner, key, upload_id, claimed)
    return Completed(location=service.location(key), key=key, bucket=upload.bucket)


@routes.delete(
    "/multipart/{upload_id}",
    response_model=Aborted,
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def abort_multipart_upload(
    upload_id: UploadId, key: ObjectKey, principal: PrincipalDep, service: CompanionDep
) -> Aborted:
    """Companion's abortMultipartUpload: the upload is deleted and its parts freed."""
    await service.abort(principal.owner, key, upload_id)
    return Aborted()


async def path_token(
    token: Annotated[
        str,
        Path(
            description="A token with scope 'uppy' (broker token --scope uppy), for clients "
            "that cannot send headers"
        ),
    ],
) -> None:
    """Declares the path's token for the API docs; companion_principal checks it."""


router = APIRouter()
router.include_router(routes)
router.include_router(
    routes, prefix=security_doc.PATH_TOKEN_PREFIX, dependencies=[Depends(path_token)]
)
