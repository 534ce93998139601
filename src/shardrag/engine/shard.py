"""One shard on local disk: Qdrant Edge with a dense and a BM25 vector per chunk.

This module (with the rest of ``engine/``) is the only code that imports ``qdrant_edge``; the
binding is young and its API moves, so it is pinned and kept behind this class.

Consistency protocol (ARCHITECTURE.md §2, write path). The shard log's index applier calls
these in log order, and may call any of them again (a redelivery, a replay after a crash):
each one leaves the shard as one call would.

* ``upsert`` writes the points of version v in state ``pending``; queries filter on
  ``state == live`` so they never see them. An upsert of a version already committed (or
  overtaken by a newer committed one) changes nothing, so a replay never hides a live version.
* ``commit(doc, v, expected)`` makes v ``live`` and deletes every point of older versions, if
  all ``expected`` points of v are there (else it raises and changes nothing). The two engine
  updates run under the exclusive side of a readers-writer lock, so no search observes the
  state between them. A commit that arrives after a newer version was committed (retries can
  reorder versions) deletes v's points instead: the newer version stays.
* ``delete(doc, v)`` commits a tombstone: it deletes every older point and leaves a marker
  point (no vectors, never searchable) so that an older version committed later is known to
  be overtaken.
* ``abort(doc, v)`` deletes the pending points of v (the compensating action of a failed
  version); ``purge(doc, v)`` deletes every point of v (the reconciler's repair).
* Searches keep, per document, only the highest version among their hits: if the process died
  between the two updates of a commit, both versions are briefly live on disk, and readers still
  see exactly one until the applier replays the commit.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from shardrag import acl as access
from shardrag.config import QUANTIZATIONS
from shardrag.engine import build
from shardrag.engine.fusion import holding_of, newest_versions, prefetch_depth
from shardrag.engine.ids import point_id
from shardrag.engine.rwlock import ReadWriteLock
from shardrag.engine.terms import TermCounts
from shardrag.errors import InternalError, InvalidParameter
from shardrag.models import (
    ChunkKey,
    EmbeddedChunk,
    Fusion,
    Hit,
    KeywordStats,
    Metadata,
    Scored,
    SearchMode,
    ShardQuery,
)
from shardrag.sealing import Bound, Plain, Sealer

DENSE = "dense"
BM25 = "bm25"
_PENDING = "pending"
_LIVE = "live"
_TOMBSTONE = "tombstone"
# The chunk index of a tombstone's marker point.
_MARKER = -1
#: What a sealed payload is (its associated data, beside the tenant).
_SEALED_PURPOSE = "shard payload"
#: The payload fields that name a chunk (candidates carry nothing else).
_IDENTITY = ["doc_id", "version", "chunk_index"]
_SETTINGS_FILE = "shardrag-engine.json"
logger = logging.getLogger(__name__)
#: Points per page of a scan of BM25 terms.
_TERM_PAGE = 2000
#: An IDF corpus of no points (no tenant is named NUL): the engine's IDF of every term over it
#: is ``terms.EMPTY_CORPUS_IDF``, which the query weights divide out.
_NO_CORPUS = qe.SearchParams(
    idf=qe.IdfParams(
        corpus=qe.Filter(must=[qe.FieldCondition("tenant", match=qe.MatchValue("\x00"))])
    )
)
#: The shard directory's own files (beside the engine's, ``build.py``).
_OWN_FILES = {_SETTINGS_FILE}
#: Up to this many points a shard builds its indexes in-process (a pause of seconds);
#: beyond, in a child process while it keeps serving (``build.py``).
BUILD_IN_PROCESS_UP_TO = 20_000
#: Up to this many points, a shard counts its terms as it opens; beyond, in a thread.
_COUNT_AT_OPEN = 50_000


@dataclass(frozen=True)
class EngineSettings:
    """What fixes the shape of a shard's points; persisted with the shard and checked on load.

    ``bm25_avg_len`` is BM25's expected passage length in BM25 tokens (after stop words and
    stemming). Qdrant's default of 256 suits whole documents; our chunks are at most ~200 model
    tokens, about 60-100 BM25 tokens, so length normalisation is calibrated to that.
    """

    dimension: int
    bm25_k: float = 1.2
    bm25_b: float = 0.75
    bm25_avg_len: float = 80.0
    bm25_language: str = "english"
    #: Dense vectors also kept as int8 (``QUANTIZATIONS``): "none", or "int8", where the graph
    #: walk scores the int8 copies held in RAM, the originals stay on disk (memory-mapped) and
    #: the best ``QUANTIZED_OVERSAMPLING`` x limit are rescored on them. Chosen when a shard is
    #: created; a shard keeps its own (docs/shard-key.md).
    quantization: str = "none"

    def same_shape(self, other: EngineSettings) -> bool:
        """Whether points written under ``other`` fit a shard made with these (all but the
        quantization, which only changes how the shard indexes them)."""
        return replace(self, quantization=other.quantization) == other


#: How many more candidates than asked an int8 shard's dense search rescores on the originals.
QUANTIZED_OVERSAMPLING = 2.0


@dataclass(frozen=True)
class PointCount:
    """Points of a document or tenant by state."""

    pending: int
    live: int


class CommitOutcome(enum.StrEnum):
    """What a commit or delete did."""

    APPLIED = "applied"  # the version is the document's live (or deleted) state now
    SUPERSEDED = "superseded"  # a newer version was committed first; this one was removed


@dataclass(frozen=True)
class StoredVersion:
    """The points one version of a document has in a shard (for the reconciler)."""

    tenant: str
    doc_id: str
    version: int
    pending: int = 0
    live: int = 0
    tombstone: bool = False


@dataclass(frozen=True)
class Candidates:
    """A hybrid query's candidates on one shard, unfused (``ShardEngine.candidates``)."""

    dense: list[Scored]
    keyword: list[Scored]
    stats: KeywordStats


