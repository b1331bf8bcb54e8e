"""What routes share: the caller's identity, checked first, and the use cases, as Annotated
aliases so route signatures read plainly.

The dependencies are `async def` although nothing in them awaits: FastAPI runs a plain
`def` dependency in a thread pool, which costs two thread hops per request.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute

from broker import auth, request_context, wiring
from broker.api import address_limits, security_doc
from broker.config import Settings
from broker.domain import errors, policies
from broker.domain.downloads import RequestOrigin
from broker.flows import (
    admin,
    app_webhooks,
    companion,
    download_audit,
    finalization,
    live,
    multipart,
    uploads,
)


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if there is one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


TOKEN_ERRORS: dict[str, type[errors.Unauthorized]] = {
    "malformed": errors.TokenInvalid,
    "claims": errors.TokenInvalid,
    "expired": errors.TokenExpired,
    "signature": errors.TokenSignature,
    "audience": errors.TokenAudience,
    "issuer": errors.TokenIssuer,
    "algorithm": errors.TokenAlgorithm,
    "unknown_key": errors.TokenKeyUnknown,
    "scope": errors.TokenScope,
}


def token_error(exc: auth.InvalidToken | auth.KeysUnavailable) -> errors.BrokerError:
    """What the client is told about a token that did not verify."""
    if isinstance(exc, auth.KeysUnavailable):
        return errors.IssuerUnavailable(retry_after=exc.retry_after)
    return TOKEN_ERRORS[exc.reason](exc.message)


async def verify(request: Request, token: str) -> auth.Principal:
    """The principal of a bearer token, or the BrokerError that says why not."""
    try:
        return await flows_of(request).authenticator.verify(token)
    except (auth.InvalidToken, auth.KeysUnavailable) as exc:
        raise token_error(exc) from None


def check_policy_granted(principal: auth.Principal, policy: str | None) -> None:
    """Refuse a policy the token does not grant (an identity provider's policies claim)."""
    name = policy or policies.DEFAULT
    if not principal.may_use(name):
        raise errors.PolicyNotAllowed(details={"policy": name[:100]})


async def authenticate(request: Request) -> auth.Principal:
    """The owner named by the request's bearer token, or Unauthorized."""
    token = bearer_token(request)
    if token is None:
        raise errors.Unauthorized()
    return await verify(request, token)


class AuthenticatedRoute(APIRoute):
    """A route whose caller is authenticated before anything else happens: before the body
    is read, parsed or validated, so a request without a valid token is always a 401.

    The principal is kept on request.state for PrincipalDep. Subclasses change how the
    caller is identified (the Companion routes also take a token in the path), and what the
    OpenAPI document says it needs (`security`).
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        # Computed for each copy of the route (include_router copies openapi_extra along).
        self.openapi_extra = {**(self.openapi_extra or {}), "security": self.security()}

    def security(self) -> security_doc.Requirement:
        return security_doc.BEARER

    async def identify(self, request: Request) -> auth.Principal:
        return await authenticate(request)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def authenticated_handler(request: Request) -> Response:
            request.state.principal = await self.identify(request)
            return await handler(request)

        return authenticated_handler


class AdminRoute(AuthenticatedRoute):
    """Authenticated first; the route's dependency (AdminDep, AppWebhooksDep) then asks for
    the admin claim."""

    def security(self) -> security_doc.Requirement:
        return security_doc.ADMIN


async def get_principal(request: Request) -> auth.Principal:
    """The caller identified by AuthenticatedRoute."""
    return request.state.principal  # type: ignore[no-any-return]


def flows_of(request: Request) -> wiring.Flows:
    return request.app.state.flows  # type: ignore[no-any-return]


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_uploads(request: Request) -> uploads.Uploads:
    return flows_of(request).uploads


async def get_multipart(request: Request) -> multipart.Multipart:
    return flows_of(request).multipart


async def get_companion(request: Request) -> companion.Companion:
    return flows_of(request).companion


async def get_finalizer(request: Request) -> finalization.Finalizer:
    return flows_of(request).finalizer


async def get_live(request: Request) -> live.LiveStatus:
    return flows_of(request).live


SettingsDep = Annotated[Settings, Depends(get_settings)]
UploadsDep = Annotated[uploads.Uploads, Depends(get_uploads)]
MultipartDep = Annotated[multipart.Multipart, Depends(get_multipart)]
CompanionDep = Annotated[companion.Companion, Depends(get_companion)]
FinalizerDep = Annotated[finalization.Finalizer, Depends(get_finalizer)]
LiveDep = Annotated[live.LiveStatus, Depends(get_live)]
PrincipalDep = Annotated[auth.Principal, Depends(get_principal)]


async def get_admin(request: Request, principal: PrincipalDep) -> admin.Admin:
    """The operators' use cases, for a token with the admin claim only."""
    if not principal.admin:
        raise errors.Forbidden()
    return flows_of(request).admin


AdminDep = Annotated[admin.Admin, Depends(get_admin)]


async def get_app_webhooks(request: Request, principal: PrincipalDep) -> app_webhooks.AppWebhooks:
    """The apps' webhook endpoints and deliveries, for a token with the admin claim only."""
    if not principal.admin:
        raise errors.Forbidden()
    return flows_of(request).webhooks


AppWebhooksDep = Annotated[app_webhooks.AppWebhooks, Depends(get_app_webhooks)]


async def get_download_audit(
    request: Request, principal: PrincipalDep
) -> download_audit.DownloadAudit:
    """The download audit, for a token with the admin claim only."""
    if not principal.admin:
        raise errors.Forbidden()
    return flows_of(request).downloads


DownloadAuditDep = Annotated[download_audit.DownloadAudit, Depends(get_download_audit)]


async def get_origin(request: Request) -> RequestOrigin:
    """The request's id (request_context.py) and the client's address (address_limits.py)."""
    return RequestOrigin(
        request_id=request_context.REQUEST_ID.get(),
        client_address=address_limits.client_address(request.scope),
    )


OriginDep = Annotated[RequestOrigin, Depends(get_origin)]
