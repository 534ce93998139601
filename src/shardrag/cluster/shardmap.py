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
import zlib
from dataclasses import asdict, dataclass, field, replace
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
    #: Per hosted shard being filled by a move: source shard → offset of its log applied.
    sources: dict[int, dict[int, int]] = field(default_factory=dict)
    #: Searches answered per hosted shard since the node started (which shards serve).
    searches: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The stored form."""
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> NodeInfo:
        """A heartbeat read back (JSON object keys are strings: shard ids become ints)."""
        values: dict[str, Any] = json.loads(data)
        values["applied"] = {int(k): int(v) for k, v in values.get("applied", {}).items()}
        values["heads"] = {int(k): int(v) for k, v in values.get("heads", {}).items()}
        values["searches"] = {int(k): int(v) for k, v in values.get("searches", {}).items()}
        values["sources"] = {
            int(k): {int(s): int(o) for s, o in v.items()}
            for k, v in values.get("sources", {}).items()
        }
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
class Placement:
    """Where a tenant's documents live: its shards, and while it moves, where from.

    A document's shard is ``shards[crc32(doc_id) % len(shards)]`` (all chunks of a document
    in one shard). A move (promotion to dedicated shards, or a split) goes through phases:

    - ``copying``: ``target`` shards are being filled from ``shards``; reads and writes still
      use ``shards``;
    - ``draining``: writes and reads use ``shards`` (the new ones); ``source`` names the old
      shards, whose log the new replicas still follow for this tenant, so a read asks them
      to have applied the old shards' logs to their heads too;
    - neither: settled.
    """

    shards: tuple[int, ...]
    target: tuple[int, ...] = ()
    source: tuple[int, ...] = ()
    #: When the placement was flipped to the new shards (draining), Unix time.
    flipped_at: float = 0.0
    revision: int = 0

    @property
    def phase(self) -> str:
        """``copying``, ``draining`` or ``settled``."""
        if self.target:
            return "copying"
        return "draining" if self.source else "settled"

    def shard_of(self, doc_id: str) -> int:
        """The shard a document of this tenant is written to."""
        return self.shards[zlib.crc32(doc_id.encode()) % len(self.shards)]

    def to_json(self) -> bytes:
        """The stored form."""
        values: dict[str, Any] = {"shards": list(self.shards)}
        if self.target:
            values["target"] = list(self.target)
        if self.source:
            values["source"] = list(self.source)
            values["flipped_at"] = self.flipped_at
        return json.dumps(values).encode()

    @classmethod
    def from_json(cls, data: bytes, revision: int) -> Placement:
        """A placement read back (a bare list is the form of a tenant placed before moves)."""
        values = json.loads(data)
        if isinstance(values, list):
            return cls(tuple(int(s) for s in values), revision=revision)
        return cls(
            tuple(int(s) for s in values["shards"]),
            tuple(int(s) for s in values.get("target", ())),
            tuple(int(s) for s in values.get("source", ())),
            float(values.get("flipped_at", 0.0)),
            revision,
        )


@dataclass(frozen=True)
class Move:
    """What the replicas of a shard being filled from other shards must do.

    A replica of ``shard_id`` follows the logs of ``sources`` and applies only the ops of
    ``tenant`` whose document hashes to ``bucket`` of ``buckets`` (a split), until ``done``.
    A new replica of it starts from the newest snapshot of the first source, keeping only
    those documents. Once done, every replica snapshots the shard (the snapshot a later
    replica starts from holds the copied documents).
    """

    shard_id: int
    tenant: str
    sources: tuple[int, ...]
    bucket: int = 0
    buckets: int = 1
    done: bool = False
    done_at: float = 0.0

    def keeps(self, tenant: str, doc_id: str) -> bool:
        """Whether an op of the sources belongs to this shard."""
        return tenant == self.tenant and (
            self.buckets <= 1 or zlib.crc32(doc_id.encode()) % self.buckets == self.bucket
        )

    def to_json(self) -> bytes:
        """The stored form."""
        values = asdict(self)
        values["sources"] = list(self.sources)
        return json.dumps(values).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Move:
        """A move read back."""
        values = json.loads(data)
        values["sources"] = tuple(int(s) for s in values["sources"])
        return cls(**values)


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
    #: Tenants on shards of their own or moving, by id.
    placements: dict[str, Placement] = field(default_factory=dict)

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
                        {
                            "shard": s,
                            "applied": applied,
                            "lag": node.lag(s),
                            "searches": node.searches.get(s, 0),
                        }
                        for s, applied in sorted(node.applied.items())
                    ],
                    "lag": sum(node.lag(s) for s in node.applied),
                    "following": {
                        str(shard): {str(s): o for s, o in offsets.items()}
                        for shard, offsets in node.sources.items()
                    },
                }
                for node in self.nodes
            ],
            "tenants": [
                {
                    "tenant": tenant,
                    "shards": list(p.shards),
                    "phase": p.phase,
                    "target": list(p.target),
                    "source": list(p.source),
                }
                for tenant, p in sorted(self.placements.items())
            ],
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ClusterStatus:
        """A status as ``to_dict`` gave it (a node's start time is not in it: 0)."""
        now = time.time()
        nodes = [
            NodeInfo(
                node["id"],
                int(node["pid"]),
                node["address"],
                {int(s["shard"]): int(s["applied"]) for s in node["shards"]},
                0.0,
                now - float(node["heartbeat_age_seconds"]),
                {int(s["shard"]): int(s["applied"]) + int(s["lag"]) for s in node["shards"]},
                {
                    int(shard): {int(src): int(o) for src, o in offsets.items()}
                    for shard, offsets in node.get("following", {}).items()
                },
                {int(s["shard"]): int(s["searches"]) for s in node["shards"]},
            )
            for node in values["nodes"]
        ]
        placements = {
            t["tenant"]: Placement(tuple(t["shards"]), tuple(t["target"]), tuple(t["source"]))
            for t in values.get("tenants", [])
        }
        return cls(
            Layout(**values["layout"]),
            {int(s["shard"]): list(s["replicas"]) for s in values["shards"]},
            {int(s["shard"]): int(s["log_head"]) for s in values["shards"]},
            nodes,
            placements,
        )


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

    def shard_ids(self) -> list[int]:
        """Every shard of the cluster: the layout's, then those added for moves."""
        ...

    def add_shards(self, count: int) -> list[int]:
        """Ids for ``count`` new shards, after every existing one (no replicas yet)."""
        ...

    def placement(self, tenant: str) -> Placement | None:
        """The tenant's placement with its revision, or None if it was never placed."""
        ...

    def set_placement(self, tenant: str, placement: Placement, revision: int) -> Placement:
        """Compare-and-set of a tenant's placement (``ShardMapConflict`` if it moved on)."""
        ...

    def placements(self) -> dict[str, Placement]:
        """Every placed tenant (an operator's view: this lists the map)."""
        ...

    def move(self, shard_id: int) -> Move | None:
        """The move filling ``shard_id``, or None."""
        ...

    def set_move(self, move: Move) -> None:
        """Record (or update) the move filling ``move.shard_id``."""
        ...

    def clear_move(self, shard_id: int) -> None:
        """Forget the move of ``shard_id`` (it is complete)."""
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

    def _keys(self, prefix: str) -> list[str]:
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
        placement = self.placement(tenant)
        return list(placement.shards) if placement else None

    def place_tenant(self, tenant: str, shards: list[int]) -> list[int]:
        """Place a tenant once."""
        try:
            self._put(f"tenant.{tenant}", Placement(tuple(shards)).to_json(), 0)
            return list(shards)
        except ShardMapConflict:
            placed = self.tenant_shards(tenant)
            if placed is None:  # dropped in between: place it again
                return self.place_tenant(tenant, shards)
            return placed

    def placement(self, tenant: str) -> Placement | None:
        """A tenant's placement."""
        found = self._get(f"tenant.{tenant}")
        return Placement.from_json(*found) if found else None

    def set_placement(self, tenant: str, placement: Placement, revision: int) -> Placement:
        """Compare-and-set of a placement."""
        new = self._put(f"tenant.{tenant}", placement.to_json(), revision)
        return replace(placement, revision=new)

    def placements(self) -> dict[str, Placement]:
        """Every placement."""
        found = {}
        for key in self._keys("tenant."):
            entry = self._get(key)
            if entry is not None:
                found[key.removeprefix("tenant.")] = Placement.from_json(*entry)
        return found

    def shard_ids(self) -> list[int]:
        """The layout's shards and the added ones."""
        layout = self.layout()
        added = self._get("shards.added")
        base = list(range(layout.shards)) if layout else []
        return base + ([int(s) for s in json.loads(added[0])] if added else [])

    def add_shards(self, count: int) -> list[int]:
        """Allocate shard ids by compare-and-set on the list of added shards."""
        while True:
            found = self._get("shards.added")
            added = [int(s) for s in json.loads(found[0])] if found else []
            first = max([*self.shard_ids(), -1]) + 1
            new = list(range(first, first + count))
            try:
                self._put(
                    "shards.added", json.dumps(added + new).encode(), found[1] if found else 0
                )
                break
            except ShardMapConflict:
                continue
        return new

    def move(self, shard_id: int) -> Move | None:
        """The move filling a shard."""
        found = self._get(f"move.{shard_id}")
        return Move.from_json(found[0]) if found else None

    def set_move(self, move: Move) -> None:
        """Write a move (only its mover writes it)."""
        key = f"move.{move.shard_id}"
        found = self._get(key)
        self._put(key, move.to_json(), found[1] if found else 0)

    def clear_move(self, shard_id: int) -> None:
        """Forget a move."""
        self._delete(f"move.{shard_id}")

    def forget_tenant(self, tenant: str) -> None:
        """Remove a placement."""
        self._delete(f"tenant.{tenant}")

    def record_snapshot(self, snapshot: SnapshotRef) -> None:
        """Keep the newest snapshot of a shard."""
        key = f"snapshot.{snapshot.shard_id}"
        while True:
            found = self._get(key)
            if found:
                stored = SnapshotRef.from_json(found[0])
                if (stored.position, stored.created_at) >= (snapshot.position, snapshot.created_at):
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

    def _keys(self, prefix: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key FROM entries WHERE substr(key, 1, ?) = ? ORDER BY key",
                (len(prefix), prefix),
            ).fetchall()
        return [str(row[0]) for row in rows]

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
