"""The embedded hot tier: an in-process LRU with a lifetime per entry, safe across threads."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from shardrag.cache.base import CacheCounts, CacheKey, CacheStats, check_entry, check_ttl
from shardrag.errors import InvalidParameter


class _Entry(NamedTuple):
    value: Any
    expires_at: float


@dataclass(slots=True)
class _Counters:
    hits: int = 0
    misses: int = 0
    entries: int = 0
    evictions: int = 0

    def snapshot(self) -> CacheCounts:
        return CacheCounts(self.hits, self.misses, self.entries, self.evictions)


class MemoryResultCache:
    """Up to ``max_entries`` values in this process; the least recently used go first.

    ``ttl_seconds`` is the default lifetime of an entry (None: entries never expire). An
    expired entry is never returned; it is dropped when a lookup finds it or when it reaches
    the old end of the LRU order, so no operation scans the cache and each one is O(1).
    ``clock`` is the time source, injectable for tests.
    """

    def __init__(
        self,
        max_entries: int = 10_000,
        ttl_seconds: float | None = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise InvalidParameter(f"a cache needs room for an entry, not {max_entries!r}")
        check_ttl(ttl_seconds)
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        # Iteration order is recency: the first entry is the least recently used.
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._counters: dict[str, _Counters] = {}
        self._lock = threading.Lock()

    def _counters_of(self, kind: str) -> _Counters:
        counters = self._counters.get(kind)
        if counters is None:
            counters = self._counters[kind] = _Counters()
        return counters

    def get(self, key: CacheKey) -> Any | None:
        """The value under ``key`` (now the most recently used), or None."""
        with self._lock:
            counters = self._counters_of(key.kind)
            entry = self._entries.get(key)
            if entry is not None and entry.expires_at <= self._clock():
                del self._entries[key]
                counters.entries -= 1
                entry = None
            if entry is None:
                counters.misses += 1
                return None
            self._entries.move_to_end(key)
            counters.hits += 1
            return entry.value

    def put(self, key: CacheKey, value: Any, ttl_seconds: float | None = None) -> None:
        """Store ``value`` under ``key``, evicting the least recently used entry when full."""
        check_entry(value, ttl_seconds)
        ttl = self.ttl_seconds if ttl_seconds is None else ttl_seconds
        with self._lock:
            now = self._clock()
            if self._entries.pop(key, None) is None:
                if len(self._entries) >= self.max_entries:
                    self._evict_least_recently_used(now)
                self._counters_of(key.kind).entries += 1
            self._entries[key] = _Entry(value, math.inf if ttl is None else now + ttl)

    def _evict_least_recently_used(self, now: float) -> None:
        key, entry = self._entries.popitem(last=False)
        counters = self._counters[key.kind]
        counters.entries -= 1
        # An expired entry was gone for readers already; counting it as an eviction would
        # make the cache look too small.
        if entry.expires_at > now:
            counters.evictions += 1

    def stats(self) -> CacheStats:
        """The counters now, in total and per kind."""
        with self._lock:
            return CacheStats.from_kinds(
                {kind: counters.snapshot() for kind, counters in self._counters.items()}
            )

    def close(self) -> None:
        """Drop every entry: nothing else is held."""
        self.clear()

    def clear(self) -> None:
        """Drop every entry; hits, misses and evictions keep their counts."""
        with self._lock:
            self._entries.clear()
            for counters in self._counters.values():
                counters.entries = 0
