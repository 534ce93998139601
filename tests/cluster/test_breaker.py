"""The router's circuit breakers and hedging, without servers.

The breaker state machine and the p95 window are plain values with a fake clock; the router
runs against a fake NATS transport (replies after a chosen delay per node) on an event loop
thread of its own, as ``NatsConnection`` has, so that requests whose query stopped waiting
for them run to their end as they do in production.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from shardrag.cluster.breaker import Breaker, Breakers, BreakerState
from shardrag.cluster.hedging import LatencyWindow
from shardrag.cluster.protocol import SearchCall, SearchReply
from shardrag.cluster.router import Router
from shardrag.cluster.shardmap import NodeInfo, Replicas
from shardrag.errors import ShardUnavailable
from shardrag.loopthread import LoopThread
from shardrag.models import Fusion, Hit, SearchMode, ShardQuery

_T = TypeVar("_T")


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the breaker ------------------------------------------------------------------------------


def state(breaker: Breaker) -> BreakerState:
    """The breaker's state now (a call: each read is a new look)."""
    return breaker.state


def test_a_breaker_opens_after_the_configured_failures_in_a_row() -> None:
    breaker = Breaker(failures=3, cooldown=2.0, clock=Clock())
    breaker.failed()
    breaker.failed()
    assert state(breaker) is BreakerState.CLOSED and breaker.usable()
    breaker.failed()
    assert state(breaker) is BreakerState.OPEN and not breaker.usable()


def test_a_success_between_failures_starts_the_count_again() -> None:
    breaker = Breaker(failures=3, cooldown=2.0, clock=Clock())
    for _ in range(5):
        breaker.failed()
        breaker.failed()
        breaker.succeeded()
    assert state(breaker) is BreakerState.CLOSED


def test_an_open_breaker_turns_half_open_after_its_cooldown_and_allows_one_trial() -> None:
    clock = Clock()
    breaker = Breaker(failures=1, cooldown=2.0, clock=clock)
    breaker.failed()
    clock.now += 1.9
    assert state(breaker) is BreakerState.OPEN and not breaker.begin()
    clock.now += 0.2
    assert state(breaker) is BreakerState.HALF_OPEN and breaker.usable()
    assert breaker.begin() is True  # the trial
    assert not breaker.usable() and breaker.begin() is False  # one at a time


def test_a_successful_trial_closes_the_breaker() -> None:
    clock = Clock()
    breaker = Breaker(failures=1, cooldown=2.0, clock=clock)
    breaker.failed()
    clock.now += 2.0
    assert breaker.begin()
    breaker.succeeded()
    assert state(breaker) is BreakerState.CLOSED and breaker.usable()


def test_a_failed_trial_opens_the_breaker_for_another_cooldown() -> None:
    clock = Clock()
    breaker = Breaker(failures=3, cooldown=2.0, clock=clock)
    for _ in range(3):
        breaker.failed()
    clock.now += 2.5
    assert breaker.begin()
    breaker.failed()  # one failure is enough when not closed
    assert state(breaker) is BreakerState.OPEN
    clock.now += 1.9
    assert state(breaker) is BreakerState.OPEN
    clock.now += 0.1
    assert state(breaker) is BreakerState.HALF_OPEN


def test_an_abandoned_trial_lets_the_next_request_be_the_trial() -> None:
    clock = Clock()
    breaker = Breaker(failures=1, cooldown=1.0, clock=clock)
    breaker.failed()
    clock.now += 1.0
    assert breaker.begin()
    breaker.abandoned()
    assert state(breaker) is BreakerState.HALF_OPEN and breaker.begin()


def test_breakers_are_per_node_and_report_every_state() -> None:
    clock = Clock()
    breakers = Breakers(failures=1, cooldown=1.0, clock=clock)
    breakers.of("node-2").failed()
    breakers.of("node-1").succeeded()
    breakers.of("node-3").failed()
    clock.now += 1.0
    breakers.of("node-2").failed()  # a failure while half-open re-opens
    assert breakers.of("node-2") is breakers.of("node-2")
    assert {n: s.label for n, s in breakers.states().items()} == {
        "node-1": "closed",
        "node-2": "open",
        "node-3": "half_open",
    }
    assert [int(s) for s in breakers.states().values()] == [0, 2, 1]


