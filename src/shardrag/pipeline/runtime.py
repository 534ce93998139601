"""The write path's workers in one process: which run here, their threads, waiting on them.

The embedded default runs all three stages (``ingest``, ``embed``, ``index``) as background
threads of the one process over the data dir's SQLite log. ``shardrag worker --stage S``
runs one of them alone against NATS; ``shardrag serve`` then runs the stages it is told to
(``SHARDRAG_STAGES``). The direct path (``run_direct``) calls the same stages in the caller's
thread without the log: the embedded core's synchronous baseline the benchmark compares with.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from shardrag.blobs import BlobStore
from shardrag.errors import InvalidParameter, ShardragError
from shardrag.ingest import Chunker
from shardrag.log import Log
from shardrag.pipeline.applier import IndexApplier, record_outcome
from shardrag.pipeline.events import IngestEvent
from shardrag.pipeline.retry import Retry, as_error
from shardrag.pipeline.stages import EmbedStage, IngestStage, ShardLookup
from shardrag.pipeline.vectors import ChunkVectorizer
from shardrag.pipeline.workers import EmbedWorker, IngestWorker, run_until
from shardrag.registry import Registry

STAGES = ("ingest", "embed", "index")
# How often a waiter re-checks when nothing in this process tells it (other processes work).
_POLL = 0.05


def parse_stages(value: str) -> frozenset[str]:
    """``"ingest,embed,index"`` (or ``"all"``, or ``"none"``) as a set of stage names."""
    text = value.strip().lower()
    if text in ("", "none"):
        return frozenset()
    if text == "all":
        return frozenset(STAGES)
    names = frozenset(s.strip() for s in text.split(","))
    unknown = names - set(STAGES)
    if unknown:
        raise InvalidParameter(
            f"unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}",
            unknown=sorted(unknown),
        )
    return names


class Pipeline:
    """The stages of this process and the threads that run them."""

    def __init__(
        self,
        log: Log,
        registry: Registry,
        blobs: BlobStore,
        chunker: Chunker,
        vectorizer: ChunkVectorizer,
        shard: ShardLookup | None,
        state_dir: Path,
        stages: frozenset[str] = frozenset(STAGES),
        retry: Retry | None = None,
    ) -> None:
        self.log = log
        self.registry = registry
        self.stages = stages
        self.retry = retry or Retry()
        self.shard = shard
        self.changed = threading.Condition()
        self.ingest_stage = IngestStage(registry, blobs, chunker)
        self.embed_stage = EmbedStage(registry, blobs, vectorizer, shard)
        self._steps: dict[str, Callable[[float], int]] = {}
        self.applier: IndexApplier | None = None
        if "ingest" in stages:
            ingest = IngestWorker(log, registry, self.ingest_stage, self.changed, self.retry)
            self._steps["ingest"] = ingest.step
        if "embed" in stages:
            embed = EmbedWorker(log, registry, self.embed_stage, self.changed, self.retry)
            self._steps["embed"] = embed.step
        if "index" in stages:
            if shard is None:
                raise InvalidParameter("the index stage needs the shards of this process")
            self.applier = IndexApplier(
                log, shard, registry, state_dir / "applied.json", self.changed, self.retry
            )
            self._steps["index"] = self.applier.step
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start one thread per stage of this process."""
        for name, step in self._steps.items():
            thread = threading.Thread(
                target=run_until,
                args=(self._stopped, step, name),
                name=f"stage-{name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    @property
    def healthy(self) -> bool:
        """Every stage thread that was started is still running."""
        return all(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        """Stop the threads after the step each one is in (the log keeps the rest)."""
        self._stopped.set()
        if self.applier is not None:
            self.applier.stop()
        for thread in self._threads:
            thread.join(timeout=60)

    def wait_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``done()`` holds (re-checked on every step of a stage); False on timeout."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(min(remaining, _POLL))
        return True

    def run_direct(self, events: list[IngestEvent]) -> None:
        """Take versions from accepted to live (or failed) in this thread, without the log."""
        if self.shard is None:
            raise InvalidParameter("the direct path needs the shards of this process")
        embeds = []
        for event in events:
            try:
                out = self.ingest_stage.run(event)
            except Exception as exc:
                self._fail(event, as_error(exc))
                continue
            if out is not None:
                embeds.append((event, out))
        try:
            results = self.embed_stage.run([out for _, out in embeds])
        except Exception as exc:
            for event, _ in embeds:
                self._fail(event, as_error(exc))
            return
        for (event, _), ops in zip(embeds, results, strict=True):
            engine = self.shard(event.ref.shard_id)
            try:
                for op in ops or []:
                    record_outcome(self.registry, op, IndexApplier.apply(engine, op))
            except Exception as exc:
                self._fail(event, as_error(exc))

    def _fail(self, event: IngestEvent, error: ShardragError) -> None:
        ref = event.ref
        if self.shard is not None:
            self.shard(ref.shard_id).abort(ref.tenant, ref.doc_id, ref.version)
        self.registry.mark_failed(ref.tenant, ref.doc_id, ref.version, error.code, error.message)
