"""The router (in the api): one query → the tenant's shards → one replica each → merged top-k.

Per shard the router first asks the shard's queue group (NATS picks a live replica; a dead
node's subscription went with its connection). A replica that does not answer within
``replica_timeout`` or answers with an error that another replica may not have (behind the
read's offset, not hosting the shard, a fault) is left for the next one: the router asks the
shard's other live replicas by name, one after the other, until the query's deadline. Only
then does the shard fail the query (``ShardUnavailable``, 503). A read concern travels as
``min_applied``: only a replica that has applied the shard's log that far answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import nats.errors

from shardrag.cluster.protocol import SearchCall, SearchReply, search_subject
from shardrag.cluster.shardmap import ShardMap
from shardrag.errors import (
    ReadConcernTimeout,
    ShardragError,
    ShardUnavailable,
    Unavailable,
    error_from,
)
from shardrag.models import Fusion, Hit, Metadata, SearchMode
from shardrag.natsconn import NatsConnection

logger = logging.getLogger(__name__)
# Errors after which another replica is worth asking; any other error is the query's own.
_TRY_ANOTHER = {"replica_behind", "shard_unavailable", "internal_error", "unavailable"}
# How long the router trusts what it read of the map's replicas and live nodes.
_MAP_TTL = 1.0


@dataclass
class RoutedResult:
    """Merged hits and, per shard, the applied offset of the replica that answered."""

    hits: list[Hit]
    applied: dict[int, int] = field(default_factory=dict)
    failovers: int = 0


class Router:
    """Fans a query out to one replica of each of its shards over NATS."""

    def __init__(
        self,
        conn: NatsConnection,
        shard_map: ShardMap,
        prefix: str,
        search_timeout: float = 10.0,
        replica_timeout: float = 2.0,
    ) -> None:
        self.conn = conn
        self.shard_map = shard_map
        self.prefix = prefix
        self.search_timeout = search_timeout
        self.replica_timeout = replica_timeout
        self._candidates: dict[int, tuple[float, list[str]]] = {}
        self.failovers = 0

    def search(self, calls: list[SearchCall], k: int) -> RoutedResult:
        """Ask every call's shard (in parallel) and merge the answers into the top ``k``."""
        deadline = time.monotonic() + self.search_timeout

        async def fan_out() -> list[tuple[SearchReply, int]]:
            return list(await asyncio.gather(*(self._ask(call, deadline) for call in calls)))

        replies = self.conn.run(fan_out(), timeout=self.search_timeout)
        hits = [hit for reply, _ in replies for hit in reply.hits or []]
        hits.sort(key=lambda h: h.score, reverse=True)
        failovers = sum(n for _, n in replies)
        self.failovers += failovers
        return RoutedResult(
            hits[:k],
            {call.shard_id: reply.applied for call, (reply, _) in zip(calls, replies, strict=True)},
            failovers,
        )

    async def _ask(self, call: SearchCall, deadline: float) -> tuple[SearchReply, int]:
        """One shard's answer, failing over between its replicas until ``deadline``."""
        tried: list[str] = []
        last_error = "no replica answered"
        subject = search_subject(self.prefix, call.shard_id)
        attempt = 0
        behind = False  # a replica answered that it had not applied the read's offset yet
        while (remaining := deadline - time.monotonic()) > 0:
            attempt += 1
            wait = min(call.wait_seconds, max(0.0, remaining - self.replica_timeout))
            body = replace(call, wait_seconds=wait).encode()
            try:
                msg = await self.conn.client.request(
                    subject, body, timeout=min(remaining, wait + self.replica_timeout)
                )
                reply = SearchReply.decode(msg.data)
            except (nats.errors.Error, TimeoutError) as exc:
                # No answer in time, no replica subscribed, or the connection is moving to
                # another NATS server: all worth another try.
                last_error = f"{subject}: {type(exc).__name__}"
                reply = None
            if reply is not None:
                if reply.hits is not None:
                    return reply, attempt - 1
                if reply.error_code not in _TRY_ANOTHER:
                    code = reply.error_code or "internal_error"
                    raise error_from(code, reply.error_message or code)
                last_error = f"{reply.node_id}: {reply.error_code}: {reply.error_message}"
                behind = behind or reply.error_code == "replica_behind"
                tried.append(reply.node_id)
            named = await self._next_subject(call.shard_id, tried)
            if named is None:
                # Every replica was asked: wait a moment (a restart, a catch-up), then again.
                tried.clear()
                await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            subject = named or search_subject(self.prefix, call.shard_id)
        if behind:
            raise ReadConcernTimeout(
                f"no replica of shard {call.shard_id} applied its log to offset "
                f"{call.min_applied} within {self.search_timeout:g} s ({last_error})",
                shard_id=call.shard_id,
            )
        raise ShardUnavailable(
            f"no replica of shard {call.shard_id} answered within {self.search_timeout:g} s "
            f"({last_error})",
            shard_id=call.shard_id,
        )

    async def _next_subject(self, shard_id: int, tried: list[str]) -> str | None:
        """The subject of a live replica of the shard not asked yet, by name."""
        loop = asyncio.get_running_loop()
        candidates = await loop.run_in_executor(None, self._live_replicas, shard_id)
        for node_id in candidates:
            if node_id not in tried:
                tried.append(node_id)
                return search_subject(self.prefix, shard_id, node_id)
        return None

    def _live_replicas(self, shard_id: int) -> list[str]:
        cached = self._candidates.get(shard_id)
        if cached is not None and time.monotonic() - cached[0] < _MAP_TTL:
            return cached[1]
        try:
            alive = {node.node_id for node in self.shard_map.nodes()}
            found = [n for n in self.shard_map.replicas(shard_id).nodes if n in alive]
        except ShardragError:
            # The map is briefly unavailable: keep to what was read before (or the queue group).
            return cached[1] if cached else []
        self._candidates[shard_id] = (time.monotonic(), found)
        return found


