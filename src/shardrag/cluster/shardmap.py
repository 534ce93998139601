"""The shard map: which shards a tenant lives on, which nodes hold each shard, who is alive.

Three kinds of entry, each changed only by compare-and-set on its revision, so two routers
or operators writing at once never overwrite each other silently (the loser gets
``ShardMapConflict`` and re-reads):

- the layout: how many shards, replicas per shard, the embedding model and its dimension;
- ``shard -> replicas``: the node ids that hold a replica of the shard;
- ``tenant -> shards``: the shards a tenant's documents live on (placed once, on creation).

Node liveness is a heartbeat per node with a time to live: a node that stops beating is gone
from ``nodes()`` after ``ttl_seconds``. A heartbeat carries what a router and an operator need
to know about the node: its pid and address, and per hosted shard how far it has applied the
shard's log. Snapshots of shards (for new replicas) are recorded here too.

Implementations: ``cluster/kvmap.py`` (NATS JetStream key-value, the distributed mode) and
``SqliteShardMap`` below (the embedded default, one file in the data dir).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shardrag.errors import InvalidParameter, ShardMapConflict
from shardrag.sqlitedb import immediate, open_durable


@dataclass(frozen=True)
class Layout:
    """The shape of a cluster, fixed when it is first written."""

    shards: int
    replicas: int
    model: str
    dimension: int
    revision: int = 0

    def to_json(self) -> bytes:
        """The stored form (without the revision, which the store keeps)."""
        values = asdict(self)
        values.pop("revision")
        return json.dumps(values).encode()

    @classmethod
    def from_json(cls, data: bytes, revision: int) -> Layout:
        """The layout stored as ``data`` at ``revision``."""
        return cls(**json.loads(data), revision=revision)


@dataclass(frozen=True)
class Replicas:
    """The nodes holding a replica of one shard, at a revision of the map."""

    shard_id: int
    nodes: tuple[str, ...]
    revision: int = 0


@dataclass(frozen=True)
class NodeInfo:
    """A node's last heartbeat: who it is and how far each of its shards is applied."""

    node_id: str
    pid: int
    address: str
    #: Hosted shard → sequence of the last op of its log applied by this node.
    applied: dict[int, int] = field(default_factory=dict)
    started_at: float = 0.0
    heartbeat_at: float = 0.0
    #: The log head per hosted shard as the node last saw it (its lag is head - applied).
    heads: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The stored form."""
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> NodeInfo:
        """A heartbeat read back (JSON object keys are strings: shard ids become ints)."""
        values: dict[str, Any] = json.loads(data)
        values["applied"] = {int(k): int(v) for k, v in values.get("applied", {}).items()}
        values["heads"] = {int(k): int(v) for k, v in values.get("heads", {}).items()}
        return cls(**values)

    def lag(self, shard_id: int) -> int:
        """Ops of the shard's log this node has not applied yet (as of its heartbeat)."""
        return max(0, self.heads.get(shard_id, 0) - self.applied.get(shard_id, 0))


@dataclass(frozen=True)
class SnapshotRef:
    """A snapshot of a shard in the blob store and the log position it contains."""

    shard_id: int
    digest: str
    position: int
    node_id: str
    created_at: float
    size: int

    def to_json(self) -> bytes:
        """The stored form."""
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SnapshotRef:
        """A snapshot record read back."""
        return cls(**json.loads(data))


