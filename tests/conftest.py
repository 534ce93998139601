"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite sends many refused keys from one address on purpose; the limit on failed
# authentications has tests of its own (tests/security/), which turn it on.
os.environ.setdefault("SHARDRAG_AUTH_FAILURES_PER_SECOND", "0")

from shardrag import Shardrag

#: Modules that start clusters of their own processes (NATS servers, index nodes, workers,
#: api processes), by path under tests/. They run in one xdist group: on one worker, one module
#: after another, so no two clusters compete for the cores (their latency and availability
#: assertions need the CPU a cluster of their own would have); the rest of the suite runs on
#: the other workers beside them.
CLUSTER_MODULES = {
    "cluster/test_api_suite.py",
    "chaos/test_chaos.py",
    "cluster/test_placement.py",
    "cluster/test_failover.py",
    "cluster/test_resilience.py",
    "bench/test_cluster_bench.py",
}
TESTS = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of ``CLUSTER_MODULES`` ``cluster``, in the xdist group ``cluster``.

    First of the hook's implementations: pytest-xdist's own (on each worker, under
    ``--dist loadgroup``) reads the group marks to rename the items it groups.
    """
    for item in items:
        path = Path(item.path).resolve()
        if TESTS in path.parents and path.relative_to(TESTS).as_posix() in CLUSTER_MODULES:
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.xdist_group("cluster"))
    # The cluster lane is the longest: handed out first, the other workers take everything
    # else beside it instead of waiting for it at the end.
    items.sort(key=lambda item: item.get_closest_marker("cluster") is None)


def pytest_collection_finish(session: pytest.Session) -> None:
    """On an xdist worker under ``--dist loadgroup``: stop unless the cluster tests were
    grouped (a pytest or pytest-xdist upgrade broke that once, silently: clusters then ran two
    at a time and started twice)."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [
        item.nodeid
        for item in session.items
        if item.get_closest_marker("cluster") and not item.nodeid.endswith("@cluster")
    ]
    if lost:
        raise pytest.UsageError(
            f"pytest-xdist did not group {len(lost)} cluster tests (e.g. {lost[0]}): "
            "check the pytest and pytest-xdist versions against pyproject.toml"
        )


@pytest.fixture
def rag(tmp_path: Path) -> Iterator[Shardrag]:
    """An embedded Shardrag on a fresh data dir with two shards."""
    instance = Shardrag.open(tmp_path / "data", shards=2)
    try:
        yield instance
    finally:
        instance.close()