class ShardEngine:
    """A Qdrant Edge shard holding the chunks of many tenants' documents.

    Safe to use from many threads: searches share a readers-writer lock, commits and
    optimisation take it exclusively.
    """

    def __init__(
        self,
        path: Path,
        settings: EngineSettings,
        optimize_threshold: int = 20_000,
        search_ef: int = 0,
        count_terms: bool = True,
        sealer: Sealer | None = None,
    ):
        self._setup(path, settings, optimize_threshold, search_ef, sealer or Plain())
        self._shard = self._open(path, settings)
        if count_terms:
            self._start_counting()

    def _setup(
        self,
        path: Path,
        settings: EngineSettings,
        optimize_threshold: int,
        search_ef: int,
        sealer: Sealer,
    ) -> None:
        self.path = path
        #: Seals each chunk's text, name and metadata under its tenant's key (``sealing.py``).
        self.sealer = sealer
        self.settings = settings
        self.optimize_threshold = optimize_threshold
        #: The HNSW search effort of dense queries (candidates kept while walking the graph,
        #: never below the query's limit); 0: by the shard's size (``search_effort_for``).
        self.search_ef = search_ef
        self._sized: tuple[float, int] | None = None  # (when, points) of the last size read
        self._lock = ReadWriteLock()
        self._pending_lock = threading.Lock()
        self._unoptimized = 0
        self._bm25 = qe.Bm25(
            qe.Bm25Config(
                k=settings.bm25_k,
                b=settings.bm25_b,
                avg_len=settings.bm25_avg_len,
                language=settings.bm25_language,
            )
        )
        self._closed = False
        #: Where the engine files are: ``path`` or its current generation (``build.py``).
        self._data = path
        #: Per tenant, the live chunks and the chunks holding each BM25 term (``terms.py``);
        #: None until counted (keyword queries then take the engine's IDF over a filter).
        self._terms: TermCounts | None = None
        #: Changes of the live chunks so far (a count made meanwhile is stale).
        self._live_changes = 0
        #: While an index build runs apart: the writes applied since its copy, in order.
        self._journal: list[tuple[str, tuple[Any, ...]]] | None = None
        self._journal_lock = threading.Lock()
        self._build_lock = threading.Lock()
        #: Held while the files are swapped, and by whoever copies them (``frozen_files``).
        self._swap_lock = threading.Lock()
        self._building = False
        self._child: subprocess.Popen[str] | None = None

    @classmethod
    def _staged(cls, data: Path, like: ShardEngine) -> ShardEngine:
        """An engine over a build's copy in ``data``, to replay ``like``'s journal onto."""
        staged = cls.__new__(cls)
        staged._setup(data, like.settings, 2**62, like.search_ef, like.sealer)
        staged._shard = qe.EdgeShard.load(str(data))
        return staged

    @staticmethod
    def _config(settings: EngineSettings) -> qe.EdgeConfig:
        if settings.quantization == "int8":
            dense = qe.EdgeVectorParams(
                size=settings.dimension,
                distance=qe.Distance.Cosine,
                memory=qe.Memory.Cold,
                quantization_config=qe.ScalarQuantizationConfig(
                    qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned
                ),
            )
        else:
            dense = qe.EdgeVectorParams(size=settings.dimension, distance=qe.Distance.Cosine)
        return qe.EdgeConfig(
            vectors={DENSE: dense},
            sparse_vectors={BM25: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )

    def _open(self, path: Path, settings: EngineSettings) -> qe.EdgeShard:
        settings_file = path / _SETTINGS_FILE
        if settings.quantization not in QUANTIZATIONS:
            raise InvalidParameter(
                f"quantization must be one of {', '.join(QUANTIZATIONS)}",
                quantization=settings.quantization,
            )
        if settings_file.exists():
            stored = EngineSettings(**json.loads(settings_file.read_text()))
            # A shard keeps the quantization it was made with.
            self.settings = stored
            if not stored.same_shape(settings):
                raise InvalidParameter(
                    f"shard {path.name} was built with {stored}, not {settings}; "
                    "re-index into a new data dir to change the model or BM25 settings",
                    stored=asdict(stored),
                    requested=asdict(settings),
                )
            build.tidy(path, _OWN_FILES)
            self._data = build.data_dir(path)
            return qe.EdgeShard.load(str(self._data))
        path.mkdir(parents=True, exist_ok=True)
        shard = qe.EdgeShard.create(str(path), self._config(settings))
        for field, schema in (
            ("tenant", qe.KeywordIndexParams(is_tenant=True)),
            ("doc_id", qe.PayloadSchemaType.Keyword),
            ("state", qe.PayloadSchemaType.Keyword),
            ("version", qe.PayloadSchemaType.Integer),
            ("acl", qe.PayloadSchemaType.Keyword),
        ):
            shard.update(qe.UpdateOperation.create_field_index(field, schema))
        # Written last: a shard without this file is one whose creation did not finish.
        tmp = settings_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(settings)))
        tmp.replace(settings_file)
        return shard

    # -- write path ---------------------------------------------------------------------------

    def upsert(
        self,
        tenant: str,
        doc_id: str,
        version: int,
        chunks: Sequence[EmbeddedChunk],
        metadata: Metadata,
        filename: str | None,
    ) -> bool:
        """Write the points of one version, invisible to searches until ``commit``.

        Returns False (and writes nothing) when the version, or a newer one, is committed.
        """
        if not chunks:
            return True
        meta, acl = access.split(metadata)
        sealing = self.sealer.bound(tenant) if self.sealer.active else None
        points = [
            qe.Point(
                point_id(tenant, doc_id, version, ec.chunk.index),
                {
                    DENSE: ec.vector,
                    BM25: self._bm25.embed_document(ec.chunk.indexed_text),
                },
                {
                    "tenant": tenant,
                    "doc_id": doc_id,
                    "version": version,
                    "chunk_index": ec.chunk.index,
                    "state": _PENDING,
                    "page": ec.chunk.page,
                    "acl": list(acl) or [access.PUBLIC],
                    **_content(sealing, ec, meta, filename),
                },
            )
            for ec in chunks
        ]
        with self._lock.shared():
            if self._committed_since(tenant, doc_id, version):
                return False
            self._shard.update(qe.UpdateOperation.upsert_points(points))
            self._journaled("upsert", tenant, doc_id, version, chunks, metadata, filename)
        with self._pending_lock:
            self._unoptimized += len(points)
        return True

    def _live_filter(self, query: ShardQuery) -> qe.Filter:
        """The tenant's live chunks that match the query's metadata filters and that its
        caller's access groups may read."""
        if self.sealer.active and query.filters:
            _metadata_conditions(query.filters)  # an inexpressible filter is refused alike
            tagged = [
                qe.FieldCondition(f"meta.{key}", match=_match_tags(self.sealer, query.tenant, v))
                for key, v in query.filters.items()
            ]
        else:
            tagged = _metadata_conditions(query.filters)
        return qe.Filter(
            must=[
                _eq("tenant", query.tenant),
                _eq("state", _LIVE),
                *tagged,
                *_access_conditions(query.groups),
            ]
        )

    def _hits(self, points: Iterable[Any], tenant: str) -> list[Hit]:
        """The hits of points of ``tenant`` (those whose tenant's key is gone are left out)."""
        found = []
        for point in points:
            payload = point.payload or {}
            if "sealed" in payload:
                opened = self.sealer.unseal(
                    tenant, base64.b64decode(payload["sealed"]), _SEALED_PURPOSE
                )
                if opened is None:
                    continue
                point = _Scoreless(point.id, {**payload, **json.loads(opened)}, point.score)
            found.append(_hit(point))
        return found

    def commit(
        self, tenant: str, doc_id: str, version: int, expected: int | None = None
    ) -> CommitOutcome:
        """Make ``version`` the live one and delete every older version's points. Idempotent.

        With ``expected``, raises ``InternalError`` (changing nothing) unless the version has
        that many points. A version overtaken by a newer committed one is removed instead.
        """
        doc = _doc_filter(tenant, doc_id)
        with self._lock.exclusive(), self._changing_live(tenant, doc_id):
            if self._committed_since(tenant, doc_id, version + 1):
                self._delete_version(tenant, doc_id, version, pending_only=False)
                self._journaled("commit", tenant, doc_id, version, expected)
                return CommitOutcome.SUPERSEDED
            if expected is not None:
                have = self._shard.count(
                    qe.CountRequest(
                        exact=True,
                        filter=qe.Filter(
                            must=[*doc, _eq("version", version)],
                            must_not=[_eq("state", _TOMBSTONE)],
                        ),
                    )
                )
                if have < expected:
                    raise InternalError(
                        f"version {version} of {doc_id!r} has {have} of its {expected} points; "
                        "it cannot be committed",
                        have=have,
                        expected=expected,
                    )
            self._shard.update(
                qe.UpdateOperation.set_payload_by_filter(
                    qe.Filter(must=[*doc, _eq("version", version)]), {"state": _LIVE}
                )
            )
            self._delete_older(doc, version)
            self._journaled("commit", tenant, doc_id, version, expected)
        self._optimize_if_due()
        return CommitOutcome.APPLIED

    def delete(self, tenant: str, doc_id: str, version: int) -> CommitOutcome:
        """Commit tombstone ``version``: nothing of the document stays searchable."""
        doc = _doc_filter(tenant, doc_id)
        with self._lock.exclusive(), self._changing_live(tenant, doc_id):
            if self._committed_since(tenant, doc_id, version + 1):
                return CommitOutcome.SUPERSEDED
            marker = qe.Point(
                point_id(tenant, doc_id, version, _MARKER),
                {},
                {"tenant": tenant, "doc_id": doc_id, "version": version, "state": _TOMBSTONE},
            )
            self._shard.update(qe.UpdateOperation.upsert_points([marker]))
            self._delete_older(doc, version)
            self._journaled("delete", tenant, doc_id, version)
        return CommitOutcome.APPLIED

    def purge(self, tenant: str, doc_id: str, version: int) -> bool:
        """Delete the orphaned points of ``version`` (the reconciler's repair).

        Pending points always go; live ones only when a newer version is committed, so a
        purge that meets a version made live again since it was decided on removes nothing
        anyone is shown. Returns whether live points were removed too.
        """
        with self._lock.exclusive(), self._changing_live(tenant, doc_id):
            overtaken = self._committed_since(tenant, doc_id, version + 1)
            self._delete_version(tenant, doc_id, version, pending_only=not overtaken)
            self._journaled("purge", tenant, doc_id, version)
        return overtaken

    @contextmanager
    def _changing_live(self, tenant: str, doc_id: str) -> Iterator[None]:
        """Around a change of a document's live chunks (caller holds the lock exclusively):
        the term counts follow it, by the document's live chunks before and after."""
        self._live_changes += 1
        terms = self._terms
        before = self._live_terms(_doc_filter(tenant, doc_id)) if terms is not None else []
        try:
            yield
        finally:
            if terms is not None:
                try:
                    after = self._live_terms(_doc_filter(tenant, doc_id))
                except Exception:  # the shard failed under the change: stop counting
                    self._terms = None
                else:
                    terms.change(tenant, [c[1:] for c in before], [c[1:] for c in after])

    def _live_terms(
        self, must: list[qe.FieldCondition]
    ) -> list[tuple[str, tuple[str, ...], list[int]]]:
        """(tenant, access groups, BM25 terms) of the live chunks that match ``must``
        (caller holds the lock)."""
        found = (_terms_of(record) for page in self._live_pages(must) for record in page)
        return [chunk for chunk in found if chunk is not None]

    def _live_pages(
        self, must: list[qe.FieldCondition], lock_each: bool = False
    ) -> Iterator[list[Any]]:
        """Pages of the live points that match ``must``, with their tenant and BM25 vector.
        The caller holds the lock, or with ``lock_each`` the lock is taken for each page
        (and the pages stop if the shard closes)."""
        offset: Any = None
        live = qe.Filter(must=[*must, _eq("state", _LIVE)])
        while True:
            with self._lock.shared() if lock_each else contextlib.nullcontext():
                if self._closed:
                    return
                records, offset = self._shard.scroll(
                    qe.ScrollRequest(
                        offset=offset,
                        limit=_TERM_PAGE,
                        filter=live,
                        with_payload=["tenant", "acl"],
                        with_vector=[BM25],
                    )
                )
            yield records
            if offset is None:
                return

    def _start_counting(self) -> None:
        """Count the terms now on a small shard, else in a thread (searches go on)."""
        if self.points_count() <= _COUNT_AT_OPEN:
            self._count_terms()
        else:
            threading.Thread(
                target=self._count_terms, name=f"count-terms-{self.path.name}", daemon=True
            ).start()

    def _count_terms(self, attempts: int = 3) -> None:
        """Count every tenant's BM25 terms over the live chunks (``terms.py``).

        The scan reads a page at a time, so commits go on meanwhile; a count that a commit
        overlapped is thrown away and made again, the last time in one hold of the lock.
        Until it is made, keyword queries take the engine's IDF over a filter (the same
        scores, slower at scale).
        """
        for attempt in range(attempts):
            whole = attempt == attempts - 1
            with self._lock.shared():
                started = self._live_changes
                if whole:
                    counts = self._count_pages(self._live_pages([]))
                    if not self._closed:
                        self._terms = counts
                    return
            counts = self._count_pages(self._live_pages([], lock_each=True))
            with self._lock.shared():
                if self._closed:
                    return
                if self._live_changes == started:
                    self._terms = counts
                    return

    @staticmethod
    def _count_pages(pages: Iterator[list[Any]]) -> TermCounts:
        counts = TermCounts()
        for page in pages:
            for record in page:
                chunk = _terms_of(record)
                if chunk is not None:
                    counts.count(chunk[0], chunk[2], chunk[1])
        return counts

    def _committed_since(self, tenant: str, doc_id: str, version: int) -> bool:
        # Caller holds the lock. Is ``version`` or a newer one live or a tombstone?
        found = self._shard.count(
            qe.CountRequest(
                exact=True,
                filter=qe.Filter(
                    must=[
                        *_doc_filter(tenant, doc_id),
                        qe.FieldCondition("version", range=qe.RangeFloat(gte=version)),
                    ],
                    must_not=[_eq("state", _PENDING)],
                ),
            )
        )
        return bool(found)

    def _delete_older(self, doc: list[qe.FieldCondition], version: int) -> None:
        self._shard.update(
            qe.UpdateOperation.delete_points_by_filter(
                qe.Filter(
                    must=[*doc, qe.FieldCondition("version", range=qe.RangeFloat(lt=version))]
                )
            )
        )

    def _delete_version(self, tenant: str, doc_id: str, version: int, pending_only: bool) -> None:
        must = [*_doc_filter(tenant, doc_id), _eq("version", version)]
        if pending_only:
            must.append(_eq("state", _PENDING))
        self._shard.update(qe.UpdateOperation.delete_points_by_filter(qe.Filter(must=[*must])))

    def abort(self, tenant: str, doc_id: str, version: int) -> None:
        """Delete the pending points of a version that will never commit. Idempotent.

        Only pending points go: an abort that arrives after the version's commit (a redelivery,
        a confused caller) can never remove what searches are showing.
        """
        with self._lock.shared():
            self._delete_version(tenant, doc_id, version, pending_only=True)
            self._journaled("abort", tenant, doc_id, version)

    def drop_tenant(self, tenant: str) -> None:
        """Delete every point of a tenant."""
        with self._lock.exclusive():
            self._shard.update(
                qe.UpdateOperation.delete_points_by_filter(qe.Filter(must=[_eq("tenant", tenant)]))
            )
            self._live_changes += 1
            if self._terms is not None:
                self._terms.drop(tenant)
            self._journaled("drop_tenant", tenant)

    def retain(self, tenant: str, keep_doc: Callable[[str], bool] | None = None) -> int:
        """Delete every point of other tenants, and of ``tenant``'s documents ``keep_doc``
        refuses (a shard restored from another's snapshot for a move); points deleted."""
        before = self.points_count()
        self._drop_others(tenant)
        if keep_doc is not None:
            dropped = sorted({v.doc_id for v in self.stored_versions() if not keep_doc(v.doc_id)})
            for start in range(0, len(dropped), 500):
                self._drop_documents(tenant, dropped[start : start + 500])
        with self._lock.exclusive():
            self._live_changes += 1
            recount = self._terms is not None
            self._terms = None
        if recount:
            self._start_counting()
        return before - self.points_count()

    def _drop_others(self, tenant: str) -> None:
        with self._lock.exclusive():
            self._shard.update(
                qe.UpdateOperation.delete_points_by_filter(
                    qe.Filter(must_not=[_eq("tenant", tenant)])
                )
            )
            self._journaled("_drop_others", tenant)

    def _drop_documents(self, tenant: str, doc_ids: list[str]) -> None:
        docs = qe.FieldCondition("doc_id", match=qe.MatchAny(doc_ids))
        with self._lock.exclusive():
            self._shard.update(
                qe.UpdateOperation.delete_points_by_filter(
                    qe.Filter(must=[_eq("tenant", tenant), docs])
                )
            )
            self._journaled("_drop_documents", tenant, doc_ids)

    def vectors(
        self, tenant: str, doc_id: str, version: int, chunk_indexes: Sequence[int]
    ) -> dict[int, list[float]]:
        """Dense vectors of chunks of a stored version, by chunk index (for reuse on update)."""
        ids = {point_id(tenant, doc_id, version, i): i for i in chunk_indexes}
        if not ids:
            return {}
        with self._lock.shared():
            records = self._shard.retrieve(list(ids), with_payload=False, with_vector=[DENSE])
        found: dict[int, list[float]] = {}
        for record in records:
            named = record.vector
            dense = named.get(DENSE) if isinstance(named, dict) else None
            if isinstance(dense, list):
                found[ids[str(record.id)]] = [float(x) for x in dense if isinstance(x, float)]
        return found

    # -- read path ----------------------------------------------------------------------------

    def search(self, query: ShardQuery) -> list[Hit]:
        """Top-k live chunks of one tenant, in one engine call (hybrid: prefetch + fusion);
        a query naming ``chunks`` gets those of them still live instead."""
        if query.chunks:
            return self.fetch(query.tenant, query.chunks, query.groups)
        live = self._live_filter(query)
        with self._lock.shared():
            points = self._shard.query(self._request(query, live))
        return _one_version_per_document(self._hits(points, query.tenant))[: query.k]

    def candidates(self, query: ShardQuery) -> Candidates:
        """The dense and the keyword candidates of a hybrid query, unfused, best first:
        ``prefetch_depth(k)`` of each with their raw scores, as the engine would fuse them;
        the keyword ones with their BM25 weight of each query term, and the shard's
        ``KeywordStats`` (the router fuses several shards' candidates: ``engine/fusion.py``).
        """
        live = self._live_filter(query)
        depth = prefetch_depth(query.k)
        sparse = self._bm25.embed_query(query.text)
        terms = [int(t) for t in sparse.indices]
        with self._lock.shared():
            nearest, effort = self._signal(SearchMode.DENSE, query, live)
            dense = self._shard.query(
                qe.QueryRequest(
                    limit=depth, query=nearest, filter=live, params=effort, with_payload=_IDENTITY
                )
            )
            matching, scoring = self._signal(SearchMode.KEYWORD, query, live, sparse)
            keyword = self._shard.query(
                qe.QueryRequest(
                    limit=depth,
                    query=matching,
                    filter=live,
                    params=scoring,
                    with_payload=_IDENTITY,
                    with_vector=[BM25],
                )
            )
            if self._terms is not None and not query.filters:
                chunks, counted = self._terms.stats(query.tenant, terms, query.groups)
                holding = [float(n) for n in counted]
            else:
                chunks, holding = self._engine_holding(terms, live)
        return Candidates(
            [_scored(p) for p in dense],
            [_scored(p, _weights(p, terms)) for p in keyword],
            KeywordStats(
                chunks, tuple(terms), tuple(float(v) for v in sparse.values), tuple(holding)
            ),
        )

    def _engine_holding(self, terms: list[int], live: qe.Filter) -> tuple[int, list[float]]:
        """The chunks ``live`` matches and, per term, those holding it, recovered from the
        engine's own IDF: a search for the term alone scores its best chunk IDF x that
        chunk's stored weight of the term (caller holds the lock)."""
        corpus = qe.SearchParams(idf=qe.IdfParams(corpus=live))
        chunks = int(self._shard.count(qe.CountRequest(exact=True, filter=live)))
        holding = []
        for term in terms:
            top = self._shard.query(
                qe.QueryRequest(
                    limit=1,
                    query=qe.Query.Nearest(qe.SparseVector([term], [1.0]), using=BM25),
                    filter=live,
                    params=corpus,
                    with_vector=[BM25],
                )
            )
            weight = _weights(top[0], [term])[0] if top else 0.0
            holding.append(holding_of(chunks, top[0].score / weight) if weight else 0.0)
        return chunks, holding

    def fetch(
        self, tenant: str, chunks: Sequence[ChunkKey], groups: access.Groups = None
    ) -> list[Hit]:
        """The live ones of ``chunks`` of ``tenant`` that ``groups`` may read (score 0), in
        the order asked."""
        ids: list[Any] = [point_id(tenant, *chunk) for chunk in chunks]
        with self._lock.shared():
            records = self._shard.retrieve(ids, with_payload=True, with_vector=False)
        found = {}
        for record in records:
            payload = record.payload or {}
            if (
                payload.get("tenant") == tenant
                and payload.get("state") == _LIVE
                and _readable(payload, groups)
            ):
                for hit in self._hits([_Scoreless(record.id, payload)], tenant):
                    found[hit.key] = hit
        return [found[chunk] for chunk in chunks if chunk in found]

    def _request(self, query: ShardQuery, live: qe.Filter) -> qe.QueryRequest:
        # Over-fetch a little: the per-document version check may drop hits in a crash window.
        limit = query.k + 8
        if query.mode is not SearchMode.KEYWORD and query.dense is None:
            raise InvalidParameter(f"{query.mode.value} search needs a query vector")
        if query.mode is not SearchMode.HYBRID:
            signal, params = self._signal(query.mode, query, live)
            return qe.QueryRequest(
                limit=limit, query=signal, filter=live, params=params, with_payload=True
            )
        depth = prefetch_depth(query.k)
        prefetches = [
            qe.Prefetch(limit=depth, query=signal, filter=live, params=params)
            for signal, params in (
                self._signal(SearchMode.DENSE, query, live),
                self._signal(SearchMode.KEYWORD, query, live),
            )
        ]
        fuse: Any = qe.Fusion.Dbsf() if query.fusion is Fusion.DBSF else qe.Fusion.Rrf(k=60)
        return qe.QueryRequest(
            limit=limit, prefetches=prefetches, query=fuse, filter=live, with_payload=True
        )

    def _signal(
        self,
        mode: SearchMode,
        query: ShardQuery,
        live: qe.Filter,
        sparse: qe.SparseVector | None = None,
    ) -> tuple[qe.Query, qe.SearchParams | None]:
        """The scoring query of one signal (dense or keyword) and its search parameters
        (caller holds the lock: the keyword weights read the term counts). ``sparse``: the
        query's BM25 terms if the caller has them already."""
        if mode is SearchMode.DENSE:
            rescored = (
                qe.QuantizationSearchParams(rescore=True, oversampling=QUANTIZED_OVERSAMPLING)
                if self.settings.quantization != "none"
                else None
            )
            effort = qe.SearchParams(hnsw_ef=self._effort(), quantization=rescored)
            return qe.Query.Nearest(query.dense or [], using=DENSE), effort
        # IDF over this tenant's live chunks only: another tenant's corpus never shapes scores.
        sparse = sparse if sparse is not None else self._bm25.embed_query(query.text)
        terms = self._terms
        if terms is None or query.filters:
            # The engine counts them over the filter: the IDF of what the query can find.
            return qe.Query.Nearest(sparse, using=BM25), qe.SearchParams(
                idf=qe.IdfParams(corpus=live)
            )
        indices = [int(t) for t in sparse.indices]
        # Over what the caller may read: a caller restricted by access groups learns nothing
        # from scores of the documents it cannot read (docs/access.md).
        weights = terms.weights(
            query.tenant, indices, [float(v) for v in sparse.values], query.groups
        )
        return qe.Query.Nearest(qe.SparseVector(indices, weights), using=BM25), _NO_CORPUS

    def _effort(self) -> int:
        """The HNSW search effort now: the fixed one, or by the shard's size (read at most
        every ``_SIZE_EVERY`` seconds: a shard grows slowly next to its searches)."""
        if self.search_ef:
            return self.search_ef
        now = time.monotonic()
        sized = self._sized
        if sized is None or now - sized[0] > _SIZE_EVERY:
            sized = self._sized = (now, int(self._shard.info().points_count))
        return search_effort_for(sized[1])

    def count(
        self, tenant: str, doc_id: str | None = None, version: int | None = None
    ) -> PointCount:
        """Pending and live points of a tenant, optionally of one document or version."""
        must = [_eq("tenant", tenant)]
        if doc_id is not None:
            must.append(_eq("doc_id", doc_id))
        if version is not None:
            must.append(_eq("version", version))
        with self._lock.shared():
            pending = self._shard.count(
                qe.CountRequest(exact=True, filter=qe.Filter(must=[*must, _eq("state", _PENDING)]))
            )
            live = self._shard.count(
                qe.CountRequest(exact=True, filter=qe.Filter(must=[*must, _eq("state", _LIVE)]))
            )
        return PointCount(pending=pending, live=live)

    def stored_versions(self, page: int = 1000) -> list[StoredVersion]:
        """Every (tenant, document, version) with points in the shard, and their states."""
        found: dict[tuple[str, str, int], StoredVersion] = {}
        offset: Any = None
        while True:
            with self._lock.shared():
                records, offset = self._shard.scroll(
                    qe.ScrollRequest(
                        offset=offset,
                        limit=page,
                        with_payload=["tenant", "doc_id", "version", "state"],
                        with_vector=False,
                    )
                )
            for record in records:
                p = record.payload or {}
                key = (str(p["tenant"]), str(p["doc_id"]), int(p["version"]))
                seen = found.get(key) or StoredVersion(*key)
                state = p.get("state")
                found[key] = StoredVersion(
                    *key,
                    pending=seen.pending + (state == _PENDING),
                    live=seen.live + (state == _LIVE),
                    tombstone=seen.tombstone or state == _TOMBSTONE,
                )
            if offset is None:
                return sorted(found.values(), key=lambda v: (v.tenant, v.doc_id, v.version))

    def points_count(self) -> int:
        """Every point in the shard, of every tenant and state."""
        with self._lock.shared():
            return int(self._shard.info().points_count)

    # -- maintenance --------------------------------------------------------------------------

    def optimize(self) -> bool:
        """Build the HNSW and sparse indexes of new segments now; whether they changed.

        qdrant-edge holds the GIL while it optimises, which would pause the whole process:
        up to ``BUILD_IN_PROCESS_UP_TO`` points (a few seconds) it is done here, beyond in a
        child process on a copy of the shard while this one keeps serving searches and
        writes, and the copy is swapped in (``build.py``).
        """
        with self._build_lock:
            if self.points_count() > BUILD_IN_PROCESS_UP_TO:
                return self._build_apart()
            with self._lock.exclusive():
                changed = bool(self._shard.optimize())
            with self._pending_lock:
                self._unoptimized = 0
            return changed

    def _build_apart(self) -> bool:
        """``optimize`` in a child process on a copy, then the swap (caller holds
        ``_build_lock``)."""
        target = build.next_generation(self.path)
        with self._lock.exclusive():
            if self._closed:
                return False
            self._shard.flush()
            build.copy_data(self.path, target, _OWN_FILES)
            with self._journal_lock:
                self._journal = []
            with self._pending_lock:
                self._unoptimized = 0
        try:
            child = self._child = build.run_child(target)
            out, err = child.communicate()
            if child.returncode:
                raise InternalError(
                    f"the index build of shard {self.path.name} failed: {err.strip()[-2000:]}",
                    returncode=child.returncode,
                )
            changed = bool(json.loads(out.strip().splitlines()[-1])["changed"])
            staged = ShardEngine._staged(target, self)
            adopted = False  # once this engine serves the staged shard, it is not closed here
            try:
                self._replay(staged)  # most of the journal, while writes go on
                with self._swap_lock, self._lock.exclusive():
                    if self._closed:
                        return False
                    self._replay(staged)  # the rest
                    staged._shard.flush()
                    build.switch_to(self.path, target)
                    old, self._shard, self._data = self._shard, staged._shard, target
                    adopted = True
                    old.close()
            finally:
                if not adopted:
                    staged._shard.close()
        finally:
            with self._journal_lock:
                self._journal = None
            self._child = None
            with self._swap_lock:
                build.tidy(self.path, _OWN_FILES)
        return changed

    @contextmanager
    def frozen_files(self) -> Iterator[set[str]]:
        """Hold the shard's files where they are (no build swaps them meanwhile), flushed;
        yields the names in its directory that are not its files (a build's copy), which a
        copy of the shard leaves out. Writes to the shard still change the files."""
        with self._swap_lock:
            self.flush()
            yield build.stale(self.path)

    def _journaled(self, op: str, *args: Any) -> None:
        """Record a write just applied (caller holds the lock) while a build runs apart."""
        if self._journal is not None:
            with self._journal_lock:
                if self._journal is not None:
                    self._journal.append((op, args))

    def _replay(self, staged: ShardEngine) -> None:
        """Apply the journal to ``staged``, emptying it, until it stays empty."""
        while True:
            with self._journal_lock:
                batch = self._journal or []
                if self._journal is not None:
                    self._journal = []
            if not batch:
                return
            for op, args in batch:
                getattr(staged, op)(*args)

    def _optimize_if_due(self) -> None:
        with self._pending_lock:
            due = self._unoptimized >= self.optimize_threshold and not self._building
        if not due:
            return
        apart = self.points_count() > BUILD_IN_PROCESS_UP_TO
        with self._pending_lock:
            if apart and not self._building:
                self._building = True
                threading.Thread(
                    target=self._optimize_apart, name=f"build-{self.path.name}", daemon=True
                ).start()
                return
        if not apart:
            self.optimize()

    def _optimize_apart(self) -> None:
        try:
            self.optimize()
        except Exception:  # the shard goes on serving unoptimised; the next commit retries
            logger.exception("index build of shard %s failed", self.path.name)
        finally:
            with self._pending_lock:
                self._building = False

    def flush(self) -> None:
        """Flush segments to disk (the WAL already makes every update durable)."""
        with self._lock.exclusive():
            self._shard.flush()

    def close(self) -> None:
        """Flush and release the shard's files."""
        child = self._child
        if child is not None:
            child.kill()
        with self._lock.exclusive():
            self._closed = True
            try:
                self._shard.flush()
            finally:
                self._shard.close()


