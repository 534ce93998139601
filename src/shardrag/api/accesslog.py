"""One JSON line per request (logger ``shardrag.access``), and the guard's refusals audited.

A line holds what an operator searches by: method, route template (``/v1/tenants/{t}/search``,
never the raw path, which may hold a document id), status, duration, tenant, key id, trace id
and the bytes in and out. Never a key, a query, a header value or document text. A request
the guard refused for its key (401) or for a tenant its key does not belong to (404) is also
logged by ``shardrag.audit`` at WARNING; the second, made with a valid key, is appended to the
audit log of that key's tenant as ``access.refused``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shardrag.api.auth import Principal
from shardrag.observability import tracing

access_log = logging.getLogger("shardrag.access")
audit_log = logging.getLogger("shardrag.audit")


class AccessLog:
    """Pure ASGI middleware outside the guard: logs each HTTP request once it is answered,
    inside the request's trace span (``observability/tracing.py``; a caller's ``traceparent``
    is continued)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, int] = {"status": 500, "out": 0, "in": 0}

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen["in"] += len(message.get("body", b""))
            return message

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = int(message["status"])
            elif message["type"] == "http.response.body":
                seen["out"] += len(message.get("body", b""))
            await send(message)

        # The caller's trace context, read only when this process traces.
        parent = (
            {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            if tracing.enabled()
            else None
        )
        with tracing.span(f"{scope['method']} {scope['path']}", "server", parent=parent) as current:
            try:
                await self.app(scope, counted_receive, counted_send)
            finally:
                entry = _log(scope, seen, time.perf_counter() - started)
                if current is not None:
                    # Named by the route template once routing has found it.
                    current.update_name(f"{entry['method']} {entry['route']}")
                    current.set_attribute("http.response.status_code", entry["status"])
                    if entry["tenant"]:
                        current.set_attribute("shardrag.tenant", entry["tenant"])


def _log(scope: Scope, seen: dict[str, int], seconds: float) -> dict[str, Any]:
    state: dict[str, Any] = scope.get("state", {})
    principal: Principal | None = state.get("principal")
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    params: dict[str, Any] = scope.get("path_params") or {}
    status = seen["status"]
    entry = {
        "method": scope["method"],
        "route": template or ("(unmatched)" if status == 404 else "(refused)"),
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
        "tenant": params.get("t") or params.get("tenant") or (principal and principal.tenant),
        "key_id": principal.key_id if principal else state.get("refused_key_id"),
        "trace_id": state.get("trace_id"),
        "bytes_in": seen["in"],
        "bytes_out": seen["out"],
    }
    access_log.info("request", extra=entry)
    refusal = state.get("refusal")
    if refusal is not None:
        audit_log.warning("refused", extra={**entry, "reason": refusal})
    return entry
