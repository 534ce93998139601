"""When the router sends a hedged second request: after a shard's recent p95 latency.

A request still unanswered at the 95th percentile of the shard's recent answers is in the
slowest 5 %; a second request to another replica then costs about 5 % more load and cuts
the tail ("The Tail at Scale", Dean and Barroso). Until a shard has ``min_samples`` answers
its p95 means little, and there is no hedging; a floor keeps a fast, idle shard from
hedging on scheduling noise.
"""

from __future__ import annotations

import math
from collections import deque


class LatencyWindow:
    """The latencies (seconds) of a shard's last ``size`` answers, and its hedge delay."""

    def __init__(self, size: int = 100, min_samples: int = 20, floor: float = 0.02) -> None:
        self.min_samples = min_samples
        self.floor = floor
        self._samples: deque[float] = deque(maxlen=size)

    def record(self, seconds: float) -> None:
        """One answer's latency."""
        self._samples.append(seconds)

    def p95(self) -> float | None:
        """The 95th percentile (nearest rank) of the window, None while it is too small."""
        if len(self._samples) < self.min_samples:
            return None
        ordered = sorted(self._samples)
        return ordered[math.ceil(0.95 * len(ordered)) - 1]

    def hedge_delay(self) -> float | None:
        """How long to wait for the first request before a second one (None: don't)."""
        p95 = self.p95()
        return None if p95 is None else max(self.floor, p95)
