"""What the ingestion and embedding workers do with one event, without the log around them.

The log workers (``pipeline/workers.py``) feed these from ``doc.ingest`` and ``chunk.embed``;
the direct path of the embedded core calls them in-line. Both stages are pure functions of
their event and the stored original, so a redelivered event produces the same output, which
the next append deduplicates by message id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from shardrag.blobs import BlobStore
from shardrag.engine import ShardEngine
from shardrag.errors import EmptyDocument, ShardragError, UnparseableDocument
from shardrag.ingest import Chunker, parse
from shardrag.models import VersionState
from shardrag.pipeline.events import (
    INLINE_CHUNK_BYTES,
    EmbedEvent,
    IngestEvent,
    ShardOp,
    VersionRef,
    decode_chunks,
    encode_chunks,
    upsert_ops,
)
from shardrag.pipeline.vectors import ChunkVectorizer, VectorJob, reuse_scope
from shardrag.registry import ManifestEntry, Registry

# Given a shard id, its engine, where this process hosts shards (for reusing the previous
# version's vectors); None in a worker that hosts none, which then relies on the cache.
ShardLookup = Callable[[int], ShardEngine]

# Versions a stage still works on: pending, or live (the reconciler re-drives a phantom).
_WANTED = (VersionState.PENDING, VersionState.LIVE)


def wanted(registry: Registry, ref: VersionRef, content_hash: str | None = None) -> bool:
    """Whether the version an event is about still needs work (not failed, superseded, gone)."""
    info = registry.version(ref.tenant, ref.doc_id, ref.version)
    if info is None or info.state not in _WANTED:
        return False
    return content_hash is None or info.content_hash == content_hash


class IngestStage:
    """``doc.ingest`` → parse and chunk the stored original → ``chunk.embed``."""

    def __init__(self, registry: Registry, blobs: BlobStore, chunker: Chunker) -> None:
        self.registry = registry
        self.blobs = blobs
        self.chunker = chunker

    def run(self, event: IngestEvent) -> EmbedEvent | None:
        """The version's chunks; None if the version no longer needs them.

        Raises the ``InvalidInput`` that makes the document unindexable (a permanent
        failure), or anything else for a failure worth retrying.
        """
        ref = event.ref
        if not wanted(self.registry, ref, event.content_hash):
            return None
        data = self.blobs.get(event.content_hash, owner=ref.tenant)
        try:
            parsed = parse(data, event.filename, event.content_type)
        except ShardragError:
            raise
        except (ValueError, LookupError, UnicodeError) as exc:
            # Parsers raise these on malformed input; not worth a retry.
            raise UnparseableDocument(f"{type(exc).__name__}: {exc}") from exc
        if event.title:
            parsed = dataclasses.replace(parsed, title=event.title)
        chunks = self.chunker.chunk(parsed)
        if not chunks:
            raise EmptyDocument(f"document {ref.doc_id!r} has no text to index")
        out = EmbedEvent(ref, event.filename, event.metadata, chunks)
        if len(out.encode()) > INLINE_CHUNK_BYTES:
            digest = self.blobs.put(encode_chunks(chunks), owner=ref.tenant)
            out = EmbedEvent(ref, event.filename, event.metadata, chunks_blob=digest)
        return out


class EmbedStage:
    """``chunk.embed`` → vectors (reused, cached or embedded, batched) → shard ops."""

    def __init__(
        self,
        registry: Registry,
        blobs: BlobStore,
        vectorizer: ChunkVectorizer,
        shard: ShardLookup | None = None,
    ) -> None:
        self.registry = registry
        self.blobs = blobs
        self.vectorizer = vectorizer
        self.shard = shard

    def run(self, events: list[EmbedEvent]) -> list[list[ShardOp] | None]:
        """Each version's upsert ops and commit, embedding all of them in one pass.

        None for a version that no longer needs work. Records each version's manifest.
        """
        todo = [e for e in events if wanted(self.registry, e.ref)]
        jobs = [self._job(e) for e in todo]
        self.vectorizer.run(jobs)
        done: dict[int, list[ShardOp]] = {}
        for event, job in zip(todo, jobs, strict=True):
            ref = event.ref
            self.registry.record_manifest(
                ref.tenant,
                ref.doc_id,
                ref.version,
                [ManifestEntry(c.index, c.content_hash, c.token_count) for c in job.chunks],
                reused=job.reused,
                embedded=job.embedded,
            )
            done[id(event)] = upsert_ops(ref, job.result, event.metadata, event.filename)
        return [done.get(id(e)) for e in events]

    def _job(self, event: EmbedEvent) -> VectorJob:
        ref = event.ref
        chunks = event.chunks
        if event.chunks_blob is not None:
            chunks = decode_chunks(self.blobs.get(event.chunks_blob, owner=event.ref.tenant))
        job = VectorJob(reuse_scope(ref.tenant, ref.epoch, event.metadata), chunks)
        sealer = self.registry.sealer
        if sealer.active:
            job.cache_key = lambda digest: sealer.tag(ref.tenant, digest)
        current = self.registry.document(ref.tenant, ref.doc_id)
        live = current.live if current else None
        if live is not None and live.version < ref.version:
            previous = live.version
            job.previous_manifest = {
                e.content_hash: e.chunk_index
                for e in self.registry.manifest(ref.tenant, ref.doc_id, previous)
            }
            if self.shard is not None:
                engine = self.shard(ref.shard_id)
                job.previous_vectors = lambda idx: engine.vectors(
                    ref.tenant, ref.doc_id, previous, idx
                )
        return job
