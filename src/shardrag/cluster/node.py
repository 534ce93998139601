"""An index node (``shardrag node --id N``): the stateful service that holds shard replicas.

For every shard the shard map assigns to it, a node

- applies the shard's log in order (the durable pipeline's ``IndexApplier``, reading only
  ``shard.<id>``, from the offset it saved: a restarted node catches up from where it was);
- answers searches on ``<prefix>.search.<id>`` in the shard's queue group, and on
  ``<prefix>.search.<id>.<node>`` for a router that asks it by name;
- snapshots the replica to the blob store now and then, so that a *new* replica starts from
  the newest snapshot and applies the log only from the snapshot's position.

It beats its heart into the shard map (pid, address, applied offset and log head per shard)
and re-reads its assignment on every beat, so a replica added with ``cluster add-replica``
starts within one beat. It needs no embedding model: the router sends the query vector.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shardrag.backends import Backends
from shardrag.blobs import BlobStore
from shardrag.cluster.faults import fault_subject, parse_delay
from shardrag.cluster.follow import SourceFollower
from shardrag.cluster.protocol import (
    SearchCall,
    SearchReply,
    UnknownQueryFields,
    queue_group,
    search_subject,
)
from shardrag.cluster.serving import SearchServer
from shardrag.cluster.shardmap import Layout, Move, NodeInfo, ShardMap
from shardrag.cluster.snapshot import restore_snapshot, take_snapshot
from shardrag.config import Settings
from shardrag.datadir import DataDirLock
from shardrag.engine import EngineSettings, ShardEngine, ShardSet
from shardrag.errors import InvalidParameter, ShardragError, Unavailable
from shardrag.log import Log
from shardrag.natsconn import NatsConnection
from shardrag.observability import tracing
from shardrag.pipeline import Retry
from shardrag.pipeline.applier import IndexApplier
from shardrag.pipeline.events import shard_subject
from shardrag.pipeline.workers import run_until
from shardrag.registry import Registry

logger = logging.getLogger(__name__)
# Searches answered at once per node (qdrant-edge runs one query at a time per process).
_SEARCH_THREADS = 4
# The shortest time between two beats: one after applied progress, besides the regular ones.
_QUICK_BEAT = 0.2


@dataclass
class HostedReplica:
    """One shard replica on this node: its engine, applier, thread and subscriptions."""

    shard_id: int
    engine: ShardEngine
    applier: IndexApplier
    stopped: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    subscriptions: list[Subscription] = field(default_factory=list)
    snapshot_position: int = 0
    snapshot_at: float = field(default_factory=time.monotonic)
    #: While a move fills this shard: a follower per source shard, and their threads.
    followers: dict[int, SourceFollower] = field(default_factory=dict)
    follower_threads: list[threading.Thread] = field(default_factory=list)
    following: threading.Event = field(default_factory=threading.Event)
    #: Snapshot at the next step whatever the interval (a move just completed).
    snapshot_due: bool = False
    #: A new replica (from a snapshot, a move's source or the log's start) answers no search
    #: until it has applied its log to this offset, the head when it was placed here: before
    #: that it would answer from a past state, even an empty one (a document missing). A
    #: replica restarted on its own data answers at once (eventual reads may lag).
    ready_at: int = 0

    def applied(self) -> int:
        """The offset of the shard's log applied so far."""
        return self.applier.applied(self.shard_id)

    def followed(self, min_source: Mapping[int, int]) -> bool:
        """Whether the replica has followed each source log far enough (a replica without a
        follower of a source finished following it, or started after the move)."""
        followers = dict(self.followers)  # it is emptied when following ends
        return all(
            followers[source].applied(source) >= offset
            for source, offset in min_source.items()
            if source in followers
        )


