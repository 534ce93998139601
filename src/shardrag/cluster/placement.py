"""Tenant promotion and splits, replica moves and rebalancing: the cluster's placement changes.

Promotion (a tenant to dedicated shards) and a split (to several, by hash of document id) are
one operation, ``Mover.promote(tenant, shards=n)``, in phases recorded in the tenant's
placement so that any mover can resume it (``shardrag cluster promote-tenant`` again):

1. **copying** — new shard ids are allocated and the tenant's placement names them as its
   ``target`` (a compare-and-set: one mover wins). Each new shard gets a ``Move`` entry, then
   replicas on the least loaded live nodes. A replica starts from the newest snapshot of the
   old shard, drops every point that is not the tenant's (or not its bucket), and follows the
   old shard's log for the tenant's ops from the snapshot's offset. Reads and writes still
   use the old shards. The phase ends when every replica has followed the old logs to their
   heads as read when the wait began.
2. **draining** — the placement flips (compare-and-set): new versions go to the new shards
   (a writer reads the placement after its version is pending, so every version pending
   before the flip was routed before it, to an old shard) and reads go to the new shards,
   whose replicas must have followed the old logs to their heads as read at query time
   (``min_source``): no document is missing, none shows twice. The phase ends when api
   processes have forgotten the old placement (10 s, more than the 8 s they may keep it),
   every version of the tenant begun before then is decided, and every replica has followed
   the old logs to their heads read after that.
3. **settled** — the placement drops ``source``; the moves are marked done (replicas stop
   following and snapshot the shard, so a later replica starts with the copied documents);
   once each new shard has a snapshot, a ``drop_tenant`` op on each old shard removes the
   tenant's points there and the moves are forgotten.

A replica move (``move_replica``) adds the target node (it starts from the shard's newest
snapshot and catches up from its offset), waits until it has applied the shard's log to the
head read after it joined, then removes the source node (compare-and-set). ``rebalance``
plans such moves until no live node holds more than one replica more than another.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from shardrag.cluster.shardmap import Layout, Move, NodeInfo, Placement, Replicas, ShardMap
from shardrag.errors import (
    InvalidParameter,
    ShardMapConflict,
    TenantNotFound,
    Unavailable,
)
from shardrag.log import Log
from shardrag.pipeline.events import OpKind, ShardOp, VersionRef, shard_subject
from shardrag.registry import Registry

logger = logging.getLogger(__name__)
#: Longer than api processes keep a placement they read (``embedded._PLACEMENT_STALE``, 8 s).
PLACEMENT_GRACE_SECONDS = 10.0
_POLL = 0.2


@dataclass(frozen=True)
class ReplicaMove:
    """One replica of ``shard_id`` moved from one node to another."""

    shard_id: int
    from_node: str
    to_node: str


class Mover:
    """Changes placements in the shard map, waiting on the nodes' heartbeats as it goes."""

    def __init__(
        self,
        shard_map: ShardMap,
        log: Log,
        registry: Registry,
        timeout: float = 300.0,
        progress: Callable[[str], None] | None = None,
        grace_seconds: float = PLACEMENT_GRACE_SECONDS,
    ) -> None:
        self.shard_map = shard_map
        self.log = log
        self.registry = registry
        self.timeout = timeout
        self.progress = progress or (lambda message: logger.info("%s", message))
        self.grace_seconds = grace_seconds

    # -- promotion and splits -----------------------------------------------------------------

    def promote(self, tenant: str, shards: int = 1) -> Placement:
        """Give ``tenant`` ``shards`` shards of its own (resuming a move under way)."""
        if shards < 1:
            raise InvalidParameter("a tenant needs at least one shard", shards=shards)
        placement = self._placement(tenant)
        layout = self._layout()
        if placement.phase == "settled":
            have = len(placement.shards)
            dedicated = all(s >= layout.shards for s in placement.shards)
            if dedicated and have == shards:
                self.progress(f"tenant {tenant} already has {shards} dedicated shard(s)")
                return placement
            if dedicated and shards % have:
                # Each new shard must have one source: its documents (crc32 % shards) are
                # then all on one old shard (crc32 % have), whose snapshot it starts from.
                raise InvalidParameter(
                    f"tenant {tenant} has {have} dedicated shards; it can be split into a "
                    f"multiple of {have} (not {shards}); merging shards is not supported",
                    tenant=tenant,
                    shards=shards,
                )
            placement = self._claim(tenant, placement, shards, layout)
        if placement.phase == "copying":
            self._fill(tenant, placement, layout)
            self._await_followed(placement.target, placement.shards, "copying")
            placement = self._flip(tenant, placement)
        if placement.phase == "draining":
            placement = self._drain(tenant, placement)
        return placement

    def _placement(self, tenant: str) -> Placement:
        placement = self.shard_map.placement(tenant)
        if placement is None:
            raise TenantNotFound(f"no tenant {tenant!r} in the shard map", tenant=tenant)
        return placement

    def _layout(self) -> Layout:
        layout = self.shard_map.layout()
        if layout is None:
            raise Unavailable("the shard map has no layout (run `shardrag cluster init`)")
        return layout

    def _claim(self, tenant: str, placement: Placement, count: int, layout: Layout) -> Placement:
        """Name new shards as the tenant's target (one mover wins; others resume its move)."""
        new = self.shard_map.add_shards(count)
        try:
            claimed = self.shard_map.set_placement(
                tenant, replace(placement, target=tuple(new)), placement.revision
            )
        except ShardMapConflict:
            current = self._placement(tenant)
            if current.phase == "settled":
                raise
            self.progress(f"tenant {tenant} is being moved by another mover: resuming it")
            return current
        self.progress(f"tenant {tenant}: copying from shards {list(placement.shards)} to {new}")
        return claimed

    def _fill(self, tenant: str, placement: Placement, layout: Layout) -> None:
        """Each target shard's move entry, then its replicas (nodes read the entry first)."""
        count = len(placement.target)
        for bucket, shard_id in enumerate(placement.target):
            if self.shard_map.move(shard_id) is None:
                self.shard_map.set_move(
                    Move(shard_id, tenant, source_of(placement.shards, bucket), bucket, count)
                )
            current = self.shard_map.replicas(shard_id)
            if not current.nodes:
                nodes = self._least_loaded(layout.replicas)
                self.shard_map.set_replicas(shard_id, nodes, current.revision)
                self.progress(f"shard {shard_id}: replicas on {', '.join(nodes)}")

    def _least_loaded(self, count: int) -> list[str]:
        """``count`` live nodes holding the fewest replicas (ties by id)."""
        live = [node.node_id for node in self.shard_map.nodes()]
        if len(live) < count:
            raise Unavailable(f"{count} replicas need {count} live nodes; {len(live)} are live")
        load = self._load(live)
        return sorted(live, key=lambda n: (load[n], n))[:count]

    def _load(self, nodes: list[str]) -> dict[str, int]:
        load = dict.fromkeys(nodes, 0)
        for shard_id in self.shard_map.shard_ids():
            for node in self.shard_map.replicas(shard_id).nodes:
                if node in load:
                    load[node] += 1
        return load

    def _await_followed(
        self, targets: tuple[int, ...], sources: tuple[int, ...], what: str
    ) -> None:
        """Until every replica of every target has followed each source's log to its head
        as read now (and the target has as many live replicas as assigned)."""
        heads = {s: self.log.last_sequence(shard_subject(s)) for s in sources}
        deadline = time.monotonic() + self.timeout
        while True:
            behind = self._behind(targets, heads)
            if not behind:
                return
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"{what}: replicas still behind after {self.timeout:g} s: {behind} "
                    "(run the command again to resume)"
                )
            time.sleep(_POLL)

    def _behind(self, targets: tuple[int, ...], heads: dict[int, int]) -> list[str]:
        live = {node.node_id: node for node in self.shard_map.nodes()}
        behind = []
        for shard_id in targets:
            move = self.shard_map.move(shard_id)
            if move is None or move.done:
                continue  # followed to the end already (a resumed move)
            wanted = {s: heads[s] for s in move.sources if s in heads}
            for node_id in self.shard_map.replicas(shard_id).nodes:
                node: NodeInfo | None = live.get(node_id)
                followed = node.sources.get(shard_id, {}) if node else {}
                if node is None or shard_id not in node.applied:
                    behind.append(f"{node_id}/{shard_id} not hosting yet")
                elif any(followed.get(s, -1) < head for s, head in wanted.items()):
                    behind.append(f"{node_id}/{shard_id} at {followed} of {wanted}")
        return behind

    def _flip(self, tenant: str, placement: Placement) -> Placement:
        flipped = Placement(placement.target, source=placement.shards, flipped_at=time.time())
        result = self.shard_map.set_placement(tenant, flipped, placement.revision)
        self.progress(f"tenant {tenant}: reads and writes now on shards {list(result.shards)}")
        return result

    def _drain(self, tenant: str, placement: Placement) -> Placement:
        """Wait out the old placement, then settle it and empty the old shards."""
        # Every version begun before the grace ends is waited for: its writer read the
        # placement after beginning it, and a read of the map's KV may be served by a replica
        # a moment behind (and created_at comes from another clock).
        cutoff = placement.flipped_at + self.grace_seconds
        deadline = time.monotonic() + self.timeout
        while True:
            pending = [p for p in self.registry.pending_versions(tenant) if p.created_at <= cutoff]
            waited = time.time() - placement.flipped_at
            if not pending and waited >= self.grace_seconds:
                break
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"draining tenant {tenant}: {len(pending)} version(s) begun during the "
                    f"grace still pending after {self.timeout:g} s (run the command again to "
                    "resume)"
                )
            time.sleep(_POLL)
        self._await_followed(placement.shards, placement.source, "draining")
        for shard_id in placement.shards:
            move = self.shard_map.move(shard_id)
            if move is not None and not move.done:
                self.shard_map.set_move(replace(move, done=True, done_at=time.time()))
        settled = self.shard_map.set_placement(
            tenant, Placement(placement.shards), placement.revision
        )
        self._await_snapshots(placement.shards)
        for shard_id in placement.source:
            op = ShardOp(OpKind.DROP_TENANT, VersionRef(tenant, "", 0, shard_id))
            self.log.append(shard_subject(shard_id), op.encode())
        for shard_id in placement.shards:
            self.shard_map.clear_move(shard_id)
        self._retire(tenant, placement.source)
        self.progress(
            f"tenant {tenant}: settled on shards {list(settled.shards)}; "
            f"removed from shards {list(placement.source)}"
        )
        return settled

    def _retire(self, tenant: str, shards: tuple[int, ...]) -> None:
        """Take the replicas away from dedicated shards the tenant left (a split of an already
        dedicated tenant): no other tenant lives there. Shared shards stay. Ids are never
        reused; a node keeps the emptied engine directory until an operator removes it."""
        layout = self._layout()
        others = {
            s for t, p in self.shard_map.placements().items() if t != tenant for s in p.shards
        }
        for shard_id in shards:
            if shard_id >= layout.shards and shard_id not in others:
                self._set_nodes(shard_id, lambda nodes: [])
                self.progress(f"shard {shard_id}: retired (no tenant left on it)")

    def _await_snapshots(self, shards: tuple[int, ...]) -> None:
        """Until each shard has a snapshot taken after its move was done."""
        deadline = time.monotonic() + self.timeout
        for shard_id in shards:
            move = self.shard_map.move(shard_id)
            since = move.done_at if move else 0.0
            while True:
                snapshot = self.shard_map.snapshot(shard_id)
                if snapshot is not None and snapshot.created_at >= since:
                    break
                if time.monotonic() > deadline:
                    raise Unavailable(f"no snapshot of shard {shard_id} after its move")
                time.sleep(_POLL)

    # -- replica moves ------------------------------------------------------------------------

    def move_replica(self, shard_id: int, from_node: str, to_node: str) -> Replicas:
        """Move ``shard_id``'s replica from one node to another without a gap."""
        if shard_id not in self.shard_map.shard_ids():
            raise InvalidParameter(f"the cluster has no shard {shard_id}", shard_id=shard_id)
        if self.shard_map.move(shard_id) is not None:
            raise InvalidParameter(
                f"shard {shard_id} is being filled by a tenant move; move it afterwards",
                shard_id=shard_id,
            )
        current = self.shard_map.replicas(shard_id)
        if from_node not in current.nodes:
            raise InvalidParameter(f"node {from_node} holds no replica of shard {shard_id}")
        if to_node not in {n.node_id for n in self.shard_map.nodes()}:
            raise Unavailable(f"node {to_node} is not live")
        if to_node not in current.nodes:
            current = self._set_nodes(shard_id, lambda nodes: [*nodes, to_node])
            self.progress(f"shard {shard_id}: {to_node} joins, catching up")
        head = self.log.last_sequence(shard_subject(shard_id))
        deadline = time.monotonic() + self.timeout
        while True:
            live = {node.node_id: node for node in self.shard_map.nodes()}
            node = live.get(to_node)
            if node is not None and node.applied.get(shard_id, -1) >= head:
                break
            if time.monotonic() > deadline:
                raise Unavailable(f"{to_node} did not catch up on shard {shard_id} in time")
            time.sleep(_POLL)
        moved = self._set_nodes(shard_id, lambda nodes: [n for n in nodes if n != from_node])
        self.progress(f"shard {shard_id}: {from_node} → {to_node} done")
        return moved

    def _set_nodes(self, shard_id: int, change: Callable[[list[str]], list[str]]) -> Replicas:
        while True:
            current = self.shard_map.replicas(shard_id)
            try:
                return self.shard_map.set_replicas(
                    shard_id, change(list(current.nodes)), current.revision
                )
            except ShardMapConflict:
                continue

    def plan_rebalance(self) -> list[ReplicaMove]:
        """Replica moves that leave no live node with more than one replica above another."""
        live = sorted(node.node_id for node in self.shard_map.nodes())
        if len(live) < 2:
            return []
        holders = {
            s: list(self.shard_map.replicas(s).nodes)
            for s in self.shard_map.shard_ids()
            if self.shard_map.move(s) is None
        }
        load = self._load(live)
        plan: list[ReplicaMove] = []
        while True:
            busiest = max(live, key=lambda n: (load[n], n))
            idlest = min(live, key=lambda n: (load[n], n))
            if load[busiest] - load[idlest] <= 1:
                return plan
            shard = next(
                (
                    s
                    for s, nodes in sorted(holders.items())
                    if busiest in nodes and idlest not in nodes
                ),
                None,
            )
            if shard is None:
                return plan
            plan.append(ReplicaMove(shard, busiest, idlest))
            holders[shard] = [idlest if n == busiest else n for n in holders[shard]]
            load[busiest] -= 1
            load[idlest] += 1

    def rebalance(self, dry_run: bool = False) -> list[ReplicaMove]:
        """Carry out ``plan_rebalance`` one move at a time (or only plan it)."""
        plan = self.plan_rebalance()
        if not dry_run:
            for move in plan:
                self.move_replica(move.shard_id, move.from_node, move.to_node)
        return plan


def source_of(shards: tuple[int, ...], bucket: int) -> tuple[int, ...]:
    """The one shard of ``shards`` holding every document of ``bucket`` of a split into a
    multiple of ``len(shards)``: crc32 % n == bucket implies crc32 % k == bucket % k."""
    return (shards[bucket % len(shards)],)


def wanted_shards(
    size: int, placement: Placement, layout: Layout, promote_at: int, split_at: int
) -> int | None:
    """How many dedicated shards a tenant of ``size`` chunks should have, if that differs from
    what it has (None: leave it). ``promote_at`` chunks promote a tenant of a shared shard to
    one of its own; past ``split_at`` chunks per shard it is split into more (0: never), a
    dedicated tenant into a multiple of its shards."""
    if placement.phase != "settled":
        return None
    have = len(placement.shards)
    if all(s >= layout.shards for s in placement.shards):
        # Dedicated: split further past ``split_at`` chunks per shard, into a multiple of
        # the shards it has (``Mover.promote``); never merged back.
        if split_at <= 0 or size <= split_at * have:
            return None
        return have * math.ceil(math.ceil(size / split_at) / have)
    if promote_at <= 0 or size < promote_at:
        return None
    return max(1, math.ceil(size / split_at)) if split_at > 0 else 1
