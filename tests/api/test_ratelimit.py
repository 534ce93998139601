"""Token buckets (api/ratelimit.py): per key, refilled continuously, bounded in number."""

from __future__ import annotations

import pytest

from shardrag.api import ratelimit
from shardrag.api.ratelimit import RateLimiter


def test_a_key_past_its_burst_waits_and_waiting_takes_no_token() -> None:
    limiter = RateLimiter(rate=1.0, burst=2)
    assert limiter.admit("a") == 0 and limiter.admit("a") == 0
    assert limiter.waiting("a") > 0
    assert limiter.admit("a") > 0
    assert limiter.waiting("b") == 0 and limiter.admit("b") == 0  # keys are apart


def test_many_keys_keep_only_the_buckets_that_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """An attacker cycling through addresses must not grow the table without bound: the
    buckets that are full again are dropped, the ones still limiting are kept."""
    now = [1000.0]
    monkeypatch.setattr(ratelimit, "_PRUNE_AT", 10)
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: now[0])
    limiter = RateLimiter(rate=0.001, burst=1)  # a spent token comes back after 1,000 s
    assert limiter.admit("limited") == 0
    for n in range(50):
        now[0] += 1.0
        limiter.admit(f"address-{n}")
    assert limiter.waiting("limited") > 0  # never dropped while it limits
    assert len(limiter._buckets) == 51  # none refilled yet: each still limits
    now[0] += 2000.0  # every bucket is full again
    limiter.admit("one-more")
    assert set(limiter._buckets) == {"one-more"}
