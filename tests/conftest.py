"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from shardrag import Shardrag

#: Modules that start clusters of their own processes (NATS servers, nodes, workers, api
#: processes), by path under tests/, with the xdist group each runs in: a group runs on one
#: worker, one module after another, so no two of its clusters compete for the cores; the
#: groups run beside each other and beside the rest of the suite.
CLUSTER_MODULES = {
    "cluster/test_api_suite.py": "cluster-api-suite",
    "chaos/test_chaos.py": "cluster-chaos",
    "cluster/test_placement.py": "cluster-faults",
    "cluster/test_failover.py": "cluster-faults",
    "cluster/test_resilience.py": "cluster-faults",
    "cluster/test_launcher.py": "cluster-faults",
    "bench/test_cluster_bench.py": "cluster-faults",
}
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of ``CLUSTER_MODULES`` ``cluster`` and put them in their xdist group."""
    for item in items:
        path = Path(item.path).resolve()
        if TESTS not in path.parents:
            continue
        group = CLUSTER_MODULES.get(path.relative_to(TESTS).as_posix())
        if group is not None:
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def rag(tmp_path: Path) -> Iterator[Shardrag]:
    """An embedded Shardrag on a fresh data dir with two shards."""
    instance = Shardrag.open(tmp_path / "data", shards=2)
    try:
        yield instance
    finally:
        instance.close()
