"""The hot tier: results of searches, answers and query embeddings, by request.

Implementations: ``cache/memory.py`` (embedded, an in-process LRU with TTL). Redis follows
with the distributed mode, behind the same ``ResultCache`` protocol and ``open_result_cache``.

Invalidation contract. Nothing is ever deleted from the cache when documents change. Instead,
every committed change of a tenant's documents bumps the tenant's generation
(``TenantRecord.generation``), and every key carries the generation its result was computed
at. Lookups use the current generation, so once a change is committed no lookup can hit a
result from before it. For this to hold, a reader reads the generation *before* computing a
result and stores the result under that generation: a result computed while a change commits
then lands under the old generation, where no later lookup looks. Entries of old generations
are simply never hit again and leave by LRU eviction or TTL. Query embeddings do not depend on
the documents and live at generation 0 (``CacheKey.for_query_embedding``).
"""

from shardrag.cache.base import CacheCounts, CacheKey, CacheKind, CacheStats, ResultCache
from shardrag.cache.memory import MemoryResultCache


def open_result_cache(max_entries: int = 10_000, ttl_seconds: float | None = 300.0) -> ResultCache:
    """The embedded result cache: ``max_entries`` at most, each for ``ttl_seconds``."""
    return MemoryResultCache(max_entries, ttl_seconds)


__all__ = [
    "CacheCounts",
    "CacheKey",
    "CacheKind",
    "CacheStats",
    "ResultCache",
    "open_result_cache",
]
