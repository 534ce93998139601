"""The write path of the embedded mode: one version from bytes to live, or to failed.

Steps (ARCHITECTURE.md §2): blob → pending version in the registry → parse → chunk → vectors
→ engine upsert (invisible) → manifest → engine commit → registry live. Any failure before the
commit marks the version failed with its reason and aborts its points; the previous version
stays live throughout. Delete is a tombstone version committed the same way.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from shardrag.blobs import BlobStore
from shardrag.engine import ShardEngine
from shardrag.errors import (
    DocumentNotFound,
    DocumentTooLarge,
    EmptyDocument,
    InternalError,
    InvalidParameter,
    ShardragError,
    UnparseableDocument,
)
from shardrag.ingest import Chunker, parse
from shardrag.models import DocumentInput, Metadata, VersionState, WriteResult
from shardrag.pipeline.vectors import ChunkVectorizer, VectorJob
from shardrag.registry import ManifestEntry, NewVersion, Registry

log = logging.getLogger(__name__)

#: Documents a client should hand to ``put_many`` at once. The model sorts the texts of one
#: call by length before batching them, so more texts per call means less padding: calls of
#: ~80 chunks cost 12 % more than one call over a whole corpus, calls of ~300 about 2 %.
DOCUMENTS_PER_BATCH = 256

# Given a tenant, the engine of its shard (creating the tenant if needed).
ShardOf = Callable[[str], ShardEngine]


@dataclass
class VersionBuild:
    """A version accepted (parsed and chunked, pending) and on its way to live."""

    tenant: str
    upload: DocumentInput
    engine: ShardEngine
    version: int
    job: VectorJob
    position: int = 0
    committed: bool = False
    result: WriteResult | None = None
    # The document's lock stripe while the build holds it (``begin`` until ``finish``).
    stripe: int | None = None

    def accepted(self) -> WriteResult:
        """What the caller of an asynchronous write learns at once: the pending version."""
        return WriteResult(
            self.tenant,
            self.upload.doc_id,
            self.version,
            VersionState.PENDING,
            len(self.job.chunks),
        )


class DocumentWriter:
    """Writes versions of documents; safe for many threads (one writer per document at a time)."""

    _STRIPES = 256

    def __init__(
        self,
        registry: Registry,
        blobs: BlobStore,
        shard_of: ShardOf,
        chunker: Chunker,
        vectorizer: ChunkVectorizer,
        max_document_bytes: int,
    ) -> None:
        self.registry = registry
        self.blobs = blobs
        self.shard_of = shard_of
        self.chunker = chunker
        self.vectorizer = vectorizer
        self.max_document_bytes = max_document_bytes
        # Versions of one document are written one at a time, in order; others in parallel.
        self._doc_locks = [threading.Lock() for _ in range(self._STRIPES)]

    def _stripe(self, tenant: str, doc_id: str) -> int:
        digest = hashlib.blake2b(f"{tenant}\x00{doc_id}".encode(), digest_size=4).digest()
        return int.from_bytes(digest, "big") % self._STRIPES

    def put(self, tenant: str, upload: DocumentInput) -> WriteResult:
        """Make ``upload`` the live version of its document; raise the reason if it fails."""
        outcome = self.put_many(tenant, [upload])[0]
        if isinstance(outcome, ShardragError):
            raise outcome
        return outcome

    def put_many(
        self, tenant: str, uploads: list[DocumentInput]
    ) -> list[WriteResult | ShardragError]:
        """Write many documents, embedding all their new chunks in one batched pass.

        Each document succeeds or fails on its own: the outcome list holds, in order, a
        ``WriteResult`` or the ``ShardragError`` that failed that document.
        """
        keys = [(tenant, u.doc_id) for u in uploads]
        if len(set(keys)) != len(keys):
            raise InvalidParameter("a batch names the same document twice")
        outcomes: list[WriteResult | ShardragError | None] = [None] * len(uploads)
        builds: list[VersionBuild] = []
        with self._locked(keys):
            for i, upload in enumerate(uploads):
                try:
                    build = self._prepare(tenant, upload)
                except ShardragError as exc:
                    outcomes[i] = exc
                    continue
                if isinstance(build, WriteResult):
                    outcomes[i] = build
                else:
                    build.position = i
                    builds.append(build)
            self._complete(builds, outcomes)
        return _all_decided(outcomes)

    def begin(self, tenant: str, upload: DocumentInput) -> VersionBuild | WriteResult:
        """Accept a version now (checks, pending version, parse, chunk); embed it later.

        Returns the ``WriteResult`` of an unchanged document, or a build that holds the
        document's lock until ``finish`` completes it, so that versions of one document go
        live in the order they were accepted. Raises the reason a document is refused.
        """
        stripe = self._stripe(tenant, upload.doc_id)
        self._doc_locks[stripe].acquire()
        try:
            build = self._prepare(tenant, upload)
        except BaseException:
            self._doc_locks[stripe].release()
            raise
        if isinstance(build, WriteResult):
            self._doc_locks[stripe].release()
        else:
            build.stripe = stripe
        return build

    def finish(self, builds: list[VersionBuild]) -> list[WriteResult | ShardragError]:
        """Embed and commit accepted builds together; one outcome per build, in order."""
        outcomes: list[WriteResult | ShardragError | None] = [None] * len(builds)
        try:
            for i, build in enumerate(builds):
                build.position = i
            self._complete(builds, outcomes)
        finally:
            for build in builds:
                if build.stripe is not None:
                    self._doc_locks[build.stripe].release()
                    build.stripe = None
        return _all_decided(outcomes)

    def _complete(
        self, builds: list[VersionBuild], outcomes: list[WriteResult | ShardragError | None]
    ) -> None:
        """Vectors for every build in one batched pass, then each build's commit."""
        self._guarded(builds, outcomes, lambda: self.vectorizer.run([b.job for b in builds]))
        for build in builds:
            if outcomes[build.position] is None:
                self._guarded([build], outcomes, functools.partial(self._commit, build))
            if build.result is not None:
                outcomes[build.position] = build.result

    @contextmanager
    def _locked(self, keys: list[tuple[str, str]]) -> Iterator[None]:
        # Stripes in ascending order: two batches never wait on each other in a cycle.
        stripes = sorted({self._stripe(t, d) for t, d in keys})
        for stripe in stripes:
            self._doc_locks[stripe].acquire()
        try:
            yield
        finally:
            for stripe in reversed(stripes):
                self._doc_locks[stripe].release()

    def _guarded(
        self,
        builds: list[VersionBuild],
        outcomes: list[WriteResult | ShardragError | None],
        step: Callable[[], object],
    ) -> None:
        """Run ``step``; if it raises, fail every build it concerned (and keep going)."""
        if not builds:
            return
        try:
            step()
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, ShardragError)
                else InternalError(f"{type(exc).__name__}: {exc}")
            )
            if not isinstance(exc, ShardragError):
                log.exception("writing %d document(s) failed", len(builds))
            for build in builds:
                if outcomes[build.position] is not None:
                    continue
                if build.committed:
                    # The shard already shows this version: roll forward, never back. It stays
                    # pending in the registry and recovery marks it live.
                    outcomes[build.position] = InternalError(
                        f"version {build.version} of {build.upload.doc_id!r} is live in its "
                        f"shard but the registry update failed ({error.message}); it is "
                        "completed when the data dir is next opened",
                        version=build.version,
                    )
                    continue
                self._fail(build.engine, build.tenant, build.upload.doc_id, build.version, error)
                outcomes[build.position] = error

    def _prepare(self, tenant: str, upload: DocumentInput) -> VersionBuild | WriteResult:
        """Checks, the no-op test, blob and pending version, then parse and chunk."""
        if not upload.data:
            raise EmptyDocument(f"document {upload.doc_id!r} is empty (0 bytes)")
        if len(upload.data) > self.max_document_bytes:
            raise DocumentTooLarge(
                f"document {upload.doc_id!r} is {len(upload.data)} bytes; the limit is "
                f"{self.max_document_bytes} (setting max_document_bytes)",
                size=len(upload.data),
                limit=self.max_document_bytes,
            )
        doc_id = upload.doc_id
        engine = self.shard_of(tenant)
        content_hash = hashlib.sha256(upload.data).hexdigest()
        current = self.registry.document(tenant, doc_id)
        live = current.live if current else None
        if (
            live is not None
            and live.content_hash == content_hash
            and live.filename == upload.filename
            and _same_json(live.metadata, upload.metadata)
        ):
            return WriteResult(
                tenant, doc_id, live.version, VersionState.LIVE, live.chunk_count, unchanged=True
            )
        self.blobs.put(upload.data)
        new = NewVersion(content_hash, upload.filename, len(upload.data), upload.metadata)
        version = self.registry.begin_version(tenant, doc_id, new)
        build = VersionBuild(tenant, upload, engine, version, VectorJob(tenant, []))
        try:
            parsed = parse(upload.data, upload.filename, upload.content_type)
            if upload.title:
                parsed = dataclasses.replace(parsed, title=upload.title)
            chunks = self.chunker.chunk(parsed)
            if not chunks:
                raise EmptyDocument(f"document {doc_id!r} has no text to index")
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, ShardragError)
                else UnparseableDocument(f"{type(exc).__name__}: {exc}")
            )
            self._fail(engine, tenant, doc_id, version, error)
            raise error from exc
        build.job.chunks = chunks
        if live is not None:
            previous = live.version
            build.job.previous_manifest = {
                e.content_hash: e.chunk_index
                for e in self.registry.manifest(tenant, doc_id, previous)
            }
            build.job.previous_vectors = lambda idx: engine.vectors(tenant, doc_id, previous, idx)
        return build

    def _commit(self, build: VersionBuild) -> None:
        """Upsert the version's points, record its manifest, commit, mark it live."""
        upload, engine, version, job = build.upload, build.engine, build.version, build.job
        tenant, doc_id = build.tenant, upload.doc_id
        engine.upsert(tenant, doc_id, version, job.result, upload.metadata, upload.filename)
        self.registry.record_manifest(
            tenant,
            doc_id,
            version,
            [ManifestEntry(c.index, c.content_hash, c.token_count) for c in job.chunks],
        )
        engine.commit(tenant, doc_id, version)
        build.committed = True
        self.registry.mark_live(tenant, doc_id, version)
        build.result = WriteResult(
            tenant,
            doc_id,
            version,
            VersionState.LIVE,
            len(job.chunks),
            reused_vectors=job.reused,
            embedded_chunks=job.embedded,
        )

    def _fail(
        self, engine: ShardEngine, tenant: str, doc_id: str, version: int, error: ShardragError
    ) -> None:
        # Compensate first: the version's partial points must go even if recording fails.
        engine.abort(tenant, doc_id, version)
        self.registry.mark_failed(tenant, doc_id, version, error.code, error.message)

    def delete(self, tenant: str, doc_id: str) -> WriteResult:
        """Remove every chunk of the document (a tombstone version)."""
        engine = self.shard_of(tenant)
        with self._locked([(tenant, doc_id)]):
            current = self.registry.document(tenant, doc_id)
            if current is None or current.state is VersionState.DELETED:
                raise DocumentNotFound(
                    f"no document {doc_id!r} in tenant {tenant!r}", doc_id=doc_id
                )
            version = self.registry.begin_tombstone(tenant, doc_id)
            engine.commit(tenant, doc_id, version)
            self.registry.mark_deleted(tenant, doc_id, version)
        return WriteResult(tenant, doc_id, version, VersionState.DELETED, 0)

    def recover(self) -> list[tuple[str, str, int, VersionState]]:
        """Finish or undo the versions a previous process left pending when it died.

        A version whose commit reached the shard is finished (made live); a tombstone is
        re-applied (the caller asked for the delete); anything else is aborted and marked
        failed, which leaves the previous version live. Returns what was done.
        """
        outcomes = []
        for pending in self.registry.pending_versions():
            tenant, doc_id, version = pending.tenant, pending.doc_id, pending.version
            engine = self.shard_of(tenant)
            if pending.tombstone:
                engine.commit(tenant, doc_id, version)
                self.registry.mark_deleted(tenant, doc_id, version)
                outcomes.append((tenant, doc_id, version, VersionState.DELETED))
            elif engine.count(tenant, doc_id, version).live:
                engine.commit(tenant, doc_id, version)
                self.registry.mark_live(tenant, doc_id, version)
                outcomes.append((tenant, doc_id, version, VersionState.LIVE))
            else:
                engine.abort(tenant, doc_id, version)
                self.registry.mark_failed(
                    tenant,
                    doc_id,
                    version,
                    "interrupted",
                    "the process stopped before this version was committed",
                )
                outcomes.append((tenant, doc_id, version, VersionState.FAILED))
        return outcomes


def _all_decided(
    outcomes: list[WriteResult | ShardragError | None],
) -> list[WriteResult | ShardragError]:
    done: list[WriteResult | ShardragError] = []
    for outcome in outcomes:
        if outcome is None:  # every path records one; a bug if not
            raise InternalError("a document of the batch got no outcome")
        done.append(outcome)
    return done


def _same_json(a: Metadata, b: Metadata) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
