"""The API's own documentation, served with no network: Swagger UI from a package, the
bearer scheme and every route's error answers in the OpenAPI document.

FastAPI's default ``/docs`` loads Swagger UI from a CDN: a blank page on a machine without
internet, where shardrag is often run. The assets come from ``swagger-ui-bundle`` instead.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from shardrag.api.schemas import ErrorOut

ASSETS = "/docs-assets"

#: What every route under /v1 may answer besides its success, with the one error body.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description}
    for status, description in {
        400: "invalid_request: the request cannot be read",
        401: "unauthorized: no valid API key",
        403: "forbidden: the key's role (or access groups) may not do this",
        404: "tenant_not_found, document_not_found, route_not_found (another tenant's too)",
        413: "request_too_large, document_too_large",
        415: "unsupported_format",
        422: "invalid_parameter, invalid_document_id, empty_document, binary_content, ...",
        429: "rate_limited, tenant_overloaded (Retry-After)",
        503: "unavailable, overloaded, shard_unavailable, read_concern_timeout",
    }.items()
}


def install_docs(app: FastAPI) -> None:
    """``/docs`` with local assets, and the OpenAPI document's security scheme."""
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key: srk_<id>_<secret>, or the root key",
                }
            }
            for path, operations in schema.get("paths", {}).items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
