"""The shard map on NATS JetStream key-value: the distributed mode's consistent store.

Two buckets per cluster (named after the log prefix): ``<PREFIX>_MAP`` holds the layout,
``shard.<id>``, ``tenant.<t>`` and ``snapshot.<id>`` with compare-and-set on the key's
revision (``create`` for absent keys, ``update(last=revision)`` otherwise); ``<PREFIX>_NODES``
holds one heartbeat per node in a bucket whose entries expire after the node TTL, so a node
that dies drops out without anyone deleting it. Both buckets are replicated like the log.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.errors import NoKeysError as NatsNoKeysError
from nats.js.kv import KeyValue

from shardrag.cluster.shardmap import KeyValueShardMap, NodeInfo
from shardrag.errors import ShardMapConflict
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
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self._conn = NatsConnection(url, timeout, name="shard-map")
        stem = prefix.upper().replace("-", "_")
        try:
            self._map = self._bucket(f"{stem}_MAP", replicas, None)
            self._nodes = self._bucket(f"{stem}_NODES", replicas, ttl_seconds)
        except BaseException:
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

    def heartbeat(self, node: NodeInfo) -> None:
        """Record a heartbeat (the bucket's TTL forgets it unless it is repeated)."""
        self._conn.run(self._nodes.put(node.node_id, node.to_json()))

    def leave(self, node_id: str) -> None:
        """Remove a heartbeat now."""
        self._conn.run(self._nodes.delete(node_id))

    def nodes(self) -> list[NodeInfo]:
        """Live nodes."""

        async def read() -> list[NodeInfo]:
            try:
                keys = await self._nodes.keys()
            except NatsNoKeysError:
                return []
            found = []
            for key in sorted(keys):
                try:
                    entry = await self._nodes.get(key)
                except KeyNotFoundError:
                    continue
                if entry.value:
                    found.append(NodeInfo.from_json(entry.value))
            return found

        since = time.time() - self.ttl_seconds
        return [n for n in self._conn.run(read()) if n.heartbeat_at >= since]

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
        """Close the connection."""
        self._conn.close()
