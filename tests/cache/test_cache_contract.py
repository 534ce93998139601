"""The result cache's contract; every backend must pass the same tests.

Redis: the machine's real server (``SHARDRAG_TEST_REDIS_URL``), each test under its own
prefix. Two caches opened on one prefix stand for two api processes.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import secrets
import socket
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import redis
from tests.support import REDIS_URL, redis_is_up, require

from shardrag.cache import (
    CacheCounts,
    CacheKey,
    CacheKind,
    CacheStats,
    ResultCache,
    open_result_cache,
)
from shardrag.cache.memory import MemoryResultCache
from shardrag.cache.redis import RedisResultCache
from shardrag.context import Answer, AnswerResult, Citation
from shardrag.errors import InvalidParameter
from shardrag.models import Fusion, Hit, SearchMode

PARAMS = {"k": 10, "mode": SearchMode.HYBRID, "fusion": Fusion.RRF, "filters": {"lang": "en"}}

OpenCache = Callable[..., ResultCache]


def search_key(
    query: str = "how do shards fail over?", tenant: str = "acme", generation: int = 1
) -> CacheKey:
    return CacheKey.for_search(tenant, generation, CacheKind.SEARCH, query, PARAMS)


def hits(*texts: str) -> tuple[Hit, ...]:
    """Search results with one passage per text."""
    return tuple(
        Hit(f"doc-{i}", 1, i, text, 1.0 / (i + 1), {"lang": "en"}) for i, text in enumerate(texts)
    )


def counts(stats: CacheStats) -> dict[str, CacheCounts]:
    """The counters per kind; a kind with nothing counted is the same as one never seen."""
    return {kind: c for kind, c in stats.by_kind.items() if c != CacheCounts(0, 0, 0, 0)}


def drop_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    names = list(client.scan_iter(match=f"{prefix}:*"))
    if names:
        client.unlink(*names)
    client.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A prefix of this test's own on the machine's Redis, emptied afterwards."""
    require(redis_is_up(), f"Redis at {REDIS_URL}")
    prefix = f"test-{secrets.token_hex(4)}"
    yield prefix
    drop_prefix(prefix)


@pytest.fixture
def open_redis(redis_prefix: str) -> Iterator[Callable[..., RedisResultCache]]:
    """Opens a Redis cache on this test's prefix (another process, each time it is called)."""
    opened: list[RedisResultCache] = []

    def opener(prefix: str = redis_prefix, ttl_seconds: float | None = 300.0) -> RedisResultCache:
        cache = RedisResultCache(REDIS_URL, prefix, ttl_seconds)
        opened.append(cache)
        return cache

    yield opener
    for cache in opened:
        cache.close()


@pytest.fixture(params=["memory", "redis"])
def open_cache(request: pytest.FixtureRequest) -> OpenCache:
    """Opens the backend under test, with a default TTL of ``ttl_seconds``."""
    if request.param == "redis":
        opener: OpenCache = request.getfixturevalue("open_redis")
        return opener
    return lambda ttl_seconds=300.0: MemoryResultCache(ttl_seconds=ttl_seconds)


def test_a_stored_value_is_a_hit_and_anything_else_a_miss(open_cache: OpenCache) -> None:
    cache = open_cache()
    assert cache.get(search_key()) is None
    cache.put(search_key(), hits("first"))
    assert cache.get(search_key()) == hits("first")
    cache.put(search_key(), hits("second", "third"))
    assert cache.get(search_key()) == hits("second", "third")
    cache.put(search_key("nothing found"), ())
    assert cache.get(search_key("nothing found")) == ()
    assert cache.get(search_key("another question")) is None


def test_a_generation_bump_makes_old_results_unreachable(open_cache: OpenCache) -> None:
    cache = open_cache()
    cache.put(search_key(generation=7), hits("old"))

    assert cache.get(search_key(generation=7)) == hits("old")
    assert cache.get(search_key(generation=8)) is None
    # Query embeddings do not depend on documents: they outlive the bump.
    embedding = CacheKey.for_query_embedding("acme", "all-MiniLM-L6-v2", "shards")
    assert embedding.generation == 0


