"""``Backends.from_settings``: every store of a process from its settings, opened once."""

from __future__ import annotations

import secrets
from pathlib import Path

from shardrag.backends import Backends
from shardrag.blobs import LocalBlobStore
from shardrag.cache.memory import MemoryResultCache
from shardrag.cluster import SqliteShardMap
from shardrag.config import Settings
from shardrag.log import SqliteLog
from shardrag.registry import SqliteRegistry
from tests.support import NATS_URL, nats_is_up, require


def test_the_embedded_default_is_the_data_dirs_files(tmp_path: Path) -> None:
    backends = Backends.from_settings(Settings.load(data_dir=tmp_path / "data"))
    try:
        assert isinstance(backends.log, SqliteLog)
        assert isinstance(backends.registry, SqliteRegistry)
        assert isinstance(backends.blobs, LocalBlobStore)
        assert isinstance(backends.shard_map, SqliteShardMap)
        assert isinstance(backends.result_cache, MemoryResultCache)
        assert backends.nats is None
        assert {p.name for p in (tmp_path / "data").iterdir()} >= {
            "log.sqlite3",
            "registry.sqlite3",
            "shardmap.sqlite3",
        }
    finally:
        backends.close()


def test_no_result_cache_when_its_size_is_zero(tmp_path: Path) -> None:
    settings = Settings.load(data_dir=tmp_path / "data", result_cache_entries=0)
    backends = Backends.from_settings(settings)
    try:
        assert backends.result_cache is None
    finally:
        backends.close()


def test_a_distributed_process_talks_to_nats_over_one_connection(tmp_path: Path) -> None:
    require(nats_is_up(), f"NATS JetStream at {NATS_URL}")
    prefix = f"backends{secrets.token_hex(3)}"
    settings = Settings.load(
        data_dir=tmp_path / "data", cluster=True, nats_url=NATS_URL, log_prefix=prefix
    )
    backends = Backends.from_settings(settings, "backends-test")
    try:
        conn = backends.nats
        assert conn is not None
        assert backends.log._conn is conn  # type: ignore[attr-defined]
        assert backends.shard_map._conn is conn  # type: ignore[attr-defined]
        backends.log.append("probe.one", b"x")
        assert backends.log.last_sequence("probe.one") >= 1
        assert backends.shard_map.nodes() == []
        backends.log.drop()  # type: ignore[attr-defined]
        backends.shard_map.drop()  # type: ignore[attr-defined]
    finally:
        backends.close()
    assert conn.closed  # closed once, by Backends, after the parts that use it