def _eq(key: str, value: str | int) -> qe.FieldCondition:
    return qe.FieldCondition(key, match=qe.MatchValue(value))


def _doc_filter(tenant: str, doc_id: str) -> list[qe.FieldCondition]:
    return [_eq("tenant", tenant), _eq("doc_id", doc_id)]


def _bool_shadow(metadata: Metadata) -> dict[str, str]:
    # qdrant-edge-py 0.9.0 never matches MatchValue(True) against a boolean payload value (the
    # binding passes it on as an integer), so boolean metadata is also stored as a string.
    return {key: str(value).lower() for key, value in metadata.items() if isinstance(value, bool)}


def _metadata_conditions(filters: Metadata) -> list[qe.FieldCondition]:
    """Translate ``{key: value | [values]}`` into engine conditions on the metadata payload."""
    conditions = []
    for key, value in filters.items():
        if isinstance(value, bool):
            conditions.append(_eq(f"meta_bool.{key}", str(value).lower()))
        elif isinstance(value, (str, int)):
            conditions.append(_eq(f"meta.{key}", value))
        elif isinstance(value, float):
            conditions.append(
                qe.FieldCondition(f"meta.{key}", range=qe.RangeFloat(gte=value, lte=value))
            )
        elif isinstance(value, list) and _homogeneous_keywords(value):
            conditions.append(qe.FieldCondition(f"meta.{key}", match=qe.MatchAny(value)))
        else:
            raise InvalidParameter(
                f"filter {key!r}: a value must be a string, number, boolean or a non-empty list "
                "of strings or of integers",
                key=key,
            )
    return conditions


