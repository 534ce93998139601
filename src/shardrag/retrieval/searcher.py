"""Search of one tenant's live documents, through the hot tier."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from shardrag.cache import CacheKey, CacheKind, ResultCache
from shardrag.embed import Embedder
from shardrag.models import Hit, SearchMode, SearchRequest, ShardQuery
from shardrag.observability import tracing


class SearchTarget(Protocol):
    """What answers a tenant's search: the router, over the tenant's shards."""

    def search(self, query: ShardQuery) -> list[Hit]:
        """The top-k live chunks of the tenant."""
        ...


def _always() -> bool:
    return True


@dataclass(frozen=True)
class Routed:
    """Where a tenant's search runs, and the tenant's cache generation read before it."""

    target: SearchTarget
    generation: int
    #: The tenant's incarnation: a tenant made again under a dropped one's id starts at
    #: generation 0 again, and must not find the dropped one's entries.
    incarnation: str
    #: Asked after the search: may its result be cached under ``generation``? (A replica
    #: behind the commits that made the generation would otherwise cache stale hits.)
    cacheable: Callable[[], bool] = _always


# Given an existing tenant and the log positions a read concern needs per shard, where its
# search runs (raising TenantNotFound for an unknown tenant).
Route = Callable[[str, Mapping[int, int]], Routed]


class Searcher:
    """Runs a validated ``SearchRequest`` against the tenant's shard only.

    With a cache, results are kept under (tenant, generation, normalised query, parameters,
    the caller's access groups).
    The generation is read *before* the search runs, and every committed change of the
    tenant's documents bumps it, so no result computed before a change is served after it.
    Query vectors are cached too (per tenant, per model): a popular question is embedded once.
    """

    def __init__(self, embedder: Embedder, route: Route, cache: ResultCache | None) -> None:
        self.embedder = embedder
        self.route = route
        self.cache = cache

    def run(self, request: SearchRequest, positions: Mapping[int, int] | None = None) -> list[Hit]:
        """The top ``request.k`` hits, at most one version per document.

        ``positions``: per shard, the log offset a replica must have applied to answer (the
        request's read concern, resolved by the caller).
        """
        with tracing.span(
            "search",
            attributes={
                "shardrag.tenant": request.tenant,
                "shardrag.mode": request.mode.value,
                "shardrag.k": request.k,
            },
        ):
            return self._run(request, positions)

    def _run(self, request: SearchRequest, positions: Mapping[int, int] | None) -> list[Hit]:
        routed = self.route(request.tenant, positions or {})
        engine = routed.target
        if self.cache is None:
            return self._search(engine, request, request.query, routed.incarnation)
        key = CacheKey.for_search(
            request.tenant,
            routed.generation,
            CacheKind.SEARCH,
            request.query,
            {
                "k": request.k,
                "mode": request.mode.value,
                "fusion": request.fusion.value,
                "filters": request.filters,
                "groups": None if request.groups is None else list(request.groups),
                "incarnation": routed.incarnation,
            },
        )
        cached = self.cache.get(key)
        tracing.annotate(attributes={"shardrag.cache_hit": cached is not None})
        if cached is None:
            # Computed from the normalised text, so every spelling that shares the key
            # would have produced this value.
            cached = tuple(self._search(engine, request, key.query, routed.incarnation))
            if routed.cacheable():
                self.cache.put(key, cached)
        # Callers may mutate what they get; the cached hits must stay as computed.
        return [dataclasses.replace(h, metadata=copy.deepcopy(h.metadata)) for h in cached]

    def _search(
        self, engine: SearchTarget, request: SearchRequest, text: str, incarnation: str
    ) -> list[Hit]:
        dense = (
            None
            if request.mode is SearchMode.KEYWORD
            else self._query_vector(request.tenant, text, incarnation)
        )
        return engine.search(
            ShardQuery(
                request.tenant,
                request.mode,
                request.k,
                text,
                dense,
                request.filters,
                request.fusion,
                groups=request.groups,
            )
        )

    def _query_vector(self, tenant: str, text: str, incarnation: str) -> list[float]:
        with tracing.span("embed query"):
            return self._embedded_query(tenant, text, incarnation)

    def _embedded_query(self, tenant: str, text: str, incarnation: str) -> list[float]:
        if self.cache is None:
            return self.embedder.embed_query(text)
        key = CacheKey.for_query_embedding(tenant, self.embedder.model_id, text, incarnation)
        vector = self.cache.get(key)
        if vector is None:
            vector = self.embedder.embed_query(key.query)
            self.cache.put(key, vector)
        return list(vector)

    def forget(self) -> None:
        """Drop every cached result (after a tenant is dropped: its name may come back)."""
        if self.cache is not None:
            self.cache.clear()