def test_equal_requests_share_a_key_after_normalisation(open_cache: OpenCache) -> None:
    key = search_key("How do  shards\tfail over?\n")
    assert search_key("  how do shards fail over?") == key
    assert search_key("ＨＯＷ do shards fail over?") == key  # full-width letters (NFKC)
    assert search_key("HOW DO SHARDS FAIL OVER?") == key
    assert key.query == "how do shards fail over?"
    assert CacheKey.for_search("acme", 1, "search", "Straße", {}) == CacheKey.for_search(
        "acme", 1, "search", "STRASSE", {}
    )
    assert search_key("how do shards fail") != key

    cache = open_cache()
    cache.put(search_key("Shards?"), hits("hit"))
    assert cache.get(search_key("  shards?  ")) == hits("hit")


def test_different_tenants_never_share_a_key(open_cache: OpenCache) -> None:
    assert search_key(tenant="acme") != search_key(tenant="globex")
    assert CacheKey.for_query_embedding("acme", "m", "q") != CacheKey.for_query_embedding(
        "globex", "m", "q"
    )
    cache = open_cache()
    cache.put(search_key(tenant="acme"), hits("acme's"))
    assert cache.get(search_key(tenant="globex")) is None
    with pytest.raises(InvalidParameter):
        CacheKey.for_search("", 1, CacheKind.SEARCH, "q", {})


def test_kinds_and_models_never_share_a_key(open_cache: OpenCache) -> None:
    cache = open_cache()
    cache.put(CacheKey.for_search("acme", 1, CacheKind.SEARCH, "q", {}), hits("search"))
    assert cache.get(CacheKey.for_search("acme", 1, CacheKind.ANSWER, "q", {})) is None
    cache.put(CacheKey.for_query_embedding("acme", "a", "q"), (0.5, 0.25))
    assert cache.get(CacheKey.for_query_embedding("acme", "b", "q")) is None
    assert cache.get(CacheKey.for_query_embedding("acme", "a", "q")) == (0.5, 0.25)


def test_params_order_does_not_matter() -> None:
    forward = {"k": 5, "filters": {"lang": "en", "year": 2024}, "mode": "dense"}
    backward = {"mode": "dense", "filters": {"year": 2024, "lang": "en"}, "k": 5}
    key = CacheKey.for_search("acme", 1, CacheKind.SEARCH, "q", forward)
    assert CacheKey.for_search("acme", 1, CacheKind.SEARCH, "q", backward) == key
    assert CacheKey.for_search("acme", 1, CacheKind.SEARCH, "q", {**forward, "k": 6}) != key
    with pytest.raises(TypeError):
        CacheKey.for_search("acme", 1, CacheKind.SEARCH, "q", {"k": object()})


def test_entries_expire_after_their_lifetime(open_cache: OpenCache) -> None:
    cache = open_cache(ttl_seconds=1.2)
    default, short = search_key("default"), search_key("short")
    cache.put(default, hits("D"))
    cache.put(short, hits("S"), ttl_seconds=0.2)
    assert cache.get(short) == hits("S")

    time.sleep(0.35)
    assert cache.get(short) is None
    assert cache.get(default) == hits("D")
    time.sleep(0.9)
    assert cache.get(default) is None
    assert cache.stats().entries == 0

    forever = open_cache(ttl_seconds=None)
    forever.put(search_key("forever"), hits("F"))
    forever.put(search_key("short"), hits("S"), ttl_seconds=0.05)
    time.sleep(0.1)
    assert forever.get(search_key("forever")) == hits("F")
    assert forever.get(search_key("short")) is None


def test_stats_count_hits_misses_and_entries_per_kind(open_cache: OpenCache) -> None:
    cache = open_cache()
    search = search_key("s")
    answer = CacheKey.for_search("acme", 1, CacheKind.ANSWER, "s", PARAMS)
    embedding = CacheKey.for_query_embedding("acme", "m", "s")

    cache.put(search, hits("hit"))
    cache.get(search)
    cache.get(search)
    cache.get(answer)
    cache.put(embedding, (0.1, 0.2))

    stats = cache.stats()
    assert counts(stats) == {
        "search": CacheCounts(hits=2, misses=0, entries=1, evictions=0),
        "answer": CacheCounts(hits=0, misses=1, entries=0, evictions=0),
        "query_embedding": CacheCounts(hits=0, misses=0, entries=1, evictions=0),
    }
    assert (stats.hits, stats.misses, stats.entries, stats.evictions) == (2, 1, 2, 0)