@dataclass(frozen=True)
class ClusterStatus:
    """What ``shardrag cluster status`` shows: layout, replicas, log heads, live nodes.

    A replica's lag is what its node reported in its last heartbeat: the shard log's head as
    the node saw it minus its applied offset, both read in the same beat (comparing a
    heartbeat's offset with the head of now would count the writes since the beat). Offsets
    are sequence numbers of the log stream, which also carries other subjects: a lag of n is
    at most n shard ops.
    """

    layout: Layout
    replicas: dict[int, list[str]]
    heads: dict[int, int]
    nodes: list[NodeInfo]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the layout, and one object per node with its shards and lag."""
        return {
            "layout": asdict(self.layout),
            "shards": [
                {"shard": s, "replicas": nodes, "log_head": self.heads.get(s, 0)}
                for s, nodes in sorted(self.replicas.items())
            ],
            "nodes": [
                {
                    "id": node.node_id,
                    "pid": node.pid,
                    "address": node.address,
                    "healthy": True,
                    "heartbeat_age_seconds": round(max(0.0, time.time() - node.heartbeat_at), 3),
                    "shards": [
                        {"shard": s, "applied": applied, "lag": node.lag(s)}
                        for s, applied in sorted(node.applied.items())
                    ],
                    "lag": sum(node.lag(s) for s in node.applied),
                }
                for node in self.nodes
            ],
        }


class ShardMap(Protocol):
    """The cluster's shared map; every change is a compare-and-set."""

    ttl_seconds: float

    def layout(self) -> Layout | None:
        """The cluster's layout, or None before one is written."""
        ...

    def init_layout(self, layout: Layout) -> Layout:
        """Write the layout if there is none; the stored one (``InvalidParameter`` if it
        differs in shards, model or dimension from ``layout``)."""
        ...

    def replicas(self, shard_id: int) -> Replicas:
        """The nodes holding ``shard_id`` (none, at revision 0, if never assigned)."""
        ...

    def set_replicas(self, shard_id: int, nodes: list[str], revision: int) -> Replicas:
        """Assign ``nodes`` to ``shard_id`` if the entry is still at ``revision`` (0: absent);
        ``ShardMapConflict`` otherwise."""
        ...

    def tenant_shards(self, tenant: str) -> list[int] | None:
        """The shards of ``tenant``, or None if it was never placed."""
        ...

    def place_tenant(self, tenant: str, shards: list[int]) -> list[int]:
        """Place ``tenant`` on ``shards`` unless it is placed already; the placement that won."""
        ...

    def forget_tenant(self, tenant: str) -> None:
        """Remove the tenant's placement (the tenant was dropped)."""
        ...

    def heartbeat(self, node: NodeInfo) -> None:
        """Record that ``node`` is alive now, with what it reports."""
        ...

    def leave(self, node_id: str) -> None:
        """Remove a node's heartbeat at once (it is stopping)."""
        ...

    def nodes(self) -> list[NodeInfo]:
        """Every node whose heartbeat is younger than ``ttl_seconds``, by id."""
        ...

    def record_snapshot(self, snapshot: SnapshotRef) -> None:
        """Remember ``snapshot`` as the newest of its shard (an older one never replaces it)."""
        ...

    def snapshot(self, shard_id: int) -> SnapshotRef | None:
        """The newest snapshot of ``shard_id``, or None."""
        ...

    def close(self) -> None:
        """Release the map's resources."""
        ...


def initial_replicas(shards: int, replicas: int, node_ids: list[str]) -> dict[int, list[str]]:
    """Spread ``replicas`` copies of each shard over the nodes, round robin, no node twice."""
    if replicas > len(node_ids):
        raise InvalidParameter(
            f"{replicas} replicas per shard need at least {replicas} nodes, not {len(node_ids)}"
        )
    return {
        shard: [node_ids[(shard + i) % len(node_ids)] for i in range(replicas)]
        for shard in range(shards)
    }


def check_layout(stored: Layout, wanted: Layout) -> Layout:
    """``stored``, if ``wanted`` agrees with it on what cannot change."""
    for name in ("shards", "model", "dimension"):
        if getattr(stored, name) != getattr(wanted, name):
            raise InvalidParameter(
                f"the cluster's layout has {name}={getattr(stored, name)!r}, "
                f"not {getattr(wanted, name)!r}",
                setting=name,
            )
    return stored


