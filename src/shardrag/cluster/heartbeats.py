"""The shard map's view of replicas and live nodes, as the api processes of a cluster read it.

The router picks replicas from it and writers wait on it until every live replica applied
their write. It reads the nodes' heartbeats at most every ``every`` seconds however many
threads ask. Between ``every`` and ``stale_limit`` seconds the last list is returned while one
background read refreshes it: a map that is slow for a while (its NATS server died and the
connection is moving to another) then delays no search of a busy process, which keeps to the
replicas it knew. Past ``stale_limit`` (an idle process) the list is read again before it is
returned, so no caller ever acts on a view older than that; a failed read then returns the
last list. ``nodes(fresh=True)`` (cluster status, stats) always reads now. Each api process
has its own directory: without the limit, two processes behind one port answered a status
with views minutes apart. The embedded mode's counterpart is ``LocalNode``.
"""

from __future__ import annotations

import logging
import threading
import time

from shardrag.cluster.shardmap import NodeInfo, Replicas, ShardMap

logger = logging.getLogger(__name__)


class HeartbeatDirectory:
    """Replicas from the shard map; live nodes from their heartbeats, refreshed behind."""

    def __init__(self, shard_map: ShardMap, every: float = 0.25, stale_limit: float = 5.0) -> None:
        self.shard_map = shard_map
        self.every = every
        self.stale_limit = max(stale_limit, every)
        self._heard: tuple[float, list[NodeInfo]] | None = None
        self._refreshing = threading.Lock()

    def nodes(self, fresh: bool = False) -> list[NodeInfo]:
        """The live nodes as their heartbeats said: at most ``every`` seconds old, or at most
        ``stale_limit`` old while a background read refreshes them; ``fresh``: read now."""
        heard = self._heard
        if heard is None or fresh:
            return self._read()
        age = time.monotonic() - heard[0]
        if age > self.stale_limit:
            try:
                return self._read()
            except Exception:
                logger.warning("reading the nodes' heartbeats failed; the last ones serve")
                return heard[1]
        if age > self.every and self._refreshing.acquire(blocking=False):
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
