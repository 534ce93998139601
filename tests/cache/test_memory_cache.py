"""The in-process result cache: keys, invalidation by generation, LRU, TTL, counters, threads."""

from __future__ import annotations

import threading

import pytest

from shardrag.cache import CacheCounts, CacheKey, CacheKind, open_result_cache
from shardrag.cache.memory import MemoryResultCache
from shardrag.errors import InvalidParameter
from shardrag.models import Fusion, SearchMode

PARAMS = {"k": 10, "mode": SearchMode.HYBRID, "fusion": Fusion.RRF, "filters": {"lang": "en"}}


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def search_key(
    query: str = "how do shards fail over?", tenant: str = "acme", generation: int = 1
) -> CacheKey:
    return CacheKey.for_search(tenant, generation, CacheKind.SEARCH, query, PARAMS)


def test_a_generation_bump_makes_old_results_unreachable() -> None:
    cache = MemoryResultCache()
    cache.put(search_key(generation=7), ("old hits",))

    assert cache.get(search_key(generation=7)) == ("old hits",)
    assert cache.get(search_key(generation=8)) is None
    # Query embeddings do not depend on documents: they outlive the bump.
    embedding = CacheKey.for_query_embedding("acme", "all-MiniLM-L6-v2", "shards")
    assert embedding.generation == 0


def test_equal_requests_share_a_key_after_normalisation() -> None:
    key = search_key("How do  shards\tfail over?\n")
    assert search_key("  how do shards fail over?") == key
    assert search_key("ＨＯＷ do shards fail over?") == key  # full-width letters (NFKC)
    assert search_key("HOW DO SHARDS FAIL OVER?") == key
    assert key.query == "how do shards fail over?"
    assert CacheKey.for_search("acme", 1, "search", "Straße", {}) == CacheKey.for_search(
        "acme", 1, "search", "STRASSE", {}
    )
    assert search_key("how do shards fail") != key

    cache = MemoryResultCache()
    cache.put(search_key("Shards?"), ("hit",))
    assert cache.get(search_key("  shards?  ")) == ("hit",)


def test_different_tenants_never_share_a_key() -> None:
    assert search_key(tenant="acme") != search_key(tenant="globex")
    assert CacheKey.for_query_embedding("acme", "m", "q") != CacheKey.for_query_embedding(
        "globex", "m", "q"
    )
    cache = MemoryResultCache()
    cache.put(search_key(tenant="acme"), ("acme's hits",))
    assert cache.get(search_key(tenant="globex")) is None
    with pytest.raises(InvalidParameter):
        CacheKey.for_search("", 1, CacheKind.SEARCH, "q", {})


def test_kinds_and_models_never_share_a_key() -> None:
    assert CacheKey.for_search("acme", 1, CacheKind.SEARCH, "q", {}) != CacheKey.for_search(
        "acme", 1, CacheKind.ANSWER, "q", {}
    )
    assert CacheKey.for_query_embedding("acme", "a", "q") != CacheKey.for_query_embedding(
        "acme", "b", "q"
    )


def test_params_order_does_not_matter() -> None:
    forward = {"k": 5, "filters": {"lang": "en", "year": 2024}, "mode": "dense"}
    backward = {"mode": "dense", "filters": {"year": 2024, "lang": "en"}, "k": 5}
    key = CacheKey.for_search("acme", 1, CacheKind.SEARCH, "q", forward)
    assert CacheKey.for_search("acme", 1, CacheKind.SEARCH, "q", backward) == key
    assert CacheKey.for_search("acme", 1, CacheKind.SEARCH, "q", {**forward, "k": 6}) != key
    with pytest.raises(TypeError):
        CacheKey.for_search("acme", 1, CacheKind.SEARCH, "q", {"k": object()})


def test_lru_evicts_least_recently_used() -> None:
    cache = MemoryResultCache(max_entries=2)
    a, b, c = search_key("a"), search_key("b"), search_key("c")
    cache.put(a, "A")
    cache.put(b, "B")
    assert cache.get(a) == "A"  # now b is the least recently used
    cache.put(c, "C")

    assert cache.get(b) is None
    assert cache.get(a) == "A"
    assert cache.get(c) == "C"
    cache.put(a, "A2")  # replacing an entry takes no room
    assert cache.get(c) == "C"
    assert cache.get(a) == "A2"
    assert cache.stats().entries == 2


