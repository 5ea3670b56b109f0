"""The API description's page, ``/docs`` (Swagger UI), with its script and styles served from
the package (the ``fastapi-offline`` wheel ships them): it works on a machine without
Internet access, and loads nothing from a CDN. (No ``/redoc``: ReDoc's bundle fetches its
logo from a CDN.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

ASSETS = "/docs/assets"


def assets_directory() -> Path:
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the fastapi-offline package (API docs assets) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def api_docs_routes(openapi_url: str, title: str) -> list[BaseRoute]:
    async def swagger(request: Request) -> Response:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )

    return [
        Route("/docs", swagger, methods=["GET"], include_in_schema=False),
        Mount(ASSETS, StaticFiles(directory=assets_directory()), name="docs-assets"),
    ]