def test_clear_drops_every_entry_and_keeps_the_counters(open_cache: OpenCache) -> None:
    cache = open_cache()
    for tenant in ("acme", "globex"):
        cache.put(search_key(tenant=tenant), hits(tenant))
        cache.get(search_key(tenant=tenant))
    cache.put(CacheKey.for_query_embedding("acme", "m", "q"), (1.0,))

    cache.clear()
    assert cache.stats().entries == 0
    for tenant in ("acme", "globex"):
        assert cache.get(search_key(tenant=tenant)) is None
    assert cache.get(CacheKey.for_query_embedding("acme", "m", "q")) is None
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (2, 3, 0)

    cache.put(search_key(), hits("after"))  # a tenant's name may come back
    assert cache.get(search_key()) == hits("after")


def test_none_and_non_positive_lifetimes_are_refused(open_cache: OpenCache) -> None:
    cache = open_cache()
    with pytest.raises(InvalidParameter):
        cache.put(search_key(), None)
    with pytest.raises(InvalidParameter):
        cache.put(search_key(), hits("v"), ttl_seconds=0)
    with pytest.raises(InvalidParameter):
        open_cache(ttl_seconds=float("nan"))
    assert cache.get(search_key()) is None


# Redis only: what the shared cache adds.


def test_two_processes_share_entries_and_counters(
    open_redis: Callable[..., RedisResultCache],
) -> None:
    first, second = open_redis(), open_redis()
    first.put(search_key(), hits("computed by the first"))
    assert second.get(search_key()) == hits("computed by the first")
    assert first.get(search_key("unknown")) is None

    for cache in (first, second):
        assert counts(cache.stats()) == {
            "search": CacheCounts(hits=1, misses=1, entries=1, evictions=0)
        }


def test_a_generation_bump_is_seen_by_every_process(
    open_redis: Callable[..., RedisResultCache],
) -> None:
    processes = [open_redis() for _ in range(3)]
    processes[0].put(search_key(generation=4), hits("before the change"))
    assert all(p.get(search_key(generation=4)) == hits("before the change") for p in processes)
    # The registry now says 5: no process finds a result under it, whoever computed the old.
    assert all(p.get(search_key(generation=5)) is None for p in processes)


def test_prefixes_are_isolated_and_clear_only_its_own(
    open_redis: Callable[..., RedisResultCache], redis_prefix: str
) -> None:
    mine, neighbour = open_redis(), open_redis(prefix=f"{redis_prefix}-b")
    try:
        mine.put(search_key(), hits("mine"))
        neighbour.put(search_key(), hits("neighbour's"))
        assert mine.get(search_key()) == hits("mine")
        assert neighbour.get(search_key()) == hits("neighbour's")

        mine.clear()
        assert mine.get(search_key()) is None
        assert neighbour.get(search_key()) == hits("neighbour's")
        assert neighbour.stats().entries == 1
        assert (mine.stats().hits, neighbour.stats().hits) == (1, 2)
    finally:
        drop_prefix(f"{redis_prefix}-b")
    with pytest.raises(InvalidParameter):
        open_redis(prefix="a:b")
    with pytest.raises(InvalidParameter):
        open_redis(prefix="a*")


