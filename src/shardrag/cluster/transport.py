"""How the router reaches a shard replica: over NATS, or inside this process.

The router (``router.py``) is the one read path of both modes. It hands each ``SearchCall``
to a ``SearchTransport`` and gets a ``SearchReply`` back:

- ``NatsTransport`` (distributed): request-reply on ``<prefix>_rpc.search.<shard>[.<node>]``,
  answered by an index node (``node.py``);
- ``LocalTransport`` (embedded): the process's own ``SearchServer`` on a small thread pool,
  with the same replies, errors and read-concern waits as a node's.

So breakers, hedging, failover and the read-concern wait run, and are tested, in the embedded
mode as well.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from shardrag.cluster.protocol import SearchCall, SearchReply, search_subject
from shardrag.cluster.serving import SearchServer
from shardrag.loopthread import LoopThread

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

    def close(self) -> None:
        """Release what the transport opened."""
        ...


class NatsTransport:
    """Search calls as NATS requests to index nodes (over the process's connection)."""

    def __init__(self, conn: NatsConnection, prefix: str) -> None:
        self.conn = conn
        self.prefix = prefix

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float) -> _T:
        """Run ``coroutine`` on the connection's loop (NATS faults: ``Unavailable``)."""
        return self.conn.run(coroutine, timeout)

    async def request(self, call: SearchCall, node_id: str | None, timeout: float) -> SearchReply:
        """One request-reply to the shard's replicas (see ``SearchTransport``)."""
        import nats.errors  # loaded with the connection already

        subject = search_subject(self.prefix, call.shard_id, node_id)
        try:
            message = await self.conn.client.request(subject, call.encode(), timeout=timeout)
        except nats.errors.NoRespondersError as exc:
            raise ReplicaUnreachable(f"{subject}: no responders", no_responders=True) from exc
        except nats.errors.TimeoutError as exc:
            raise TimeoutError(f"{subject}: no answer in {timeout:g} s") from exc
        except nats.errors.Error as exc:
            raise ReplicaUnreachable(f"{subject}: {type(exc).__name__}") from exc
        return SearchReply.decode(message.data)

    def close(self) -> None:
        """Nothing: the connection belongs to the process's ``Backends``."""


class LocalTransport:
    """Search calls answered by this process's ``SearchServer`` (the embedded mode)."""

    def __init__(self, server: SearchServer, threads: int = 4) -> None:
        self.server = server
        self._loop = LoopThread("local-router")
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, "local-search")

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float) -> _T:
        """Run ``coroutine`` on this transport's loop."""
        return self._loop.run(coroutine, timeout + 1)

    async def request(self, call: SearchCall, node_id: str | None, timeout: float) -> SearchReply:
        """The local server's reply (see ``SearchTransport``); another node's name reaches
        nobody here."""
        if node_id is not None and node_id != self.server.node_id:
            raise ReplicaUnreachable(f"node {node_id} is not this process", no_responders=True)
        loop = asyncio.get_running_loop()
        answering = loop.run_in_executor(self._pool, self.server.answer, call)
        return await asyncio.wait_for(answering, timeout)

    def close(self) -> None:
        """Stop the loop and the search threads."""
        self._loop.close()
        self._pool.shutdown(wait=True, cancel_futures=True)