class IndexNode:
    """The shard replicas a node hosts, kept in step with the shard map."""

    def __init__(self, settings: Settings) -> None:
        if not settings.cluster or not settings.nats_url:
            raise InvalidParameter("an index node needs the distributed mode (SHARDRAG_CLUSTER)")
        if not settings.node_id:
            raise InvalidParameter("an index node needs an id (shardrag node --id N)")
        self.settings = settings
        self.node_id = settings.node_id
        self.prefix = settings.log_prefix
        self.data_dir = settings.data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = DataDirLock(self.data_dir)
        self._opened: list[Any] = []
        try:
            self.backends = self._keep(Backends.from_settings(settings, f"node-{self.node_id}"))
            assert self.backends.nats is not None  # the distributed mode has NATS
            self.conn: NatsConnection = self.backends.nats
            self.shard_map: ShardMap = self.backends.shard_map
            self.registry: Registry = self.backends.registry
            self.blobs: BlobStore = self.backends.blobs
            self.log: Log = self.backends.log
            self.layout = self._wait_for_layout()
            self.shards = self._keep(
                ShardSet(
                    self.data_dir / "shards",
                    EngineSettings(
                        dimension=self.layout.dimension, quantization=settings.quantization
                    ),
                    settings.optimize_threshold,
                    settings.search_ef,
                    sealer=self.backends.sealer,
                )
            )
        except BaseException:
            self._close_opened()
            self._lock.release()
            raise
        self.retry = Retry.from_settings(settings)
        self.changed = threading.Condition()
        self.hosted: dict[int, HostedReplica] = {}
        self.server = SearchServer(self.node_id, self.hosted.get, self.changed)
        self._heads: dict[int, int] = {}
        self._last_beat = 0.0
        self._hosting = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(_SEARCH_THREADS, "node-search")
        self._stopped = threading.Event()
        self._beat_thread: threading.Thread | None = None
        self.started_at = time.time()
        #: Seconds every search answer waits first (fault injection; docs/cluster.md).
        self.fault_delay = 0.0

    def _keep(self, part: Any) -> Any:
        self._opened.append(part)
        return part

    def _close_opened(self) -> None:
        for part in reversed(self._opened):
            try:
                part.close()
            except Exception:
                logger.exception("closing %s failed", type(part).__name__)

    def _wait_for_layout(self, timeout: float = 60.0) -> Layout:
        deadline = time.monotonic() + timeout
        while (layout := self.shard_map.layout()) is None:
            if time.monotonic() > deadline:
                raise Unavailable("the shard map has no layout yet (run `shardrag cluster init`)")
            time.sleep(0.2)
        return layout

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Host the assigned replicas, then beat and follow the map until ``stop``."""
        if self.settings.fault_injection:
            self.conn.run(self._subscribe_faults())
        self._beat_once()
        self._beat_thread = threading.Thread(target=self._beat_loop, name="heartbeat", daemon=True)
        self._beat_thread.start()
        logger.info("node %s hosts shards %s", self.node_id, sorted(self.hosted))

    def stop(self) -> None:
        """Leave the map, stop answering and applying, close everything. Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        try:
            self.shard_map.leave(self.node_id)
        except ShardragError:
            logger.warning("could not remove node %s from the map; its heartbeat expires")
        for shard_id in list(self.hosted):
            self._unhost(shard_id)
        if self._beat_thread is not None:
            self._beat_thread.join(timeout=30)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._close_opened()
        self._lock.release()

    # -- following the map --------------------------------------------------------------------

    def assigned(self) -> set[int]:
        """The shards the map gives this node."""
        return {
            shard_id
            for shard_id in self.shard_map.shard_ids()
            if self.node_id in self.shard_map.replicas(shard_id).nodes
        }

    def sync(self) -> None:
        """Start hosting newly assigned shards; stop hosting those taken away; stop following
        the sources of a move once it is done."""
        wanted = self.assigned()
        with self._hosting:
            for shard_id in sorted(wanted - set(self.hosted)):
                self._host(shard_id)
            for shard_id in sorted(set(self.hosted) - wanted):
                self._unhost(shard_id)
            for replica in list(self.hosted.values()):
                if replica.followers:
                    move = self.shard_map.move(replica.shard_id)
                    if move is None or move.done:
                        self._stop_following(replica)
                        replica.snapshot_due = True

    def _host(self, shard_id: int) -> None:
        state_path = self.data_dir / "shards" / f"shard-{shard_id:04d}.applied.json"
        engine_dir = self.shards.root / f"shard-{shard_id:04d}"
        move = self.shard_map.move(shard_id)
        fresh = not engine_dir.exists()
        # Read before anything is created: if the log does not answer, the next sync retries
        # this replica as fresh again.
        ready_at = self.log.last_sequence(shard_subject(shard_id)) if fresh else 0
        if fresh:
            if move is not None:
                self._start_from_source(move, engine_dir)
            else:
                self._start_from_snapshot(shard_id, engine_dir, state_path)
        applier = IndexApplier(
            self.log,
            self.shards.shard,
            self.registry,
            state_path,
            self.changed,
            self.retry,
            name=f"index-{self.node_id}",
            subjects=shard_subject(shard_id),
        )
        replica = HostedReplica(shard_id, self.shards.shard(shard_id), applier)
        replica.snapshot_position = applier.applied(shard_id)
        replica.ready_at = ready_at
        replica.thread = threading.Thread(
            target=run_until,
            args=(replica.stopped, lambda timeout: self._apply_step(replica, timeout), "index"),
            name=f"apply-{shard_id}",
            daemon=True,
        )
        # Subscribed before the applier starts: if NATS fails here nothing runs yet, and the
        # next beat's sync tries again (never two appliers on one replica).
        replica.subscriptions = self.conn.run(self._subscribe(shard_id))
        if move is not None and not move.done:
            self._follow(replica, move)
        replica.thread.start()
        self.hosted[shard_id] = replica
        logger.info("node %s hosts shard %d from %d", self.node_id, shard_id, applier.position)

    def _start_from_snapshot(self, shard_id: int, engine_dir: Path, state_path: Path) -> None:
        snapshot = self.shard_map.snapshot(shard_id)
        if snapshot is None:
            return  # no snapshot yet: the log from its start
        restore_snapshot(snapshot, self.blobs, engine_dir)
        state = {"position": snapshot.position, "shards": {str(shard_id): snapshot.position}}
        state_path.parent.mkdir(parents=True, exist_ok=True)
        state_path.write_text(json.dumps(state))
        logger.info(
            "shard %d restored from snapshot %s at offset %d",
            shard_id,
            snapshot.digest[:12],
            snapshot.position,
        )

    def _start_from_source(self, move: Move, engine_dir: Path) -> None:
        """A new replica of a shard a move fills: its source's newest snapshot, less every
        document that is not the move's; the source's log is followed from there. A move has
        one source (``placement.source_of``): a snapshot of a second one could not be
        unpacked into the same directory, and following its log alone would miss the
        documents copied into it by its own move."""
        if len(move.sources) != 1:
            raise InvalidParameter(
                f"shard {move.shard_id}'s move has sources {list(move.sources)}; one is needed"
            )
        source = move.sources[0]
        snapshot = self.shard_map.snapshot(source)
        if snapshot is None:
            return  # the sources' logs from their start
        restore_snapshot(snapshot, self.blobs, engine_dir)
        dropped = self.shards.shard(move.shard_id).retain(
            move.tenant, lambda doc_id: move.keeps(move.tenant, doc_id)
        )
        state = {"position": snapshot.position, "shards": {str(source): snapshot.position}}
        path = self._follower_state(move.shard_id, source)
        path.write_text(json.dumps(state))
        logger.info(
            "shard %d started from snapshot %s of shard %d at offset %d (%d points of others "
            "dropped)",
            move.shard_id,
            snapshot.digest[:12],
            source,
            snapshot.position,
            dropped,
        )

    def _follower_state(self, shard_id: int, source: int) -> Path:
        return self.data_dir / "shards" / f"shard-{shard_id:04d}.from-{source:04d}.applied.json"

    def _follow(self, replica: HostedReplica, move: Move) -> None:
        """Follow every source of the move filling ``replica``'s shard, each on a thread."""
        replica.following.set()
        for source in move.sources:
            follower = SourceFollower(
                self.log,
                replica.engine,
                self.registry,
                move,
                source,
                self._follower_state(move.shard_id, source),
                self.changed,
                self.retry,
                name=f"follow-{self.node_id}",
            )
            replica.followers[source] = follower
            thread = threading.Thread(
                target=self._follow_loop,
                args=(replica, follower),
                name=f"follow-{move.shard_id}-{source}",
                daemon=True,
            )
            replica.follower_threads.append(thread)
            thread.start()
        logger.info(
            "shard %d follows tenant %s of shards %s", move.shard_id, move.tenant, move.sources
        )

    def _follow_loop(self, replica: HostedReplica, follower: SourceFollower) -> None:
        while replica.following.is_set() and not replica.stopped.is_set():
            try:
                if follower.step(0.5) and time.monotonic() - self._last_beat >= _QUICK_BEAT:
                    with contextlib.suppress(ShardragError):
                        self.beat()
            except Exception:
                logger.exception("following into shard %d failed a step", replica.shard_id)
                replica.stopped.wait(1.0)

    def _stop_following(self, replica: HostedReplica) -> None:
        replica.following.clear()
        for follower in replica.followers.values():
            follower.stop()
        for thread in replica.follower_threads:
            thread.join(timeout=60)
        replica.follower_threads.clear()
        if replica.followers:
            logger.info(
                "shard %d stopped following %s", replica.shard_id, sorted(replica.followers)
            )
        # Done: it followed every source to the end of the tenant's ops there; a read that
        # still names a source (an api process's placement of a moment ago) needs nothing more
        # of it (other tenants' writes move the source's head on, not this shard).
        replica.followers.clear()

    def _unhost(self, shard_id: int) -> None:
        replica = self.hosted.pop(shard_id)
        self._stop_following(replica)
        for sub in replica.subscriptions:
            # A failure means the connection is gone, and the subscription with it.
            with contextlib.suppress(ShardragError):
                self.conn.run(sub.unsubscribe())
        replica.applier.stop()
        replica.stopped.set()
        if replica.thread is not None:
            replica.thread.join(timeout=60)

    def _apply_step(self, replica: HostedReplica, timeout: float) -> int:
        done = replica.applier.step(timeout)
        if done and time.monotonic() - self._last_beat >= _QUICK_BEAT:
            # Progress is news: writers waiting for every replica (wait=true) hear it now,
            # not at the next regular beat.
            with contextlib.suppress(ShardragError):
                self.beat()
        interval = self.settings.snapshot_interval_seconds
        position = replica.applier.applied(replica.shard_id)
        if replica.snapshot_due:
            # A move completed: the snapshot a later replica starts from must hold what was
            # copied in, whatever this shard's own log position says.
            replica.snapshot_due = False
            self.snapshot(replica)
        elif (
            interval > 0
            # Half-copied (a follower may still be applying, even while it stops): no
            # replica may start from it.
            and not replica.following.is_set()
            and not replica.followers
            and position > replica.snapshot_position
            and time.monotonic() - replica.snapshot_at >= interval
        ):
            self.snapshot(replica)
        return done

    def snapshot(self, replica: HostedReplica) -> None:
        """Snapshot a replica to the blob store (from its applier's thread, between ops)."""
        position = replica.applier.applied(replica.shard_id)
        ref = take_snapshot(replica.engine, replica.shard_id, position, self.node_id, self.blobs)
        self.shard_map.record_snapshot(ref)
        replica.snapshot_position = position
        replica.snapshot_at = time.monotonic()
        logger.info("shard %d snapshot at offset %d (%d bytes)", ref.shard_id, position, ref.size)

    # -- heartbeats ---------------------------------------------------------------------------

    def _beat_loop(self) -> None:
        every = self.settings.node_ttl_seconds / 3
        while not self._stopped.wait(every):
            self._beat_once()

    def _beat_once(self) -> None:
        # Each step on its own: a slow log (heads kept from the last beat) or map read must
        # not make this node look dead, and a failed step is tried again at the next beat.
        # Heads are read just before the beat, so its lag compares offsets of one moment.
        for step in (self._refresh_heads, self.beat, self.sync):
            try:
                step()
            except Exception:
                logger.exception("%s of node %s failed", step.__name__, self.node_id)

    def _refresh_heads(self) -> None:
        """Read each hosted shard's log head (briefly: an old head only delays the lag)."""
        for shard_id in list(self.hosted):
            self._heads[shard_id] = self.log.last_sequence(shard_subject(shard_id), timeout=1.0)

    def beat(self) -> NodeInfo:
        """Tell the map this node is alive, with its applied offsets and the log heads."""
        hosted = dict(self.hosted)
        applied = {s: r.applier.applied(s) for s, r in hosted.items()}
        sources = {
            s: {source: f.applied(source) for source, f in dict(r.followers).items()}
            for s, r in hosted.items()
            if r.followers
        }
        info = NodeInfo(
            node_id=self.node_id,
            pid=os.getpid(),
            address=socket.gethostname(),
            applied=applied,
            # A head older than the applied offset is simply not read yet.
            heads={s: max(self._heads.get(s, 0), applied[s]) for s in hosted},
            started_at=self.started_at,
            heartbeat_at=time.time(),
            sources=sources,
            searches=dict(self.server.searches),
        )
        self.shard_map.heartbeat(info)
        self._last_beat = time.monotonic()
        return info

    # -- answering searches -------------------------------------------------------------------

    async def _subscribe(self, shard_id: int) -> list[Subscription]:
        client = self.conn.client

        async def on_request(msg: Msg) -> None:
            # A task per request: a subscription's callbacks run one at a time otherwise.
            asyncio.get_running_loop().create_task(self._respond(msg))

        return [
            await client.subscribe(
                search_subject(self.prefix, shard_id), queue=queue_group(shard_id), cb=on_request
            ),
            await client.subscribe(
                search_subject(self.prefix, shard_id, self.node_id), cb=on_request
            ),
        ]

    async def _subscribe_faults(self) -> Subscription:
        async def on_fault(msg: Msg) -> None:
            try:
                self.fault_delay = parse_delay(msg.data)
            except (ValueError, KeyError, TypeError) as exc:
                await msg.respond(json.dumps({"ok": False, "error": str(exc)}).encode())
                return
            logger.warning("node %s: search answers delayed %g s", self.node_id, self.fault_delay)
            reply = {"ok": True, "node_id": self.node_id, "delay_seconds": self.fault_delay}
            await msg.respond(json.dumps(reply).encode())

        subject = fault_subject(self.prefix, self.node_id)
        subscription: Subscription = await self.conn.client.subscribe(subject, cb=on_fault)
        return subscription

    async def _respond(self, msg: Msg) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self.fault_delay > 0:
                await asyncio.sleep(self.fault_delay)
            body = await loop.run_in_executor(self._pool, self.answer, msg.data, msg.headers)
            await msg.respond(body)
        except Exception:
            logger.exception("answering a search on %s failed", msg.subject)

    def answer(self, data: bytes, headers: dict[str, str] | None = None) -> bytes:
        """The reply to one search request (errors are replies too, never exceptions), in
        the trace of the router's call when its headers carry one."""
        with tracing.span(
            "shard search", "server", parent=headers, attributes={"shardrag.node": self.node_id}
        ):
            try:
                call = SearchCall.decode(data)
            except UnknownQueryFields as exc:
                # Another replica may be upgraded already: the router asks it instead.
                return SearchReply(self.node_id, 0, None, "unsupported_query", str(exc)).encode()
            except (ValueError, KeyError, TypeError) as exc:
                return SearchReply(self.node_id, 0, None, "invalid_request", str(exc)).encode()
            tracing.annotate(attributes={"shardrag.shard": call.shard_id})
            return self.server.answer(call).encode()


def run_node(settings: Settings, stopped: threading.Event) -> None:
    """Run an index node until ``stopped`` is set (SIGTERM in the CLI)."""
    node = IndexNode(settings)
    try:
        node.start()
        stopped.wait()
    finally:
        node.stop()
