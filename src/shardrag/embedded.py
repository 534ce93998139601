"""``Shardrag``: the embedded mode, every service in one process over one data dir.

The wiring of the embedded mode lives here and nowhere else: registry, blobs, shards,
embedder, writer and searcher are built from ``Settings`` and handed to each other.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from shardrag import validation
from shardrag.blobs import open_blob_store
from shardrag.cache import CacheKey, CacheKind, open_result_cache
from shardrag.config import Settings
from shardrag.context import (
    Answerer,
    AnswerResult,
    Context,
    ContextAssembler,
    ExtractiveAnswerer,
    OpenAIChatGenerator,
)
from shardrag.datadir import DataDirLock
from shardrag.embed import EmbeddingCache, open_embedder
from shardrag.engine import EngineSettings, ShardEngine, ShardSet
from shardrag.errors import (
    DocumentNotFound,
    InvalidParameter,
    ShardragError,
    TenantNotFound,
    Unavailable,
)
from shardrag.ingest import Chunker
from shardrag.models import (
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
from shardrag.pipeline import ChunkVectorizer, DocumentWriter, IndexBacklog, VersionBuild
from shardrag.registry import TenantRecord, open_registry
from shardrag.retrieval import Searcher

log = logging.getLogger(__name__)
_LAYOUT_FILE = "shardrag.json"


class Shardrag:
    """A shardrag data dir opened in this process (exclusively).

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
        self._layout = self._check_layout()
        self.registry = open_registry(self.data_dir)
        self.blobs = open_blob_store(self.data_dir)
        self.embedding_cache = EmbeddingCache(
            self.data_dir / "embeddings.sqlite3", settings.embedding_cache_entries
        )
        self.shards = ShardSet(
            self.data_dir / "shards",
            EngineSettings(dimension=int(self._layout["dimension"])),
            settings.optimize_threshold,
        )
        self.writer = DocumentWriter(
            registry=self.registry,
            blobs=self.blobs,
            shard_of=self._shard_creating_tenant,
            chunker=Chunker(
                self.embedder.tokenizer, settings.chunk_tokens, settings.chunk_overlap_tokens
            ),
            vectorizer=ChunkVectorizer(self.embedder, self.embedding_cache),
            max_document_bytes=settings.max_document_bytes,
        )
        self.result_cache = (
            open_result_cache(settings.result_cache_entries, settings.result_cache_ttl_seconds)
            if settings.result_cache_entries > 0
            else None
        )
        self.searcher = Searcher(self.embedder, self._route, self.result_cache)
        self.assembler = ContextAssembler(self.embedder.tokenizer)
        self.answerer: Answerer = (
            OpenAIChatGenerator(
                settings.llm_url,
                settings.llm_model,
                settings.llm_api_key,
                settings.llm_timeout_seconds,
            )
            if settings.llm_url
            else ExtractiveAnswerer()
        )
        self._tenant_lock = threading.Lock()
        recovered = self.writer.recover()
        for tenant, doc_id, version, state in recovered:
            log.warning("recovered %s/%s v%s as %s", tenant, doc_id, version, state.value)
        self.backlog = IndexBacklog(self.writer)

    def _check_layout(self) -> dict[str, Any]:
        """Pin the data dir to its embedding model and shard count on first open."""
        path = self.data_dir / _LAYOUT_FILE
        wanted = {"model": self.embedder.model_id, "shards": self.settings.shards}
        if path.exists():
            layout: dict[str, Any] = json.loads(path.read_text())
            if layout["model"] != wanted["model"]:
                raise InvalidParameter(
                    f"data dir {self.data_dir} holds vectors of {layout['model']}, not "
                    f"{wanted['model']}; use another data dir for another model",
                    stored=layout["model"],
                )
            return layout
        layout = {**wanted, "dimension": self.embedder.dimension}
        path.write_text(json.dumps(layout))
        return layout

    @classmethod
    def open(cls, data_dir: str | Path | None = None, **settings: Any) -> Shardrag:
        """Open (creating if needed) a data dir; other settings come from the environment."""
        return cls(Settings.load(data_dir=Path(data_dir) if data_dir else None, **settings))

    # -- tenants ------------------------------------------------------------------------------

    def _place(self, tenant: str) -> int:
        # Stable placement by hash; the registry records it so a later rebalance can move it.
        return zlib.crc32(tenant.encode()) % int(self._layout["shards"])

    def create_tenant(
        self, tenant: str, name: str | None = None, exist_ok: bool = True
    ) -> TenantRecord:
        """Create a tenant and return its record.

        With ``exist_ok`` (the default) an existing tenant is returned as it is; without,
        an existing id raises ``TenantExists``.
        """
        validation.tenant_id(tenant)
        with self._tenant_lock:
            if exist_ok:
                return self.registry.ensure_tenant(tenant, self._place(tenant), name)
            return self.registry.create_tenant(tenant, self._place(tenant), name or tenant)

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
        self.shards.shard(record.shard_id).drop_tenant(tenant)
        self.registry.delete_tenant(tenant)
        # A tenant created again under this name starts at generation 0 again.
        self.searcher.forget()

    def _shard_creating_tenant(self, tenant: str) -> ShardEngine:
        return self.shards.shard(self.create_tenant(tenant).shard_id)

    def _route(self, tenant: str) -> tuple[ShardEngine, int]:
        record = self.tenant(tenant)
        return self.shards.shard(record.shard_id), record.generation

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
    ) -> WriteResult:
        """Store a new version of a document; by default, return once it is live.

        Creates the tenant on first use. Re-putting identical bytes, filename and metadata is a
        no-op (``unchanged=True``). Raises the reason (a ``ShardragError``) when the version
        fails; the previous version then stays live. With ``wait=False`` the document is
        checked, parsed and chunked now (bad input still raises) and the result is the
        ``pending`` version, embedded and committed in the background; its ``write_token``
        makes a later ``search(read_concern="session")`` see it.
        """
        document = DocumentInput(doc_id, bytes(data), filename, metadata or {}, content_type, title)
        tenant = validation.tenant_id(tenant)
        checked = self._checked(document)
        if wait:
            return _with_token(self.writer.put(tenant, checked))
        build: VersionBuild | WriteResult = self.writer.begin(tenant, checked)
        if isinstance(build, WriteResult):
            return _with_token(build)
        accepted = build.accepted()
        self.backlog.submit(build)
        return _with_token(accepted)

    def put_documents(
        self, tenant: str, documents: Iterable[DocumentInput]
    ) -> list[WriteResult | ShardragError]:
        """Write many documents of one tenant, embedding their chunks in shared batches.

        Returns one outcome per document, in order: its ``WriteResult`` or the error that
        failed it (the others are unaffected). Invalid ids or metadata raise before anything
        is written.
        """
        checked = [self._checked(d) for d in documents]
        outcomes = self.writer.put_many(validation.tenant_id(tenant), checked)
        return [o if isinstance(o, ShardragError) else _with_token(o) for o in outcomes]

    def _checked(self, document: DocumentInput) -> DocumentInput:
        self._check_open()
        validation.doc_id(document.doc_id)
        validation.metadata(document.metadata)
        return document

    def delete_document(self, tenant: str, doc_id: str) -> WriteResult:
        """Remove every chunk of a document (its history stays in the registry)."""
        self._check_open()
        self.tenant(tenant)
        return _with_token(self.writer.delete(tenant, validation.doc_id(doc_id)))

    def get_document(self, tenant: str, doc_id: str) -> DocumentInfo:
        """Version, state, chunk count, metadata and last error of a document."""
        self.tenant(tenant)
        info = self.registry.document(tenant, validation.doc_id(doc_id))
        if info is None:
            raise DocumentNotFound(f"no document {doc_id!r} in tenant {tenant!r}", doc_id=doc_id)
        return info

    def list_documents(
        self,
        tenant: str,
        state: VersionState | str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[DocumentInfo]:
        """A page of the tenant's documents by id (deleted ones only with state='deleted')."""
        self.tenant(tenant)
        try:
            wanted = VersionState(state) if state is not None else None
        except ValueError:
            raise InvalidParameter(
                f"state must be one of {[s.value for s in VersionState]}, not {state!r}"
            ) from None
        if not 1 <= limit <= 1000:
            raise InvalidParameter("limit must be from 1 to 1000")
        return self.registry.documents(tenant, wanted, limit, after)

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
    ) -> list[Hit]:
        """The top-k passages of the tenant's live documents for ``query``.

        ``mode``: hybrid (dense + BM25 fused), dense, or keyword. ``filters``: metadata
        equality, ``{"team": "ops"}``, or any-of, ``{"team": ["ops", "dev"]}``.
        ``read_concern``: ``eventual`` (what is live now), ``session`` with the
        ``write_token`` of a write (waits until that write is live or failed), or ``strong``
        (waits for every write of the tenant accepted so far).
        """
        self._check_open()
        self._await_concern(tenant, read_concern, write_token)
        request = SearchRequest(
            tenant=validation.tenant_id(tenant),
            query=validation.query_text(query),
            k=validation.top_k(k, self.settings.max_k),
            mode=validation.search_mode(mode),
            filters=validation.metadata(filters),
            fusion=validation.fusion(fusion or self.settings.fusion),
        )
        return self.searcher.run(request)

    def answer(
        self,
        tenant: str,
        question: str,
        k: int = 8,
        max_context_tokens: int | None = None,
        filters: Metadata | None = None,
    ) -> AnswerResult:
        """Answer ``question`` from the tenant's documents, citing the passages used.

        Searches (hybrid), assembles the best passages within ``max_context_tokens`` with
        numbered citations, then asks the configured language model (``SHARDRAG_LLM_URL``) or,
        without one, answers with the best-supported sentences of the passages.
        """
        budget = self._answer_budget(max_context_tokens)
        _, generation = self._route(validation.tenant_id(tenant))
        key = CacheKey.for_search(
            tenant,
            generation,
            CacheKind.ANSWER,
            validation.query_text(question),
            {"k": k, "budget": budget, "filters": filters or {}, "answerer": self.answerer.name},
        )
        cached = self.result_cache.get(key) if self.result_cache else None
        if isinstance(cached, AnswerResult):
            return cached
        hits = self.search(tenant, question, k=k, filters=filters)
        context = self.assembler.run(question, hits, budget)
        result = AnswerResult(self.answerer.run(context), hits)
        if self.result_cache is not None:
            self.result_cache.put(key, result)
        return result

    def answer_stream(
        self,
        tenant: str,
        question: str,
        k: int = 8,
        max_context_tokens: int | None = None,
        filters: Metadata | None = None,
    ) -> tuple[list[Hit], Context, Iterator[str]]:
        """Like ``answer``, with the text as it is generated: (hits, context, text pieces).

        The language model's pieces arrive as it writes them (an ``Unavailable`` may be
        raised between pieces); the extractive answer comes as one piece. The citations of
        the joined text are ``citations_in(text, context)``.
        """
        budget = self._answer_budget(max_context_tokens)
        hits = self.search(tenant, question, k=k, filters=filters)
        context = self.assembler.run(question, hits, budget)
        if isinstance(self.answerer, OpenAIChatGenerator):
            return hits, context, self.answerer.stream(context)
        return hits, context, iter([self.answerer.run(context).text])

    def _answer_budget(self, max_context_tokens: int | None) -> int:
        budget = max_context_tokens or self.settings.answer_context_tokens
        if budget < 1:
            raise InvalidParameter("max_context_tokens must be at least 1")
        return budget

    def _await_concern(
        self, tenant: str, read_concern: ReadConcern | str, write_token: str | None
    ) -> None:
        concern = validation.read_concern(read_concern)
        timeout = self.settings.read_concern_timeout_seconds
        if concern is ReadConcern.STRONG:
            self.backlog.wait_for_tenant(tenant, timeout)
        elif concern is ReadConcern.SESSION:
            if not write_token:
                raise InvalidParameter("read_concern 'session' needs the write_token of a write")
            token = WriteToken.decode(write_token)
            if token.tenant != tenant:
                raise InvalidParameter("write_token belongs to another tenant")
            self.backlog.wait_until(lambda: self._decided(token), timeout)

    def _decided(self, token: WriteToken) -> bool:
        # Versions of a document are decided in order, so a later one means this one is done.
        info = self.registry.document(token.tenant, token.doc_id)
        if info is None:
            return True
        latest = info.latest
        return latest.version > token.version or latest.state is not VersionState.PENDING

    def document_counts(self) -> dict[VersionState, int]:
        """Documents of every tenant by state (for metrics)."""
        return self.registry.document_counts()

    # -- lifecycle ----------------------------------------------------------------------------

    def optimize(self) -> None:
        """Build the indexes of every open shard now (pauses the process while it runs)."""
        for engine in self.shards.open_shards().values():
            engine.optimize()

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("this Shardrag is closed")

    def close(self) -> None:
        """Flush and release the data dir. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.backlog.close()
            self.shards.close()
            self.embedding_cache.close()
            self.registry.close()
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


def _with_token(result: WriteResult) -> WriteResult:
    token = WriteToken(result.tenant, result.doc_id, result.version).encode()
    return dataclasses.replace(result, write_token=token)
