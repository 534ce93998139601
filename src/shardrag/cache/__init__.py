"""The hot tier: results of searches, answers and query embeddings, by request.

Implementations: ``cache/memory.py`` (embedded, an in-process LRU with TTL) and
``cache/redis.py`` (distributed: one cache shared by every api process, values as typed JSON),
behind the same ``ResultCache`` protocol; ``open_result_cache`` picks one.

Invalidation contract. Nothing is ever deleted from the cache when documents change. Instead,
every committed change of a tenant's documents bumps the tenant's generation
(``TenantRecord.generation``), and every key carries the generation its result was computed
at. Lookups use the current generation, so once a change is committed no lookup can hit a
result from before it. For this to hold, a reader reads the generation *before* computing a
result and stores the result under that generation: a result computed while a change commits
then lands under the old generation, where no later lookup looks. Entries of old generations
are simply never hit again and leave by LRU eviction (Redis: its maxmemory policy) or TTL.
With Redis the generation comes from the shared registry, so every process stops hitting a
tenant's old results at the same moment. Query embeddings do not depend on the documents and
live at generation 0 (``CacheKey.for_query_embedding``).
"""

from urllib.parse import urlsplit

from shardrag.cache.base import CacheCounts, CacheKey, CacheKind, CacheStats, ResultCache
from shardrag.cache.memory import MemoryResultCache
from shardrag.errors import InvalidParameter
from shardrag.extras import require_extra
from shardrag.sealing import Sealer

_REDIS_SCHEMES = ("redis", "rediss", "unix")


def open_result_cache(
    max_entries: int = 10_000,
    ttl_seconds: float | None = 300.0,
    url: str | None = None,
    prefix: str = "shardrag",
    sealer: Sealer | None = None,
) -> ResultCache:
    """The result cache: in this process, or in Redis at ``url`` under ``prefix``.

    Entries live ``ttl_seconds``. ``max_entries`` bounds the in-process cache; Redis bounds
    its memory itself (``maxmemory``), so the shared cache ignores it. ``sealer``: Redis's
    entries are sealed with it (the in-process cache is in memory only).
    """
    if url is None:
        return MemoryResultCache(max_entries, ttl_seconds)
    scheme = urlsplit(url).scheme
    if scheme not in _REDIS_SCHEMES:
        raise InvalidParameter(
            f"redis_url must start with redis://, rediss:// or unix://, not {scheme!r:.20}",
            setting="redis_url",
        )
    require_extra("redis", "cluster", "the Redis cache")
    from shardrag.cache.redis import RedisResultCache  # redis-py loads only when it is used

    return RedisResultCache(url, prefix, ttl_seconds, sealer)


__all__ = [
    "CacheCounts",
    "CacheKey",
    "CacheKind",
    "CacheStats",
    "ResultCache",
    "open_result_cache",
]
