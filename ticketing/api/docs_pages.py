"""ReDoc for networks without internet: the page loads the fastapi-offline package's
bundle from this app, with the bundle's one remote reference (the Redocly logo on
cdn.redoc.ly, which an offline browser fails to fetch) pointed at the local favicon.
Swagger UI (``/docs``) comes from fastapi-offline as it is."""

from __future__ import annotations

import functools
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse, Response

STATIC_URL = "/static-offline-docs"  # fastapi-offline's mount
REDOC_JS_URL = "/docs-assets/redoc.standalone.js"
_BUNDLE = Path(fastapi_offline.__file__).parent / "static" / "redoc.standalone.js"
_REMOTE_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"


@functools.cache
def redoc_bundle() -> bytes:
    return _BUNDLE.read_bytes().replace(_REMOTE_LOGO, f"{STATIC_URL}/favicon.png".encode())


def install_redoc(app: FastAPI, *, path: str = "/redoc") -> None:
    """Serve ReDoc at ``path`` from local assets only."""
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(path, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{openapi_url}",
                              title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{REDOC_JS_URL}", with_google_fonts=False,
                              redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png")

    @app.get(REDOC_JS_URL, include_in_schema=False)
    async def redoc_js() -> Response:
        return Response(redoc_bundle(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})