def test_expired_entries_are_never_returned() -> None:
    clock = FakeClock()
    cache = MemoryResultCache(ttl_seconds=10.0, clock=clock)
    default, short, forever = search_key("default"), search_key("short"), search_key("forever")
    cache.put(default, "D")
    cache.put(short, "S", ttl_seconds=2.0)

    clock.now += 1.999
    assert cache.get(short) == "S"
    clock.now += 0.001
    assert cache.get(short) is None
    assert cache.get(default) == "D"
    clock.now += 8.0
    assert cache.get(default) is None
    assert cache.stats().entries == 0  # removed when found expired

    no_expiry = MemoryResultCache(ttl_seconds=None, clock=clock)
    no_expiry.put(forever, "F")
    clock.now += 1e9
    assert no_expiry.get(forever) == "F"


def test_expired_entries_do_not_count_as_evictions() -> None:
    clock = FakeClock()
    cache = MemoryResultCache(max_entries=1, ttl_seconds=1.0, clock=clock)
    cache.put(search_key("a"), "A")
    clock.now += 5.0
    cache.put(search_key("b"), "B")
    assert cache.stats().evictions == 0
    cache.put(search_key("c"), "C")
    assert cache.stats().evictions == 1


def test_stats_count_hits_misses_and_evictions_per_kind() -> None:
    cache = MemoryResultCache(max_entries=2)
    search = search_key("s")
    answer = CacheKey.for_search("acme", 1, CacheKind.ANSWER, "s", PARAMS)
    embedding = CacheKey.for_query_embedding("acme", "m", "s")

    cache.put(search, ("hit",))
    cache.put(answer, "answer")
    cache.get(answer)
    cache.get(search)
    cache.get(search)
    cache.get(embedding)
    cache.put(embedding, (0.1, 0.2))  # full: evicts the answer, the least recently used

    stats = cache.stats()
    assert stats.by_kind == {
        "search": CacheCounts(hits=2, misses=0, entries=1, evictions=0),
        "answer": CacheCounts(hits=1, misses=0, entries=0, evictions=1),
        "query_embedding": CacheCounts(hits=0, misses=1, entries=1, evictions=0),
    }
    assert (stats.hits, stats.misses, stats.entries, stats.evictions) == (3, 1, 2, 1)

    cache.clear()
    cleared = cache.stats()
    assert cache.get(search) is None
    assert (cleared.hits, cleared.misses, cleared.entries, cleared.evictions) == (3, 1, 0, 1)


def test_none_and_non_positive_lifetimes_are_refused() -> None:
    cache = MemoryResultCache()
    with pytest.raises(InvalidParameter):
        cache.put(search_key(), None)
    with pytest.raises(InvalidParameter):
        cache.put(search_key(), "v", ttl_seconds=0)
    with pytest.raises(InvalidParameter):
        MemoryResultCache(max_entries=0)
    with pytest.raises(InvalidParameter):
        MemoryResultCache(ttl_seconds=float("nan"))


def test_the_factory_opens_a_working_bounded_cache() -> None:
    cache = open_result_cache(max_entries=1)
    cache.put(search_key("a"), "A")
    cache.put(search_key("b"), "B")
    assert cache.get(search_key("a")) is None
    assert cache.get(search_key("b")) == "B"


def test_concurrent_gets_and_puts_stay_consistent_and_bounded() -> None:
    cache = MemoryResultCache(max_entries=50)
    threads_count, rounds = 8, 2000
    errors: list[BaseException] = []
    start = threading.Barrier(threads_count)

    def work(worker: int) -> None:
        try:
            start.wait()
            for i in range(rounds):
                key = search_key(f"q{(i * 7 + worker) % 120}", tenant=f"t{worker % 3}")
                if cache.get(key) is None:
                    cache.put(key, (worker, i))
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    stats = cache.stats()
    assert stats.entries == 50
    assert stats.hits + stats.misses == threads_count * rounds
    assert stats.hits > 0
    assert stats.evictions > 0