class KeyValueShardMap:
    """The entries of the map over a key-value store with compare-and-set by revision.

    Subclasses provide ``_get``, ``_put`` (create when ``revision`` is 0, else update only
    at that revision; ``ShardMapConflict`` otherwise), ``_delete`` and the heartbeats.
    """

    ttl_seconds: float

    def _get(self, key: str) -> tuple[bytes, int] | None:
        raise NotImplementedError

    def _put(self, key: str, value: bytes, revision: int) -> int:
        raise NotImplementedError

    def _delete(self, key: str) -> None:
        raise NotImplementedError

    # -- the protocol -------------------------------------------------------------------------

    def layout(self) -> Layout | None:
        """The layout, or None."""
        found = self._get("layout")
        return Layout.from_json(*found) if found else None

    def init_layout(self, layout: Layout) -> Layout:
        """Write the layout once; the stored one."""
        stored = self.layout()
        if stored is None:
            try:
                return Layout.from_json(layout.to_json(), self._put("layout", layout.to_json(), 0))
            except ShardMapConflict:
                stored = self.layout()
        assert stored is not None
        return check_layout(stored, layout)

    def replicas(self, shard_id: int) -> Replicas:
        """The nodes of a shard."""
        found = self._get(f"shard.{shard_id}")
        if found is None:
            return Replicas(shard_id, ())
        return Replicas(shard_id, tuple(json.loads(found[0])), found[1])

    def set_replicas(self, shard_id: int, nodes: list[str], revision: int) -> Replicas:
        """Compare-and-set of a shard's nodes."""
        new = self._put(f"shard.{shard_id}", json.dumps(nodes).encode(), revision)
        return Replicas(shard_id, tuple(nodes), new)

    def tenant_shards(self, tenant: str) -> list[int] | None:
        """A tenant's shards."""
        found = self._get(f"tenant.{tenant}")
        return [int(s) for s in json.loads(found[0])] if found else None

    def place_tenant(self, tenant: str, shards: list[int]) -> list[int]:
        """Place a tenant once."""
        try:
            self._put(f"tenant.{tenant}", json.dumps(shards).encode(), 0)
            return list(shards)
        except ShardMapConflict:
            placed = self.tenant_shards(tenant)
            if placed is None:  # dropped in between: place it again
                return self.place_tenant(tenant, shards)
            return placed

    def forget_tenant(self, tenant: str) -> None:
        """Remove a placement."""
        self._delete(f"tenant.{tenant}")

    def record_snapshot(self, snapshot: SnapshotRef) -> None:
        """Keep the newest snapshot of a shard."""
        key = f"snapshot.{snapshot.shard_id}"
        while True:
            found = self._get(key)
            if found and SnapshotRef.from_json(found[0]).position >= snapshot.position:
                return
            try:
                self._put(key, snapshot.to_json(), found[1] if found else 0)
                return
            except ShardMapConflict:
                continue

    def snapshot(self, shard_id: int) -> SnapshotRef | None:
        """The newest snapshot of a shard."""
        found = self._get(f"snapshot.{shard_id}")
        return SnapshotRef.from_json(found[0]) if found else None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key       TEXT PRIMARY KEY,
    value     BLOB NOT NULL,
    revision  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS heartbeats (
    node_id       TEXT PRIMARY KEY,
    value         BLOB NOT NULL,
    heartbeat_at  REAL NOT NULL
);
"""


class SqliteShardMap(KeyValueShardMap):
    """The shard map in one SQLite file: the embedded default (one process, one node)."""

    def __init__(self, path: Path, ttl_seconds: float = 6.0) -> None:
        self.ttl_seconds = ttl_seconds
        self._db = open_durable(path, _SCHEMA)
        self._lock = threading.Lock()
        # Revisions count up across the whole map, like a key-value stream's sequence.
        self._revision_key = "__revision__"

    # -- compare-and-set on entries -----------------------------------------------------------

    def _get(self, key: str) -> tuple[bytes, int] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value, revision FROM entries WHERE key = ?", (key,)
            ).fetchone()
        return (bytes(row[0]), int(row[1])) if row else None

    def _put(self, key: str, value: bytes, revision: int) -> int:
        """Write ``value`` if ``key`` is at ``revision`` (0: absent); the new revision."""
        with self._lock, immediate(self._db):
            row = self._db.execute("SELECT revision FROM entries WHERE key = ?", (key,)).fetchone()
            current = int(row[0]) if row else 0
            if current != revision:
                raise ShardMapConflict(
                    f"shard map entry {key!r} is at revision {current}, not {revision}",
                    key=key,
                    revision=current,
                )
            new = self._next_revision()
            self._db.execute(
                "INSERT INTO entries (key, value, revision) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                "revision = excluded.revision",
                (key, value, new),
            )
            return new

    def _next_revision(self) -> int:
        row = self._db.execute(
            "SELECT revision FROM entries WHERE key = ?", (self._revision_key,)
        ).fetchone()
        new = (int(row[0]) if row else 0) + 1
        self._db.execute(
            "INSERT INTO entries (key, value, revision) VALUES (?, x'', ?) "
            "ON CONFLICT(key) DO UPDATE SET revision = excluded.revision",
            (self._revision_key, new),
        )
        return new

    def _delete(self, key: str) -> None:
        with self._lock, immediate(self._db):
            self._db.execute("DELETE FROM entries WHERE key = ?", (key,))

    def heartbeat(self, node: NodeInfo) -> None:
        """Record a heartbeat."""
        with self._lock, immediate(self._db):
            self._db.execute(
                "INSERT INTO heartbeats (node_id, value, heartbeat_at) VALUES (?, ?, ?) "
                "ON CONFLICT(node_id) DO UPDATE SET value = excluded.value, "
                "heartbeat_at = excluded.heartbeat_at",
                (node.node_id, node.to_json(), node.heartbeat_at or time.time()),
            )

    def leave(self, node_id: str) -> None:
        """Remove a heartbeat."""
        with self._lock, immediate(self._db):
            self._db.execute("DELETE FROM heartbeats WHERE node_id = ?", (node_id,))

    def nodes(self) -> list[NodeInfo]:
        """Live nodes."""
        since = time.time() - self.ttl_seconds
        with self._lock:
            rows = self._db.execute(
                "SELECT value FROM heartbeats WHERE heartbeat_at >= ? ORDER BY node_id", (since,)
            ).fetchall()
        return [NodeInfo.from_json(bytes(row[0])) for row in rows]

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()
