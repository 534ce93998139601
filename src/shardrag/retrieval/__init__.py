"""Query planning: validate, embed the query, ask the tenant's shards, return hits."""

from shardrag.retrieval.searcher import Routed, Searcher, SearchTarget

__all__ = ["Routed", "SearchTarget", "Searcher"]
