"""The one exception tree of shardrag.

Every error a caller can see is a ``ShardragError`` with a stable, machine-readable ``code``
and an HTTP-style ``status`` used by the API layer (the only place that maps errors to HTTP).

    ShardragError                      code             status
    ├── InvalidInput                   invalid_input      422
    │   ├── EmptyDocument              empty_document     422
    │   ├── BinaryContent              binary_content     422
    │   ├── UnsupportedFormat          unsupported_format 415
    │   ├── UnparseableDocument        unparseable_document 422
    │   ├── DocumentTooLarge           document_too_large 413
    │   ├── InvalidDocumentId          invalid_document_id 422
    │   ├── InvalidTenantId            invalid_tenant_id  422
    │   ├── EmptyQuery                 empty_query        422
    │   ├── InvalidParameter           invalid_parameter  422
    │   ├── InvalidRequest             invalid_request    422
    │   ├── MalformedJson              malformed_json     400
    │   └── RequestTooLarge            request_too_large  413
    ├── NotFound                       not_found          404
    │   ├── TenantNotFound             tenant_not_found   404
    │   ├── DocumentNotFound           document_not_found 404
    │   ├── DeadLetterNotFound         dead_letter_not_found 404
    │   └── RouteNotFound              route_not_found    404
    ├── Unauthorized                   unauthorized       401
    ├── Forbidden                      forbidden          403
    ├── MethodNotAllowed               method_not_allowed 405
    ├── Conflict                       conflict           409
    │   ├── DataDirLocked              data_dir_locked    409
    │   ├── TenantExists               tenant_exists      409
    │   ├── IdempotencyConflict        idempotency_conflict 409
    │   ├── ShardMapConflict           shard_map_conflict 409
    │   └── EncryptionOff              encryption_off     409
    ├── RateLimited                    rate_limited       429
    │   └── TenantOverloaded           tenant_overloaded  429
    ├── Unavailable                    unavailable        503
    │   ├── EmbedderUnavailable        embedder_unavailable 503
    │   ├── ReadConcernTimeout         read_concern_timeout 503
    │   ├── ShardUnavailable           shard_unavailable  503
    │   └── Overloaded                 overloaded         503
    └── InternalError                  internal_error     500
"""

from __future__ import annotations

from typing import Any, ClassVar


class ShardragError(Exception):
    """Base of every shardrag error: a stable ``code``, a human ``message`` and ``details``."""

    code: ClassVar[str] = "shardrag_error"
    status: ClassVar[int] = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        """The error as the JSON body every interface (CLI --json, API) returns."""
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidInput(ShardragError):
    """The caller sent something shardrag will not accept; nothing stored was changed."""

    code = "invalid_input"
    status = 422


class EmptyDocument(InvalidInput):
    """The document has no bytes, or no text once parsed."""

    code = "empty_document"


class BinaryContent(InvalidInput):
    """The bytes are not text although the document claims a text format."""

    code = "binary_content"


class UnsupportedFormat(InvalidInput):
    """No parser handles this file type."""

    code = "unsupported_format"
    status = 415


class UnparseableDocument(InvalidInput):
    """The parser for the format rejected the bytes (a broken PDF, say)."""

    code = "unparseable_document"


class DocumentTooLarge(InvalidInput):
    """The document is larger than the configured limit."""

    code = "document_too_large"
    status = 413


class InvalidDocumentId(InvalidInput):
    """A document id that is empty, too long, or has `..` segments or control characters."""

    code = "invalid_document_id"


class InvalidTenantId(InvalidInput):
    """A tenant id outside ``[a-z0-9][a-z0-9_-]{0,62}``."""

    code = "invalid_tenant_id"


class EmptyQuery(InvalidInput):
    """A search with no query text."""

    code = "empty_query"


class InvalidParameter(InvalidInput):
    """A parameter outside its documented range (k, mode, filters ...)."""

    code = "invalid_parameter"