def _homogeneous_keywords(values: list[Any]) -> bool:
    """A non-empty list of only strings or only (non-boolean) integers, as MatchAny takes."""
    if not values:
        return False
    if all(isinstance(v, str) for v in values):
        return True
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def _hit(point: Any) -> Hit:
    payload = point.payload or {}
    try:
        return Hit(
            doc_id=payload["doc_id"],
            version=int(payload["version"]),
            chunk_index=int(payload["chunk_index"]),
            text=payload["text"],
            score=float(point.score),
            metadata=payload.get("meta") or {},
            context=payload.get("context") or "",
            filename=payload.get("filename"),
            page=payload.get("page"),
        )
    except KeyError as exc:
        raise InternalError(
            f"point {point.id} lacks payload field {exc}", point=str(point.id)
        ) from exc


#: Seconds between reads of a shard's size for its search effort.
_SIZE_EVERY = 5.0
#: HNSW search effort by shard size (points, every tenant and state): the smallest effort
#: measured to keep dense recall@10 against exact search at about 0.98 or more at that size
#: (bench/shard_scale.py --efforts; docs/shard-key.md): 128 gave 0.989 at 100k points, 256
#: 0.987 at 300k, 768 0.986 at 1M (p99 5 ms). The engine's own default, 100, fell to 0.94 at
#: 300k and 0.79 at 1M.
SEARCH_EFFORT_BY_SIZE: tuple[tuple[int, int], ...] = ((150_000, 128), (500_000, 256))
SEARCH_EFFORT_BEYOND = 768


