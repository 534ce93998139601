"""Checks on names and parameters that arrive from outside (CLI, API, Python callers)."""

from __future__ import annotations

import enum
import json
import math
import re
import unicodedata
from typing import Any, TypeVar

from shardrag.errors import EmptyQuery, InvalidDocumentId, InvalidParameter, InvalidTenantId
from shardrag.models import Fusion, ReadConcern, SearchMode

_Choice = TypeVar("_Choice", bound=enum.StrEnum)

_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_DOC_ID_LENGTH = 512
MAX_QUERY_CHARS = 4096
MAX_METADATA_BYTES = 64 * 1024
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_FILENAME_LENGTH = 255
_METADATA_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def tenant_id(value: str) -> str:
    """A tenant id: 1-63 characters of ``a-z 0-9 _ -``, starting with a letter or digit."""
    if not isinstance(value, str) or not _TENANT.fullmatch(value):
        raise InvalidTenantId(
            f"tenant id {value!r} must be 1-63 characters of a-z, 0-9, '_' or '-', "
            "starting with a letter or digit",
            tenant=str(value)[:100],
        )
    return value


def doc_id(value: str) -> str:
    """A document id: may contain ``/`` (folder paths) but no ``..``, ``.`` or empty segments,
    no leading ``/``, no backslash and no control characters; at most 512 characters."""
    if not isinstance(value, str) or not value or len(value) > MAX_DOC_ID_LENGTH:
        raise InvalidDocumentId(
            f"document id must be 1-{MAX_DOC_ID_LENGTH} characters", doc_id=str(value)[:100]
        )
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
        raise InvalidDocumentId("document id contains control characters", doc_id=value[:100])
    if "\\" in value or any(seg in ("", ".", "..") for seg in value.split("/")):
        raise InvalidDocumentId(
            f"document id {value!r} has an empty, '.' or '..' path segment, a leading or "
            "trailing '/', or a backslash",
            doc_id=value[:100],
        )
    return value


def filename(value: str | None) -> str | None:
    """A document's file name (or None): 1-255 characters, no control characters (a NUL
    ends a name in C and is refused by PostgreSQL)."""
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_FILENAME_LENGTH:
        raise InvalidParameter(f"filename must be 1-{MAX_FILENAME_LENGTH} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
        raise InvalidParameter("filename contains control characters", filename=value[:100])
    return value


def idempotency_key(value: str) -> str:
    """An idempotency key: 1-255 printable characters."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY_LENGTH
        or not value.isprintable()
    ):
        raise InvalidParameter(
            f"an idempotency key must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} printable characters"
        )
    return value


def query_text(value: str) -> str:
    """A non-blank query of at most 4096 characters, whitespace-trimmed."""
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise EmptyQuery("the query is empty")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidParameter(f"the query is longer than {MAX_QUERY_CHARS} characters")
    return text


def top_k(value: int, max_k: int) -> int:
    """k between 1 and ``max_k``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= max_k:
        raise InvalidParameter(f"k must be an integer from 1 to {max_k}, not {value!r}", k=value)
    return value


def _choice(kind: type[_Choice], value: str, name: str) -> _Choice:
    try:
        return kind(value)
    except ValueError:
        raise InvalidParameter(
            f"{name} must be one of {[c.value for c in kind]}, not {value!r}"
        ) from None


def search_mode(value: str | SearchMode) -> SearchMode:
    """hybrid, dense or keyword."""
    return _choice(SearchMode, value, "mode")


def fusion(value: str | Fusion) -> Fusion:
    """dbsf or rrf."""
    return _choice(Fusion, value, "fusion")


def read_concern(value: str | ReadConcern) -> ReadConcern:
    """eventual, session or strong."""
    return _choice(ReadConcern, value, "read_concern")


def metadata(value: Any) -> dict[str, Any]:
    """A JSON object of at most 64 KiB; keys of ``A-Z a-z 0-9 _ -`` (at most 128); integers
    within 64 bits and finite floats at any depth. Filters follow the same rules."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
        raise InvalidParameter("metadata must be a JSON object with non-empty string keys")
    bad = [k for k in value if not _METADATA_KEY.fullmatch(k)]
    if bad:
        # Keys become paths of the engine's payload index (meta.<key>): '.' would split them.
        raise InvalidParameter(
            f"metadata key {bad[0][:100]!r} must be 1-128 characters of A-Z, a-z, 0-9, '_' or '-'",
            key=bad[0][:100],
        )
    _check_numbers(value)
    try:
        size = len(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise InvalidParameter(f"metadata must be JSON: {exc}") from None
    if size > MAX_METADATA_BYTES:
        raise InvalidParameter(
            f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}"
        )
    return value


def _check_numbers(value: Any) -> None:
    """Integers must fit 64 bits and floats be finite: the engine stores nothing else."""
    if isinstance(value, bool):
        return
    if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
        raise InvalidParameter(f"metadata integer {value} does not fit in 64 bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidParameter(f"metadata number {value} is not finite")
    if isinstance(value, dict):
        for item in value.values():
            _check_numbers(item)
    elif isinstance(value, list):
        for item in value:
            _check_numbers(item)