# -- the p95 window ---------------------------------------------------------------------------


def test_no_hedging_until_the_window_holds_enough_answers() -> None:
    window = LatencyWindow(size=100, min_samples=20, floor=0.0)
    for _ in range(19):
        window.record(0.01)
    assert window.p95() is None and window.hedge_delay() is None
    window.record(0.01)
    assert window.hedge_delay() == pytest.approx(0.01)


def test_the_hedge_delay_is_the_p95_of_the_recent_answers() -> None:
    window = LatencyWindow(size=100, min_samples=20, floor=0.0)
    for ms in range(1, 101):
        window.record(ms / 1000)
    assert window.p95() == pytest.approx(0.095)  # nearest rank: the 95th of 100
    for _ in range(100):  # the window keeps the last 100 only
        window.record(0.002)
    assert window.p95() == pytest.approx(0.002)


def test_the_hedge_delay_never_goes_below_the_floor() -> None:
    window = LatencyWindow(size=50, min_samples=5, floor=0.02)
    for _ in range(50):
        window.record(0.001)
    assert window.hedge_delay() == pytest.approx(0.02)


# -- the router over a fake transport -----------------------------------------------------------


@dataclass
class FakeTransport:
    """Replicas that answer after ``delays[node]`` seconds (or never, within a timeout), on an
    event loop of its own: the ``SearchTransport`` surface the router uses."""

    delays: dict[str, float] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    loop: LoopThread = field(default_factory=lambda: LoopThread("fake-transport"))

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float) -> _T:
        return self.loop.run(coroutine, timeout + 1)

    async def request(self, call: SearchCall, node_id: str | None, timeout: float) -> SearchReply:
        node = node_id or "queue-group"
        self.asked.append(node)
        delay = self.delays.get(node, 0.002)
        if delay > timeout:
            await asyncio.sleep(timeout)
            raise TimeoutError
        await asyncio.sleep(delay)
        text = call.query.text
        hit = Hit(doc_id=node, version=1, chunk_index=0, text=text, score=1.0, metadata={})
        # Through the wire format, as a node's reply would come.
        return SearchReply.decode(SearchReply(node, 7, [hit]).encode())

    async def blocking(self, function: Callable[..., _T], *args: Any) -> _T:
        return function(*args)

    def close(self) -> None:
        self.loop.close()


class FakeMap:
    """A shard map of one shard with the given replicas, all live."""

    def __init__(self, nodes: list[str]) -> None:
        self._nodes = nodes

    def nodes(self) -> list[NodeInfo]:
        return [NodeInfo(n, 1, "host", {0: 7}, heartbeat_at=time.time()) for n in self._nodes]

    def replicas(self, shard_id: int) -> Replicas:
        return Replicas(shard_id, tuple(self._nodes), 1)


@pytest.fixture
def transport() -> Iterator[FakeTransport]:
    fake = FakeTransport()
    yield fake
    fake.close()


def make_router(
    transport: FakeTransport, nodes: list[str], replica_timeout: float = 0.5, failures: int = 3
) -> tuple[Router, FakeTransport]:
    router = Router(
        transport,
        FakeMap(nodes),
        "test",
        search_timeout=2.0,
        replica_timeout=replica_timeout,
        breaker_failures=failures,
        breaker_cooldown=0.5,
        hedge_floor=0.02,
    )
    return router, transport


CALL = SearchCall(ShardQuery("acme", SearchMode.KEYWORD, 3, "query", fusion=Fusion.RRF), 0)


def timed_search(router: Router) -> tuple[str, float]:
    """The node that answered the search and the seconds it took."""
    node, took, _ = hedged_search(router)
    return node, took


