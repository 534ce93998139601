"""Access groups inside a tenant: who of a tenant may read which of its documents.

A document may carry groups (``acl``); a key may carry groups; a request may narrow its key's
groups, never widen them. A caller's *effective groups* are ``None`` (no restriction: every
document of the tenant) or a tuple of names (documents whose groups meet it, plus documents
without groups). The engine filters on them inside its query (``engine/shard.py``), and every
cache key holds them (``retrieval/searcher.py``, ``context/answering.py``).

A version's groups travel with its metadata under ``ACL_KEY``, a key user metadata cannot
use (metadata keys are letters, digits, ``_`` and ``-``): so changing a document's groups
makes a new version through the same write path as changing its metadata, and every stage
carries them without knowing. They leave the metadata before anyone sees it (``split``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from shardrag.errors import InvalidParameter

#: Where a version's groups sit in its stored metadata.
ACL_KEY = "@acl"
#: The engine's payload value of a document without groups (not a valid group name).
PUBLIC = "*"
#: Groups of one document, key or request.
MAX_GROUPS = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")

#: Effective groups: None (every document) or the names a caller may read.
Groups = tuple[str, ...] | None


def groups(value: Any, what: str = "groups") -> tuple[str, ...]:
    """Validated group names, sorted and without repeats (``InvalidParameter`` if not).

    Takes a list of names or one comma-separated string (the HTTP headers' form).
    """
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidParameter(f"{what} must be a list of group names")
    bad = [v for v in value if not _NAME.fullmatch(v)]
    if bad:
        raise InvalidParameter(
            f"group name {bad[0][:130]!r} must be 1-128 characters of A-Z, a-z, 0-9, "
            "'_', '.', ':', '@' or '-', starting with a letter or digit",
            field=what,
        )
    names = tuple(sorted(set(value)))
    if len(names) > MAX_GROUPS:
        raise InvalidParameter(f"{what} names {len(names)} groups; the limit is {MAX_GROUPS}")
    return names


def narrow(key_groups: Groups, requested: Iterable[str] | None) -> Groups:
    """What a caller reads: its key's groups narrowed by the request's (never widened).

    A key without groups reads everything unless the request names groups; a request naming
    groups its key lacks reads only the ones they share (possibly none: public documents).
    """
    if requested is None:
        return key_groups
    wanted = tuple(sorted(set(requested)))
    if key_groups is None:
        return wanted
    return tuple(g for g in wanted if g in set(key_groups))


def may_read(effective: Groups, acl: Iterable[str]) -> bool:
    """Whether a caller of ``effective`` groups may read a document of groups ``acl``."""
    doc = tuple(acl)
    return effective is None or not doc or bool(set(doc) & set(effective))


def within(effective: Groups, groups: Groups) -> bool:
    """Whether a caller of ``effective`` groups reads all that a holder of ``groups`` reads
    (a key, or the actor of an audit event): what it may see or make of another key."""
    if effective is None:
        return True
    return groups is not None and set(groups) <= set(effective)


def with_acl(metadata: dict[str, Any], acl: Iterable[str] | None) -> dict[str, Any]:
    """The metadata a version is stored with: the user's plus its groups, if any."""
    names = tuple(acl or ())
    return {**metadata, ACL_KEY: list(names)} if names else dict(metadata)


def split(metadata: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """(the user's metadata, the version's groups) of stored metadata."""
    if ACL_KEY not in metadata:
        return metadata, ()
    rest = {k: v for k, v in metadata.items() if k != ACL_KEY}
    return rest, tuple(str(g) for g in metadata[ACL_KEY])
