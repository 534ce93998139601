"""The result cache protocol, its keys and its counters."""

from __future__ import annotations

import enum
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from shardrag.errors import InvalidParameter


class CacheKind(enum.StrEnum):
    """What a cached value is. Kinds never share keys, and each has its own counters."""

    SEARCH = "search"
    ANSWER = "answer"
    QUERY_EMBEDDING = "query_embedding"


def _normalize_query(query: str) -> str:
    # NFKC folds compatibility forms (full-width letters, ligatures, odd spaces); casefolding
    # can produce text that is no longer NFKC, hence the second pass (Unicode's caseless match).
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", query).casefold())
    return " ".join(folded.split())


def _canonical_json(params: Mapping[str, Any]) -> str:
    # Sorted keys at every depth: the same parameters in any order give the same text.
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class CacheKey:
    """The name of one cached value: tenant, generation, kind, query and parameters.

    Build keys with ``for_search`` or ``for_query_embedding``: they normalise the query and
    write the parameters as canonical JSON, so equal requests get equal keys. ``query`` is the
    normalised text; computing the value from it rather than from the raw text makes the value
    a function of the key alone, whichever spelling of the query came first.
    """

    tenant: str
    generation: int
    kind: str
    query: str
    params: str

    @classmethod
    def for_search(
        cls, tenant: str, generation: int, kind: str, query: str, params: Mapping[str, Any]
    ) -> CacheKey:
        """The key of a result computed for ``tenant`` at cache ``generation``.

        ``generation`` is the tenant's generation read *before* the result was computed
        (``TenantRecord.generation``). ``params`` holds everything else the result depends
        on (k, mode, fusion, filters ...) and must be JSON-serialisable (TypeError otherwise).
        """
        if not tenant:
            raise InvalidParameter("a cache key needs a tenant")
        return cls(tenant, generation, str(kind), _normalize_query(query), _canonical_json(params))

    @classmethod
    def for_query_embedding(
        cls, tenant: str, model_id: str, query: str, incarnation: str = ""
    ) -> CacheKey:
        """The key of the embedding of ``query`` by ``model_id``, for ``tenant`` (of
        ``incarnation``: a tenant made again under a dropped one's id shares no entry).

        A query embedding does not depend on the tenant's documents, so it is stored at
        generation 0 and survives every change of the tenant.
        """
        # The tenant stays in the key although the vector is the same for every tenant: a
        # shared entry would tell a tenant, by a fast answer, that another tenant asked the
        # same question. (One LRU for all still lets a tenant's traffic evict another's
        # entries; only a bound per tenant would stop that.)
        params = {"model": model_id, "incarnation": incarnation}
        return cls.for_search(tenant, 0, CacheKind.QUERY_EMBEDDING, query, params)


@dataclass(frozen=True)
class CacheCounts:
    """Counters of a cache, for one kind of entry or for all of them.

    ``hits``, ``misses`` and ``evictions`` only ever grow (Prometheus counters); ``entries``
    is the number held now. ``evictions`` counts live entries pushed out to make room.
    """

    hits: int
    misses: int
    entries: int
    evictions: int


@dataclass(frozen=True)
class CacheStats(CacheCounts):
    """The counters over every kind, and per kind in ``by_kind`` (exported by /metrics)."""

    by_kind: Mapping[str, CacheCounts] = field(default_factory=dict)

    @classmethod
    def from_kinds(cls, by_kind: Mapping[str, CacheCounts]) -> CacheStats:
        """Stats whose totals are the sums of the per-kind counters."""
        counts = by_kind.values()
        return cls(
            hits=sum(c.hits for c in counts),
            misses=sum(c.misses for c in counts),
            entries=sum(c.entries for c in counts),
            evictions=sum(c.evictions for c in counts),
            by_kind=dict(by_kind),
        )


def check_ttl(ttl_seconds: float | None) -> None:
    """Refuse a lifetime that is not positive (None, no expiry, is fine)."""
    # Written as "not > 0" so that NaN is refused too.
    if ttl_seconds is not None and not ttl_seconds > 0:
        raise InvalidParameter(f"a cache TTL must be positive, not {ttl_seconds!r}")


def check_entry(value: Any, ttl_seconds: float | None) -> None:
    """Refuse what no cache stores: None (``get`` answers None for a miss), or a bad TTL."""
    if value is None:
        raise InvalidParameter("None cannot be cached: get answers None for a miss")
    check_ttl(ttl_seconds)


class ResultCache(Protocol):
    """The hot tier: computed results by ``CacheKey``, bounded, each entry with a lifetime.

    Values may be handed out shared rather than copied: store immutable ones (tuples of
    frozen ``Hit``) so no reader can change what another reads.
    """

    def get(self, key: CacheKey) -> Any | None:
        """The value stored under ``key``, or None if it is absent or expired (a miss)."""
        ...

    def put(self, key: CacheKey, value: Any, ttl_seconds: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl_seconds`` (None: the cache's default).

        None cannot be stored, since ``get`` answers None for a miss.
        """
        ...

    def stats(self) -> CacheStats:
        """The counters now, in total and per kind."""
        ...

    def clear(self) -> None:
        """Drop every entry. Hits, misses and evictions keep counting from where they were."""
        ...

    def close(self) -> None:
        """Release the cache's connections (entries in a shared cache stay)."""
        ...
