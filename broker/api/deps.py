"""Dependencies shared by the routes, as Annotated aliases so signatures read plainly.

They are `async def` although nothing in them awaits: FastAPI runs a plain `def` dependency
in a thread pool, which costs two thread hops per request on the hot path.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from broker import auth
from broker.config import Settings
from broker.domain import errors
from broker.flows import admin, companion, finalization, multipart, uploads


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_uploads(request: Request) -> uploads.Uploads:
    return request.app.state.uploads  # type: ignore[no-any-return]


async def get_multipart(request: Request) -> multipart.Multipart:
    return request.app.state.multipart  # type: ignore[no-any-return]


async def get_companion(request: Request) -> companion.Companion:
    """Uppy's Companion S3 operations, on the same use cases as the native API."""
    return companion.Companion(request.app.state.uploads)


async def get_finalizer(request: Request) -> finalization.Finalizer:
    return request.app.state.finalizer  # type: ignore[no-any-return]


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if there is one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def get_principal(request: Request) -> auth.Principal:
    return authenticate(request)


def authenticate(request: Request) -> auth.Principal:
    """The owner named by the request's bearer token, or Unauthorized."""
    token = bearer_token(request)
    if token is None:
        raise errors.Unauthorized()
    try:
        return auth.verify_token(request.app.state.settings.jwt_secret, token)
    except auth.InvalidToken as exc:
        raise errors.Unauthorized("the bearer token is invalid or expired") from exc


SettingsDep = Annotated[Settings, Depends(get_settings)]
UploadsDep = Annotated[uploads.Uploads, Depends(get_uploads)]
MultipartDep = Annotated[multipart.Multipart, Depends(get_multipart)]
CompanionDep = Annotated[companion.Companion, Depends(get_companion)]
FinalizerDep = Annotated[finalization.Finalizer, Depends(get_finalizer)]
PrincipalDep = Annotated[auth.Principal, Depends(get_principal)]


async def get_admin(request: Request, principal: PrincipalDep) -> admin.Admin:
    """The operators' use cases, for a token with the admin claim only."""
    if not principal.admin:
        raise errors.Forbidden()
    return request.app.state.admin  # type: ignore[no-any-return]


AdminDep = Annotated[admin.Admin, Depends(get_admin)]
