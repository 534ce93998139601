"""``Shardrag``: the service, over one data dir (embedded) or a cluster's backends.

One class in both modes, with no mode branches: it writes through the ``DocumentWriter`` and
the log and reads through the ``Router``; what stands under it (``Backends``, and the parts of
its mode in ``modes.py``) is picked once from the settings when it opens. Embedded, the router
asks this process's own shards over an in-process transport; in a cluster, the index nodes
over NATS.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from shardrag import acl as access
from shardrag import validation
from shardrag.backends import Backends
from shardrag.blobs.encrypted import EncryptedBlobStore
from shardrag.cluster import ClusterStatus
from shardrag.cluster.placement import Mover, ReplicaMove
from shardrag.cluster.placements import Placements
from shardrag.cluster.routed import RoutedSearch
from shardrag.cluster.shardmap import Placement
from shardrag.cluster.status import collect_status
from shardrag.config import Settings
from shardrag.context import (
    AnswerResult,
    AnswerStream,
    ContextAssembler,
    ExtractiveAnswerer,
    OpenAIChatGenerator,
)
from shardrag.context.answering import Answering
from shardrag.datadir import DataDirLock
from shardrag.embed import EmbeddingCache, open_embedder
from shardrag.errors import (
    ClusterOnly,
    DocumentNotFound,
    EncryptionOff,
    InvalidParameter,
    ShardragError,
    TenantNotFound,
    Unavailable,
    error_from,
)
from shardrag.models import (
    DeadLetterInfo,
    DocumentInfo,
    DocumentInput,
    Fusion,
    Hit,
    Metadata,
    ReadConcern,
    SearchMode,
    SearchRequest,
    VersionState,
    WriteResult,
    WriteToken,
)
from shardrag.modes import open_mode
from shardrag.observability.metrics import PipelineStats
from shardrag.pipeline import (
    Accepted,
    ChunkVectorizer,
    DocumentWriter,
    Reconciler,
    ReconcileReport,
)
from shardrag.pipeline.events import VersionRef, shard_subject
from shardrag.pipeline.idempotency import IdempotentWrites
from shardrag.pipeline.operations import dead_letters_of, pipeline_stats, redrive
from shardrag.pipeline.vectors import tenant_scopes
from shardrag.registry import TenantRecord
from shardrag.retrieval import Routed, Searcher
from shardrag.retrieval.consistency import ReadPositions

log = logging.getLogger(__name__)


class Shardrag:
    """A shardrag data dir (or a cluster) opened in this process.

    Thread-safe: one object serves many writer and searcher threads at once.

    >>> rag = Shardrag.open("./shardrag-data")                      # doctest: +SKIP
    >>> rag.put_document("acme", "handbook", b"...", filename="handbook.md")  # doctest: +SKIP
    >>> rag.search("acme", "how are shards replicated?", k=5)       # doctest: +SKIP
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self._lock = DataDirLock(self.data_dir)
        self._closed = False
        try:
            self._open_parts()
        except BaseException:
            self._lock.release()
            raise

    def _open_parts(self) -> None:
        settings = self.settings
        self.embedder = open_embedder(settings)
        self.backends = Backends.from_settings(settings, "api")
        try:
            self.embedding_cache = EmbeddingCache(
                self.data_dir / "embeddings.sqlite3", settings.embedding_cache_entries
            )
            vectorizer = ChunkVectorizer(self.embedder, self.embedding_cache)
            self.mode = open_mode(settings, self.backends, self.embedder, vectorizer)
        except BaseException:
            self.backends.close()
            raise
        backends, mode = self.backends, self.mode
        self.registry = backends.registry
        self.blobs = backends.blobs
        self.log = backends.log
        self.shard_map = backends.shard_map
        self.result_cache = backends.result_cache
        self.layout = mode.layout
        self.shards = mode.shards
        self.pipeline = mode.pipeline
        self.router = mode.router
        self.placements = Placements(self.shard_map, self.registry, self.layout)
        self.writer = DocumentWriter(
            self.registry, self.blobs, self.log, self.placements, settings.max_document_bytes
        )
        self.reconciler = (
            Reconciler(
                self.registry,
                self.log,
                self.writer,
                self.shards.shard,
                lambda: range(self.layout.shards),
            )
            if self.shards is not None
            else None
        )
        self.idempotent = IdempotentWrites(self.registry)
        self.read_positions = ReadPositions(
            self.registry,
            self.log,
            self.placements,
            self.pipeline.wait_until,
            settings.read_concern_timeout_seconds,
        )
        self.searcher = Searcher(self.embedder, self._route, self.result_cache)
        self.answering = Answering(
            lambda tenant, question, k, mode, filters, groups: self.search(
                tenant, question, k, mode=mode, filters=filters, groups=groups
            ),
            lambda tenant: _cache_epoch(self.tenant(tenant)),
            ContextAssembler(self.embedder.tokenizer),
            (
                OpenAIChatGenerator(
                    settings.llm_url,
                    settings.llm_model,
                    settings.llm_api_key,
                    settings.llm_timeout_seconds,
                )
                if settings.llm_url
                else ExtractiveAnswerer(self.embedder)
            ),
            self.result_cache,
            settings.answer_context_tokens,
        )
        self._moving: dict[str, threading.Thread] = {}
        # A crash between a version's registry row and its event leaves it pending without
        # one: append them again (deduplicated where the event made it into the log).
        resubmitted = self.writer.resubmit_pending()
        if resubmitted:
            log.info("resubmitted %d pending version(s) to the write pipeline", resubmitted)
        self.pipeline.start()
        if mode.placer is not None:
            mode.placer.start()

    @classmethod
    def open(cls, data_dir: str | Path | None = None, **settings: Any) -> Shardrag:
        """Open (creating if needed) a data dir; other settings come from the environment."""
        return cls(Settings.load(data_dir=Path(data_dir) if data_dir else None, **settings))

    # -- tenants ------------------------------------------------------------------------------

    def create_tenant(
        self, tenant: str, name: str | None = None, exist_ok: bool = True
    ) -> TenantRecord:
        """Create a tenant and return its record.

        With ``exist_ok`` (the default) an existing tenant is returned as it is; without,
        an existing id raises ``TenantExists``.
        """
        return self.placements.create_tenant(tenant, name, exist_ok)

    def tenants(self) -> list[TenantRecord]:
        """Every tenant of the data dir."""
        return self.registry.list_tenants()

    def tenant(self, tenant: str) -> TenantRecord:
        """The tenant's record; TenantNotFound if it does not exist."""
        validation.tenant_id(tenant)
        record = self.registry.get_tenant(tenant)
        if record is None:
            raise TenantNotFound(f"no tenant {tenant!r}", tenant=tenant)
        return record

    def drop_tenant(self, tenant: str) -> None:
        """Delete a tenant with every document and chunk it has."""
        record = self.tenant(tenant)
        placement = self.placements.of(tenant, fresh=True)
        shards = sorted({*placement.shards, *placement.target, *placement.source})
        positions = self.writer.drop_tenant(tenant, shards)
        if isinstance(self.backends.blobs, EncryptedBlobStore):
            # Its data key went with its registry rows: this process must not keep a copy.
            self.backends.blobs.keyring.forget(tenant)
        # Its vectors say something of its text: none is kept (a recreated tenant could not
        # reach them anyway, ``reuse_scope``).
        self.embedding_cache.forget(tenant_scopes(tenant))
        for shard_id in (*placement.target, *(placement.shards if placement.source else ())):
            self.shard_map.clear_move(shard_id)  # a move under way fills nothing any more
        self.shard_map.forget_tenant(tenant)
        self.placements.forget(tenant)
        self.pipeline.wait_until(
            lambda: all(self._applied(s) >= p for s, p in positions.items()),
            self.settings.write_timeout_seconds,
        )
        # A tenant created again under this name starts at generation 0 again.
        self.searcher.forget()
        log.info("tenant %s dropped (record of shard %d)", tenant, record.shard_id)

    def _route(self, tenant: str, positions: Mapping[int, int]) -> Routed:
        """The tenant's search through the router, over the shards it is placed on."""
        record = self.tenant(tenant)
        placement = self.placements.of(tenant)
        if any(s not in placement.shards and s not in placement.source for s in positions):
            # A token of a write to shards this process did not know the tenant on yet.
            placement = self.placements.of(tenant, fresh=True)
        search = RoutedSearch(
            self.router,
            list(placement.shards),
            positions,
            self.settings.read_concern_timeout_seconds,
            heads=lambda shard_id: self.log.last_sequence(shard_subject(shard_id), timeout=0.5),
            sources=placement.source,
        )
        return Routed(search, record.generation, record.incarnation, search.cacheable)

    # -- documents ----------------------------------------------------------------------------

    def put_document(
        self,
        tenant: str,
        doc_id: str,
        data: bytes,
        filename: str | None = None,
        metadata: Metadata | None = None,
        content_type: str | None = None,
        title: str | None = None,
        wait: bool = True,
        idempotency_key: str | None = None,
        acl: Iterable[str] | None = None,
    ) -> WriteResult:
        """Store a new version of a document; by default, return once it is live.

        Creates the tenant on first use. Re-putting identical bytes, filename and metadata is a
        no-op (``unchanged=True``). Raises the reason (a ``ShardragError``) when the version
        fails; the previous version then stays live. With ``wait=False`` the result is the
        ``pending`` version as soon as it is durably in the log (only an empty, too large or
        unsupported document raises at once); its ``write_token`` makes a later
        ``search(read_concern="session")`` see it, and ``get_document`` shows how it ended.

        ``idempotency_key``: a retry of a write with the same key gets the first write's
        result again (``replayed=True``) instead of a new version; the same key with other
        content raises ``IdempotencyConflict``.
        """
        tenant = validation.tenant_id(tenant)
        document = self._checked(
            DocumentInput(
                doc_id, bytes(data), filename, metadata or {}, content_type, title, tuple(acl or ())
            )
        )
        if idempotency_key is None:
            return self._put(tenant, document, wait)
        return self.idempotent.run(
            tenant, idempotency_key, document, wait, lambda: self._put(tenant, document, wait)
        )

    def _put(self, tenant: str, document: DocumentInput, wait: bool) -> WriteResult:
        accepted = self.writer.accept(tenant, self._checked(document), submit=self._through_log)
        if isinstance(accepted, WriteResult):
            return self._with_token(accepted)
        if self.settings.write_path == "direct":
            self.pipeline.run_direct([accepted.event] if accepted.event else [])
        elif not wait:
            return self._with_token(accepted.result, accepted.ref)
        outcome = self._finished(accepted)
        if isinstance(outcome, ShardragError):
            raise outcome
        return outcome

    def put_documents(
        self, tenant: str, documents: Iterable[DocumentInput]
    ) -> list[WriteResult | ShardragError]:
        """Write many documents of one tenant, embedding their chunks in shared batches.

        Returns one outcome per document, in order, once each is decided: its
        ``WriteResult`` or the error that failed that document (the others are unaffected).
        Invalid ids or metadata raise before anything is written.
        """
        tenant = validation.tenant_id(tenant)
        checked = [self._checked(d) for d in documents]
        if len({d.doc_id for d in checked}) != len(checked):
            raise InvalidParameter("a batch names the same document twice")
        accepted: list[Accepted | WriteResult | ShardragError] = []
        for document in checked:
            try:
                accepted.append(self.writer.accept(tenant, document, submit=self._through_log))
            except ShardragError as exc:
                accepted.append(exc)
        if self.settings.write_path == "direct":
            self.pipeline.run_direct(
                [a.event for a in accepted if isinstance(a, Accepted) and a.event is not None]
            )
        outcomes: list[WriteResult | ShardragError] = []
        for item in accepted:
            if isinstance(item, Accepted):
                outcomes.append(self._finished(item))
            elif isinstance(item, WriteResult):
                outcomes.append(self._with_token(item))
            else:
                outcomes.append(item)
        return outcomes

    @property
    def _through_log(self) -> bool:
        return self.settings.write_path == "log"

    def _checked(self, document: DocumentInput) -> DocumentInput:
        """The document valid, with its access groups moved into its stored metadata
        (``acl.py``); checking it again changes nothing."""
        self._check_open()
        validation.doc_id(document.doc_id)
        validation.filename(document.filename)
        metadata, stored = access.split(document.metadata)
        validation.metadata(metadata)
        names = access.groups(list(document.acl or stored), "acl")
        return dataclasses.replace(document, metadata=access.with_acl(metadata, names), acl=())

    def _finished(self, accepted: Accepted) -> WriteResult | ShardragError:
        """Wait until an accepted version is decided; its result, or the error that failed it."""
        ref = accepted.ref

        def decided() -> bool:
            info = self.registry.version(ref.tenant, ref.doc_id, ref.version)
            return info is None or info.state is not VersionState.PENDING

        timeout = self.settings.write_timeout_seconds
        if not self.pipeline.wait_until(decided, timeout):
            return Unavailable(
                f"version {ref.version} of {ref.doc_id!r} is still pending after {timeout:g} s; "
                "it completes in the background (see its state with get_document)",
                version=ref.version,
                write_token=self._with_token(accepted.result, ref).write_token,
            )
        info = self.registry.version(ref.tenant, ref.doc_id, ref.version)
        if info is None:
            return DocumentNotFound(
                f"document {ref.doc_id!r} is gone (its tenant was dropped)", doc_id=ref.doc_id
            )
        if info.state is VersionState.FAILED:
            return error_from(
                info.error_code or "internal_error", info.error or "failed", version=ref.version
            )
        if info.commit_position is not None:
            # Live in the registry means one replica applied it; searchable means every live
            # replica did (an eventual search may go to any of them). Bounded: a replica
            # that is stuck must not hold the writer; session reads still see the write.
            position = info.commit_position
            self.pipeline.wait_until(
                lambda: self._applied(ref.shard_id) >= position,
                self.settings.read_concern_timeout_seconds,
            )
        result = WriteResult(
            ref.tenant,
            ref.doc_id,
            ref.version,
            info.state,
            info.chunk_count if info.state is VersionState.LIVE else 0,
            reused_vectors=info.reused_vectors,
            embedded_chunks=info.embedded_chunks,
        )
        return self._with_token(result, ref, info.commit_position)

    def _with_token(
        self, result: WriteResult, ref: VersionRef | None = None, position: int | None = None
    ) -> WriteResult:
        shard_id = ref.shard_id if ref else None
        token = WriteToken(result.tenant, result.doc_id, result.version, shard_id, position)
        return dataclasses.replace(result, write_token=token.encode())

    def delete_document(
        self, tenant: str, doc_id: str, groups: Iterable[str] | None = None
    ) -> WriteResult:
        """Remove every chunk of a document (its history stays in the registry).

        ``groups``: the caller's access groups; a document outside them is not found.
        """
        self._check_open()
        if groups is not None:
            self.get_document(tenant, doc_id, groups)
        self.tenant(tenant)
        outcome = self._finished(self.writer.delete(tenant, validation.doc_id(doc_id)))
        if isinstance(outcome, ShardragError):
            raise outcome
        return outcome

    def get_document(
        self, tenant: str, doc_id: str, groups: Iterable[str] | None = None
    ) -> DocumentInfo:
        """Version, state, chunk count, metadata and last error of a document.

        ``groups``: the caller's access groups; a document outside them is not found.
        """
        self.tenant(tenant)
        info = self.registry.document(tenant, validation.doc_id(doc_id))
        if info is None or not access.may_read(_groups(groups), info.acl):
            raise DocumentNotFound(f"no document {doc_id!r} in tenant {tenant!r}", doc_id=doc_id)
        return info

    def get_original(self, tenant: str, doc_id: str, groups: Iterable[str] | None = None) -> bytes:
        """The bytes the live version of a document was written with.

        ``DocumentNotFound`` when no version is live or ``groups`` may not read it.
        """
        return self.original_of(self.get_document(tenant, doc_id, groups))

    def original_of(self, info: DocumentInfo) -> bytes:
        """The bytes of ``info``'s live version (``info`` as ``get_document`` gave it, so
        read by a caller allowed to)."""
        if info.live is None or info.live.content_hash is None:
            raise DocumentNotFound(
                f"document {info.doc_id!r} has no live version", doc_id=info.doc_id
            )
        return self.backends.blobs.get(info.live.content_hash, owner=info.tenant)

    def list_documents(
        self,
        tenant: str,
        state: VersionState | str | None = None,
        limit: int = 100,
        after: str | None = None,
        groups: Iterable[str] | None = None,
    ) -> list[DocumentInfo]:
        """A page of the tenant's documents by id (deleted ones only with state='deleted');
        with ``groups``, only those the caller may read."""
        self.tenant(tenant)
        try:
            wanted = VersionState(state) if state is not None else None
        except ValueError:
            raise InvalidParameter(
                f"state must be one of {[s.value for s in VersionState]}, not {state!r}"
            ) from None
        if not 1 <= limit <= 1000:
            raise InvalidParameter("limit must be from 1 to 1000")
        effective = _groups(groups)
        if effective is None:
            return self.registry.documents(tenant, wanted, limit, after)
        # Pages of the registry until ``limit`` readable ones (or the end) are found.
        found: list[DocumentInfo] = []
        while len(found) < limit:
            page = self.registry.documents(tenant, wanted, limit, after)
            found += [d for d in page if access.may_read(effective, d.acl)]
            if len(page) < limit:
                break
            after = page[-1].doc_id
        return found[:limit]

    # -- search -------------------------------------------------------------------------------

    def search(
        self,
        tenant: str,
        query: str,
        k: int = 10,
        mode: SearchMode | str = SearchMode.HYBRID,
        filters: Metadata | None = None,
        fusion: Fusion | str | None = None,
        read_concern: ReadConcern | str = ReadConcern.EVENTUAL,
        write_token: str | None = None,
        groups: Iterable[str] | None = None,
    ) -> list[Hit]:
        """The top-k passages of the tenant's live documents for ``query``.

        ``mode``: hybrid (dense + BM25 fused), dense, or keyword. ``filters``: metadata
        equality, ``{"team": "ops"}``, or any-of, ``{"team": ["ops", "dev"]}``.
        ``read_concern``: ``eventual`` (what is live now), ``session`` with the
        ``write_token`` of a write (waits until that write is live or failed), or ``strong``
        (waits for every write of the tenant accepted so far). ``groups``: the caller's access
        groups (``None``: every document); only documents of those groups or of none match.
        """
        self._check_open()
        validation.tenant_id(tenant)
        positions = self.read_positions.resolve(tenant, read_concern, write_token)
        request = SearchRequest(
            tenant=tenant,
            query=validation.query_text(query),
            k=validation.top_k(k, self.settings.max_k),
            mode=validation.search_mode(mode),
            filters=validation.metadata(filters),
            fusion=validation.fusion(fusion or self.settings.fusion),
            groups=_groups(groups),
        )
        return self.searcher.run(request, positions)

    def embed(self, tenant: str, texts: list[str], query: bool = False) -> list[list[float]]:
        """Vectors of ``texts`` by the tenant's embedding model: as passages are indexed, or
        (``query``) as questions are searched. Each text is at most a query's length."""
        self._check_open()
        self.tenant(tenant)
        checked = [validation.query_text(text) if query else _passage(text) for text in texts]
        if query:
            return [self.embedder.embed_query(text) for text in checked]
        return self.embedder.embed_documents(checked)

    def answer(
        self,
        tenant: str,
        question: str,
        k: int = 8,
        max_context_tokens: int | None = None,
        filters: Metadata | None = None,
        groups: Iterable[str] | None = None,
        mode: SearchMode | str = SearchMode.HYBRID,
    ) -> AnswerResult:
        """Answer ``question`` from the tenant's documents, citing the passages used.

        Searches (in ``mode``, hybrid by default), assembles the best passages within
        ``max_context_tokens`` with numbered citations, then asks the configured language
        model (``SHARDRAG_LLM_URL``) or, without one, answers with the sentences of the
        passages that best support the question (``ExtractiveAnswerer``). Answers are
        cached like searches (until the tenant's documents change).
        """
        return self.answering.answer(
            tenant,
            question,
            k,
            max_context_tokens,
            filters,
            _groups(groups),
            validation.search_mode(mode),
        )

    def answer_stream(
        self,
        tenant: str,
        question: str,
        k: int = 8,
        max_context_tokens: int | None = None,
        filters: Metadata | None = None,
        groups: Iterable[str] | None = None,
        mode: SearchMode | str = SearchMode.HYBRID,
    ) -> AnswerStream:
        """Like ``answer``, with the text as it is generated (``AnswerStream``).

        The language model's pieces arrive as it writes them (an ``Unavailable`` may be
        raised between pieces); the extractive answer, and a cached one, come as one piece.
        The citations of the joined text are ``citations_in(text, context)``. A stream read
        to its end is cached for ``answer`` and later streams.
        """
        return self.answering.stream(
            tenant,
            question,
            k,
            max_context_tokens,
            filters,
            _groups(groups),
            validation.search_mode(mode),
        )

    def _applied(self, shard_id: int) -> int | float:
        """How far every live replica of the shard has applied its log (the slowest one;
        ∞ if none is known). In a cluster, as the nodes' heartbeats report it."""
        applied = [
            node.applied[shard_id]
            for node in self.mode.directory.nodes()
            if shard_id in node.applied
        ]
        return min(applied) if applied else float("inf")

    def cluster_status(self) -> ClusterStatus:
        """The layout, each shard's replicas and each live node with its lag (``cluster status``).

        Embedded, the one node is this process (``local``).
        """
        return collect_status(
            self.layout, self.shard_map, self.log, self.mode.directory.nodes(fresh=True)
        )

    # -- the pipeline's operations --------------------------------------------------------------

    def pending_writes(self) -> int:
        """Versions accepted and not yet decided (live, failed or superseded), all tenants."""
        return len(self.registry.pending_versions())

    def pipeline_stats(self) -> PipelineStats:
        """Pending writes, dead letters, and how far each shard's log is applied (metrics)."""
        nodes = self.mode.directory.nodes(fresh=True)
        return pipeline_stats(
            self.registry, self.log, self.layout.shards, [n.applied for n in nodes]
        )

    def dead_letters(
        self, tenant: str, limit: int = 100, groups: Iterable[str] | None = None
    ) -> list[DeadLetterInfo]:
        """The tenant's events that a stage gave up on, oldest first (with ``groups``, those
        of documents the caller may read)."""
        record = self.tenant(tenant)
        return dead_letters_of(
            self.log, tenant, limit, record.incarnation, self._readable(tenant, groups)
        )

    def redrive(
        self, tenant: str, dead_letter_id: int, groups: Iterable[str] | None = None
    ) -> DeadLetterInfo:
        """Put a dead letter of the tenant back in its stream (after fixing its cause).

        Its version is pending again and flows on from the stage that gave up on it.
        """
        record = self.tenant(tenant)
        readable = self._readable(tenant, groups)
        return redrive(
            self.log, self.registry, tenant, dead_letter_id, record.incarnation, readable
        )

    def _readable(self, tenant: str, groups: Iterable[str] | None) -> Callable[[str], bool]:
        """Whether a caller of ``groups`` may read a document of the tenant, by id."""
        effective = _groups(groups)
        if effective is None:
            return lambda doc_id: True

        def readable(doc_id: str) -> bool:
            info = self.registry.document(tenant, doc_id)
            return info is not None and access.may_read(effective, info.acl)

        return readable

    def reconcile(self, dry_run: bool = False) -> ReconcileReport:
        """Compare the registry with the shards and repair what drifted (see pipeline/reconcile)."""
        self._check_open()
        if self.reconciler is None:
            raise Unavailable(
                "the reconciler compares the registry with shards of this process; in the "
                "distributed mode it does not run yet (docs/cluster.md)"
            )
        return self.reconciler.run(dry_run)

    def rotate_master_key(self) -> int:
        """Re-wrap every data key under the master key (unwrapping with it or the previous
        one); how many were re-wrapped. ``EncryptionOff`` without a master key."""
        self._check_open()
        blobs = self.backends.blobs
        if not isinstance(blobs, EncryptedBlobStore):
            raise EncryptionOff("no master key is set (SHARDRAG_MASTER_KEY): nothing to rotate")
        return blobs.keyring.rotate()

    def document_counts(self) -> dict[VersionState, int]:
        """Documents of every tenant by state (for metrics)."""
        return self.registry.document_counts()

    # -- lifecycle ----------------------------------------------------------------------------

    def optimize(self) -> None:
        """Build the indexes of every open shard now (pauses the process while it runs)."""
        for engine in self.shards.open_shards().values() if self.shards else []:
            engine.optimize()

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("this Shardrag is closed")

    # -- placement (the distributed mode) -------------------------------------------------------

    def _mover(self, progress: Callable[[str], None] | None = None) -> Mover:
        if self.mode.mover is None:
            raise ClusterOnly(
                "tenant placement changes need the distributed mode: the embedded mode holds "
                "every shard in one process"
            )
        return self.mode.mover(progress)

    def promote_tenant(
        self,
        tenant: str,
        shards: int = 1,
        wait: bool = True,
        progress: Callable[[str], None] | None = None,
    ) -> Placement:
        """Move the tenant to ``shards`` dedicated shards (a promotion, or a split when it has
        some already); resumes a move under way. Without ``wait`` it runs in the background
        and the placement as it is now is returned (its phase shows the progress)."""
        validation.tenant_id(tenant)
        self.tenant(tenant)
        mover = self._mover(progress)
        if wait:
            return mover.promote(tenant, shards)
        running = self._moving.get(tenant)
        if running is None or not running.is_alive():

            def move() -> None:
                try:
                    mover.promote(tenant, shards)
                except Exception:
                    log.exception("moving tenant %s to %d shard(s) failed", tenant, shards)

            running = threading.Thread(target=move, name=f"move-{tenant}", daemon=True)
            self._moving[tenant] = running
            running.start()
        return self.placements.of(tenant, fresh=True)

    def rebalance(self, dry_run: bool = False) -> list[ReplicaMove]:
        """Even out the replicas per live node (``Mover.rebalance``); the moves."""
        return self._mover().rebalance(dry_run)

    def move_replica(self, shard_id: int, from_node: str, to_node: str) -> None:
        """Move one replica of a shard between nodes without a gap."""
        self._mover().move_replica(shard_id, from_node, to_node)

    def close(self) -> None:
        """Flush and release the data dir. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.mode.placer is not None:
                self.mode.placer.stop()
            self.pipeline.stop()
            self.mode.close()
            self.backends.close()
            self.embedding_cache.close()
        finally:
            self._lock.release()

    def __enter__(self) -> Shardrag:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _cache_epoch(record: TenantRecord) -> tuple[str, int]:
    """What a tenant's cached answers are keyed by: its incarnation and cache generation."""
    return record.incarnation, record.generation


def _groups(value: Iterable[str] | None) -> access.Groups:
    """A caller's effective groups, validated (None: every document)."""
    return None if value is None else access.groups(list(value))


def _passage(text: str) -> str:
    """A text to embed as a passage: not empty, within a query's length (longer ones would be
    cut by the model anyway; documents are chunked first)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidParameter("a text to embed must not be empty")
    if len(text) > validation.MAX_QUERY_CHARS:
        raise InvalidParameter(
            f"a text to embed is {len(text)} characters; the limit is {validation.MAX_QUERY_CHARS}"
        )
    return text
