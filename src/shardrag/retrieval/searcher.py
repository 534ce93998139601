"""Search of one tenant's live documents, through the hot tier."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

from shardrag.cache import CacheKey, CacheKind, ResultCache
from shardrag.embed import Embedder
from shardrag.engine import ShardEngine
from shardrag.models import Hit, SearchMode, SearchRequest

# Given an existing tenant, the engine of its shard and the tenant's cache generation
# (raising TenantNotFound otherwise).
Route = Callable[[str], tuple[ShardEngine, int]]


class Searcher:
    """Runs a validated ``SearchRequest`` against the tenant's shard only.

    With a cache, results are kept under (tenant, generation, normalised query, parameters).
    The generation is read *before* the search runs, and every committed change of the
    tenant's documents bumps it, so no result computed before a change is served after it.
    Query vectors are cached too (per tenant, per model): a popular question is embedded once.
    """

    def __init__(self, embedder: Embedder, route: Route, cache: ResultCache | None) -> None:
        self.embedder = embedder
        self.route = route
        self.cache = cache

    def run(self, request: SearchRequest) -> list[Hit]:
        """The top ``request.k`` hits, at most one version per document."""
        engine, generation = self.route(request.tenant)
        if self.cache is None:
            return self._search(engine, request, request.query)
        key = CacheKey.for_search(
            request.tenant,
            generation,
            CacheKind.SEARCH,
            request.query,
            {
                "k": request.k,
                "mode": request.mode.value,
                "fusion": request.fusion.value,
                "filters": request.filters,
            },
        )
        cached = self.cache.get(key)
        if cached is None:
            # Computed from the normalised text, so every spelling that shares the key
            # would have produced this value.
            cached = tuple(self._search(engine, request, key.query))
            self.cache.put(key, cached)
        # Callers may mutate what they get; the cached hits must stay as computed.
        return [dataclasses.replace(h, metadata=copy.deepcopy(h.metadata)) for h in cached]

    def _search(self, engine: ShardEngine, request: SearchRequest, text: str) -> list[Hit]:
        dense = (
            None if request.mode is SearchMode.KEYWORD else self._query_vector(request.tenant, text)
        )
        return engine.search(
            request.tenant,
            request.mode,
            request.k,
            dense=dense,
            text=text,
            filters=request.filters,
            fusion=request.fusion,
        )

    def _query_vector(self, tenant: str, text: str) -> list[float]:
        if self.cache is None:
            return self.embedder.embed_query(text)
        key = CacheKey.for_query_embedding(tenant, self.embedder.model_id, text)
        vector = self.cache.get(key)
        if vector is None:
            vector = self.embedder.embed_query(key.query)
            self.cache.put(key, vector)
        return list(vector)

    def forget(self) -> None:
        """Drop every cached result (after a tenant is dropped: its name may come back)."""
        if self.cache is not None:
            self.cache.clear()
