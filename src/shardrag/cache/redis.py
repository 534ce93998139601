"""The shared hot tier: results in Redis, so what one api process computed is a hit in all.

An entry is one Redis string, ``{prefix}:c:{tenant}:{generation}:{kind}:{sha256}``, the hash
taken over the normalised query and the parameters. The value holds the query and parameters
too, and a lookup compares them, so two requests whose hashes collide never get each other's
result. The generation in the key is the tenant's, read from the shared registry: once a
change commits, every process looks under the new generation at the same moment.

Values are typed JSON (``cache/codec.py``), never pickle: a compromised Redis can serve wrong
results but cannot run code here. Redis being down, slow or full is a miss, never an error: a
search then just computes its result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
from collections import Counter
from typing import Any, cast
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from shardrag.cache.base import CacheCounts, CacheKey, CacheStats, check_entry, check_ttl
from shardrag.cache.codec import decode_value, encode_value
from shardrag.errors import InvalidParameter
from shardrag.sealing import Plain, Sealer

logger = logging.getLogger(__name__)

# Without ':' or glob characters, "{prefix}:c:*" matches this prefix's entries and no other's.
_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# A cache that waits long for Redis slows every search it was meant to speed up.
_TIMEOUT_SECONDS = 0.5
# After a failure, Redis is left alone this long: a search does not wait on it again and again.
_RETRY_AFTER_SECONDS = 1.0
_WARNING_INTERVAL_SECONDS = 60.0
_SCAN_BATCH = 1000

_PURPOSE = "result cache"


class _ThrottledWarning:
    """A warning logged at most once a minute, with the count of those held back."""

    def __init__(self, message: str) -> None:
        self._message = message
        self._logged_at = -math.inf
        self._held_back = 0
        self._lock = threading.Lock()

    def emit(self, *args: object) -> None:
        """Log the warning with ``args``, unless it was logged less than a minute ago."""
        with self._lock:
            now = time.monotonic()
            if now - self._logged_at < _WARNING_INTERVAL_SECONDS:
                self._held_back += 1
                return
            held_back, self._held_back, self._logged_at = self._held_back, 0, now
        if held_back:
            logger.warning(self._message + " (and %d more since the last time)", *args, held_back)
        else:
            logger.warning(self._message, *args)


class _Outage:
    """Whether Redis is failing: after an error it is skipped for a second, then tried again."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._skip_until = -math.inf
        self._down = False
        self._warning = _ThrottledWarning(
            "result cache: Redis at %s failed (%s); lookups miss and results are not stored"
        )

    def skipping(self) -> bool:
        """Whether to leave Redis alone for now (it failed less than a second ago)."""
        return time.monotonic() < self._skip_until

    def failed(self, error: RedisError) -> None:
        """Record a failure of Redis."""
        self._skip_until = time.monotonic() + _RETRY_AFTER_SECONDS
        self._down = True
        self._warning.emit(self._where, error)

    def answered(self) -> None:
        """Record an answer of Redis (logged once, if it had failed)."""
        if self._down:
            self._down = False
            logger.info("result cache: Redis at %s answers again", self._where)


def _redacted(url: str) -> str:
    # The URL may carry a password: messages get the scheme, host, port and path only.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


