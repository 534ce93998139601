"""The embedded process as the one node of its shards (``LOCAL_NODE``).

The embedded mode runs the distributed read path with in-process parts: the router asks this
node through a ``LocalTransport``, the node answers with the same ``SearchServer`` an index
node uses (so the read-concern wait is the node's), and the node stands in for the shard map's
heartbeats (which replicas exist, which nodes are alive, how far each shard is applied).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from shardrag.cluster import LOCAL_NODE
from shardrag.cluster.serving import SearchServer
from shardrag.cluster.shardmap import NodeInfo, Replicas
from shardrag.engine import ShardEngine, ShardSet
from shardrag.log import Log
from shardrag.pipeline.applier import IndexApplier
from shardrag.pipeline.events import shard_subject

#: The applied offset reported when this process applies nothing (a read-only open): every
#: read is as fresh as the files it opened.
_EVERYTHING = 2**63 - 1


@dataclass(frozen=True)
class LocalReplica:
    """A shard of the data dir, applied by this process's pipeline (or by nobody)."""

    shard_id: int
    engine: ShardEngine
    applier: IndexApplier | None
    ready_at: int = 0

    def applied(self) -> int:
        """The offset of the shard's log applied so far."""
        return self.applier.applied(self.shard_id) if self.applier else _EVERYTHING

    def followed(self, min_source: Mapping[int, int]) -> bool:
        """Always: an embedded tenant never moves between shards."""
        return True


class LocalNode:
    """The data dir's shards, their applier and their log, as one live node."""

    node_id = LOCAL_NODE

    def __init__(
        self,
        shards: ShardSet,
        shard_count: int,
        applier: IndexApplier | None,
        changed: threading.Condition,
        log: Log,
    ) -> None:
        self.shards = shards
        self.shard_count = shard_count
        self.applier = applier
        self.log = log
        self.started_at = time.time()
        self.server = SearchServer(LOCAL_NODE, self.replica, changed)

    def replica(self, shard_id: int) -> LocalReplica | None:
        """The replica of ``shard_id`` (None past the layout's shards)."""
        if not 0 <= shard_id < self.shard_count:
            return None
        return LocalReplica(shard_id, self.shards.shard(shard_id), self.applier)

    def replicas(self, shard_id: int) -> Replicas:
        """This node holds every shard's one replica."""
        return Replicas(shard_id, (LOCAL_NODE,))

    def nodes(self, fresh: bool = False) -> list[NodeInfo]:
        """This node, as its heartbeat would say it now (applied offsets and log heads;
        always fresh)."""
        shards = range(self.shard_count)
        heads = {s: self.log.last_sequence(shard_subject(s)) for s in shards}
        applied = {s: self.applier.applied(s) if self.applier else heads[s] for s in shards}
        return [
            NodeInfo(
                LOCAL_NODE,
                os.getpid(),
                socket.gethostname(),
                applied,
                self.started_at,
                time.time(),
                heads,
                searches=dict(self.server.searches),
            )
        ]
