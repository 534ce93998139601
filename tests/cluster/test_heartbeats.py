"""The api process's view of the nodes' heartbeats: never older than its limit, fresh on ask."""

from __future__ import annotations

import time
from pathlib import Path

from shardrag.cluster.heartbeats import HeartbeatDirectory
from shardrag.cluster.shardmap import NodeInfo, SqliteShardMap


def beat(shard_map: SqliteShardMap, applied: int) -> None:
    """node-1 says it applied shard 0's log to ``applied``."""
    now = time.time()
    shard_map.heartbeat(NodeInfo("node-1", 1, "here", {0: applied}, now, now))


def applied(nodes: list[NodeInfo]) -> int:
    return next(n.applied[0] for n in nodes if n.node_id == "node-1")


def test_a_view_is_served_stale_only_up_to_its_limit(tmp_path: Path) -> None:
    shard_map = SqliteShardMap(tmp_path / "map.db", ttl_seconds=60)
    directory = HeartbeatDirectory(shard_map, every=0.05, stale_limit=0.5)
    beat(shard_map, 1)
    assert applied(directory.nodes()) == 1

    # Younger than `every`: the last view, no read.
    beat(shard_map, 2)
    assert applied(directory.nodes()) == 1
    # Asked fresh: read now.
    assert applied(directory.nodes(fresh=True)) == 2

    # Between `every` and the limit: the last view at once, refreshed behind.
    beat(shard_map, 3)
    time.sleep(0.1)
    assert applied(directory.nodes()) == 2
    deadline = time.monotonic() + 5
    while applied(directory.nodes()) != 3:
        assert time.monotonic() < deadline, "the background refresh never came"
        time.sleep(0.01)

    # Past the limit (an idle process): read before it is returned, never the old view.
    beat(shard_map, 4)
    time.sleep(0.6)
    assert applied(directory.nodes()) == 4


def test_a_failed_read_past_the_limit_serves_the_last_view(tmp_path: Path) -> None:
    shard_map = SqliteShardMap(tmp_path / "map.db", ttl_seconds=60)
    directory = HeartbeatDirectory(shard_map, every=0.01, stale_limit=0.05)
    beat(shard_map, 7)
    assert applied(directory.nodes()) == 7

    shard_map.close()  # every read fails from now on
    time.sleep(0.1)
    assert applied(directory.nodes()) == 7
