"""Search of one tenant's live documents."""

from __future__ import annotations

from collections.abc import Callable

from shardrag.embed import Embedder
from shardrag.engine import ShardEngine
from shardrag.models import Hit, SearchMode, SearchRequest

# Given an existing tenant, the engine of its shard (raising TenantNotFound otherwise).
ShardOfTenant = Callable[[str], ShardEngine]


class Searcher:
    """Runs a validated ``SearchRequest`` against the tenant's shard only."""

    def __init__(self, embedder: Embedder, shard_of: ShardOfTenant) -> None:
        self.embedder = embedder
        self.shard_of = shard_of

    def run(self, request: SearchRequest) -> list[Hit]:
        """The top ``request.k`` hits, at most one version per document."""
        engine = self.shard_of(request.tenant)
        dense = (
            None if request.mode is SearchMode.KEYWORD else self.embedder.embed_query(request.query)
        )
        return engine.search(
            request.tenant,
            request.mode,
            request.k,
            dense=dense,
            text=request.query,
            filters=request.filters,
            fusion=request.fusion,
        )
