"""``shardrag cluster status``: the shard map and the log heads, read as one picture."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from shardrag.backends import Backends
from shardrag.cluster.placement import Mover
from shardrag.cluster.shardmap import ClusterStatus, Layout, NodeInfo, Replicas, ShardMap
from shardrag.config import Settings
from shardrag.errors import InvalidParameter, ShardMapConflict, Unavailable
from shardrag.log import Log
from shardrag.pipeline.events import shard_subject


def collect_status(
    layout: Layout, shard_map: ShardMap, log: Log, nodes: list[NodeInfo] | None = None
) -> ClusterStatus:
    """The layout, every shard's replicas and log head, the live nodes (or ``nodes``), and
    the tenants not on one shared shard (dedicated, split, or moving)."""
    shards = shard_map.shard_ids()
    placements = {
        tenant: placement
        for tenant, placement in shard_map.placements().items()
        if placement.phase != "settled" or any(s >= layout.shards for s in placement.shards)
    }
    return ClusterStatus(
        layout,
        {s: list(shard_map.replicas(s).nodes) for s in shards},
        {s: log.last_sequence(shard_subject(s)) for s in shards},
        shard_map.nodes() if nodes is None else nodes,
        placements,
    )


def cluster_settings(cluster_dir: Path) -> Settings:
    """Settings that reach the cluster started in ``cluster_dir``, else the one the
    environment names (SHARDRAG_NATS_URL, SHARDRAG_LOG_PREFIX)."""
    from shardrag.cluster.launcher import STATE_FILE, ClusterState  # the CLI's, not the api's

    if (cluster_dir / STATE_FILE).exists():
        state = ClusterState.load(cluster_dir)
        return Settings.load(
            cluster=True,
            nats_url=",".join(state.nats_urls),
            log_prefix=state.name,
            registry_url=state.registry_url,
            blob_url=state.blob_url,
        )
    return Settings.load(cluster=True)


@contextlib.contextmanager
def opened_backends(cluster_dir: Path) -> Iterator[Backends]:
    """The backends of the cluster of ``cluster_settings(cluster_dir)``, closed after use."""
    backends = Backends.from_settings(cluster_settings(cluster_dir), "shardrag-cli")
    try:
        yield backends
    finally:
        backends.close()


def read_status(cluster_dir: Path) -> ClusterStatus:
    """The status of the cluster of ``cluster_settings(cluster_dir)``."""
    with opened_backends(cluster_dir) as backends:
        layout = backends.shard_map.layout()
        if layout is None:
            raise Unavailable("the cluster's shard map has no layout (run `shardrag cluster init`)")
        return collect_status(layout, backends.shard_map, backends.log)


@contextlib.contextmanager
def opened_mover(
    cluster_dir: Path, progress: Callable[[str], None] | None = None, timeout: float = 600.0
) -> Iterator[Mover]:
    """A ``Mover`` over the cluster of ``cluster_settings(cluster_dir)`` (map, log, registry),
    closed after use."""
    with opened_backends(cluster_dir) as backends:
        yield Mover(
            backends.shard_map, backends.log, backends.registry, timeout=timeout, progress=progress
        )


def add_replica(cluster_dir: Path, shard_id: int, node_id: str) -> Replicas:
    """Give ``node_id`` a replica of ``shard_id`` (compare-and-set; a no-op if it has one).

    The node starts it within a heartbeat: from the shard's newest snapshot in the blob
    store, then the log from the snapshot's position.
    """
    with opened_backends(cluster_dir) as backends:
        shard_map = backends.shard_map
        layout = shard_map.layout()
        if layout is None or shard_id not in shard_map.shard_ids():
            raise InvalidParameter(f"the cluster has no shard {shard_id}", shard_id=shard_id)
        while True:
            current = shard_map.replicas(shard_id)
            if node_id in current.nodes:
                return current
            try:
                return shard_map.set_replicas(shard_id, [*current.nodes, node_id], current.revision)
            except ShardMapConflict:
                continue  # someone else changed it: read again


def api_breakers(cluster_dir: Path, api_url: str | None = None) -> dict[str, Any] | None:
    """The circuit breakers of one api process (each has its own, in its router).

    Asks ``GET /v1/admin/cluster`` of ``api_url``, else of the api of the cluster started in
    ``cluster_dir``, with that cluster's admin key (else SHARDRAG_ADMIN_KEY). ``{"api_url",
    "api_pid", "nodes": {node: state}}``, or ``{"api_url", "error"}`` if it cannot answer;
    None when no api is known.
    """
    from shardrag.cluster.launcher import STATE_FILE, ClusterState  # the CLI's, not the api's

    key = os.environ.get("SHARDRAG_ADMIN_KEY")
    if (cluster_dir / STATE_FILE).exists():
        state = ClusterState.load(cluster_dir)
        api_url = api_url or state.api_url
        key = state.admin_key
    if api_url is None:
        return None
    try:
        answer = httpx.get(
            f"{api_url.rstrip('/')}/v1/admin/cluster",
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=5.0,
            trust_env=False,
        )
        body = answer.json()
        if answer.status_code != 200:
            return {"api_url": api_url, "error": body.get("error", {}).get("code", "error")}
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return {"api_url": api_url, "error": type(exc).__name__}
    return {"api_url": api_url, "api_pid": body.get("api_pid"), "nodes": body.get("breakers", {})}