def test_every_kind_of_value_survives_the_round_trip_exactly(
    open_redis: Callable[..., RedisResultCache],
) -> None:
    search = (
        Hit("guide", 3, 0, "Shards fail over to a replica.", 0.8125, {"lang": "en"}),
        Hit(
            "notes",
            1,
            7,
            "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich. 🚢",
            -1.2345678901234567e-300,
            {"tags": ["a", "b"], "year": 2024, "ratio": 0.1, "nested": {"ok": True, "n": None}},
            context="notes › chapter 2",
            filename="notes.md",
            page=4,
        ),
    )
    citation = Citation(1, "guide", 3, (0, 1), "guide.pdf", 2, "Shards fail over.")
    answer = AnswerResult(Answer("They fail over [1].", [citation], True), list(search))
    float32_vector = tuple(np.array([0.1234568, -1.0, 3.4e38], dtype=np.float32).tolist())
    float64_vector = [0.1, 0.2, 1e300]
    cache, reader = open_redis(), open_redis()
    values = {"search": search, "answer": answer, "f32": float32_vector, "f64": float64_vector}
    for name, value in values.items():
        cache.put(search_key(name), value)

    assert reader.get(search_key("search")) == search
    assert reader.get(search_key("answer")) == answer
    assert reader.get(search_key("f32")) == float32_vector
    assert reader.get(search_key("f64")) == tuple(float64_vector)
    assert isinstance(reader.get(search_key("answer")).answer.citations[0].chunk_indexes, tuple)


def test_values_the_codec_does_not_know_are_refused(
    open_redis: Callable[..., RedisResultCache],
) -> None:
    cache = open_redis()
    for value in ["text", ("hit",), list(hits("a list")), {"a": 1}, [1, 2], object()]:
        with pytest.raises(TypeError):
            cache.put(search_key(), value)
    with pytest.raises(TypeError):  # metadata that is not JSON
        cache.put(search_key(), (Hit("d", 1, 0, "t", 1.0, {"when": object()}),))
    assert cache.stats().entries == 0


def test_entries_are_keys_of_the_tenant_generation_and_kind_with_a_lifetime(
    open_redis: Callable[..., RedisResultCache], redis_prefix: str
) -> None:
    open_redis(ttl_seconds=60).put(search_key(), hits("h"))
    client = redis.Redis.from_url(REDIS_URL)
    try:
        (name,) = client.scan_iter(match=f"{redis_prefix}:c:*")
        digest = name.decode().rsplit(":", 1)[1]
        assert name.decode() == f"{redis_prefix}:c:acme:1:search:{digest}"
        assert 59_000 < client.pttl(name) <= 60_000
    finally:
        client.close()


def test_a_colliding_or_corrupt_entry_is_a_miss(
    open_redis: Callable[..., RedisResultCache], redis_prefix: str
) -> None:
    cache = open_redis()
    cache.put(search_key(), hits("h"))
    client = redis.Redis.from_url(REDIS_URL)
    try:
        (name,) = client.scan_iter(match=f"{redis_prefix}:c:*")
        entry = json.loads(client.get(name))
        entry["query"] = "another question with the same hash"
        client.set(name, json.dumps(entry))
        assert cache.get(search_key()) is None
        # A pickle of the very value is not read: no pickle is ever loaded.
        for corrupt in [pickle.dumps(hits("h")), b"\xff\xfe", b"[]", b'{"query": 1}']:
            client.set(name, corrupt)
            assert cache.get(search_key()) is None
    finally:
        client.close()
    assert cache.stats().misses == 5


def test_a_redis_that_is_down_gives_misses_not_errors(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    cache = open_result_cache(url=f"redis://:secret@127.0.0.1:{closed_port}/0")
    assert isinstance(cache, RedisResultCache)

    started = time.monotonic()
    for _ in range(50):
        cache.put(search_key(), hits("h"))
        assert cache.get(search_key()) is None
    cache.clear()
    assert cache.stats() == CacheStats.from_kinds({})
    assert time.monotonic() - started < 5
    # Warned once, without the password of the URL.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"127.0.0.1:{closed_port}" in caplog.text
    assert "secret" not in caplog.text


def test_the_factory_picks_the_backend_by_url(redis_prefix: str) -> None:
    assert isinstance(open_result_cache(max_entries=1), MemoryResultCache)
    shared = open_result_cache(ttl_seconds=math.inf, url=REDIS_URL, prefix=redis_prefix)
    assert isinstance(shared, RedisResultCache)
    shared.put(search_key(), hits("kept"))
    assert shared.get(search_key()) == hits("kept")
    shared.close()
    for url in ["http://127.0.0.1:6379", "127.0.0.1:6379", "memcached://cache"]:
        with pytest.raises(InvalidParameter) as raised:
            open_result_cache(url=url)
        assert raised.value.details == {"setting": "redis_url"}
