"""Per-key rate limits: a token bucket per API key, refilled continuously."""

from __future__ import annotations

import math
import threading
import time

#: Buckets kept before the full ones are dropped.
_PRUNE_AT = 10_000


class RateLimiter:
    """Allows ``rate`` requests per second per key with bursts up to ``burst``.

    ``rate`` 0 turns limiting off. Buckets live in memory: each api process limits on its
    own, so N processes behind a balancer allow up to N times the rate.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated)
        self._lock = threading.Lock()

    def admit(self, key: str) -> float:
        """0 if the request may go now, else the seconds until it could (Retry-After)."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            if key not in self._buckets and len(self._buckets) >= _PRUNE_AT:
                self._prune(now)
            tokens, updated = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        # A bucket refilled to its burst says nothing a new one would not: keys (client
        # addresses, for failed authentications) come and go without growing the table.
        full = float(self.burst)
        self._buckets = {
            key: (tokens, updated)
            for key, (tokens, updated) in self._buckets.items()
            if tokens + (now - updated) * self.rate < full
        }

    def waiting(self, key: str) -> float:
        """Like ``admit`` without taking a token: 0 if ``key`` has one left now."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            if key not in self._buckets:
                return 0.0
            tokens, updated = self._buckets[key]
            tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
            return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    @staticmethod
    def retry_after_header(wait: float) -> str:
        """Retry-After in whole seconds, never 0 (HTTP allows only integers here)."""
        return str(max(1, math.ceil(wait)))