def search_effort_for(points: int) -> int:
    """The HNSW search effort of dense queries on a shard of ``points`` points."""
    for up_to, effort in SEARCH_EFFORT_BY_SIZE:
        if points <= up_to:
            return effort
    return SEARCH_EFFORT_BEYOND


def _content(
    sealing: Bound | None, ec: EmbeddedChunk, meta: Metadata, filename: str | None
) -> dict[str, Any]:
    """The payload fields a chunk's reader gets: as they are, or sealed (its metadata values
    tagged, so that filters still match them)."""
    content = {
        "text": ec.chunk.text,
        "context": ec.chunk.context,
        "content_hash": ec.chunk.content_hash,
        "filename": filename,
        "meta": meta,
    }
    if sealing is None:
        return {**content, "meta_bool": _bool_shadow(meta)}
    sealed = sealing.seal(json.dumps(content).encode(), _SEALED_PURPOSE)
    return {
        "sealed": base64.b64encode(sealed).decode(),
        "meta": {key: _tagged(sealing, value) for key, value in meta.items()},
    }


def _tagged(sealing: Bound, value: Any) -> Any:
    """A metadata value as a sealed shard holds it: each value (each element of a list)
    tagged, so an equal filter value, tagged alike, matches it."""
    if isinstance(value, list):
        return [sealing.tag(json.dumps(v)) for v in value]
    return sealing.tag(json.dumps(value))


