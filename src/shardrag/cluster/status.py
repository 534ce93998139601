"""``shardrag cluster status``: the shard map and the log heads, read as one picture."""

from __future__ import annotations

from pathlib import Path

from shardrag.cluster import open_shard_map
from shardrag.cluster.shardmap import ClusterStatus, Layout, NodeInfo, Replicas, ShardMap
from shardrag.config import Settings
from shardrag.errors import InvalidParameter, ShardMapConflict, Unavailable
from shardrag.log import Log, open_log
from shardrag.pipeline.events import shard_subject


def collect_status(
    layout: Layout, shard_map: ShardMap, log: Log, nodes: list[NodeInfo] | None = None
) -> ClusterStatus:
    """The layout, every shard's replicas and log head, and the live nodes (or ``nodes``)."""
    shards = range(layout.shards)
    return ClusterStatus(
        layout,
        {s: list(shard_map.replicas(s).nodes) for s in shards},
        {s: log.last_sequence(shard_subject(s)) for s in shards},
        shard_map.nodes() if nodes is None else nodes,
    )


def cluster_settings(cluster_dir: Path) -> Settings:
    """Settings that reach the cluster started in ``cluster_dir``, else the one the
    environment names (SHARDRAG_NATS_URL, SHARDRAG_LOG_PREFIX)."""
    from shardrag.cluster.launcher import STATE_FILE, ClusterState  # the CLI's, not the api's

    if (cluster_dir / STATE_FILE).exists():
        state = ClusterState.load(cluster_dir)
        return Settings.load(
            cluster=True, nats_url=",".join(state.nats_urls), log_prefix=state.name
        )
    return Settings.load(cluster=True)


def read_status(cluster_dir: Path) -> ClusterStatus:
    """The status of the cluster of ``cluster_settings(cluster_dir)``."""
    settings = cluster_settings(cluster_dir)
    shard_map = open_shard_map(settings)
    try:
        layout = shard_map.layout()
        if layout is None:
            raise Unavailable("the cluster's shard map has no layout (run `shardrag cluster init`)")
        log = open_log(settings.data_dir, settings.nats_url, settings.log_prefix)
        try:
            return collect_status(layout, shard_map, log)
        finally:
            log.close()
    finally:
        shard_map.close()


def add_replica(cluster_dir: Path, shard_id: int, node_id: str) -> Replicas:
    """Give ``node_id`` a replica of ``shard_id`` (compare-and-set; a no-op if it has one).

    The node starts it within a heartbeat: from the shard's newest snapshot in the blob
    store, then the log from the snapshot's position.
    """
    shard_map = open_shard_map(cluster_settings(cluster_dir))
    try:
        layout = shard_map.layout()
        if layout is None or not 0 <= shard_id < layout.shards:
            raise InvalidParameter(f"the cluster has no shard {shard_id}", shard_id=shard_id)
        while True:
            current = shard_map.replicas(shard_id)
            if node_id in current.nodes:
                return current
            try:
                return shard_map.set_replicas(shard_id, [*current.nodes, node_id], current.revision)
            except ShardMapConflict:
                continue  # someone else changed it: read again
    finally:
        shard_map.close()
