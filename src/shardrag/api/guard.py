"""The guard in front of every route: trace id, body limit, key, rate limit, tenant scope.

It runs before FastAPI reads a body, so the order of refusals is fixed for every route:
401 (no valid key) → 429 (rate limit) → 404 (a tenant the key does not belong to) → 413
(body over the limit) → for a search or answer, 429 ``tenant_overloaded`` / 503 ``overloaded``
(``limits.py``) → then the route's own checks (role 403, schema 422 ...).
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shardrag.api.auth import ApiKeys, Principal
from shardrag.api.errors import DOCUMENT_PATH, TRACE_HEADER, error_response
from shardrag.api.limits import QueryAdmission, QueryTicket
from shardrag.api.ratelimit import RateLimiter
from shardrag.errors import (
    InvalidDocumentId,
    RateLimited,
    RequestTooLarge,
    RouteNotFound,
    ShardragError,
    TenantNotFound,
    Unauthorized,
)
from shardrag.registry import AuditEvent, Role

_TENANT_PATH = re.compile(r"^/v1/tenants/([^/]+)(?:/|$)")
# Embeddings are model work, admitted by their cost instead (costs.py): counted as queries,
# one large call made every tenant's searches look late.
_QUERY_PATH = re.compile(r"^/v1/tenants/([^/]+)/(?:search|answer)$")


class Guard:
    """Pure ASGI middleware; puts ``trace_id`` and ``principal`` into ``request.state``."""

    def __init__(
        self,
        app: ASGIApp,
        keys: ApiKeys,
        limiter: RateLimiter,
        max_body_bytes: int,
        admission: QueryAdmission | None = None,
        auth_failures: RateLimiter | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.limiter = limiter
        #: Failed authentications per client address (guessing keys costs the guesser).
        self.auth_failures = auth_failures or RateLimiter(0, 1)
        self.max_body_bytes = max_body_bytes
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace_id = secrets.token_hex(8)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["trace_id"] = trace_id

        async def send_with_trace(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                name = TRACE_HEADER.lower().encode()
                # An error answer carries it already (error_response): once is enough.
                if all(key.lower() != name for key, _ in headers):
                    headers.append((name, trace_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if scope["path"].startswith("/v1/"):
                state["principal"] = self._admit(scope)
            _check_line_break(scope["method"], scope["path"])
            self._check_declared_length(scope)
            ticket = self._admit_query(scope)
        except ShardragError as error:
            await error_response(error, trace_id)(scope, receive, send_with_trace)
            return
        if ticket is None:
            await self.app(scope, self._limited(receive), send_with_trace)
            return
        assert self.admission is not None
        state["query_ticket"] = ticket
        try:
            await self.app(scope, self._limited(receive), send_with_trace)
        finally:
            self.admission.release(ticket)

    def _admit(self, scope: Scope) -> Principal:
        state = scope["state"]
        client = scope.get("client")
        address = str(client[0]) if client else "-"
        blocked = self.auth_failures.waiting(address)
        if blocked > 0:
            state["refusal"] = "auth_failures"
            retry = self.auth_failures.retry_after_header(blocked)
            raise RateLimited(
                f"too many failed authentications from this address; retry in {retry} s",
                retry_after=int(retry),
            )
        try:
            principal = self.keys.authenticate(_single_header(scope, b"authorization"))
        except Unauthorized as refused:
            state["refusal"] = refused.code  # audited by the access log
            self.auth_failures.admit(address)
            raise
        wait = self.limiter.admit(principal.key_id)
        if wait > 0:
            state["refused_key_id"] = principal.key_id  # the access log names whose it was
            retry = self.limiter.retry_after_header(wait)
            raise RateLimited(
                f"rate limit of this key exceeded; retry in {retry} s", retry_after=int(retry)
            )
        match = _TENANT_PATH.match(scope["path"])
        if match and principal.role is not Role.ROOT and match.group(1) != principal.tenant:
            state["refusal"] = "other_tenant"
            state["refused_key_id"] = principal.key_id
            self.keys.registry.append_audit(
                AuditEvent(
                    tenant=principal.tenant,
                    actor=f"key:{principal.key_id} ({principal.role.value})",
                    action="access.refused",
                    # Not the path: the other tenant's name and ids stay out of this log.
                    target=f"{scope['method']} another tenant",
                    outcome="other_tenant",
                    at=time.time(),
                    details={"trace_id": state.get("trace_id")},
                )
            )
            # The same answer as for a tenant that does not exist: nothing is revealed.
            raise TenantNotFound(f"no tenant {match.group(1)!r}", tenant=match.group(1)[:100])
        return principal

    def _admit_query(self, scope: Scope) -> QueryTicket | None:
        """A search's or answer's ticket (see limits.py); None for any other request."""
        if self.admission is None or scope["method"] != "POST":
            return None
        match = _QUERY_PATH.match(scope["path"])
        return self.admission.admit(match.group(1)) if match else None

    def _check_declared_length(self, scope: Scope) -> None:
        declared = _header(scope, b"content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)

    def _limited(self, receive: Receive) -> Receive:
        # Bodies without Content-Length (chunked) are counted as they arrive.
        seen = 0
        limit = self.max_body_bytes

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit)
            return message

        return counted


def _check_line_break(method: str, path: str) -> None:
    # Starlette's route patterns end in `$`, which also matches before a final line break:
    # `/documents/a%0A` would be served as the document `a`. No route ends in a line break.
    if path.endswith("\n"):
        if DOCUMENT_PATH.match(path):
            raise InvalidDocumentId("document id contains control characters")
        raise RouteNotFound(f"no route {method} {path!r}")


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"the request body is larger than {limit} bytes (setting max_request_bytes)",
        limit=limit,
    )


def _single_header(scope: Scope, name: bytes) -> str | None:
    """A header that must come once (a second copy could mean two things): its value."""
    found = [v for k, v in scope.get("headers", []) if k == name]
    if len(found) > 1:
        raise Unauthorized(f"send the {name.decode()} header once")
    return bytes(found[0]).decode("latin-1") if found else None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None