def _match_tags(sealer: Sealer, tenant: str, value: Any) -> Any:
    """The match of a filter value (or any of a list of values) against tagged metadata."""
    if isinstance(value, list):
        return qe.MatchAny([sealer.tag(tenant, json.dumps(v)) for v in value])
    return qe.MatchValue(sealer.tag(tenant, json.dumps(value)))


def _access_conditions(groups: access.Groups) -> list[Any]:
    """Chunks of documents of ``groups`` or of no group (those written before access groups
    existed have no ``acl`` field: of no group)."""
    if groups is None:
        return []
    readable = qe.FieldCondition("acl", match=qe.MatchAny([access.PUBLIC, *groups]))
    return [qe.Filter(should=[readable, qe.IsEmptyCondition("acl")])]


def _acl_of(payload: dict[str, Any]) -> tuple[str, ...]:
    """A point's access groups (empty: public, also for points written before groups)."""
    return tuple(g for g in payload.get("acl") or () if g != access.PUBLIC)


def _readable(payload: dict[str, Any], groups: access.Groups) -> bool:
    return access.may_read(groups, _acl_of(payload))


@dataclass(frozen=True)
class _Scoreless:
    """A retrieved record, shaped as a scored point for ``_hit``."""

    id: Any
    payload: dict[str, Any]
    score: float = 0.0