class RedisResultCache:
    """The ``ResultCache`` of every process pointed at one Redis and ``prefix``.

    ``ttl_seconds`` is the default lifetime of an entry (None: entries never expire), set on
    the key (``PX``). There is no bound on the number of entries: Redis bounds its memory
    itself, by ``maxmemory`` and an evicting ``maxmemory-policy`` (``allkeys-lru`` for a
    server that holds only caches, ``volatile-lru`` or ``volatile-ttl`` beside data that must
    stay). Emulating an LRU on top would cost a round trip and a shared structure per lookup.

    Hits and misses are counted in Redis (hash ``{prefix}:stats``), so the stats of any
    process are those of the shared cache.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "shardrag",
        ttl_seconds: float | None = 300.0,
        sealer: Sealer | None = None,
    ) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise InvalidParameter(
                f"a cache prefix is 1-64 characters of A-Z, a-z, 0-9, '_', '.' or '-', "
                f"not {prefix!r:.80}"
            )
        check_ttl(ttl_seconds)
        #: With a master key, entries (questions, passages) are sealed under their tenant's
        #: key and named by a keyed hash: Redis's files hold no text (``sealing.py``).
        self.sealer = sealer or Plain()
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self._stats_key = f"{prefix}:stats"
        self._entries_pattern = f"{prefix}:c:*"
        try:
            self._redis = redis.Redis.from_url(
                url,
                socket_connect_timeout=_TIMEOUT_SECONDS,
                socket_timeout=_TIMEOUT_SECONDS,
                # One immediate retry: a pooled connection the server has closed is reopened.
                retry=Retry(NoBackoff(), 1),
            )
        except ValueError as exc:
            raise InvalidParameter(
                f"redis_url {_redacted(url)!r} is not a Redis URL: {exc}", setting="redis_url"
            ) from None
        self._outage = _Outage(_redacted(url))
        self._unreadable = _ThrottledWarning("result cache: ignored an unreadable entry %s: %s")
        try:
            self._redis.ping()
        except RedisError as exc:
            self._outage.failed(exc)

    def _name(self, key: CacheKey) -> str:
        named = json.dumps([key.query, key.params])
        if self.sealer.active:
            digest = self.sealer.tag(key.tenant, named)
        else:
            digest = hashlib.sha256(named.encode()).hexdigest()
        return f"{self.prefix}:c:{key.tenant}:{key.generation}:{key.kind}:{digest}"

    def get(self, key: CacheKey) -> Any | None:
        """The value under ``key``, or None: absent, expired, unreadable, or Redis failing."""
        if self._outage.skipping():
            return None
        name = self._name(key)
        try:
            # redis-py types its sync and asyncio clients alike: results may be awaitables.
            stored = cast(bytes | None, self._redis.get(name))
            value = None if stored is None else self._value_in(name, key, stored)
            self._redis.hincrby(
                self._stats_key, f"{key.kind}:{'misses' if value is None else 'hits'}"
            )
        except RedisError as exc:
            self._outage.failed(exc)
            return None
        self._outage.answered()
        return value

    def _value_in(self, name: str, key: CacheKey, stored: bytes) -> Any | None:
        if self.sealer.active:
            opened = self.sealer.unseal(key.tenant, stored, _PURPOSE)
            if opened is None:
                return None  # its tenant is gone
            stored = opened
        try:
            entry = json.loads(stored)
            if entry["query"] != key.query or entry["params"] != key.params:
                return None  # another request whose hash collides: not ours
            return decode_value(entry["value"])
        except (ValueError, KeyError, TypeError) as exc:
            self._unreadable.emit(name, exc)
            return None

    def put(self, key: CacheKey, value: Any, ttl_seconds: float | None = None) -> None:
        """Store ``value`` under ``key``; nothing happens while Redis is failing.

        TypeError for a value the codec cannot write (see ``cache/codec.py``).
        """
        check_entry(value, ttl_seconds)
        entry = {"query": key.query, "params": key.params, "value": encode_value(value)}
        payload = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode()
        if self.sealer.active:
            # Under the key as cached: an entry sealed with a stale one is only a miss later.
            payload = self.sealer.bound(key.tenant, fresh=False).seal(payload, _PURPOSE)
        ttl = self.ttl_seconds if ttl_seconds is None else ttl_seconds
        # Rounded up: an entry never lives shorter than asked.
        milliseconds = None if ttl is None or math.isinf(ttl) else math.ceil(ttl * 1000)
        if self._outage.skipping():
            return
        try:
            self._redis.set(self._name(key), payload, px=milliseconds)
        except RedisError as exc:
            self._outage.failed(exc)
            return
        self._outage.answered()

    def stats(self) -> CacheStats:
        """The shared counters, in total and per kind (none at all while Redis fails).

        ``entries`` counts the keys under the prefix with ``SCAN``: a walk over the whole
        Redis database at each call, exact when nothing changes meanwhile, approximate under
        traffic (keys stored or expiring during the walk may or may not count, and a resize
        of Redis's table may show a key twice). ``evictions`` is always 0: Redis evicts by
        its own policy and counts evictions for the whole server only (``INFO stats``,
        ``evicted_keys``), not per prefix or kind.
        """
        try:
            counters = cast(dict[bytes, bytes], self._redis.hgetall(self._stats_key))
            entries = Counter(
                name.rsplit(b":", 2)[1].decode()
                for name in self._redis.scan_iter(match=self._entries_pattern, count=_SCAN_BATCH)
            )
        except RedisError as exc:
            self._outage.failed(exc)
            return CacheStats.from_kinds({})
        self._outage.answered()
        counts: dict[str, dict[str, int]] = {}
        for field, count in counters.items():
            kind, name = field.decode().rsplit(":", 1)
            counts.setdefault(kind, {})[name] = int(count)
        return CacheStats.from_kinds(
            {
                kind: CacheCounts(
                    hits=counts.get(kind, {}).get("hits", 0),
                    misses=counts.get(kind, {}).get("misses", 0),
                    entries=entries[kind],
                    evictions=0,
                )
                for kind in sorted(counts.keys() | entries.keys())
            }
        )

    def clear(self) -> None:
        """Drop every entry under the prefix, for every process; the counters stay.

        Tried even while Redis is failing, since a dropped tenant's results must go; a
        failure is logged and leaves them in Redis until their TTL ends.
        """
        try:
            batch: list[bytes] = []
            for name in self._redis.scan_iter(match=self._entries_pattern, count=_SCAN_BATCH):
                batch.append(name)
                if len(batch) == _SCAN_BATCH:
                    self._redis.unlink(*batch)
                    batch.clear()
            if batch:
                self._redis.unlink(*batch)
        except RedisError as exc:
            self._outage.failed(exc)
            return
        self._outage.answered()

    def close(self) -> None:
        """Close the connections to Redis."""
        self._redis.close()
