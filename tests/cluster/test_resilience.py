"""The query path under a slow node, against real servers: a cluster started by ``up``.

3 NATS servers, 3 index nodes (fault injection on), 2 shards x 2 replicas, the workers and 2
api processes behind one port. node-2 holds a replica of both shards; made slow, its breaker
must open in every api process while every search still answers within its deadline
(hedged or failed over to the other replica), and close again once it is fast.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from shardrag.cluster.faults import inject_delay
from shardrag.cluster.launcher import API_PROCESSES
from shardrag.cluster.status import cluster_settings
from shardrag.errors import Unavailable
from tests.cluster.test_failover import (
    Cluster,
    lag_of,
    running_cluster,
    start_load,
    stop_load,
    wait_for,
)

pytestmark = pytest.mark.timeout(900)

_T = TypeVar("_T")
#: The query deadline of this cluster (``search_timeout_seconds``).
DEADLINE = 3.0
REPLICA_TIMEOUT = 0.5
#: node-2's delay: well past the replica timeout, so each request to it is a real timeout.
DELAY = 2.0


@pytest.fixture(scope="module")
def resilient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster whose nodes obey fault injection, with this module's deadlines."""
    env = {
        "SHARDRAG_FAULT_INJECTION": "true",
        "SHARDRAG_SEARCH_TIMEOUT_SECONDS": str(DEADLINE),
        "SHARDRAG_REPLICA_TIMEOUT_SECONDS": str(REPLICA_TIMEOUT),
        "SHARDRAG_BREAKER_FAILURES": "3",
        "SHARDRAG_BREAKER_COOLDOWN_SECONDS": "2",
    }
    with running_cluster(tmp_path_factory, "rs", env, seeds=6) as found:
        yield found


def each_api_process(cluster: Cluster, read: Callable[[httpx.Client], _T]) -> dict[int, _T]:
    """``read`` done once through each api process (by pid): new connections until every
    process has answered (the kernel spreads connections over them)."""
    found: dict[int, _T] = {}
    for _ in range(40):
        with cluster.client() as client:
            pid = client.get("/healthz").json()["pid"]
            if pid not in found:
                found[pid] = read(client)
        if len(found) == API_PROCESSES:
            return found
    pytest.fail(f"reached only api processes {sorted(found)}")


def breakers(cluster: Cluster) -> dict[int, dict[str, str]]:
    """Each api process's breakers, from GET /v1/admin/cluster."""

    def read(client: httpx.Client) -> dict[str, str]:
        answer = client.get("/v1/admin/cluster", headers=cluster.root)
        assert answer.status_code == 200, answer.text
        states: dict[str, str] = answer.json()["breakers"]
        return states

    return each_api_process(cluster, read)


def node2_everywhere(cluster: Cluster, state: str) -> bool:
    """Whether node-2's breaker is in ``state`` in every api process."""
    return all(b.get("node-2") == state for b in breakers(cluster).values())


def metric(text: str, sample: str) -> float:
    """One sample's value in a /metrics text (0 if absent)."""
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def metrics(cluster: Cluster) -> dict[int, str]:
    """Each api process's /metrics."""
    return each_api_process(cluster, lambda client: client.get("/metrics").text)


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """``shardrag cluster ARGS --dir <the cluster> --json``."""
    where = str(cluster.state.dir)
    return subprocess.run(
        [sys.executable, "-m", "shardrag", "cluster", *args, "--dir", where, "--json"],
        capture_output=True,
        text=True,
        env=cluster.state.env(),
        timeout=60,
    )


def test_a_slow_node_trips_its_breaker_while_every_search_meets_its_deadline(
    resilient: Cluster,
) -> None:
    settings = cluster_settings(resilient.state.dir)
    load = start_load(resilient, clients=3)
    try:
        time.sleep(5)  # each api process's latency windows fill up: hedging is on
        inject_delay(settings, "node-2", DELAY)
        injected = time.monotonic()
        wait_for(lambda: node2_everywhere(resilient, "open"), 90, "node-2's breaker to open")
        tripped = time.monotonic() - injected
        time.sleep(4)  # searches go on around it: half-open trials fail, it opens again
        scraped = metrics(resilient)
    finally:
        stop_load(load)
    hedges = sum(metric(text, "shardrag_router_hedges_total") for text in scraped.values())
    states = [metric(t, 'shardrag_breaker_state{node="node-2"}') for t in scraped.values()]
    print(
        f"breaker tripped in {tripped:.1f} s; {load.searches} searches, p50 "
        f"{statistics.median(load.seconds) * 1000:.0f} ms, max {max(load.seconds) * 1000:.0f} ms; "
        f"hedges {hedges:.0f}; node-2 breaker gauges {states}"
    )
    assert load.failed == []
    assert load.searches > 20
    assert max(load.seconds) < DEADLINE
    assert hedges > 0
    assert all(state >= 1 for state in states)  # open, or half-open between trials
    status = json.loads(cli(resilient, "status").stdout)
    assert status["breakers"]["nodes"]["node-2"] in ("open", "half_open")

    cleared = cli(resilient, "fault", "--node", "node-2", "--delay", "0")
    assert cleared.returncode == 0, cleared.stderr
    # No traffic: after the cool-down every process holds a trial open for node-2 ...
    wait_for(lambda: node2_everywhere(resilient, "half_open"), 30, "node-2 half-open")
    recovered = time.monotonic()

    def closed_after_a_search() -> bool:
        with resilient.client() as client:
            for shard, tenant in resilient.tenants.items():
                found = client.post(
                    f"/v1/tenants/{tenant}/search",
                    json={"query": "library catalog", "k": 3},
                    headers=resilient.readers[tenant],
                )
                assert found.status_code == 200, (shard, found.text)
        return node2_everywhere(resilient, "closed")

    # ... and the first search through it is the trial, which closes the breaker.
    wait_for(closed_after_a_search, 60, "node-2's breaker to close")
    print(f"breaker closed {time.monotonic() - recovered:.1f} s after half-open")


def test_a_node_without_fault_injection_does_not_listen_for_faults(resilient: Cluster) -> None:
    settings = cluster_settings(resilient.state.dir)
    inject_delay(settings, "node-1", 0)  # a node with the setting confirms
    record = resilient.state.process("node-3")
    resilient.state.stop("node-3")
    record.env_overrides["SHARDRAG_FAULT_INJECTION"] = "false"
    resilient.state.restart("node-3")
    wait_for(lambda: lag_of(resilient, "node-3") is not None, 90, "node-3 to come back")
    with pytest.raises(Unavailable):
        inject_delay(settings, "node-3", 1.0)
    refused = cli(resilient, "fault", "--node", "node-3", "--delay", "1")
    assert refused.returncode == 1
    error: dict[str, Any] = json.loads(refused.stdout or refused.stderr)["error"]
    assert error["code"] == "unavailable"
