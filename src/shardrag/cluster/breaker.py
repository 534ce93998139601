"""A circuit breaker per index node, as the router of one api process sees that node.

    closed ──(``failures`` failures in a row)──▶ open ──(``cooldown`` passes)──▶ half-open
      ▲                                            ▲                               │
      └────────────(the trial succeeds)────────────┼──────(the trial fails)────────┘

Closed: the node is asked as usual. Open: the router asks the node's replicas only when no
other replica of the shard is usable. Half-open: one request at a time is a trial; its
success closes the breaker, its failure opens it for another cool-down. A failure is a real
one only: no answer within the replica timeout, a transport error, or a node fault
(``internal_error``, ``unavailable``). An answer saying the replica is behind or does not host
the shard is the node working as it should, and a request the router stopped waiting for
(another replica answered first) is no verdict at all.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable


class BreakerState(enum.IntEnum):
    """A breaker's state; the value is what the ``shardrag_breaker_state`` gauge shows."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    @property
    def label(self) -> str:
        """``closed``, ``half_open`` or ``open`` (the admin API and ``cluster status``)."""
        return self.name.lower()


class Breaker:
    """One node's breaker. Thread-safe: the router changes it, metrics read it."""

    def __init__(
        self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self.clock = clock
        self._lock = threading.Lock()
        self._failed = 0  # failures in a row while closed
        self._opened_at: float | None = None  # None: closed
        self._trial = False  # a half-open trial is under way

    @property
    def state(self) -> BreakerState:
        """Closed, open, or half-open (open with its cool-down over)."""
        with self._lock:
            return self._state()

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self._opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def usable(self) -> bool:
        """Whether a request may go now: closed, or half-open with no trial under way."""
        with self._lock:
            state = self._state()
            return state is BreakerState.CLOSED or (
                state is BreakerState.HALF_OPEN and not self._trial
            )

    def begin(self) -> bool:
        """A request to the node starts: whether it is the half-open trial (then taken).

        A trial's sender must report its outcome: ``succeeded``, ``failed`` or, when it
        ended without one, ``abandoned``.
        """
        with self._lock:
            if self._state() is BreakerState.HALF_OPEN and not self._trial:
                self._trial = True
                return True
            return False

    def succeeded(self) -> None:
        """The node answered: the breaker closes (whatever it was)."""
        with self._lock:
            self._failed = 0
            self._opened_at = None
            self._trial = False

    def failed(self) -> None:
        """A real failure: one more in a row; open at ``failures`` (or at once if not closed)."""
        with self._lock:
            self._trial = False
            if self._opened_at is not None:
                self._opened_at = self.clock()  # a failed trial: another cool-down
                return
            self._failed += 1
            if self._failed >= self.failures:
                self._opened_at = self.clock()
                self._failed = 0

    def abandoned(self) -> None:
        """A trial ended without a verdict: the next request may be the trial."""
        with self._lock:
            self._trial = False


class Breakers:
    """The breakers of every node the router has asked, created on first use."""

    def __init__(
        self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self.clock = clock
        self._breakers: dict[str, Breaker] = {}
        self._lock = threading.Lock()

    def of(self, node_id: str) -> Breaker:
        """The breaker of ``node_id``."""
        with self._lock:
            breaker = self._breakers.get(node_id)
            if breaker is None:
                breaker = Breaker(self.failures, self.cooldown, self.clock)
                self._breakers[node_id] = breaker
            return breaker

    def states(self) -> dict[str, BreakerState]:
        """Each known node's state, by node id."""
        with self._lock:
            breakers = dict(self._breakers)
        return {node: breaker.state for node, breaker in sorted(breakers.items())}
