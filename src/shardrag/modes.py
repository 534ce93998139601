"""The two ways the service is wired, picked once from the settings.

``Shardrag`` (``embedded.py``) is one service in both modes: it writes through the
``DocumentWriter`` and the log, and reads through the ``Router``. What differs is what stands
under it, and that is decided here, once, when it opens:

==================  ==========================================  ==============================
                    embedded (``embedded_mode``)                distributed (``cluster_mode``)
==================  ==========================================  ==============================
shards              the data dir's, hosted and applied here     on index nodes
router transport    ``LocalTransport`` → this process's server  ``NatsTransport`` → nodes
replicas, progress  ``LocalNode`` (this process)                the nodes' heartbeats
write stages        ingest, embed, index                        ingest, embed (index: nodes)
layout              the data dir's ``shardrag.json``            the shard map's
placement changes   refused (``ClusterOnly``)                   ``Mover``; placement by size
==================  ==========================================  ==============================
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shardrag.backends import Backends
from shardrag.cluster import LOCAL_NODE, Layout
from shardrag.cluster.heartbeats import HeartbeatDirectory
from shardrag.cluster.local import LocalNode
from shardrag.cluster.placement import Mover
from shardrag.cluster.placer import SizePlacer
from shardrag.cluster.router import NodeDirectory, Router
from shardrag.cluster.transport import LocalTransport, NatsTransport, SearchTransport
from shardrag.config import Settings
from shardrag.embed import Embedder
from shardrag.engine import EngineSettings, ShardSet
from shardrag.errors import InvalidParameter
from shardrag.ingest import Chunker
from shardrag.pipeline import ChunkVectorizer, Pipeline, Retry, parse_stages

_LAYOUT_FILE = "shardrag.json"
#: Makes a ``Mover`` reporting its steps to the callback (None: to the log).
MoverFactory = Callable[[Callable[[str], None] | None], Mover]


@dataclass
class ModeParts:
    """What the service stands on in one mode (see the module)."""

    layout: Layout
    pipeline: Pipeline
    router: Router
    #: Which replicas each shard has, which nodes live, how far each applied.
    directory: NodeDirectory
    transport: SearchTransport
    #: The shards this process hosts (None: index nodes host them).
    shards: ShardSet | None = None
    #: Placement changes (None: not in this mode).
    mover: MoverFactory | None = None
    #: The placement-by-size check, to start with the service (None: not configured).
    placer: SizePlacer | None = None

    def close(self) -> None:
        """Stop the router and its transport, then close the hosted shards."""
        self.router.close()
        self.transport.close()
        if self.shards is not None:
            self.shards.close()


def open_mode(
    settings: Settings, backends: Backends, embedder: Embedder, vectorizer: ChunkVectorizer
) -> ModeParts:
    """The parts of the mode the settings name."""
    if settings.write_path not in ("log", "direct") or (
        settings.cluster and settings.write_path != "log"
    ):
        raise InvalidParameter(
            f"write_path must be 'log' or (embedded only) 'direct', not {settings.write_path!r}"
        )
    wire = cluster_mode if settings.cluster else embedded_mode
    return wire(settings, backends, embedder, vectorizer)


def embedded_mode(
    settings: Settings, backends: Backends, embedder: Embedder, vectorizer: ChunkVectorizer
) -> ModeParts:
    """One process holds every shard and is the one node the router asks."""
    layout = _data_dir_layout(settings, backends, embedder)
    shards = ShardSet(
        settings.data_dir / "shards",
        EngineSettings(dimension=layout.dimension, quantization=settings.quantization),
        settings.optimize_threshold,
        settings.search_ef,
        sealer=backends.sealer,
    )
    try:
        pipeline = _pipeline(settings, backends, embedder, vectorizer, shards, None)
        node = LocalNode(shards, layout.shards, pipeline.applier, pipeline.changed, backends.log)
        transport = LocalTransport(node.server)
    except BaseException:
        shards.close()
        raise
    router = Router.from_settings(transport, node, settings)
    return ModeParts(layout, pipeline, router, node, transport, shards=shards)


def cluster_mode(
    settings: Settings, backends: Backends, embedder: Embedder, vectorizer: ChunkVectorizer
) -> ModeParts:
    """An api process of a cluster: index nodes hold the shards, NATS reaches them."""
    assert backends.nats is not None  # Settings.validate: the distributed mode needs NATS
    wanted = Layout(settings.shards, settings.replicas, embedder.model_id, embedder.dimension)
    layout = backends.shard_map.init_layout(wanted)
    stages = parse_stages(settings.stages)
    if "index" in stages and settings.stages.strip().lower() != "all":
        raise InvalidParameter(
            "in the distributed mode the index stage runs on index nodes (shardrag node), "
            "not in this process"
        )
    pipeline = _pipeline(settings, backends, embedder, vectorizer, None, stages - {"index"})
    directory = HeartbeatDirectory(backends.shard_map)
    transport = NatsTransport(backends.nats, settings.log_prefix)
    router = Router.from_settings(transport, directory, settings)

    def mover(progress: Callable[[str], None] | None = None) -> Mover:
        return Mover(backends.shard_map, backends.log, backends.registry, progress=progress)

    placer = None
    if settings.promote_threshold_chunks > 0 or settings.split_threshold_chunks > 0:
        placer = SizePlacer(backends.registry, backends.shard_map, layout, settings, mover)
    return ModeParts(layout, pipeline, router, directory, transport, mover=mover, placer=placer)


def _pipeline(
    settings: Settings,
    backends: Backends,
    embedder: Embedder,
    vectorizer: ChunkVectorizer,
    shards: ShardSet | None,
    stages: frozenset[str] | None,
) -> Pipeline:
    return Pipeline(
        log=backends.log,
        registry=backends.registry,
        blobs=backends.blobs,
        chunker=Chunker(embedder.tokenizer, settings.chunk_tokens, settings.chunk_overlap_tokens),
        vectorizer=vectorizer,
        shard=shards.shard if shards else None,
        state_dir=settings.data_dir / "shards",
        stages=parse_stages(settings.stages) if stages is None else stages,
        retry=Retry.from_settings(settings),
    )


def _data_dir_layout(settings: Settings, backends: Backends, embedder: Embedder) -> Layout:
    """Pin the data dir to its embedding model and shard count.

    The data dir's ``shardrag.json`` is written on first open, and the shard count it holds
    wins over the setting; a data dir of another model is refused.
    """
    wanted = Layout(settings.shards, 1, embedder.model_id, embedder.dimension)
    path = settings.data_dir / _LAYOUT_FILE
    if path.exists():
        stored: dict[str, Any] = json.loads(path.read_text())
        if stored["model"] != wanted.model:
            raise InvalidParameter(
                f"data dir {settings.data_dir} holds vectors of {stored['model']}, not "
                f"{wanted.model}; use another data dir for another model",
                stored=stored["model"],
            )
        wanted = Layout(int(stored["shards"]), 1, stored["model"], int(stored["dimension"]))
    else:
        path.write_text(
            json.dumps(
                {"model": wanted.model, "shards": wanted.shards, "dimension": wanted.dimension}
            )
        )
    shard_map = backends.shard_map
    layout = shard_map.init_layout(dataclasses.replace(wanted, replicas=1))
    for shard_id in range(layout.shards):
        if not shard_map.replicas(shard_id).nodes:
            shard_map.set_replicas(shard_id, [LOCAL_NODE], 0)
    return layout
