"""The /ops pages' stylesheet route: served by the broker under the pages' CSP. No services."""

from __future__ import annotations

import asyncio
import re

import httpx
from fastapi import FastAPI

from broker.api import ops
from broker.ops import page as ops_page


def get(url: str) -> httpx.Response:
    """GET from an app holding just the ops routes, in process (httpx's ASGI transport)."""
    app = FastAPI()
    app.router.routes.extend(ops.router.routes)  # as create_app adds them

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://broker") as client:
            return await client.get(url)

    return asyncio.run(fetch())


def test_ops_stylesheet_answers_css_under_the_pages_csp() -> None:
    refused = get("/ops")  # no token: the sign-in page, which links the stylesheet too
    assert refused.status_code == 401
    csp = refused.headers["content-security-policy"]
    assert "style-src 'self';" in csp and "unsafe-inline" not in csp
    assert "default-src 'none';" in csp and "frame-ancestors 'none'" in csp
    link = re.search(r'<link rel="stylesheet" href="([^"]+)">', refused.text)
    assert link is not None

    response = get(link.group(1))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/css; charset=utf-8"
    assert response.headers["content-security-policy"] == csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "max-age=31536000, immutable"
    assert response.text == ops_page.stylesheet().text
    assert "tr.stuck td" in response.text and ".bar.created" in response.text


def test_ops_stylesheet_without_its_version_is_cached_briefly() -> None:
    for url in ("/ops/static/ops.css", "/ops/static/ops.css?v=an-older-one"):
        response = get(url)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "max-age=300"
        assert response.headers["content-type"].startswith("text/css")


def test_ops_routes_stay_out_of_the_openapi_schema() -> None:
    paths = get("/openapi.json").json().get("paths", {})
    assert not [path for path in paths if path.startswith("/ops")]
