"""The attacks of tests/security run over HTTP against the same apps as tests/api: embedded
in this process, or (``SHARDRAG_TEST_CLUSTER``, cluster/test_api_suite.py) a cluster.

Tests marked ``in_process`` need the served app in this process (its settings, its logs)
and skip against a cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import (  # noqa: F401  (fixtures, found here by name)
    CLUSTER_DIR,
    api,
    cluster,
    cluster_cleanup,
    live_server,
)

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Against a cluster, skip the tests of this directory marked ``in_process``."""
    if CLUSTER_DIR is None:
        return
    for item in items:
        if item.get_closest_marker("in_process") and HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.skip(reason="in_process, not against a cluster"))
