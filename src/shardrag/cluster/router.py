"""The router: one query → the tenant's shards → one replica each → merged top-k.

The one read path of both modes: in a cluster its ``SearchTransport`` is NATS to the index
nodes, in the embedded mode the process's own search server (``transport.py``).

Per shard the router asks one live replica from the shard map, by name: a half-open node's
trial if one is due, else the replica with the fewest requests outstanding from this process
among those whose circuit breaker (``breaker.py``) is not open. A replica that does not answer
within ``replica_timeout`` or answers with an error that another replica may not have (behind
the read's offset, not hosting the shard, a fault) is left for the next one, round after
round, until the query's deadline; only then does the shard fail the query
(``ShardUnavailable``, 503). A request still unanswered after the shard's recent p95 latency
(``hedging.py``) gets a hedged twin at another replica with a closed breaker: the first good
answer wins, the other runs to its own end in the background, so that its node's breaker
hears the real outcome. The shard's queue group (NATS picks a replica) is asked only when the
map names no live replica. A read concern travels as ``min_applied``: only a replica that
has applied the shard's log that far answers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Protocol

from shardrag.cluster.breaker import Breakers, BreakerState
from shardrag.cluster.hedging import LatencyWindow
from shardrag.cluster.protocol import SearchCall, SearchReply, search_subject
from shardrag.cluster.shardmap import NodeInfo, Replicas
from shardrag.cluster.transport import ReplicaUnreachable, SearchTransport
from shardrag.config import Settings
from shardrag.errors import (
    ReadConcernTimeout,
    ShardragError,
    ShardUnavailable,
    error_from,
)
from shardrag.models import Hit

logger = logging.getLogger(__name__)
# Errors after which another replica is worth asking; any other error is the query's own.
_TRY_ANOTHER = {
    "replica_behind",
    "shard_unavailable",
    "internal_error",
    "unavailable",
    # A node older than this api (a rolling upgrade): another replica may be newer.
    "unsupported_query",
}
# Errors that are the node's fault: they count against its breaker.
_NODE_FAULTS = {"internal_error", "unavailable"}
# How long the router trusts what it read of the map's replicas and live nodes.
_MAP_TTL = 1.0
# In a shard's ``asked`` set: its queue group was asked this round.
_QUEUE_GROUP = ""


class ReplicaDirectory(Protocol):
    """Where the router learns which replicas a shard has and which nodes are alive: the
    shard map in a cluster, the process itself in the embedded mode."""

    def nodes(self) -> list[NodeInfo]:
        """The live nodes."""
        ...

    def replicas(self, shard_id: int) -> Replicas:
        """The nodes that hold a replica of ``shard_id``."""
        ...


class NodeDirectory(ReplicaDirectory, Protocol):
    """A replica directory that can also be read fresh (cluster status, stats)."""

    def nodes(self, fresh: bool = False) -> list[NodeInfo]:
        """The live nodes (``fresh``: as they are now, not as last read)."""
        ...


class _RoundOver:
    """Every replica of the shard usable now was asked this round."""


_ROUND_OVER = _RoundOver()


@dataclass
class RoutedResult:
    """Merged hits and, per shard, the applied offset of the replica that answered."""

    hits: list[Hit]
    applied: dict[int, int] = field(default_factory=dict)
    failovers: int = 0
    hedges: int = 0


@dataclass(frozen=True)
class _Outcome:
    """What one request to a replica brought: its reply, or why there was none."""

    reply: SearchReply | None
    error: str = ""


@dataclass
class _ShardAnswer:
    reply: SearchReply
    failovers: int
    hedges: int


class Router:
    """Fans a query out to one replica of each of its shards over its transport."""

    def __init__(
        self,
        transport: SearchTransport,
        shard_map: ReplicaDirectory,
        prefix: str,
        search_timeout: float = 10.0,
        replica_timeout: float = 2.0,
        breaker_failures: int = 3,
        breaker_cooldown: float = 2.0,
        hedge_floor: float = 0.02,
    ) -> None:
        self.transport = transport
        self.shard_map = shard_map
        self.prefix = prefix
        self.search_timeout = search_timeout
        self.replica_timeout = replica_timeout
        self.hedge_floor = hedge_floor
        self.breakers = Breakers(breaker_failures, breaker_cooldown)
        self._candidates: dict[int, tuple[float, list[str]]] = {}
        self._windows: dict[int, LatencyWindow] = {}
        # Requests sent and not yet ended, per node (an in-process transport runs searches
        # on their callers' threads: counted under a lock).
        self._outstanding: dict[str, int] = {}
        self._counting = threading.Lock()
        # Shards whose replicas are being read again in the background, and those reads.
        self._refreshing: set[int] = set()
        self._refreshes: set[threading.Thread] = set()
        self._closed = False
        # Requests whose query no longer waits for them (hedge losers): kept until they end.
        self._background: set[asyncio.Task[_Outcome]] = set()
        self._random = random.Random()
        self.failovers = 0
        self.hedges = 0

    @classmethod
    def from_settings(
        cls, transport: SearchTransport, shard_map: ReplicaDirectory, settings: Settings
    ) -> Router:
        """A router with the deadlines, breaker and hedging of ``settings``."""
        return cls(
            transport,
            shard_map,
            settings.log_prefix,
            settings.search_timeout_seconds,
            settings.replica_timeout_seconds,
            settings.breaker_failures,
            settings.breaker_cooldown_seconds,
            settings.hedge_floor_seconds,
        )

    def breaker_states(self) -> dict[str, BreakerState]:
        """The breaker of each node this router has asked (this api process's view)."""
        return self.breakers.states()

    def search(self, calls: list[SearchCall], k: int) -> RoutedResult:
        """Ask every call's shard (in parallel) and merge the answers into the top ``k``."""
        replies, result = self.gather(calls)
        hits = [hit for reply in replies for hit in reply.hits or []]
        hits.sort(key=lambda h: h.score, reverse=True)
        result.hits = hits[:k]
        return result

    def gather(self, calls: list[SearchCall]) -> tuple[list[SearchReply], RoutedResult]:
        """Every call's reply (in the calls' order, asked in parallel), and a result with how
        far each answering replica had applied its shard, its failovers and hedges (no hits:
        the caller merges them)."""
        deadline = time.monotonic() + self.search_timeout

        async def fan_out() -> list[_ShardAnswer]:
            return list(await asyncio.gather(*(self._ask(call, deadline) for call in calls)))

        answers = self.transport.run(fan_out(), timeout=self.search_timeout)
        failovers = sum(a.failovers for a in answers)
        self.failovers += failovers
        return [a.reply for a in answers], RoutedResult(
            [],
            {call.shard_id: a.reply.applied for call, a in zip(calls, answers, strict=True)},
            failovers,
            sum(a.hedges for a in answers),
        )

    async def _ask(self, call: SearchCall, deadline: float) -> _ShardAnswer:
        """One shard's answer: failing over between its replicas, hedging once, until
        ``deadline``."""
        shard_id = call.shard_id
        racing: dict[asyncio.Task[_Outcome], float] = {}  # request -> when it was sent
        asked: set[str] = set()  # this round's replicas
        failovers = hedges = 0
        hedged = failed = False
        last_error = "no replica answered"
        behind = False  # a replica answered that it had not applied the read's offset yet
        while (remaining := deadline - time.monotonic()) > 0:
            if not racing:
                node = await self._choose(shard_id, asked)
                if isinstance(node, _RoundOver):
                    # Every replica was asked: wait a moment (a restart, a catch-up), then again.
                    asked.clear()
                    await asyncio.sleep(min(0.1, remaining))
                    continue
                failovers += int(failed)
                racing[self._send(call, node, deadline)] = time.monotonic()
            wait = remaining
            delay = None if hedged else self._window(shard_id).hedge_delay()
            if delay is not None:
                wait = min(wait, max(0.0, min(racing.values()) + delay - time.monotonic()))
            done, _ = await asyncio.wait(
                set(racing), timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                if delay is not None:
                    hedged = True  # one hedge per shard and query at most
                    twin = await self._choose(shard_id, asked, hedge=True)
                    if isinstance(twin, str):
                        racing[self._send(call, twin, deadline)] = time.monotonic()
                        hedges += 1
                        self.hedges += 1
                continue
            for request in done:
                del racing[request]
                outcome = request.result()
                reply = outcome.reply
                if reply is not None and reply.hits is not None:
                    return _ShardAnswer(reply, failovers, hedges)
                failed = True
                if reply is None:
                    last_error = outcome.error
                    continue
                if reply.error_code not in _TRY_ANOTHER:
                    code = reply.error_code or "internal_error"
                    raise error_from(code, reply.error_message or code)
                last_error = f"{reply.node_id}: {reply.error_code}: {reply.error_message}"
                behind = behind or reply.error_code == "replica_behind"
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

    async def _choose(
        self, shard_id: int, asked: set[str], hedge: bool = False
    ) -> str | _RoundOver | None:
        """The next replica to ask, by name (added to ``asked``); None: the queue group.

        A half-open node's trial first, else the fewest outstanding requests among the
        replicas with a usable breaker. When every replica's breaker is open they are asked
        anyway (failing at once helps nobody). A hedge goes only to a closed breaker.
        """
        candidates = self._fresh_replicas(shard_id)
        if candidates is None:
            known = self._candidates.get(shard_id)
            if known is not None:
                # Past their time: used while one background read refreshes them, so a map
                # slow for a while (its NATS server moving) holds no search.
                candidates = known[1]
                self._refresh_soon(shard_id)
            else:
                candidates = await self.transport.blocking(self._live_replicas, shard_id)
        if not candidates:
            if hedge or _QUEUE_GROUP in asked:
                return _ROUND_OVER
            asked.add(_QUEUE_GROUP)
            return None
        breakers = {node: self.breakers.of(node) for node in candidates}
        fresh = [node for node in candidates if node not in asked]
        if hedge:
            usable = [n for n in fresh if breakers[n].state is BreakerState.CLOSED]
        else:
            usable = [n for n in fresh if breakers[n].usable()]
            trials = [n for n in usable if breakers[n].state is BreakerState.HALF_OPEN]
            if trials:
                usable = trials[:1]
            elif not usable and not any(b.usable() for b in breakers.values()):
                usable = fresh
        if not usable:
            return _ROUND_OVER
        # One reading of the counts: other threads' requests change them meanwhile.
        with self._counting:
            load = {n: self._outstanding.get(n, 0) for n in usable}
        fewest = min(load.values())
        chosen = self._random.choice([n for n in usable if load[n] == fewest])
        asked.add(chosen)
        return chosen

    def _send(
        self, call: SearchCall, node_id: str | None, deadline: float
    ) -> asyncio.Task[_Outcome]:
        request = asyncio.get_running_loop().create_task(self._request(call, node_id, deadline))
        self._background.add(request)
        request.add_done_callback(self._background.discard)
        return request

    async def _request(self, call: SearchCall, node_id: str | None, deadline: float) -> _Outcome:
        """One request to a replica (``node_id``; None: the queue group), judged for its
        node's breaker: a success, a real failure, or no verdict."""
        remaining = deadline - time.monotonic()
        wait = min(call.wait_seconds, max(0.0, remaining - self.replica_timeout))
        timeout = min(remaining, wait + self.replica_timeout)
        subject = search_subject(self.prefix, call.shard_id, node_id)
        breaker = self.breakers.of(node_id) if node_id else None
        trial = breaker.begin() if breaker else False
        if node_id:
            with self._counting:
                self._outstanding[node_id] = self._outstanding.get(node_id, 0) + 1
        verdict: bool | None = None
        started = time.monotonic()
        try:
            reply = await self.transport.request(
                replace(call, wait_seconds=wait), node_id, timeout=timeout
            )
        except (ReplicaUnreachable, TimeoutError) as exc:
            # No answer in time, no replica subscribed, or the connection is moving to
            # another NATS server: all worth another try. Only the node's own failure counts
            # against it; a wait cut short by the query's deadline is no verdict.
            full_wait = timeout >= wait + self.replica_timeout
            if (isinstance(exc, ReplicaUnreachable) and exc.no_responders) or (
                isinstance(exc, TimeoutError) and full_wait
            ):
                verdict = False
            return _Outcome(None, f"{subject}: {type(exc).__name__}")
        else:
            verdict = reply.error_code not in _NODE_FAULTS
            if reply.hits is not None:
                self._window(call.shard_id).record(time.monotonic() - started)
            return _Outcome(reply)
        finally:
            if node_id and breaker is not None:
                with self._counting:
                    self._outstanding[node_id] -= 1
                if verdict is True:
                    breaker.succeeded()
                elif verdict is False:
                    before = breaker.state
                    breaker.failed()
                    if before is not BreakerState.OPEN:
                        logger.warning(
                            "breaker of node %s: %s after a failed request to %s",
                            node_id,
                            breaker.state.label,
                            subject,
                        )
                elif trial:
                    breaker.abandoned()

    def _window(self, shard_id: int) -> LatencyWindow:
        window = self._windows.get(shard_id)
        if window is None:
            window = self._windows[shard_id] = LatencyWindow(floor=self.hedge_floor)
        return window

    def _fresh_replicas(self, shard_id: int) -> list[str] | None:
        """The shard's live replicas as read less than ``_MAP_TTL`` ago, else None."""
        cached = self._candidates.get(shard_id)
        if cached is not None and time.monotonic() - cached[0] < _MAP_TTL:
            return cached[1]
        return None

    def _refresh_soon(self, shard_id: int) -> None:
        """Read the shard's live replicas again on a thread of its own (once at a time)."""

        def refresh() -> None:
            try:
                self._live_replicas(shard_id)
            finally:
                with self._counting:
                    self._refreshing.discard(shard_id)
                    self._refreshes.discard(thread)

        thread = threading.Thread(target=refresh, name=f"replicas-{shard_id}", daemon=True)
        with self._counting:
            if shard_id in self._refreshing or self._closed:
                return
            self._refreshing.add(shard_id)
            self._refreshes.add(thread)
        thread.start()

    def close(self) -> None:
        """Start no more background reads of the shard map, and wait for those running: the
        map they read closes after the router."""
        with self._counting:
            self._closed = True
            running = list(self._refreshes)
        for thread in running:
            thread.join(timeout=10)

    def _live_replicas(self, shard_id: int) -> list[str]:
        fresh = self._fresh_replicas(shard_id)
        if fresh is not None:
            return fresh
        cached = self._candidates.get(shard_id)
        try:
            alive = {node.node_id for node in self.shard_map.nodes()}
            found = [n for n in self.shard_map.replicas(shard_id).nodes if n in alive]
        except ShardragError:
            # The map is briefly unavailable: keep to what was read before (or the queue group).
            return cached[1] if cached else []
        self._candidates[shard_id] = (time.monotonic(), found)
        return found
