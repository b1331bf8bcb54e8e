"""The API docs page (/docs): Swagger UI served from the broker itself, never from a CDN.

FastAPI's default /docs loads Swagger UI's script and stylesheet from a public CDN, which
leaves a blank page on a machine or network without internet access. The assets come from
the swagger-ui-py package (Swagger UI 5, which renders the OpenAPI 3.1 FastAPI emits), read
from its folder without importing it; ReDoc is not offered, for the same reason.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs/assets"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"


def assets_folder() -> Path:
    """swagger-ui-py's folder of Swagger UI's distribution files (swagger-ui-dist)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed (pip install broker)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


router = APIRouter(include_in_schema=False)
router.mount(ASSETS_PATH, StaticFiles(directory=assets_folder()), name="docs-assets")


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    """Swagger UI for /openapi.json, with its assets served by the broker."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="broker - API docs",
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        oauth2_redirect_url=OAUTH2_REDIRECT_PATH,
    )


@router.get(OAUTH2_REDIRECT_PATH)
async def swagger_ui_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page (part of FastAPI's default /docs)."""
    return get_swagger_ui_oauth2_redirect_html()