def _scored(point: Any, weights: Sequence[float] = ()) -> Scored:
    payload = point.payload or {}
    return Scored(
        str(payload["doc_id"]),
        int(payload["version"]),
        int(payload["chunk_index"]),
        float(point.score),
        tuple(weights),
    )


def _weights(point: Any, terms: Sequence[int]) -> list[float]:
    """The point's stored BM25 weight (before IDF) of each of ``terms`` (0: it lacks it)."""
    vector = (point.vector or {}).get(BM25)
    stored = dict(zip(vector.indices, vector.values, strict=True)) if vector else {}
    return [float(stored.get(term, 0.0)) for term in terms]


def _terms_of(record: Any) -> tuple[str, tuple[str, ...], list[int]] | None:
    """(tenant, access groups, BM25 terms) of a scrolled point; None for a point without a
    BM25 vector (a tombstone's marker), which the engine's BM25 does not count either."""
    vector = (record.vector or {}).get(BM25)
    if vector is None:
        return None
    payload = record.payload or {}
    return str(payload.get("tenant")), _acl_of(payload), list(vector.indices)


def _one_version_per_document(hits: list[Hit]) -> list[Hit]:
    newest = newest_versions(hit.key for hit in hits)
    return [hit for hit in hits if hit.version == newest[hit.doc_id]]
