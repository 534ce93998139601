"""``shardrag worker --stage S``: one stage of the write path alone, against the NATS log.

A worker shares the registry and blob store with the api process: the data dir's (safe for
several processes on one machine: SQLite in WAL mode, content-addressed files), or the
cluster's (``SHARDRAG_REGISTRY_URL``, ``SHARDRAG_BLOB_URL``) and consumes its stage's
subject on JetStream with the same durable consumer the embedded pipeline uses, so any number
of workers of one stage share its events. The index stage owns the shards it applies to, so a
worker of that stage takes the data dir's lock (the api then must not host the shards).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from pathlib import Path

from shardrag.backends import Backends
from shardrag.config import Settings
from shardrag.datadir import DataDirLock
from shardrag.embed import EmbeddingCache, open_embedder
from shardrag.engine import EngineSettings, ShardSet
from shardrag.errors import InvalidParameter
from shardrag.ingest import Chunker
from shardrag.pipeline import STAGES, ChunkVectorizer, Pipeline, Retry

logger = logging.getLogger(__name__)


def run_worker(settings: Settings, stage: str, stopped: threading.Event) -> None:
    """Run ``stage`` until ``stopped`` is set (SIGTERM in the CLI)."""
    if stage not in STAGES:
        raise InvalidParameter(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
    if not settings.nats_url:
        raise InvalidParameter(
            "a worker of its own needs the NATS log (SHARDRAG_NATS_URL): the embedded SQLite "
            "log is consumed by the serve process itself"
        )
    if stage == "index" and settings.cluster:
        raise InvalidParameter(
            "in the distributed mode shards are applied by index nodes: run `shardrag node`"
        )
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = DataDirLock(data_dir) if stage == "index" else None
    with contextlib.ExitStack() as opened:
        if lock is not None:
            opened.callback(lock.release)
        backends = Backends.from_settings(settings, f"worker-{stage}")
        opened.callback(backends.close)
        embedder = open_embedder(settings)
        cache = EmbeddingCache(data_dir / "embeddings.sqlite3", settings.embedding_cache_entries)
        opened.callback(cache.close)
        shards = ShardSet(
            data_dir / "shards",
            EngineSettings(
                dimension=_dimension(data_dir, embedder.dimension),
                quantization=settings.quantization,
            ),
            settings.optimize_threshold,
            settings.search_ef,
            sealer=backends.sealer,
        )
        opened.callback(shards.close)
        pipeline = Pipeline(
            log=backends.log,
            registry=backends.registry,
            blobs=backends.blobs,
            chunker=Chunker(
                embedder.tokenizer, settings.chunk_tokens, settings.chunk_overlap_tokens
            ),
            vectorizer=ChunkVectorizer(embedder, cache),
            shard=shards.shard if stage == "index" else None,
            state_dir=data_dir / "shards",
            stages=frozenset({stage}),
            retry=Retry.from_settings(settings),
        )
        pipeline.start()
        logger.info("worker %s running against %s", stage, settings.nats_url)
        stopped.wait()
        pipeline.stop()


def _dimension(data_dir: Path, default: int) -> int:
    layout = data_dir / "shardrag.json"
    if layout.exists():
        return int(json.loads(layout.read_text())["dimension"])
    return default
