"""``Backends``: every store a process talks to, built once from ``Settings``.

Every process kind — the embedded ``Shardrag``, an api process of a cluster, a worker, an
index node, the CLI's cluster tools — gets its log, registry, blob store, shard map and result
cache here and nowhere else, so a setting means the same thing in each of them. In the
distributed mode (or with a NATS log) the process opens **one** NATS connection, and the log,
the shard map and the router's requests all go over it (one event-loop thread per process).

Which backend answers is decided by the settings alone (ARCHITECTURE.md §4):

======================  ===============================  ==================================
part                    embedded (default)               distributed / configured
======================  ===============================  ==================================
log                     ``<data_dir>/log.sqlite3``       JetStream at ``nats_url``
registry                ``<data_dir>/registry.sqlite3``  PostgreSQL at ``registry_url``
blobs                   ``<data_dir>/blobs``             ``blob_url`` (a shared dir or S3)
shard map               ``<data_dir>/shardmap.sqlite3``  JetStream key-value (``cluster``)
result cache            in this process                  Redis at ``redis_url``
======================  ===============================  ==================================

``Backends`` owns what it opened: ``close`` closes each part once, the connection last.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shardrag.blobs import BlobStore, open_blob_store
from shardrag.blobs.encrypted import EncryptedBlobStore, Keyring, master_key_from
from shardrag.cache import ResultCache, open_result_cache
from shardrag.cluster import ShardMap, open_shard_map
from shardrag.config import Settings
from shardrag.log import Log, open_log
from shardrag.log.sealed import SealedLog
from shardrag.registry import Registry, open_registry
from shardrag.sealing import KeySealer, Plain, Sealer
from shardrag.tls import nats_tls

if TYPE_CHECKING:
    from shardrag.natsconn import NatsConnection

logger = logging.getLogger(__name__)


@dataclass
class Backends:
    """The stores of one process (see the module)."""

    settings: Settings
    log: Log
    registry: Registry
    blobs: BlobStore
    shard_map: ShardMap
    result_cache: ResultCache | None
    #: The process's one NATS connection (None without NATS).
    nats: NatsConnection | None
    #: Seals tenants' text wherever it is kept (``sealing.py``): with a master key only.
    sealer: Sealer = field(default_factory=Plain)

    @classmethod
    def from_settings(cls, settings: Settings, name: str = "shardrag") -> Backends:
        """Open every backend ``settings`` names; ``name`` labels the NATS connection (seen
        in the server's connection list). A part that cannot open closes those opened."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as opened:
            nats = None
            if settings.nats_url:
                from shardrag.natsconn import NatsConnection  # nats-py loads only when used

                nats = NatsConnection(settings.nats_url, name=name, tls=nats_tls(settings))
            if nats is not None:
                opened.callback(nats.close)
            shard_map = open_shard_map(settings, nats)
            opened.callback(shard_map.close)
            registry = open_registry(settings.data_dir, settings.registry_url)
            opened.callback(registry.close)
            blobs = open_blob_store(
                settings.data_dir, settings.blob_url, settings.s3_endpoint_url, settings.s3_region
            )
            sealer: Sealer = Plain()
            master_key = master_key_from(settings.master_key, settings.master_key_file)
            if master_key is not None:
                previous = master_key_from(
                    settings.previous_master_key, settings.previous_master_key_file
                )
                keyring = Keyring(master_key, registry, [previous] if previous else [])
                blobs = EncryptedBlobStore(blobs, keyring)  # type: ignore[arg-type]
                sealer = KeySealer(keyring)
                registry.sealer = sealer
            log = open_log(
                settings.data_dir,
                settings.nats_url,
                settings.log_prefix,
                settings.log_replicas,
                conn=nats,
            )
            opened.callback(log.close)
            if sealer.active:
                log = SealedLog(log, sealer)
            result_cache = (
                open_result_cache(
                    settings.result_cache_entries,
                    settings.result_cache_ttl_seconds,
                    settings.redis_url,
                    settings.cache_prefix,
                    sealer,
                )
                if settings.result_cache_entries > 0
                else None
            )
            opened.pop_all()
        return cls(settings, log, registry, blobs, shard_map, result_cache, nats, sealer)

    def close(self) -> None:
        """Close every part (each once; a failure is logged and the rest still close)."""
        for part in (self.log, self.shard_map, self.registry, self.result_cache, self.nats):
            if part is None:
                continue
            try:
                part.close()
            except Exception:
                logger.exception("closing %s failed", type(part).__name__)
