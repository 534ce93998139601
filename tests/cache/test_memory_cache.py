"""The in-process result cache beyond the contract (test_cache_contract.py): LRU, threads."""

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


def test_expired_entries_do_not_count_as_evictions() -> None:
    clock = FakeClock()
    cache = MemoryResultCache(max_entries=1, ttl_seconds=1.0, clock=clock)
    cache.put(search_key("a"), "A")
    clock.now += 5.0
    cache.put(search_key("b"), "B")
    assert cache.stats().evictions == 0
    cache.put(search_key("c"), "C")
    assert cache.stats().evictions == 1


def test_evictions_are_counted_per_kind() -> None:
    cache = MemoryResultCache(max_entries=2)
    search = search_key("s")
    answer = CacheKey.for_search("acme", 1, CacheKind.ANSWER, "s", PARAMS)
    embedding = CacheKey.for_query_embedding("acme", "m", "s")

    cache.put(search, ("hit",))
    cache.put(answer, "answer")
    cache.get(search)
    cache.put(embedding, (0.1, 0.2))  # full: evicts the answer, the least recently used

    stats = cache.stats()
    assert stats.by_kind == {
        "search": CacheCounts(hits=1, misses=0, entries=1, evictions=0),
        "answer": CacheCounts(hits=0, misses=0, entries=0, evictions=1),
        "query_embedding": CacheCounts(hits=0, misses=0, entries=1, evictions=0),
    }
    cache.clear()
    assert cache.stats().evictions == 1


def test_a_cache_without_room_is_refused() -> None:
    with pytest.raises(InvalidParameter):
        MemoryResultCache(max_entries=0)


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
