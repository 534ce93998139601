"""``Shardrag``: the embedded mode, every service in one process over one data dir.

The wiring of the embedded mode lives here and nowhere else: registry, blobs, shards,
embedder, writer and searcher are built from ``Settings`` and handed to each other.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from shardrag import validation
from shardrag.blobs import open_blob_store
from shardrag.cache import CacheKey, CacheKind, open_result_cache
from shardrag.cluster import LOCAL_NODE, ClusterStatus, Layout, NodeInfo, open_shard_map
from shardrag.cluster.placement import Mover, ReplicaMove, wanted_shards
from shardrag.cluster.routed import RoutedSearch
from shardrag.cluster.router import Router
from shardrag.cluster.shardmap import Placement
from shardrag.cluster.status import collect_status
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
from shardrag.engine import EngineSettings, ShardSet
from shardrag.errors import (
    ClusterOnly,
    DeadLetterNotFound,
    DocumentNotFound,
    InvalidParameter,
    ReadConcernTimeout,
    ShardragError,
    TenantNotFound,
    Unavailable,
    error_from,
)
from shardrag.ingest import Chunker
from shardrag.log import open_log
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
from shardrag.natsconn import NatsConnection
from shardrag.observability.metrics import PipelineStats
from shardrag.pipeline import (
    Accepted,
    ChunkVectorizer,
    DocumentWriter,
    Pipeline,
    Reconciler,
    ReconcileReport,
    Retry,
    parse_stages,
)
from shardrag.pipeline.events import VersionRef, ref_of, shard_subject
from shardrag.registry import TenantRecord, open_registry
from shardrag.retrieval import Routed, Searcher

log = logging.getLogger(__name__)
_LAYOUT_FILE = "shardrag.json"
# How long a tenant's placement read from the shard map is trusted (seconds).
_PLACEMENT_TTL = 5.0
#: How old a remembered placement may be while a background read refreshes it.
_PLACEMENT_STALE = 8.0


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
        self._opened_at = time.time()
        try:
            self._open_parts()
        except BaseException:
            self._lock.release()
            raise

    def _open_parts(self) -> None:
        settings = self.settings
        self.embedder = open_embedder(settings)
        self.shard_map = open_shard_map(settings)
        self.layout = self._check_layout()
        self.registry = open_registry(self.data_dir, settings.registry_url)
        self.blobs = open_blob_store(
            self.data_dir, settings.blob_url, settings.s3_endpoint_url, settings.s3_region
        )
        self.embedding_cache = EmbeddingCache(
            self.data_dir / "embeddings.sqlite3", settings.embedding_cache_entries
        )
        # The distributed mode hosts no shard here: index nodes do, behind the router.
        self.shards = (
            None
            if settings.cluster
            else ShardSet(
                self.data_dir / "shards",
                EngineSettings(dimension=self.layout.dimension),
                settings.optimize_threshold,
            )
        )
        if settings.write_path not in ("log", "direct") or (
            settings.cluster and settings.write_path != "log"
        ):
            raise InvalidParameter(
                f"write_path must be 'log' or (embedded only) 'direct', not {settings.write_path!r}"
            )
        self.log = open_log(
            self.data_dir, settings.nats_url, settings.log_prefix, settings.log_replicas
        )
        self.writer = DocumentWriter(
            registry=self.registry,
            blobs=self.blobs,
            log=self.log,
            place=self.create_tenant,
            max_document_bytes=settings.max_document_bytes,
            shard_for=self._shard_for,
        )
        self.pipeline = Pipeline(
            log=self.log,
            registry=self.registry,
            blobs=self.blobs,
            chunker=Chunker(
                self.embedder.tokenizer, settings.chunk_tokens, settings.chunk_overlap_tokens
            ),
            vectorizer=ChunkVectorizer(self.embedder, self.embedding_cache),
            shard=self.shards.shard if self.shards else None,
            state_dir=self.data_dir / "shards",
            stages=self._stages(),
            retry=Retry.from_settings(settings),
        )
        self.reconciler = (
            Reconciler(
                self.registry,
                self.log,
                self.writer,
                self.shards.shard,
                lambda: range(self.layout.shards),
            )
            if self.shards
            else None
        )
        self.result_cache = (
            open_result_cache(
                settings.result_cache_entries,
                settings.result_cache_ttl_seconds,
                settings.redis_url,
                settings.cache_prefix,
            )
            if settings.result_cache_entries > 0
            else None
        )
        self.router = (
            Router.from_settings(
                NatsConnection(settings.nats_url, name="router"), self.shard_map, settings
            )
            if settings.cluster and settings.nats_url
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
        self._placements: dict[str, tuple[float, Placement]] = {}
        self._refreshing: set[str] = set()
        self._refresh_lock = threading.Lock()
        self._heartbeats: tuple[float, list[NodeInfo]] = (0.0, [])
        # A crash between a version's registry row and its event leaves it pending without
        # one: append them again (deduplicated where the event made it into the log).
        resubmitted = self.writer.resubmit_pending()
        if resubmitted:
            log.info("resubmitted %d pending version(s) to the write pipeline", resubmitted)
        self.pipeline.start()
        self._moving: dict[str, threading.Thread] = {}
        self._placer_stopped = threading.Event()
        self._placer: threading.Thread | None = None
        if self.router is not None and (
            settings.promote_threshold_chunks > 0 or settings.split_threshold_chunks > 0
        ):
            self._placer = threading.Thread(target=self._place_by_size, name="placer", daemon=True)
            self._placer.start()

    def _check_layout(self) -> Layout:
        """Pin the data dir (or the cluster) to its embedding model and shard count.

        Embedded: the data dir's ``shardrag.json`` is written on first open, and the shard
        count it holds wins over the setting. Cluster: the shard map's layout (written by
        ``shardrag cluster init``, or here if it is missing) must agree with the model.
        """
        wanted = Layout(
            self.settings.shards,
            self.settings.replicas,
            self.embedder.model_id,
            self.embedder.dimension,
        )
        if self.settings.cluster:
            return self.shard_map.init_layout(wanted)
        path = self.data_dir / _LAYOUT_FILE
        if path.exists():
            stored: dict[str, Any] = json.loads(path.read_text())
            if stored["model"] != wanted.model:
                raise InvalidParameter(
                    f"data dir {self.data_dir} holds vectors of {stored['model']}, not "
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
        layout = self.shard_map.init_layout(dataclasses.replace(wanted, replicas=1))
        for shard_id in range(layout.shards):
            if not self.shard_map.replicas(shard_id).nodes:
                self.shard_map.set_replicas(shard_id, [LOCAL_NODE], 0)
        return layout

    def _stages(self) -> frozenset[str]:
        """The write-path stages this process runs (never the index stage in a cluster)."""
        stages = parse_stages(self.settings.stages)
        if self.settings.cluster:
            if "index" in stages and self.settings.stages.strip().lower() != "all":
                raise InvalidParameter(
                    "in the distributed mode the index stage runs on index nodes "
                    "(shardrag node), not in this process"
                )
            stages = stages - {"index"}
        return stages

    @classmethod
    def open(cls, data_dir: str | Path | None = None, **settings: Any) -> Shardrag:
        """Open (creating if needed) a data dir; other settings come from the environment."""
        return cls(Settings.load(data_dir=Path(data_dir) if data_dir else None, **settings))

    # -- tenants ------------------------------------------------------------------------------

    def _place(self, tenant: str) -> int:
        # Stable placement by hash, recorded in the shard map (compare-and-set: two api
        # processes creating the same tenant agree) and in the registry.
        wanted = zlib.crc32(tenant.encode()) % self.layout.shards
        return self.shard_map.place_tenant(tenant, [wanted])[0]

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
        placement = self._placement_of(tenant, fresh=True)
        shards = sorted({*placement.shards, *placement.target, *placement.source})
        positions = self.writer.drop_tenant(tenant, shards)
        for shard_id in (*placement.target, *(placement.shards if placement.source else ())):
            self.shard_map.clear_move(shard_id)  # a move under way fills nothing any more
        self.shard_map.forget_tenant(tenant)
        self._placements.pop(tenant, None)
        self.pipeline.wait_until(
            lambda: all(self._applied(s) >= p for s, p in positions.items()),
            self.settings.write_timeout_seconds,
        )
        # A tenant created again under this name starts at generation 0 again.
        self.searcher.forget()
        log.info("tenant %s dropped (record of shard %d)", tenant, record.shard_id)

    def _placement_of(self, tenant: str, fresh: bool = False) -> Placement:
        """The tenant's placement from the shard map, remembered for a few seconds.

        A placement changes only when the tenant is dropped or moved, so a search need not ask
        the map each time. Past ``_PLACEMENT_TTL`` the remembered one still serves while a
        background read refreshes it, up to ``_PLACEMENT_STALE`` (less than the grace a move
        gives api processes, ``cluster/placement.py``): a map that is slow for a moment (its
        bucket electing a leader after a NATS server died) holds no search. Older than that,
        the map is read first; if it is unavailable the placement read before serves (a
        warning). ``fresh`` reads the map.
        """
        now = time.monotonic()
        known = self._placements.get(tenant)
        if not fresh and known is not None:
            age = now - known[0]
            if age < _PLACEMENT_TTL:
                return known[1]
            if age < _PLACEMENT_STALE:
                self._refresh_soon(tenant)
                return known[1]
        return self._read_placement(tenant, known)

    def _read_placement(
        self, tenant: str, known: tuple[float, Placement] | None = None
    ) -> Placement:
        now = time.monotonic()
        try:
            placement = self.shard_map.placement(tenant)
            if placement is None:  # placed before the shard map held placements
                shards = self.shard_map.place_tenant(tenant, [self.tenant(tenant).shard_id])
                placement = Placement(tuple(shards))
        except Unavailable:
            if known is None:
                raise
            log.warning("shard map unavailable; using the placement of %s read before", tenant)
            return known[1]
        self._placements[tenant] = (now, placement)
        return placement

    def _refresh_soon(self, tenant: str) -> None:
        """Read the tenant's placement again in the background (once at a time)."""
        with self._refresh_lock:
            if tenant in self._refreshing:
                return
            self._refreshing.add(tenant)

        def refresh() -> None:
            try:
                self._read_placement(tenant, self._placements.get(tenant))
            except Exception:
                log.exception("refreshing the placement of %s failed", tenant)
            finally:
                with self._refresh_lock:
                    self._refreshing.discard(tenant)

        threading.Thread(target=refresh, name="placement-refresh", daemon=True).start()

    def _shards_of(self, tenant: str) -> list[int]:
        """The shards a search of the tenant asks now."""
        return list(self._placement_of(tenant).shards)

    def _shard_for(self, record: TenantRecord, doc_id: str) -> int:
        """The shard a new version of a document goes to: from the placement as the map has
        it now (a version pending before a move's flip is waited for by the move). Never a
        placement read before: routed by an old one, the version could miss a move's copy
        (so a map that does not answer refuses the write, 503)."""
        return self._read_placement(record.tenant).shard_of(doc_id)

    def _route(self, tenant: str, positions: Mapping[int, int]) -> Routed:
        record = self.tenant(tenant)
        if self.router is None:
            assert self.shards is not None
            return Routed(self.shards.shard(record.shard_id), record.generation)
        placement = self._placement_of(tenant)
        if any(s not in placement.shards and s not in placement.source for s in positions):
            # A token of a write to shards this process did not know the tenant on yet.
            placement = self._placement_of(tenant, fresh=True)
        search = RoutedSearch(
            self.router,
            list(placement.shards),
            positions,
            self.settings.read_concern_timeout_seconds,
            heads=lambda shard_id: self.log.last_sequence(shard_subject(shard_id), timeout=0.5),
            sources=placement.source,
        )
        return Routed(search, record.generation, search.cacheable)

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
        fails; the previous version then stays live. With ``wait=False`` the result is the
        ``pending`` version as soon as it is durably in the log (only an empty, too large or
        unsupported document raises at once); its ``write_token`` makes a later
        ``search(read_concern="session")`` see it, and ``get_document`` shows how it ended.
        """
        document = DocumentInput(doc_id, bytes(data), filename, metadata or {}, content_type, title)
        tenant = validation.tenant_id(tenant)
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
        self._check_open()
        validation.doc_id(document.doc_id)
        validation.metadata(document.metadata)
        return document

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
        if self.router is not None and info.commit_position is not None:
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

    def delete_document(self, tenant: str, doc_id: str) -> WriteResult:
        """Remove every chunk of a document (its history stays in the registry)."""
        self._check_open()
        self.tenant(tenant)
        outcome = self._finished(self.writer.delete(tenant, validation.doc_id(doc_id)))
        if isinstance(outcome, ShardragError):
            raise outcome
        return outcome

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
        positions = self._read_positions(tenant, read_concern, write_token)
        request = SearchRequest(
            tenant=validation.tenant_id(tenant),
            query=validation.query_text(query),
            k=validation.top_k(k, self.settings.max_k),
            mode=validation.search_mode(mode),
            filters=validation.metadata(filters),
            fusion=validation.fusion(fusion or self.settings.fusion),
        )
        return self.searcher.run(request, positions)

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
        generation = self.tenant(tenant).generation
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

    def _read_positions(
        self, tenant: str, read_concern: ReadConcern | str, write_token: str | None
    ) -> dict[int, int]:
        """The log offset per shard a replica must have applied to serve this read.

        ``session``: the position of the token's commit, once its version is decided (a
        failed or overtaken version needs nothing). ``strong``: every write of the tenant
        accepted before now decided, then each of the tenant's shards at its log head. In
        the embedded mode this process's replicas are waited for here; in a cluster the
        router sends the positions along and only a replica that far answers.
        """
        concern = validation.read_concern(read_concern)
        if concern is ReadConcern.EVENTUAL:
            return {}
        timeout = self.settings.read_concern_timeout_seconds
        deadline = time.monotonic() + timeout
        if concern is ReadConcern.STRONG:
            since = time.time()

            def decided() -> bool:
                pending = self.registry.pending_versions(tenant)
                return not any(p.created_at <= since for p in pending)

            what = f"the writes of tenant {tenant!r}"
        else:
            if not write_token:
                raise InvalidParameter("read_concern 'session' needs the write_token of a write")
            token = WriteToken.decode(write_token)
            if token.tenant != tenant:
                raise InvalidParameter("write_token belongs to another tenant")

            def decided() -> bool:
                info = self.registry.version(token.tenant, token.doc_id, token.version)
                return info is None or info.state is not VersionState.PENDING

            what = "the write of the token"
        self.tenant(tenant)
        if not self.pipeline.wait_until(decided, timeout):
            raise ReadConcernTimeout(
                f"waited {timeout:g} s for {what} to be decided", timeout_seconds=timeout
            )
        if concern is ReadConcern.STRONG:
            positions = {
                s: self.log.last_sequence(shard_subject(s))
                for s in self._placement_of(tenant, fresh=True).shards
            }
        else:
            positions = self._token_position(token, self.tenant(tenant).shard_id)
        if self.router is None:
            ready = self.pipeline.wait_until(
                lambda: all(self._applied(s) >= p for s, p in positions.items()),
                max(0.0, deadline - time.monotonic()),
            )
            if not ready:
                raise ReadConcernTimeout(
                    f"waited {timeout:g} s for {what} to be applied", timeout_seconds=timeout
                )
        return positions

    def _token_position(self, token: WriteToken, shard_id: int) -> dict[int, int]:
        """Where the token's commit is in its shard's log ({} if it never reached it)."""
        info = self.registry.version(token.tenant, token.doc_id, token.version)
        if info is None:
            return {}  # gone with its tenant
        position = token.position or info.commit_position
        if position is None:
            return {}  # failed before its commit reached the shard log: nothing to show
        return {token.shard_id if token.shard_id is not None else shard_id: position}

    def _applied(self, shard_id: int) -> int | float:
        """How far the shard's replicas have applied its log (∞ if none is known).

        Embedded: this process's replica. Cluster: the slowest live replica, as the nodes'
        heartbeats report it (so a wait on it lasts at least one heartbeat).
        """
        if self.router is not None:
            applied = self._cluster_applied().get(shard_id, [])
            return min(applied) if applied else float("inf")
        applier = self.pipeline.applier
        return applier.applied(shard_id) if applier is not None else float("inf")

    def _cluster_applied(self) -> dict[int, list[int]]:
        """Per shard, the applied offsets of its live replicas (from their heartbeats; read
        at most every 0.25 s however many writers wait on them)."""
        now = time.monotonic()
        if now - self._heartbeats[0] > 0.25:
            self._heartbeats = (now, self.shard_map.nodes())
        found: dict[int, list[int]] = {}
        for node in self._heartbeats[1]:
            for shard_id, applied in node.applied.items():
                found.setdefault(shard_id, []).append(applied)
        return found

    def cluster_status(self) -> ClusterStatus:
        """The layout, each shard's replicas and each live node with its lag (``cluster status``).

        Embedded, the one node is this process (``local``), reporting its applier's offsets.
        """
        if self.router is not None:
            return collect_status(self.layout, self.shard_map, self.log)
        shards = range(self.layout.shards)
        applier = self.pipeline.applier
        heads = {s: self.log.last_sequence(shard_subject(s)) for s in shards}
        local = NodeInfo(
            LOCAL_NODE,
            os.getpid(),
            socket.gethostname(),
            {s: applier.applied(s) if applier else heads[s] for s in shards},
            self._opened_at,
            time.time(),
            heads,
        )
        return collect_status(self.layout, self.shard_map, self.log, [local])

    # -- the pipeline's operations --------------------------------------------------------------

    def pending_writes(self) -> int:
        """Versions accepted and not yet decided (live, failed or superseded), all tenants."""
        return len(self.registry.pending_versions())

    def pipeline_stats(self) -> PipelineStats:
        """Pending writes, dead letters, and how far each shard's log is applied (metrics)."""
        shards = range(self.layout.shards)
        applier = self.pipeline.applier
        if self.router is not None:
            applied = {s: min(offsets) for s, offsets in self._cluster_applied().items()}
        else:
            applied = applier.applied_offsets() if applier else {}
        return PipelineStats(
            pending_writes=self.pending_writes(),
            dead_letters=len(self.log.dead_letters(limit=100_000)),
            applied=applied,
            log_head={s: self.log.last_sequence(shard_subject(s)) for s in shards},
        )

    def dead_letters(self, tenant: str, limit: int = 100) -> list[DeadLetterInfo]:
        """The tenant's events that a stage gave up on, oldest first."""
        self.tenant(tenant)
        found = []
        for dead in self.log.dead_letters(limit=100_000):
            ref = ref_of(dead.subject, dead.data)
            if ref is None or ref.tenant != tenant:
                continue
            found.append(
                DeadLetterInfo(
                    dead.dead_letter_id,
                    dead.consumer,
                    dead.subject,
                    ref.doc_id,
                    ref.version,
                    dead.attempts,
                    dead.error,
                    dead.failed_at,
                )
            )
            if len(found) >= limit:
                break
        return found

    def redrive(self, tenant: str, dead_letter_id: int) -> DeadLetterInfo:
        """Put a dead letter of the tenant back in its stream (after fixing its cause).

        Its version is pending again and flows on from the stage that gave up on it.
        """
        for dead in self.dead_letters(tenant, limit=100_000):
            if dead.dead_letter_id == dead_letter_id:
                self.registry.reopen(tenant, dead.doc_id, dead.version)
                self.log.redrive(dead_letter_id)
                return dead
        raise DeadLetterNotFound(
            f"no dead letter {dead_letter_id} in tenant {tenant!r}", dead_letter_id=dead_letter_id
        )

    def reconcile(self, dry_run: bool = False) -> ReconcileReport:
        """Compare the registry with the shards and repair what drifted (see pipeline/reconcile)."""
        self._check_open()
        if self.reconciler is None:
            raise Unavailable(
                "the reconciler compares the registry with shards of this process; in the "
                "distributed mode it does not run yet (docs/cluster.md)"
            )
        return self.reconciler.run(dry_run)

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
        if self.router is None:
            raise ClusterOnly(
                "tenant placement changes need the distributed mode: the embedded mode holds "
                "every shard in one process"
            )
        return Mover(self.shard_map, self.log, self.registry, progress=progress)

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
        return self._placement_of(tenant, fresh=True)

    def rebalance(self, dry_run: bool = False) -> list[ReplicaMove]:
        """Even out the replicas per live node (``Mover.rebalance``); the moves."""
        return self._mover().rebalance(dry_run)

    def move_replica(self, shard_id: int, from_node: str, to_node: str) -> None:
        """Move one replica of a shard between nodes without a gap."""
        self._mover().move_replica(shard_id, from_node, to_node)

    def _place_by_size(self) -> None:
        """Promote or split tenants past the size thresholds, every placement check."""
        settings = self.settings
        while not self._placer_stopped.wait(settings.placement_check_seconds):
            try:
                for record in self.registry.list_tenants():
                    placement = self.shard_map.placement(record.tenant)
                    if placement is None:
                        continue
                    wanted = wanted_shards(
                        self.registry.tenant_size(record.tenant),
                        placement,
                        self.layout,
                        settings.promote_threshold_chunks,
                        settings.split_threshold_chunks,
                    )
                    if wanted is not None and not self._placer_stopped.is_set():
                        log.info(
                            "tenant %s outgrew its placement: %d shard(s)", record.tenant, wanted
                        )
                        self._mover().promote(record.tenant, wanted)
            except Exception:
                log.exception("the placement check failed; trying again later")

    def close(self) -> None:
        """Flush and release the data dir. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._placer_stopped.set()
        try:
            self.pipeline.stop()
            if self.router is not None:
                self.router.conn.close()
            self.log.close()
            if self.shards is not None:
                self.shards.close()
            self.shard_map.close()
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
