"""Query planning: validate, embed the query, ask the tenant's shard, return hits."""

from shardrag.retrieval.searcher import Searcher

__all__ = ["Searcher"]