class RoutedSearch:
    """A tenant's search through the router, as the ``Searcher``'s target (one per query).

    ``heads`` gives a shard's log head. It is read before the search so that a result is
    cacheable only if every replica that answered had applied its shard up to there: the
    tenant's generation was read before the heads, so such a result shows every commit that
    generation counts, and a result of a lagging replica is never cached under it.
    """

    def __init__(
        self,
        router: Router,
        shards: list[int],
        positions: Mapping[int, int],
        wait_seconds: float,
        heads: Callable[[int], int] | None = None,
    ) -> None:
        self.router = router
        self.shards = shards
        self.positions = positions
        self.wait_seconds = wait_seconds
        self.heads = heads
        self._complete = False

    def search(
        self,
        tenant: str,
        mode: SearchMode,
        k: int,
        dense: list[float] | None = None,
        text: str = "",
        filters: Metadata | None = None,
        fusion: Fusion = Fusion.DBSF,
    ) -> list[Hit]:
        """The tenant's top-k over all its shards."""
        heads = self._heads()
        calls = [
            SearchCall(
                tenant,
                shard_id,
                mode,
                k,
                dense,
                text,
                dict(filters or {}),
                fusion,
                self.positions.get(shard_id, 0),
                self.wait_seconds if self.positions.get(shard_id, 0) else 0.0,
            )
            for shard_id in self.shards
        ]
        result = self.router.search(calls, k)
        self._complete = bool(heads) and all(
            result.applied.get(s, 0) >= head for s, head in heads.items()
        )
        return result.hits

    def _heads(self) -> dict[int, int]:
        """Each shard's log head, or nothing (then the result is not cached) if the log is
        slow to tell: caching is worth no wait."""
        if self.heads is None:
            return {}
        try:
            return {s: self.heads(s) for s in self.shards}
        except Unavailable:
            logger.warning("log heads unavailable; this result is not cached")
            return {}

    def cacheable(self) -> bool:
        """Whether the last result may be cached (see the class)."""
        return self._complete