def hedged_search(router: Router) -> tuple[str, float, int]:
    """The node that answered the search, the seconds it took and the hedges it sent."""
    started = time.monotonic()
    result = router.search([CALL], 3)
    return result.hits[0].doc_id, time.monotonic() - started, result.hedges


@pytest.mark.serial
def test_a_slow_node_is_hedged_around_and_its_breaker_opens(transport: FakeTransport) -> None:
    router, conn = make_router(transport, ["fast", "slow"])
    try:
        for _ in range(30):  # fill the shard's latency window
            timed_search(router)
        transport.delays["slow"] = 5.0  # answers far beyond the replica timeout
        hedged = []
        deadline = time.monotonic() + 10
        # The slow node has a request outstanding most of the time, so it is asked about
        # once per replica timeout: three of them open its breaker.
        while router.breaker_states()["slow"] is not BreakerState.OPEN:
            assert time.monotonic() < deadline, router.breaker_states()
            node, took, hedges = hedged_search(router)
            assert node == "fast"
            if hedges:
                hedged.append(took)
        assert len(hedged) >= 3 and router.hedges == len(hedged)
        # Hedged after the p95 (≥ 20 ms), not failed over after the replica timeout (0.5 s).
        assert max(hedged) < 0.4
        # Open: the slow node is no longer asked first.
        asked = len(transport.asked)
        for _ in range(10):
            timed_search(router)
        assert transport.asked[asked:] == ["fast"] * 10
    finally:
        conn.close()


def test_a_breaker_closes_after_a_successful_trial(transport: FakeTransport) -> None:
    router, conn = make_router(transport, ["fast", "slow"], failures=1)
    try:
        transport.delays["slow"] = 5.0
        while router.breaker_states().get("slow") is not BreakerState.OPEN:
            timed_search(router)
        transport.delays["slow"] = 0.002  # recovered
        time.sleep(0.5)  # the cool-down
        assert router.breaker_states()["slow"] is BreakerState.HALF_OPEN
        asked = len(transport.asked)
        timed_search(router)
        assert transport.asked[asked] == "slow"  # a due trial goes first
        assert router.breaker_states()["slow"] is BreakerState.CLOSED
    finally:
        conn.close()


def test_a_hedge_loser_that_answers_in_time_does_not_count_as_a_failure(
    transport: FakeTransport,
) -> None:
    router, conn = make_router(transport, ["fast", "sluggish"], failures=1)
    try:
        for _ in range(30):
            timed_search(router)
        transport.delays["sluggish"] = 0.15  # slower than the p95, within the replica timeout
        for _ in range(20):
            timed_search(router)
        time.sleep(0.3)  # the losers end in the background
        assert router.hedges > 0
        assert router.breaker_states()["sluggish"] is BreakerState.CLOSED
    finally:
        conn.close()


def test_when_every_breaker_is_open_the_replicas_are_still_asked(transport: FakeTransport) -> None:
    router, conn = make_router(transport, ["a", "b"], replica_timeout=0.05, failures=1)
    try:
        transport.delays.update(a=5.0, b=5.0)
        with pytest.raises(ShardUnavailable):
            router.search([CALL], 3)
        assert set(router.breaker_states().values()) == {BreakerState.OPEN}
        transport.delays["b"] = 0.002
        node, _ = timed_search(router)  # not a fast failure: b is asked, answers, closes
        assert node == "b"
        assert router.breaker_states()["b"] is BreakerState.CLOSED
    finally:
        conn.close()


def test_the_replica_with_the_fewest_outstanding_requests_is_asked(
    transport: FakeTransport,
) -> None:
    router, conn = make_router(transport, ["busy", "idle"], replica_timeout=1.0)
    try:
        transport.delays["busy"] = 0.5
        router._outstanding["busy"] = 3  # requests of other queries under way
        for _ in range(5):
            node, _ = timed_search(router)
            assert node == "idle"
    finally:
        conn.close()
