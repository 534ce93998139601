"""One NATS connection driven from blocking code: nats-py's asyncio on a thread of its own.

The log (``log/nats.py``), the shard map on JetStream key-value and the cluster's request-reply
(index nodes, router) all talk to NATS from threads that block, over the process's one
``NatsConnection`` (``backends.py``): an event loop on a daemon thread (``LoopThread``), the
connection, and ``run`` to wait for a coroutine there.
A URL may name several servers of one cluster, separated by commas; the client fails over
between them and reconnects without limit.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from shardrag.errors import Unavailable
from shardrag.loopthread import LoopThread

_T = TypeVar("_T")


def servers_of(url: str) -> list[str]:
    """``"nats://a:4222,nats://b:4222"`` as the list of server URLs."""
    return [part.strip() for part in url.split(",") if part.strip()]


class NatsConnection:
    """A connection to the NATS servers at ``url`` and the loop that drives it."""

    def __init__(
        self,
        url: str,
        timeout: float = 5.0,
        name: str = "nats",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: the context of a TLS connection (``tls_context``; a ``tls://`` URL
        without one verifies against the system's CAs)."""
        self.url = url
        self.timeout = timeout
        self._loop_thread = LoopThread(name)
        self.loop = self._loop_thread.loop
        try:
            self.client: Client = self.run(
                nats.connect(
                    servers_of(url),
                    connect_timeout=timeout,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    name=name,
                    tls=tls,
                )
            )
        except BaseException:
            self._loop_thread.close()
            raise
        self.js: JetStreamContext = self.client.jetstream(timeout=timeout)

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        """Run ``coroutine`` on the connection's loop and wait for it (NATS faults → 503)."""
        try:
            return self._loop_thread.run(coroutine, (timeout or self.timeout) + 1)
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            raise Unavailable(f"NATS: {type(exc).__name__}: {exc}") from exc

    def run_patiently(
        self, make: Callable[[], Coroutine[Any, Any, _T]], within: float = 30.0
    ) -> _T:
        """Run ``make()`` until it succeeds or ``within`` seconds pass (then its last 503).

        For set-up calls right after servers (re)start: a replicated stream answers only once
        its replicas have elected a leader.
        """
        deadline = time.monotonic() + within
        while True:
            try:
                return self.run(make())
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    @property
    def closed(self) -> bool:
        """Whether ``close`` ran."""
        return self._loop_thread.closed

    def close(self) -> None:
        """Drain nothing, close the connection, stop the loop. Idempotent."""
        if self.closed:
            return
        try:
            self.run(self.client.close())
        finally:
            self._loop_thread.close()
