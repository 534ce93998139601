"""The shard map's view of replicas and live nodes, as the api processes of a cluster read it.

The router picks replicas from it and writers wait on it until every live replica applied
their write; it reads the nodes' heartbeats at most every ``every`` seconds however many
threads ask (the embedded mode's counterpart is ``LocalNode``).
"""

from __future__ import annotations

import time

from shardrag.cluster.shardmap import NodeInfo, Replicas, ShardMap


class HeartbeatDirectory:
    """Replicas from the shard map; live nodes from their heartbeats, briefly remembered."""

    def __init__(self, shard_map: ShardMap, every: float = 0.25) -> None:
        self.shard_map = shard_map
        self.every = every
        self._heard: tuple[float, list[NodeInfo]] = (float("-inf"), [])

    def nodes(self) -> list[NodeInfo]:
        """The live nodes as their heartbeats said at most ``every`` seconds ago."""
        now = time.monotonic()
        if now - self._heard[0] > self.every:
            self._heard = (now, self.shard_map.nodes())
        return self._heard[1]

    def replicas(self, shard_id: int) -> Replicas:
        """The nodes holding a replica of ``shard_id`` (read from the map each time)."""
        return self.shard_map.replicas(shard_id)
