"""The operators' page: server-rendered HTML of the admin stats, for a browser.

A browser cannot send an Authorization header when it navigates, so besides the bearer
header the page accepts the admin token from the HttpOnly cookie `broker_ops`, which
`GET /ops/login?token=<jwt>` sets before redirecting to /ops (so the token leaves the
address bar at once).

The pages come from broker.ops.page (Jinja2 templates); their one stylesheet is served here
too, so the Content-Security-Policy allows styles from this origin only, never inline.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import jwt
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from broker import auth
from broker.api.deps import bearer_token, flows_of
from broker.domain.model import SEARCH_MAX, UploadFilters, UploadStatus, searchable
from broker.ops import page as ops_page

router = APIRouter(tags=["ops"])

COOKIE = "broker_ops"
DEFAULT_COOKIE_SECONDS = 3600
PENDING_ROWS = 100
SEARCH_ROWS = 50
DELIVERY_ROWS = 20
DOWNLOAD_ROWS = 10

# Every response of these routes: never cached, never framed, no scripts, no inline styles,
# no referrer (the login URL carries a token), forms (the search box) sent to this origin
# only. The stylesheet alone may be cached.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _ops_path(request: Request) -> str:
    return f"{request.scope.get('root_path', '')}/ops"


def _page(content: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(content, status_code=status_code, headers=SECURITY_HEADERS)


def _unauthorized(request: Request, reason: str, forget_cookie: bool = False) -> HTMLResponse:
    response = _page(ops_page.render_sign_in_page(reason, _ops_path(request)), 401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="broker ops"'
    if forget_cookie:  # its token no longer works: drop it rather than send it again
        response.delete_cookie(COOKIE, path=_ops_path(request), httponly=True, samesite="strict")
    return response


def _forbidden(request: Request, principal: auth.Principal) -> HTMLResponse:
    page = ops_page.render_admin_required_page(principal.owner, _ops_path(request))
    return _page(page, 403)


async def _verify(request: Request, token: str) -> auth.Principal | None:
    try:
        return await flows_of(request).authenticator.verify(token)
    except (auth.InvalidToken, auth.KeysUnavailable):
        return None


def _seconds_left(token: str) -> int:
    """The remaining lifetime of a token already verified (signature and expiry)."""
    expires = jwt.decode(token, options={"verify_signature": False}).get("exp")
    if not isinstance(expires, int | float):
        return DEFAULT_COOKIE_SECONDS
    return max(1, int(expires - time.time()))


@router.get("/ops", response_class=HTMLResponse, include_in_schema=False)
async def ops(request: Request, q: str | None = None) -> Response:
    """Operators' page: counts by status, pending uploads with ages, stuck ones, hourly chart;
    with `q`, the newest uploads whose filename contains it (the page's search box); the
    apps' webhook backlog, dead deliveries and newest deliveries."""
    header_token = bearer_token(request)
    token = header_token or request.cookies.get(COOKIE)
    if not token:
        return _unauthorized(request, "No admin token was sent.")
    principal = await _verify(request, token)
    if principal is None:
        return _unauthorized(
            request, "The token is invalid or has expired.", forget_cookie=header_token is None
        )
    if not principal.admin:
        return _forbidden(request, principal)
    service = flows_of(request).admin
    stats = await service.stats()
    pending_only = UploadFilters(status=UploadStatus.PENDING)
    pending = await service.list(pending_only, "created_at", PENDING_ROWS, None)
    text = (q or "").strip()  # an empty box is no search
    search = None
    if text and not searchable(text):
        search = ops_page.Search(text[:SEARCH_MAX], [], more=False, refused=True)
    elif text:
        found = await service.list(UploadFilters(search=text), "-created_at", SEARCH_ROWS, None)
        search = ops_page.Search(text, found.items, more=found.next_cursor is not None)
    deliveries = await flows_of(request).webhooks.overview(DELIVERY_ROWS)
    downloads = await flows_of(request).downloads.latest(DOWNLOAD_ROWS)
    page = ops_page.render_ops_page(
        stats,
        pending.items,
        datetime.now(UTC),
        _ops_path(request),
        search=search,
        deliveries=deliveries,
        downloads=downloads,
    )
    return _page(page)


@router.get("/ops/static/ops.css", include_in_schema=False)
async def ops_stylesheet(v: str | None = None) -> Response:
    """The /ops pages' stylesheet. The pages link it with its content hash as `v`, and that
    URL is cached for good; any other (an older page, a rolling deploy) only briefly."""
    stylesheet = ops_page.stylesheet()
    cache = "max-age=31536000, immutable" if v == stylesheet.version else "max-age=300"
    return Response(
        stylesheet.text,
        media_type="text/css",
        headers={**SECURITY_HEADERS, "Cache-Control": cache},
    )


@router.get("/ops/login", response_class=HTMLResponse, include_in_schema=False)
async def ops_login(request: Request, token: str | None = None) -> Response:
    """Exchange an admin token in the query for an HttpOnly cookie, then go to /ops."""
    if not token:
        return _unauthorized(request, "No token was given.")
    principal = await _verify(request, token)
    if principal is None:
        return _unauthorized(request, "The token is invalid or has expired.")
    if not principal.admin:
        return _forbidden(request, principal)
    response = RedirectResponse(_ops_path(request), status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(
        COOKIE,
        token,
        max_age=_seconds_left(token),
        path=_ops_path(request),
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response