class InvalidRequest(InvalidInput):
    """The request's body or parameters do not match the API schema (names, types, ranges)."""

    code = "invalid_request"


class MalformedJson(InvalidInput):
    """The body is not valid JSON."""

    code = "malformed_json"
    status = 400


class RequestTooLarge(InvalidInput):
    """The request body is larger than the server accepts (setting max_request_bytes)."""

    code = "request_too_large"
    status = 413


class NotFound(ShardragError):
    """The named thing does not exist (for this tenant)."""

    code = "not_found"
    status = 404


class TenantNotFound(NotFound):
    """No tenant of that id."""

    code = "tenant_not_found"


class DocumentNotFound(NotFound):
    """No document of that id in the tenant."""

    code = "document_not_found"


class DeadLetterNotFound(NotFound):
    """No dead letter of that id belongs to the tenant."""

    code = "dead_letter_not_found"


class RouteNotFound(NotFound):
    """No API route at that path."""

    code = "route_not_found"


class Unauthorized(ShardragError):
    """Missing or invalid credentials."""

    code = "unauthorized"
    status = 401


class Forbidden(ShardragError):
    """The key is valid but its role may not do this."""

    code = "forbidden"
    status = 403


class MethodNotAllowed(ShardragError):
    """The route exists but not with this HTTP method."""

    code = "method_not_allowed"
    status = 405


class Conflict(ShardragError):
    """The request conflicts with the current state."""

    code = "conflict"
    status = 409


class ClusterOnly(Conflict):
    """The operation needs the distributed mode (tenant promotion, rebalancing)."""

    code = "cluster_only"


class EncryptionOff(Conflict):
    """A key operation (a master-key rotation) asked of a deployment without a master key."""

    code = "encryption_off"


class DataDirLocked(Conflict):
    """Another process holds the data directory."""

    code = "data_dir_locked"


class TenantExists(Conflict):
    """A tenant of that id exists already."""

    code = "tenant_exists"


class IdempotencyConflict(Conflict):
    """An ``Idempotency-Key`` was reused for a different request."""

    code = "idempotency_conflict"


class ShardMapConflict(Conflict):
    """A compare-and-set on the shard map lost: someone changed the entry first; re-read."""

    code = "shard_map_conflict"


class RateLimited(ShardragError):
    """The key sent more requests than its rate limit allows; retry after ``retry_after``."""

    code = "rate_limited"
    status = 429


class Unavailable(ShardragError):
    """A component needed for the request is not available right now."""

    code = "unavailable"
    status = 503


class EmbedderUnavailable(Unavailable):
    """The embedding model or endpoint cannot embed right now."""

    code = "embedder_unavailable"


class ReadConcernTimeout(Unavailable):
    """A session or strong read waited longer than allowed for its writes to be applied."""

    code = "read_concern_timeout"


class ShardUnavailable(Unavailable):
    """No replica of a shard answered in time (every one was tried before the deadline)."""

    code = "shard_unavailable"


class InternalError(ShardragError):
    """A fault inside shardrag; the message names what failed."""

    code = "internal_error"
    status = 500


class TenantOverloaded(RateLimited):
    """The tenant has as many queries in flight as an api process allows it
    (``tenant_max_concurrent_queries``); retry after ``retry_after``."""

    code = "tenant_overloaded"


class Overloaded(Unavailable):
    """The api process could not finish the query within its deadline, so it did not start
    it (load shedding); retry after ``retry_after``."""

    code = "overloaded"


def _error_classes() -> dict[str, type[ShardragError]]:
    found: dict[str, type[ShardragError]] = {}
    pending: list[type[ShardragError]] = [ShardragError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


def error_class(code: str) -> type[ShardragError]:
    """The class of errors of ``code`` (``ShardragError`` for a code this version lacks)."""
    return _error_classes().get(code, ShardragError)


def error_from(code: str, message: str, **details: Any) -> ShardragError:
    """The error of class ``code`` (a ``ShardragError`` for a code this version lacks)."""
    return error_class(code)(message, **details)
