"""The one place errors become HTTP: ``{"error": {"code", "message", "details"}}``.

Every ``ShardragError`` keeps its own status and code. Schema violations are 422
``invalid_request`` (400 ``malformed_json`` when the body is not JSON at all); unknown routes
and methods are 404/405. Anything else is a fault: 500 ``internal_error``, logged with a
trace id that the caller gets in the body and in the ``X-Trace-Id`` header.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from shardrag.errors import (
    InternalError,
    InvalidDocumentId,
    InvalidRequest,
    MalformedJson,
    MethodNotAllowed,
    Overloaded,
    RateLimited,
    RouteNotFound,
    ShardragError,
)

log = logging.getLogger("shardrag.api")
DOCUMENT_PATH = re.compile(r"^/v1/tenants/[^/]+/documents/")
TRACE_HEADER = "X-Trace-Id"


def trace_id_of(request: Request) -> str:
    """The request's trace id (set by the guard middleware)."""
    return str(getattr(request.state, "trace_id", "-"))


def error_body(error: ShardragError) -> dict[str, Any]:
    """The JSON body of an error answer."""
    return {"error": error.to_dict()}


def error_response(error: ShardragError, trace_id: str) -> JSONResponse:
    """The HTTP answer for ``error``."""
    headers = {TRACE_HEADER: trace_id}
    if isinstance(error, (RateLimited, Overloaded)):
        headers["Retry-After"] = str(error.details.get("retry_after", 1))
    return JSONResponse(error_body(error), status_code=error.status, headers=headers)


def _schema_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only location, message and type: the raw input may be huge or not JSON-serialisable.
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e["type"]}
        for e in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every failure the one error shape."""

    @app.exception_handler(ShardragError)
    async def shardrag_error(request: Request, exc: ShardragError) -> JSONResponse:
        if exc.status >= 500:
            log.error("%s: %s", exc.code, exc.message, extra={"trace_id": trace_id_of(request)})
            exc.details.setdefault("trace_id", trace_id_of(request))
        return error_response(exc, trace_id_of(request))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _schema_errors(exc)
        error: ShardragError
        if any(e["type"] == "json_invalid" for e in errors):
            error = MalformedJson("the request body is not valid JSON", errors=errors)
        else:
            first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
            where = ".".join(first["loc"][1:] or first["loc"])
            error = InvalidRequest(f"{where}: {first['msg']}", errors=errors)
        return error_response(error, trace_id_of(request))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        error: ShardragError
        cause = exc.__cause__
        if isinstance(cause, ShardragError):
            # FastAPI wraps what reading a JSON body raised (the guard's size limit) in a 400.
            error = cause
        elif isinstance(cause, (UnicodeDecodeError, RecursionError)):
            error = MalformedJson(f"the request body is not valid JSON: {type(cause).__name__}")
        elif exc.status_code == 404 and DOCUMENT_PATH.match(request.url.path):
            # The document route takes any id but one with a line break: that is the id's
            # fault, not a missing route.
            error = InvalidDocumentId("document id contains control characters")
        elif exc.status_code == 404:
            error = RouteNotFound(f"no route {request.method} {request.url.path}")
        elif exc.status_code == 405:
            error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        else:
            error = InvalidRequest(str(exc.detail))
        return error_response(error, trace_id_of(request))

    @app.exception_handler(Exception)
    async def fault(request: Request, exc: Exception) -> JSONResponse:
        trace = trace_id_of(request)
        log.exception("unhandled %s", type(exc).__name__, extra={"trace_id": trace})
        error = InternalError("an internal error occurred; report the trace id", trace_id=trace)
        return error_response(error, trace)
