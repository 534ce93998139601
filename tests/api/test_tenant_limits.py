"""Per-tenant query limits and load shedding: the rules on plain values, then a flood
against a real ``shardrag serve`` process.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bench.tenant_flood import FLOOD_CLIENTS, LIMIT, Server, measure

from shardrag.api.limits import QueryAdmission
from shardrag.errors import Overloaded, TenantOverloaded

pytestmark = pytest.mark.timeout(600)


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


# -- the rules --------------------------------------------------------------------------------


def test_a_tenant_at_its_limit_is_refused_and_others_are_not() -> None:
    admission = QueryAdmission(per_tenant=2, deadline_seconds=10.0)
    first, second = admission.admit("flood"), admission.admit("flood")
    with pytest.raises(TenantOverloaded) as refused:
        admission.admit("flood")
    assert refused.value.status == 429 and refused.value.details["retry_after"] >= 1
    other = admission.admit("quiet")
    admission.release(first)
    third = admission.admit("flood")  # a slot came free
    for ticket in (second, other, third):
        admission.release(ticket)
    assert admission.stats().tenant_rejections == {"flood": 1}


def test_a_limit_of_zero_admits_any_number() -> None:
    admission = QueryAdmission(per_tenant=0, deadline_seconds=10.0)
    tickets = [admission.admit("t") for _ in range(100)]
    for ticket in tickets:
        admission.release(ticket)
    assert admission.stats().tenant_rejections == {}


def test_a_query_that_cannot_meet_its_deadline_is_shed_at_the_door() -> None:
    clock = Clock()
    admission = QueryAdmission(per_tenant=0, deadline_seconds=1.0, clock=clock)
    alone = admission.admit("t")
    clock.now += 0.3  # one query alone took 0.3 s: 0.3 s of the process per query
    admission.release(alone)
    running = [admission.admit("t") for _ in range(3)]  # 3 + 1 queries x 0.3 s > 1 s
    with pytest.raises(Overloaded) as shed:
        admission.admit("t")
    assert shed.value.status == 503 and shed.value.details["retry_after"] >= 1
    admission.release(running.pop())
    admission.release(running.pop())
    admission.release(admission.admit("t"))  # 2 x (recent cost) fits again
    assert admission.stats().shed == 1
    for ticket in running:
        admission.release(ticket)


def test_a_query_alone_is_never_shed() -> None:
    clock = Clock()
    admission = QueryAdmission(per_tenant=0, deadline_seconds=1.0, clock=clock)
    slow = admission.admit("t")
    clock.now += 30.0
    admission.release(slow)
    admission.release(admission.admit("t"))
    assert admission.stats().shed == 0


def test_the_cost_per_query_counts_the_queries_run_beside_it() -> None:
    clock = Clock()
    admission = QueryAdmission(per_tenant=0, deadline_seconds=1.0, clock=clock)
    together = [admission.admit("t") for _ in range(8)]
    clock.now += 0.8  # 8 queries at once in 0.8 s: the process does one per 0.1 s
    for ticket in together:
        admission.release(ticket)
    assert admission.expected_seconds() == pytest.approx(0.1, rel=0.5)


def test_a_query_waiting_without_work_does_not_make_the_next_ones_look_late() -> None:
    clock, cpu = Clock(), Clock()
    admission = QueryAdmission(per_tenant=0, deadline_seconds=1.0, clock=clock, cpu_clock=cpu)
    waiting = admission.admit("t")  # a session read waiting 5 s for its write, 10 ms of CPU
    clock.now += 5.0
    cpu.now += 0.01
    admission.release(waiting)
    running = [admission.admit("t") for _ in range(3)]
    admission.release(admission.admit("t"))  # 4 x 10 ms fits the deadline
    assert admission.stats().shed == 0
    for ticket in running:
        admission.release(ticket)


def test_a_query_that_waited_out_its_deadline_for_a_worker_is_shed() -> None:
    clock = Clock()
    admission = QueryAdmission(per_tenant=0, deadline_seconds=1.0, clock=clock)
    ticket = admission.admit("t")
    clock.now += 0.5
    admission.check_started(ticket)  # still time
    clock.now += 0.5
    with pytest.raises(Overloaded):
        admission.check_started(ticket)
    admission.release(ticket)
    assert admission.stats().shed == 1


# -- a flood against a real server ------------------------------------------------------------

#: Rounds of quiet searches, unloaded then flooded: the flood refuses the flooder, never the
#: quiet tenant (its latencies are measured by bench/tenant_flood.py, not asserted here).
ROUNDS = 2
SEARCHES_PER_ROUND = 40


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a small per-tenant limit and no result cache: every query is worked."""
    under_test = Server(
        tmp_path_factory.mktemp("limits") / "data",
        {
            "SHARDRAG_TENANT_MAX_CONCURRENT_QUERIES": str(LIMIT),
            "SHARDRAG_RESULT_CACHE_ENTRIES": "0",
        },
    )
    try:
        yield under_test
    finally:
        under_test.stop()


def test_a_flooding_tenant_gets_429s_with_retry_after_and_another_tenant_none(
    server: Server,
) -> None:
    # bench/tenant_flood.py's measure: the quiet tenant's searches (each must answer 200 with
    # hits), unloaded and flooded, alternately; what the flooder got; the refusals counted.
    report = measure(server, ROUNDS, SEARCHES_PER_ROUND, FLOOD_CLIENTS)
    counts = report["flood"]["counts"]
    assert counts.get("429", 0) > 0 and counts["429"] == counts.get("tenant_overloaded")
    assert counts.get("200", 0) > 0  # the flooder keeps its share
    assert all(value.isdigit() and int(value) >= 1 for value in report["flood"]["retry_after"])
    assert report["refused_by_tenant"] == {"quiet": 0, "flood": counts["429"]}
    # The benchmark's figures are there (their values are the benchmark's business).
    for part in ("unloaded", "flooded"):
        assert report[part]["count"] == ROUNDS * SEARCHES_PER_ROUND
        assert 0 < report[part]["p50_ms"] <= report[part]["p99_ms"]
