"""Vectors for chunks: reused from the previous version, cached, or embedded — in one batch."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from shardrag import acl as access
from shardrag.embed import Embedder, EmbeddingCache
from shardrag.models import Chunk, EmbeddedChunk, Metadata

# Given chunk indexes of the previous version, its stored vectors by index.
PreviousVectors = Callable[[list[int]], dict[int, list[float]]]


def reuse_scope(tenant: str, incarnation: str, metadata: Metadata) -> str:
    """The embedding cache's partition for a version: its tenant's incarnation and its access
    groups.

    A write's answer (``reused_vectors``) and its speed tell whether a chunk's text was
    cached, so a writer may reuse only vectors of chunks it could read: those written to the
    same incarnation of its tenant (a tenant made again under a dropped one's id shares
    nothing) under exactly the same groups (a key writes only groups it reads, so it reads
    every document of such a partition).
    """
    _, groups = access.split(metadata)
    return json.dumps([tenant, incarnation, list(groups)], separators=(",", ":"))


def tenant_scopes(tenant: str) -> str:
    """What every ``reuse_scope`` of ``tenant`` starts with."""
    return json.dumps([tenant], separators=(",", ":"))[:-1] + ","


@dataclass
class VectorJob:
    """The chunks of one document version and what its previous version offers for reuse.

    ``previous_manifest`` maps a content hash to the chunk index it had in the previous
    version. ``run`` fills ``result`` and the reuse counters.
    """

    #: Whose vectors it may reuse from the embedding cache (``reuse_scope``).
    scope: str
    chunks: list[Chunk]
    previous_manifest: dict[str, int] = field(default_factory=dict)
    previous_vectors: PreviousVectors | None = None
    #: A chunk's name in the embedding cache, by its content hash: the hash itself, or with
    #: a master key a keyed hash under the tenant's key (a guessed text cannot be confirmed).
    cache_key: Callable[[str], str] = str
    result: list[EmbeddedChunk] = field(default_factory=list)
    reused: int = 0
    embedded: int = 0


class ChunkVectorizer:
    """Gives every chunk a vector, embedding only content never seen before.

    Sources in order: the previous live version (equal content hash, found through its
    manifest), the embedding cache of the job's ``reuse_scope``, then the model — called once
    for all jobs, so the model sees full batches even when each document is small.
    """

    def __init__(self, embedder: Embedder, cache: EmbeddingCache) -> None:
        self.embedder = embedder
        self.cache = cache

    def run(self, jobs: list[VectorJob]) -> None:
        """Fill ``job.result`` for every job (raises if the embedder fails)."""
        model = self.embedder.model_id
        known: list[dict[str, list[float]]] = []
        pending: dict[tuple[str, str], Chunk] = {}
        for job in jobs:
            vectors = self._from_previous(job)
            job.reused = len(vectors)
            missing = {
                job.cache_key(c.content_hash): c.content_hash
                for c in job.chunks
                if c.content_hash not in vectors
            }
            found = self.cache.get_many(job.scope, model, list(missing)) if missing else {}
            cached = {missing[key]: vector for key, vector in found.items()}
            job.reused += len(cached)
            vectors.update(cached)
            for chunk in job.chunks:
                key = (job.scope, chunk.content_hash)
                if chunk.content_hash not in vectors and key not in pending:
                    # Counted for the first document that needs it: the model embeds it once.
                    pending[key] = chunk
                    job.embedded += 1
            known.append(vectors)

        keys = list(pending)
        fresh = dict(
            zip(
                keys,
                self.embedder.embed_documents([pending[k].indexed_text for k in keys]),
                strict=True,
            )
        )
        cache_key = {job.scope: job.cache_key for job in jobs}
        by_scope: dict[str, dict[str, list[float]]] = {}
        for (scope, digest), vector in fresh.items():
            by_scope.setdefault(scope, {})[cache_key[scope](digest)] = vector
        for scope, vectors in by_scope.items():
            self.cache.put_many(scope, model, vectors)

        for job, vectors in zip(jobs, known, strict=True):
            job.result = [
                EmbeddedChunk(c, vectors.get(c.content_hash) or fresh[(job.scope, c.content_hash)])
                for c in job.chunks
            ]

    @staticmethod
    def _from_previous(job: VectorJob) -> dict[str, list[float]]:
        reusable = {
            c.content_hash: job.previous_manifest[c.content_hash]
            for c in job.chunks
            if c.content_hash in job.previous_manifest
        }
        if not reusable or job.previous_vectors is None:
            return {}
        stored = job.previous_vectors(sorted(set(reusable.values())))
        return {h: stored[i] for h, i in reusable.items() if i in stored}
