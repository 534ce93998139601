"""The distributed mode: the shard map, index nodes and the router that fans queries out.

Layering: the api's ``Shardrag`` asks the ``Router`` for a tenant's hits; the router reads the
``ShardMap`` and asks the index nodes over NATS request-reply (``search.<shard>``, one queue
group per shard). An ``IndexNode`` hosts shard replicas, applies each shard's log in order and
answers those requests. ``shardrag cluster up`` (``launcher.py``) starts all of it on loopback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from shardrag.cluster.shardmap import (
    ClusterStatus,
    Layout,
    NodeInfo,
    Replicas,
    ShardMap,
    SnapshotRef,
    SqliteShardMap,
    initial_replicas,
)
from shardrag.config import Settings
from shardrag.tls import nats_tls

if TYPE_CHECKING:
    from shardrag.natsconn import NatsConnection

#: The node id of the embedded mode: the one process that holds every shard.
LOCAL_NODE = "local"


def open_shard_map(settings: Settings, conn: NatsConnection | None = None) -> ShardMap:
    """NATS key-value in the distributed mode (over ``conn`` if given), else the data dir's
    SQLite file."""
    if settings.cluster:
        from shardrag.cluster.kvmap import NatsShardMap  # nats-py loads only when it is used

        assert settings.nats_url is not None  # Settings.validate checks it
        return NatsShardMap(
            settings.nats_url,
            settings.log_prefix,
            settings.node_ttl_seconds,
            settings.log_replicas,
            conn=conn,
            tls=nats_tls(settings),
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteShardMap(Path(settings.data_dir) / "shardmap.sqlite3", settings.node_ttl_seconds)


__all__ = [
    "LOCAL_NODE",
    "ClusterStatus",
    "Layout",
    "NodeInfo",
    "Replicas",
    "ShardMap",
    "SnapshotRef",
    "SqliteShardMap",
    "initial_replicas",
    "open_shard_map",
]
