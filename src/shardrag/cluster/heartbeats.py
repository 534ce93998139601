"""The shard map's view of replicas and live nodes, as the api processes of a cluster read it.

The router picks replicas from it and writers wait on it until every live replica applied
their write. It reads the nodes' heartbeats at most every ``every`` seconds however many
threads ask, and never on a search's path once it has read them once: past ``every`` the last
list is returned while one background read refreshes it. A map that is slow for a while (its
NATS server died and the connection is moving to another) then delays no search; the router
keeps to the replicas it knew (the embedded mode's counterpart is ``LocalNode``).
"""

from __future__ import annotations

import logging
import threading
import time

from shardrag.cluster.shardmap import NodeInfo, Replicas, ShardMap

logger = logging.getLogger(__name__)


class HeartbeatDirectory:
    """Replicas from the shard map; live nodes from their heartbeats, refreshed behind."""

    def __init__(self, shard_map: ShardMap, every: float = 0.25) -> None:
        self.shard_map = shard_map
        self.every = every
        self._heard: tuple[float, list[NodeInfo]] | None = None
        self._refreshing = threading.Lock()

    def nodes(self) -> list[NodeInfo]:
        """The live nodes as their heartbeats said: read now the first time, then at most
        ``every`` seconds old or being refreshed in the background."""
        heard = self._heard
        if heard is None:
            return self._read()
        if time.monotonic() - heard[0] > self.every and self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh, name="heartbeats", daemon=True).start()
        return heard[1]

    def replicas(self, shard_id: int) -> Replicas:
        """The nodes holding a replica of ``shard_id`` (read from the map each time)."""
        return self.shard_map.replicas(shard_id)

    def _read(self) -> list[NodeInfo]:
        nodes = self.shard_map.nodes()
        self._heard = (time.monotonic(), nodes)
        return nodes

    def _refresh(self) -> None:
        try:
            self._read()
        except Exception:
            logger.warning("reading the nodes' heartbeats failed; the last ones serve")
        finally:
            self._refreshing.release()
