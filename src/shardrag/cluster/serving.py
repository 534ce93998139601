"""The replica side of a search: the one place a ``SearchCall`` becomes a ``SearchReply``.

An index node answers the calls NATS brings it here; the embedded process answers the calls
of its in-process transport here too (``cluster/local.py``). So both modes share what a
replica checks before it searches:

- it hosts the shard (else ``shard_unavailable``: the router asks another replica);
- a new replica has caught up to the log head of when it was placed (``ready_at``), else it
  would answer from a past state — even an empty one (``replica_behind``);
- it has applied the shard's log up to the read's ``min_applied`` and followed a move's source
  logs to ``min_source``, waiting up to the call's ``wait_seconds`` for that (the read-concern
  wait, one implementation for both modes), else ``replica_behind``.

Errors are replies, never exceptions: the router decides whether another replica is worth
asking.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from shardrag.cluster.protocol import SearchCall, SearchReply
from shardrag.engine import ShardEngine
from shardrag.errors import ShardragError
from shardrag.models import SearchMode
from shardrag.observability import tracing


class ServedReplica(Protocol):
    """One replica of a shard as the search server sees it."""

    @property
    def engine(self) -> ShardEngine:
        """The replica's engine."""
        ...

    @property
    def ready_at(self) -> int:
        """The offset below which it answers no search (0: at once)."""
        ...

    def applied(self) -> int:
        """The offset of the shard's log applied so far."""
        ...

    def followed(self, min_source: Mapping[int, int]) -> bool:
        """Whether it followed each source shard's log (of a move into it) that far."""
        ...


class SearchServer:
    """Answers search calls against the replicas a process hosts.

    ``replica_of`` finds the hosted replica of a shard (None: not hosted here); ``changed``
    is notified whenever a replica applies or follows something (waits re-check then, and
    every 50 ms besides).
    """

    def __init__(
        self,
        node_id: str,
        replica_of: Callable[[int], ServedReplica | None],
        changed: threading.Condition,
    ) -> None:
        self.node_id = node_id
        self.replica_of = replica_of
        self.changed = changed
        #: Searches answered per shard since the start (heartbeats carry them).
        self.searches: collections.Counter[int] = collections.Counter()

    def answer(self, call: SearchCall) -> SearchReply:
        """The reply to one search call."""
        replica = self.replica_of(call.shard_id)
        if replica is None:
            message = f"node {self.node_id} does not host shard {call.shard_id}"
            return SearchReply(self.node_id, 0, None, "shard_unavailable", message)
        if replica.applied() < replica.ready_at:
            message = f"new replica still catching up to offset {replica.ready_at}"
            return SearchReply(self.node_id, 0, None, "replica_behind", message)
        applied = self.caught_up(replica, call)
        if applied < 0:
            message = f"replica has not followed its sources to {call.min_source} yet"
            return SearchReply(self.node_id, 0, None, "replica_behind", message)
        if applied < call.min_applied:
            message = f"replica at offset {applied}, the read needs {call.min_applied}"
            return SearchReply(self.node_id, applied, None, "replica_behind", message)
        candidates = None
        try:
            with tracing.span("engine search", attributes={"shardrag.shard": call.shard_id}):
                hits = replica.engine.search(call.query)
            if call.query.unfused and call.query.mode is SearchMode.HYBRID:
                candidates = replica.engine.candidates(call.query)
        except ShardragError as exc:
            return SearchReply(self.node_id, applied, None, exc.code, exc.message)
        self.searches[call.shard_id] += 1
        if candidates is None:
            return SearchReply(self.node_id, applied, hits)
        return SearchReply(
            self.node_id,
            applied,
            hits,
            dense=candidates.dense,
            keyword=candidates.keyword,
            stats=candidates.stats,
        )

    def caught_up(self, replica: ServedReplica, call: SearchCall) -> int:
        """The replica's applied offset, after waiting (up to ``call.wait_seconds``) for
        ``min_applied`` and the sources' ``min_source``; -1 if the sources are still behind."""
        deadline = time.monotonic() + call.wait_seconds
        with self.changed:
            while True:
                applied = replica.applied()
                followed = replica.followed(call.min_source)
                if applied >= call.min_applied and followed:
                    return applied
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return applied if followed else -1
                self.changed.wait(min(remaining, 0.05))
