"""The shard map on NATS JetStream key-value: the distributed mode's consistent store.

Two buckets per cluster (named after the log prefix): ``<PREFIX>_MAP`` holds the layout,
``shard.<id>``, ``tenant.<t>`` and ``snapshot.<id>`` with compare-and-set on the key's
revision (``create`` for absent keys, ``update(last=revision)`` otherwise); ``<PREFIX>_NODES``
holds one heartbeat per node in a bucket whose entries expire after the node TTL, so a node
that dies drops out without anyone deleting it. Both buckets are replicated like the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import Any

import nats.errors
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.errors import NoKeysError as NatsNoKeysError
from nats.js.kv import KeyValue

from shardrag.cluster.shardmap import KeyValueShardMap, NodeInfo
from shardrag.errors import ShardMapConflict, ShardragError
from shardrag.natsconn import NatsConnection


class NatsShardMap(KeyValueShardMap):
    """The shard map in JetStream key-value buckets on the servers at ``url``."""

    def __init__(
        self,
        url: str,
        prefix: str = "shardrag",
        ttl_seconds: float = 6.0,
        replicas: int = 1,
        timeout: float = 5.0,
        conn: NatsConnection | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        # The heartbeats as the watch last told them (see ``nodes``).
        self._live: dict[str, NodeInfo] = {}
        self._heard_at = float("-inf")
        # Whether the watch has delivered every heartbeat stored when it began: until then
        # its view holds only some nodes.
        self._synced = False
        self._watch_started = float("-inf")
        self._watch: tuple[Any, asyncio.Task[None]] | None = None
        # ``conn``: the process's one connection (``Backends``), which outlives this map.
        self._owns_conn = conn is None
        self._conn = (
            conn if conn is not None else NatsConnection(url, timeout, name="shard-map", tls=tls)
        )
        stem = prefix.upper().replace("-", "_")
        try:
            self._map = self._bucket(f"{stem}_MAP", replicas, None)
            self._nodes = self._bucket(f"{stem}_NODES", replicas, ttl_seconds)
        except BaseException:
            if self._owns_conn:
                self._conn.close()
            raise

    def _bucket(self, name: str, replicas: int, ttl: float | None) -> KeyValue:
        js = self._conn.js

        async def open_or_create() -> KeyValue:
            try:
                return await js.key_value(name)
            except BucketNotFoundError:
                return await js.create_key_value(bucket=name, history=1, ttl=ttl, replicas=replicas)

        return self._conn.run_patiently(open_or_create)

    # -- compare-and-set on entries -----------------------------------------------------------

    def _get(self, key: str) -> tuple[bytes, int] | None:
        async def get() -> tuple[bytes, int] | None:
            try:
                entry = await self._map.get(key)
            except KeyNotFoundError:
                return None
            if entry.value is None:
                return None
            return bytes(entry.value), int(entry.revision or 0)

        return self._conn.run(get())

    def _put(self, key: str, value: bytes, revision: int) -> int:
        async def put() -> int:
            try:
                if revision == 0:
                    return int(await self._map.create(key, value))
                return int(await self._map.update(key, value, last=revision))
            except KeyWrongLastSequenceError as exc:
                raise ShardMapConflict(
                    f"shard map entry {key!r} changed since revision {revision}", key=key
                ) from exc

        return self._conn.run(put())

    def _delete(self, key: str) -> None:
        self._conn.run(self._map.delete(key))

    def _keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (an operator's listing: it costs a consumer on the server)."""

        async def keys() -> list[str]:
            try:
                return sorted(k for k in await self._map.keys() if k.startswith(prefix))
            except NatsNoKeysError:
                return []

        return self._conn.run(keys())

    def heartbeat(self, node: NodeInfo) -> None:
        """Record a heartbeat (the bucket's TTL forgets it unless it is repeated)."""
        self._conn.run(self._nodes.put(node.node_id, node.to_json()))
        self._live[node.node_id] = node  # this process reads its own writes at once

    def leave(self, node_id: str) -> None:
        """Remove a heartbeat now."""
        self._conn.run(self._nodes.delete(node_id))
        self._live.pop(node_id, None)

    def nodes(self) -> list[NodeInfo]:
        """Live nodes, from a watch of the heartbeats bucket kept by this process.

        Routers and waiting writers ask often; listing the bucket's keys each time would
        create a JetStream consumer per call (a replicated one, on a cluster) and load the
        servers' API. The watch is one subscription pushed every heartbeat; until it has
        delivered what was stored when it began, or if it has heard nothing for a TTL (no node
        beats, or it broke), the bucket is read directly. "No node" is the answer that stops
        every search, and nats-py can give it wrongly under load: a new watch (``keys()`` is
        one) may mark itself caught up before it has handed over what was already delivered.
        So an empty watch is not trusted, and an empty direct read is made once more.
        """
        if self._watch is None:
            self._conn.run(self._start_watch())
        since = time.time() - self.ttl_seconds
        heard = time.monotonic() - self._heard_at < self.ttl_seconds
        if self._synced and heard and self._live:
            found = list(self._live.values())
        else:
            found = self._conn.run(self._scan()) or self._conn.run(self._scan())
            if time.monotonic() - self._watch_started > 2 * self.ttl_seconds:
                # Silent for long while nodes may be beating: the watch may have broken (its
                # server died); start a new one beside the direct read.
                self._conn.run(self._restart_watch())
        return sorted((n for n in found if n.heartbeat_at >= since), key=lambda n: n.node_id)

    async def _restart_watch(self) -> None:
        await self._stop_watch()
        await self._start_watch()

    async def _stop_watch(self) -> None:
        if self._watch is not None:
            watcher, task = self._watch
            self._watch = None
            task.cancel()
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def _start_watch(self) -> None:
        self._watch_started = time.monotonic()
        self._synced = False
        watcher: Any = await self._nodes.watchall()

        async def follow() -> None:
            while True:
                try:
                    entry = await watcher.updates(timeout=self.ttl_seconds)
                except nats.errors.TimeoutError:
                    continue
                self._heard_at = time.monotonic()
                if entry is None:  # the end of what was stored when the watch began
                    self._synced = True
                    continue
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    self._live.pop(entry.key, None)
                else:
                    self._live[entry.key] = NodeInfo.from_json(entry.value)

        self._watch = (watcher, asyncio.get_running_loop().create_task(follow()))

    async def _scan(self) -> list[NodeInfo]:
        try:
            keys = await self._nodes.keys()
        except NatsNoKeysError:
            return []
        found = []
        for key in keys:
            try:
                entry = await self._nodes.get(key)
            except KeyNotFoundError:
                continue
            if entry.value:
                found.append(NodeInfo.from_json(entry.value))
        return found

    def drop(self) -> None:
        """Delete both buckets (tests and ``cluster down --purge``)."""
        js = self._conn.js

        async def drop() -> None:
            for bucket in (self._map, self._nodes):
                name: Any = bucket._name  # nats-py keeps the bucket name here
                with contextlib.suppress(BucketNotFoundError):
                    await js.delete_key_value(name)

        self._conn.run(drop())

    def close(self) -> None:
        """Stop the watch and close the connection (when this map opened it)."""
        if self._watch is not None and not self._conn.closed:
            with contextlib.suppress(ShardragError):
                self._conn.run(self._stop_watch())
        if self._owns_conn:
            self._conn.close()
