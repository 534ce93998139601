"""The chaos suite (``make chaos``): every fault of ``tests/chaos/harness.py`` under load.

One cluster for all scenarios, with its own Redis and PostgreSQL (restarting the machine's
would break everyone else's work): 3 NATS servers, 3 index nodes, 2 shards x 2 replicas, the
workers and 2 api processes, fault injection on. Three tenants, two of them sharing a shard.
Each scenario runs the load through baseline, fault and recovery (the harness settles the
cluster before and after) and asserts what a user relies on: no accepted write lost, no search
answered with another tenant's document, and the availability during the fault that the
design promises (docs/chaos.md says why each figure is what it is). The figures of the run
go to ``tests/artifacts/chaos.json``, the cluster's logs to ``tests/artifacts/chaos-logs``.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shardrag.cluster.launcher import STATE_FILE, down, find_nats_server, up
from tests.chaos.harness import (
    SCENARIOS,
    ChaosCluster,
    ChaosTimings,
    chaos_spec,
    provision,
    run_scenario,
)
from tests.support import REPO_ROOT, require, require_own_servers

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]

FIGURES = REPO_ROOT / "tests" / "artifacts" / "chaos.json"
LOGS = REPO_ROOT / "tests" / "artifacts" / "chaos-logs"
TIMINGS = ChaosTimings(baseline_seconds=5, fault_seconds=6, recovery_seconds=5)
SEARCHERS = 3

#: Availability during the fault (successful / attempted searches) each scenario must keep.
#: Every search that was attempted must succeed: a replica that dies, freezes or slows down is
#: left for another (failover on the replica timeout, hedging, breakers); a NATS server going
#: away moves its clients to the other two; Redis being down is a cache miss; PostgreSQL
#: restarting stalls requests in the registry's pool (which waits up to 30 s for a
#: connection) instead of failing them, except those in flight at the shutdown.
AVAILABILITY_FLOOR = {
    "node_kill": 1.0,
    "node_pause": 1.0,
    "node_latency": 1.0,
    "nats_kill": 1.0,
    "redis_restart": 1.0,
    "tenant_promotion": 1.0,
    "replica_move": 1.0,
}
#: PostgreSQL's fast shutdown ends the sessions: a registry query running at that instant
#: fails (503 unavailable). At most one such search per client.
POSTGRES_IN_FLIGHT_FAILURES = SEARCHERS


@pytest.fixture(scope="module")
def cluster() -> Iterator[ChaosCluster]:
    """The chaos cluster with its tenants and their seed documents."""
    require(find_nats_server() is not None, "nats-server (Debian package nats-server)")
    require_own_servers()
    # Outside pytest's private (0700) temp dir: the postgres user must reach its data dir.
    directory = Path(tempfile.mkdtemp(prefix="shardrag-chaos-"))
    directory.chmod(0o711)
    try:
        state = up(chaos_spec(directory, f"chaos{secrets.token_hex(3)}"))
        yield provision(state)
    finally:
        shutil.rmtree(LOGS, ignore_errors=True)
        if (directory / "logs").is_dir():
            shutil.copytree(directory / "logs", LOGS)
        if (directory / STATE_FILE).exists():
            down(directory, purge=True)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def figures() -> Iterator[dict[str, Any]]:
    """Each scenario's report, written to ``FIGURES`` at the end."""
    found: dict[str, Any] = {}
    yield found
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(json.dumps(found, indent=2))


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_under_the_fault_no_write_is_lost_no_tenant_sees_another_and_searches_go_on(
    cluster: ChaosCluster, figures: dict[str, Any], name: str
) -> None:
    report = run_scenario(cluster, SCENARIOS[name], TIMINGS, SEARCHERS)
    figures[name] = report.to_dict()
    summary = {
        phase: (counts.searches, counts.availability, dict(counts.search_failures))
        for phase, counts in report.phases.items()
    }

    assert report.writes.lost == []
    assert report.writes.accepted > 0, "the writer got nothing accepted"
    assert report.cross_tenant == []
    assert report.availability("baseline") == 1.0, summary
    fault = report.phases["fault"]
    # Each client met the fault at least once: the figure is not vacuous.
    assert fault.searches >= SEARCHERS, summary
    availability = fault.availability
    assert availability is not None
    if name == "postgres_restart":
        assert set(fault.search_failures) <= {"503 unavailable"}, summary
        assert sum(fault.search_failures.values()) <= POSTGRES_IN_FLIGHT_FAILURES, summary
    else:
        assert availability >= AVAILABILITY_FLOOR[name], summary
    assert report.availability("recovery") == 1.0, summary
