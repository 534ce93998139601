"""How the router reaches a shard replica: over NATS, or inside this process.

The router (``router.py``) is the one read path of both modes. It hands each ``SearchCall``
to a ``SearchTransport`` and gets a ``SearchReply`` back:

- ``NatsTransport`` (distributed): request-reply on ``<prefix>_rpc.search.<shard>[.<node>]``,
  answered by an index node (``node.py``);
- ``LocalTransport`` (embedded): the process's own ``SearchServer``, answering inline on the
  caller's thread, with the same replies, errors and read-concern waits as a node's.

So breakers, hedging, failover and the read-concern wait run, and are tested, in the embedded
mode as well.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from shardrag.cluster.protocol import SearchCall, SearchReply, search_subject
from shardrag.cluster.serving import SearchServer
from shardrag.observability import tracing

if TYPE_CHECKING:
    from shardrag.natsconn import NatsConnection

_T = TypeVar("_T")


class ReplicaUnreachable(Exception):
    """The request reached no replica: nobody answers there (``no_responders``) or the
    transport failed on the way (a reconnect)."""

    def __init__(self, message: str, no_responders: bool = False) -> None:
        super().__init__(message)
        self.no_responders = no_responders


class SearchTransport(Protocol):
    """Carries search calls to shard replicas and drives the router's coroutines."""

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float) -> _T:
        """Run ``coroutine`` on the transport's event loop and wait for it."""
        ...

    async def request(self, call: SearchCall, node_id: str | None, timeout: float) -> SearchReply:
        """The reply of ``node_id``'s replica of ``call.shard_id`` (None: any replica of it).

        Raises ``TimeoutError`` past ``timeout`` and ``ReplicaUnreachable`` when no replica
        got the call.
        """
        ...

    async def blocking(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)``, a blocking call (a shard map read), without stalling other
        requests of the transport's loop."""
        ...

    def close(self) -> None:
        """Release what the transport opened."""
        ...


class NatsTransport:
    """Search calls as NATS requests to index nodes (over the process's connection)."""

    def __init__(self, conn: NatsConnection, prefix: str) -> None:
        self.conn = conn
        self.prefix = prefix

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float) -> _T:
        """Run ``coroutine`` on the connection's loop (NATS faults: ``Unavailable``), in the
        caller's trace (the loop's thread has none of its own)."""
        return self.conn.run(_in_trace(tracing.inject(), coroutine), timeout)

    async def request(self, call: SearchCall, node_id: str | None, timeout: float) -> SearchReply:
        """One request-reply to the shard's replicas (see ``SearchTransport``)."""
        import nats.errors  # loaded with the connection already

        subject = search_subject(self.prefix, call.shard_id, node_id)
        try:
            with tracing.span(
                "shard search",
                "client",
                attributes={"shardrag.shard": call.shard_id, "shardrag.node": node_id},
            ):
                message = await self.conn.client.request(
                    subject, call.encode(), timeout=timeout, headers=tracing.inject() or None
                )
        except nats.errors.NoRespondersError as exc:
            raise ReplicaUnreachable(f"{subject}: no responders", no_responders=True) from exc
        except nats.errors.TimeoutError as exc:
            raise TimeoutError(f"{subject}: no answer in {timeout:g} s") from exc
        except nats.errors.Error as exc:
            raise ReplicaUnreachable(f"{subject}: {type(exc).__name__}") from exc
        return SearchReply.decode(message.data)

    async def blocking(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)`` on a worker thread: the connection's loop never blocks."""
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)

    def close(self) -> None:
        """Nothing: the connection belongs to the process's ``Backends``."""


async def _in_trace(carrier: dict[str, str], coroutine: Coroutine[Any, Any, _T]) -> _T:
    token = tracing.attach(carrier)
    try:
        return await coroutine
    finally:
        tracing.detach(token)


class LocalTransport:
    """Search calls answered by this process's ``SearchServer`` (the embedded mode).

    Nothing crosses a thread: the router's coroutines run on an event loop of the calling
    thread (one per thread, made on first use), and the server answers inline — a replica
    that must wait for its applier waits in the caller's thread, bounded by the call's
    ``wait_seconds``. A search costs no thread switch, as a direct engine call did.
    """

    def __init__(self, server: SearchServer) -> None:
        self.server = server
        self._local = threading.local()

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float) -> _T:
        """Run ``coroutine`` to its end on this thread's loop (the router keeps to its own
        deadline, and nothing here waits on anything but the server's bounded wait)."""
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()
        return loop.run_until_complete(coroutine)

    async def request(self, call: SearchCall, node_id: str | None, timeout: float) -> SearchReply:
        """The local server's reply (see ``SearchTransport``); another node's name reaches
        nobody here."""
        if node_id is not None and node_id != self.server.node_id:
            raise ReplicaUnreachable(f"node {node_id} is not this process", no_responders=True)
        return self.server.answer(call)

    async def blocking(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)`` inline: nothing else runs on this thread's loop meanwhile."""
        return function(*args)

    def close(self) -> None:
        """Nothing to release: each thread's loop goes with its thread."""
