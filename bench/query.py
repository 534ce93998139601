"""Query benchmark: ``Shardrag.search`` latency vs. the bare engine query on the same shard.

    python -m bench.query [--chunks 100000] [--synthetic-points 1000000] [--queries 300]
                          [--out bench/results/query.json]

Part A (real text): one tenant of ``--chunks`` chunks built from CISI abstracts, chunked by
shardrag's own chunker. Embedding runs at ~40 chunks/s on 2 cores, so only the unique chunks
(at most ``--unique-chunks``) are embedded, once; the tenant is built by cycling them with small
perturbations: Gaussian noise on the vector (renormalised) and the copy's number appended to the
text, about 10 chunks per document. A second tenant of ``--other-tenant-chunks`` chunks shares
the shard, so the tenant filter has something to exclude. Queries are the CISI queries.

Part B (synthetic, ``--synthetic-points 0`` skips it): one tenant of random unit vectors and
~60-word texts over a made-up Zipf-distributed vocabulary, so BM25 posting lists have a realistic
shape. Queries are random unit vectors and random word samples.

Both parts write through ``ShardEngine.upsert`` + ``commit`` (one document at a time, the real
write protocol) with automatic optimisation off, then time one ``Shardrag.optimize()``: the
indexes are built before anything is measured. Then, per mode, single-threaded, after a warm-up:

* ``search``: ``Shardrag.search(tenant, text, k=10, mode=...)``, what a caller waits for
  (validation, query embedding, request building, engine query, hit conversion);
* ``engine.search``: ``ShardEngine.search`` with the pre-embedded query vector;
* ``bare query``: ``EdgeShard.query`` alone on the identical request ``ShardEngine`` builds
  (the limit: nothing shardrag adds can make a query faster than this);
* ``embed_query``: the query embedding alone, once per part (it does not depend on the mode;
  keyword search embeds nothing).

The bare query goes through ``ShardEngine``'s private ``_request`` and ``_shard``: a request
built here by hand could drift from the engine's, and the baseline would then time another
query. Before timing, each mode checks that bare and ``engine.search`` rank the same points.
Memory is read from /proc/self/status (VmRSS, VmHWM reset per part); the ``others`` column is
the CPU other processes used meanwhile, since tail latencies on a shared 2-core machine are
mostly theirs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO_ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import qdrant_edge as qe  # noqa: E402
from numpy.typing import NDArray  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table  # noqa: E402

from bench.cisi_to_beir import DEFAULT_SOURCE, convert_cisi  # noqa: E402
from shardrag import Shardrag  # noqa: E402
from shardrag.engine import ShardEngine  # noqa: E402
from shardrag.engine import shard as engine_shard  # noqa: E402
from shardrag.engine.ids import point_id  # noqa: E402
from shardrag.ingest import Chunker, parse  # noqa: E402
from shardrag.models import Chunk, EmbeddedChunk, SearchMode, ShardQuery  # noqa: E402

console = Console()
T = TypeVar("T")

K = 10
MODES = (SearchMode.HYBRID, SearchMode.DENSE, SearchMode.KEYWORD)
CHUNKS_PER_DOCUMENT = 10
NOISE_SIGMA = 0.02
VOCABULARY_SIZE = 30_000
ZIPF_EXPONENT = 1.0
WORDS_PER_CHUNK = 60
WORDS_PER_QUERY = 5
SYNTHETIC_CHUNKS_PER_DOCUMENT = 1000
# Larger than any shard here: the load measures writes alone, then one timed optimize builds
# the indexes (the product default, 20k, would interleave index builds with the load).
NO_AUTO_OPTIMIZE = 10**12
TENANT = "bench"
OTHER_TENANT = "neighbour"


# -- measuring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    """Single-threaded latency of one kind of call over the query set."""

    count: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    qps: float
    #: CPU other processes used while these calls ran, in cores: competition for the cores.
    other_processes_cores: float
    samples_ms: list[float] = field(repr=False)

    @classmethod
    def of(cls, samples_ns: Sequence[int], other_processes_cores: float = 0.0) -> Latency:
        """Percentiles (linear interpolation), mean and queries/s of per-call durations."""
        ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
        return cls(
            other_processes_cores=round(other_processes_cores, 2),
            count=len(ms),
            p50_ms=float(np.percentile(ms, 50)),
            p99_ms=float(np.percentile(ms, 99)),
            mean_ms=float(ms.mean()),
            max_ms=float(ms.max()),
            qps=float(len(ms) / (ms.sum() / 1e3)),
            samples_ms=[round(float(x), 4) for x in ms],
        )


def time_each(
    call: Callable[[T], object],
    items: Sequence[T],
    warmup: int,
    tick: Callable[[], None] = lambda: None,
) -> Latency:
    """Call ``call`` on the first ``warmup`` items untimed, then time it on every item.

    ``tick`` runs after each call, outside the timed span (it drives the progress bar).
    """
    for item in items[:warmup]:
        call(item)
        tick()
    samples: list[int] = []
    machine = OtherProcessesCpu()
    for item in items:
        start = time.perf_counter_ns()
        call(item)
        samples.append(time.perf_counter_ns() - start)
        tick()
    return Latency.of(samples, machine.cores())


def memory_mib() -> dict[str, float]:
    """Resident set size now and its peak (VmHWM) in MiB, from /proc/self/status."""
    found: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return {"rss": round(found["VmRSS"], 1), "peak": round(found["VmHWM"], 1)}


def reset_peak_memory() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5), so a part's peak is its own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class OtherProcessesCpu:
    """CPU that processes other than this one use from now on, from /proc (in clock ticks)."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._busy = self._busy_ticks()

    @staticmethod
    def _busy_ticks() -> int:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (
            int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
        )
        # utime and stime (fields 14 and 15) of this process, all threads; counted after the
        # command name, which is in parentheses and may hold spaces.
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return user + nice + system + irq + softirq + steal - int(own[11]) - int(own[12])

    def cores(self) -> float:
        """Average cores busy with other processes since this object was made."""
        seconds = (self._busy_ticks() - self._busy) / os.sysconf("SC_CLK_TCK")
        return max(0.0, seconds / (time.perf_counter() - self._start))


def disk_mib(path: Path) -> float:
    """Space the files under ``path`` occupy on disk (allocated blocks, as ``du`` counts)."""
    blocks = sum(f.stat().st_blocks for f in path.rglob("*") if f.is_file())
    return round(blocks * 512 / 2**20, 1)


# -- queries against one shard -----------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """A query's text (what ``Shardrag.search`` gets) and a vector for the engine calls."""

    text: str
    vector: list[float]


def bare_request(
    rag: Shardrag, engine: ShardEngine, tenant: str, mode: SearchMode, query: Query
) -> qe.QueryRequest:
    """The very ``QueryRequest`` that ``ShardEngine.search`` sends for this query.

    Built with the engine's private helpers on purpose: a copy of the request construction
    here would silently drift from the engine's, and then the baseline would measure
    something else.
    """
    live = qe.Filter(
        must=[engine_shard._eq("tenant", tenant), engine_shard._eq("state", engine_shard._LIVE)]
    )
    shard_query = ShardQuery(tenant, mode, K, query.text, query.vector, fusion=rag.settings.fusion)
    return engine._request(shard_query, live)


Ranking = list[tuple[str, float]]


def bare_query_ranking(engine: ShardEngine, request: qe.QueryRequest) -> Ranking:
    """(point id, score) of the top ``K`` points of the bare engine query."""
    return [(str(point.id), point.score) for point in engine._shard.query(request)[:K]]


def engine_search_ranking(
    rag: Shardrag, engine: ShardEngine, tenant: str, mode: SearchMode, query: Query
) -> Ranking:
    """(point id, score) of ``ShardEngine.search``'s hits for the same vector and text."""
    hits = engine.search(
        ShardQuery(tenant, mode, K, query.text, query.vector, fusion=rag.settings.fusion)
    )
    return [(point_id(tenant, h.doc_id, h.version, h.chunk_index), h.score) for h in hits]


def same_ranking(first: Ranking, second: Ranking) -> bool:
    """The same scores rank by rank, held by the same points above the k-th score.

    Points of equal score come back in no fixed order (copies of a chunk tie on BM25, and
    fusion can tie too), so the order within a tie, and which members of a tie at the k-th
    place make the cut, may differ from one call to the next.
    """

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= 1e-5 * max(1.0, abs(a))

    if len(first) != len(second):
        return False
    if not all(close(a, b) for (_, a), (_, b) in zip(first, second, strict=True)):
        return False
    if not first:
        return True
    last = first[-1][1]
    above = [{p: s for p, s in ranking if not close(s, last)} for ranking in (first, second)]
    return above[0].keys() == above[1].keys() and all(
        close(score, above[1][p]) for p, score in above[0].items()
    )


@dataclass(frozen=True)
class ModeReport:
    """One search mode timed three ways, and how often bare and engine hits agreed."""

    search: Latency
    engine_search: Latency
    bare_query: Latency
    hits_agree: float


def measure_mode(
    rag: Shardrag,
    engine: ShardEngine,
    tenant: str,
    mode: SearchMode,
    queries: list[Query],
    warmup: int,
    tick: Callable[[], None],
) -> ModeReport:
    """Latency of ``search``, ``engine.search`` and the bare query of one mode.

    First, untimed, checks that the bare query's top k are ``engine.search``'s hits: the
    baseline runs the same query, not an easier one.
    """
    requests = [bare_request(rag, engine, tenant, mode, q) for q in queries]
    agree = 0
    for query, request in zip(queries, requests, strict=True):
        agree += same_ranking(
            engine_search_ranking(rag, engine, tenant, mode, query),
            bare_query_ranking(engine, request),
        )
        tick()

    def search(query: Query) -> object:
        return rag.search(tenant, query.text, k=K, mode=mode)

    def engine_search(query: Query) -> object:
        return engine.search(
            ShardQuery(tenant, mode, K, query.text, query.vector, fusion=rag.settings.fusion)
        )

    return ModeReport(
        search=time_each(search, queries, warmup, tick),
        engine_search=time_each(engine_search, queries, warmup, tick),
        bare_query=time_each(engine._shard.query, requests, warmup, tick),
        hits_agree=agree / len(queries),
    )


def measure_queries(
    rag: Shardrag, tenant: str, queries: list[Query], warmup: int, progress: Progress
) -> tuple[Latency, dict[str, ModeReport]]:
    """``embed_query`` latency, then every mode's ``search``/``engine.search``/bare latency."""
    engine = rag.shards.shard(rag.tenant(tenant).shard_id)
    timed_calls = len(queries) + min(warmup, len(queries))
    task = progress.add_task(
        "measuring queries", total=timed_calls * (1 + 3 * len(MODES)) + len(queries) * len(MODES)
    )

    def tick() -> None:
        progress.advance(task)

    progress.update(task, description="measuring embed_query")
    embedding = time_each(lambda q: rag.embedder.embed_query(q.text), queries, warmup, tick)
    modes: dict[str, ModeReport] = {}
    for mode in MODES:
        progress.update(task, description=f"measuring {mode.value} queries")
        modes[mode.value] = measure_mode(rag, engine, tenant, mode, queries, warmup, tick)
    return embedding, modes


# -- building a tenant --------------------------------------------------------------------------

Document = tuple[str, list[EmbeddedChunk]]


@dataclass(frozen=True)
class LoadReport:
    """Points written through ``upsert`` + ``commit`` and the seconds those calls took."""

    points: int
    documents: int
    seconds: float

    @property
    def points_per_second(self) -> float:
        """Write throughput of the engine's write protocol."""
        return self.points / self.seconds


def load(
    engine: ShardEngine,
    tenant: str,
    documents: Iterable[Document],
    progress: Progress,
    description: str,
    total: int,
) -> LoadReport:
    """Write each document as version 1 and commit it; only the engine calls are timed."""
    task = progress.add_task(description, total=total)
    points = count = 0
    elapsed = 0
    for doc_id, chunks in documents:
        start = time.perf_counter_ns()
        engine.upsert(tenant, doc_id, 1, chunks, {}, "document.txt")
        engine.commit(tenant, doc_id, 1)
        elapsed += time.perf_counter_ns() - start
        points += len(chunks)
        count += 1
        progress.advance(task, len(chunks))
    return LoadReport(points, count, elapsed / 1e9)


def unit_rows(matrix: NDArray[np.float32]) -> NDArray[np.float32]:
    """Each row scaled to unit length (cosine vectors)."""
    normalized: NDArray[np.float32] = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    return normalized


def content_hash(text: str) -> str:
    """The chunker's hash of an indexed text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- part A: real text --------------------------------------------------------------------------


def cisi_text(source: Path, chunker: Chunker, limit: int) -> tuple[list[Chunk], list[str]]:
    """The first ``limit`` unique chunks of the CISI documents, and the CISI query texts.

    Documents are chunked exactly as ``put_document`` chunks them (plain text, CISI title as the
    document title).
    """
    with tempfile.TemporaryDirectory() as tmp:
        dataset = convert_cisi(source, Path(tmp))
    unique: dict[str, Chunk] = {}
    for doc in dataset.corpus.values():
        if not (doc.text.strip() or doc.title.strip()):
            continue
        parsed = replace(parse(doc.text.encode(), "document.txt"), title=doc.title or None)
        for chunk in chunker.chunk(parsed):
            unique.setdefault(chunk.content_hash, chunk)
        if len(unique) >= limit:
            break
    return list(unique.values())[:limit], list(dataset.queries.values())


def perturbed_documents(
    chunks: list[Chunk],
    vectors: NDArray[np.float32],
    total: int,
    rng: np.random.Generator,
    first_copy: int = 0,
) -> Iterator[Document]:
    """``total`` chunks cycling ``chunks``, ~10 per document, each copy slightly different.

    Copy ``n`` of a chunk gets the vector plus N(0, 0.02) noise per component, renormalised
    (cosine ~0.93 to the original), and "(copy n)" appended to its text, so no two points are
    equal for either the dense or the keyword index.
    """
    dimension = vectors.shape[1]
    for start in range(0, total, CHUNKS_PER_DOCUMENT):
        copy = first_copy + start // CHUNKS_PER_DOCUMENT
        size = min(CHUNKS_PER_DOCUMENT, total - start)
        sources = [(start + i) % len(chunks) for i in range(size)]
        noise = rng.normal(0.0, NOISE_SIGMA, (size, dimension)).astype(np.float32)
        noisy = unit_rows(vectors[sources] + noise)
        embedded = []
        for index, (source, vector) in enumerate(zip(sources, noisy, strict=True)):
            original = chunks[source]
            text = f"{original.text} (copy {copy})"
            chunk = replace(original, index=index, text=text)
            chunk = replace(chunk, content_hash=content_hash(chunk.indexed_text))
            embedded.append(EmbeddedChunk(chunk, vector.tolist()))
        yield f"copy-{copy}", embedded


@dataclass(frozen=True)
class PartReport:
    """Everything one part measured: corpus, build, memory, query latencies."""

    name: str
    corpus: dict[str, Any]
    build: dict[str, float]
    memory_mib: dict[str, float]
    embed_query: Latency
    modes: dict[str, ModeReport]
    #: CPU the rest of the machine used while the queries ran, in cores (of ``os.cpu_count()``):
    #: other work competing for the cores shows here, and in the tail latencies.
    other_processes_cores: float


def open_bench_rag(data_dir: Path) -> Shardrag:
    """A fresh single-shard data dir (both tenants share the shard) with auto-optimise off."""
    return Shardrag.open(data_dir, shards=1, optimize_threshold=NO_AUTO_OPTIMIZE)


def optimize_timed(rag: Shardrag, points: int) -> float:
    """Seconds of ``Shardrag.optimize()`` (the binding holds the GIL: no progress meanwhile)."""
    console.print(
        f"optimize: building the indexes of {points:,} points "
        "(the engine holds the GIL, so nothing moves until it is done) ..."
    )
    start = time.perf_counter()
    rag.optimize()
    seconds = time.perf_counter() - start
    console.print(f"optimize: {seconds:,.1f} s")
    return seconds


def index_and_measure(
    name: str,
    rag: Shardrag,
    written: LoadReport,
    queries: list[Query],
    warmup: int,
    progress: Progress,
    figures: dict[str, dict[str, Any]],
) -> PartReport:
    """Optimize the loaded shard, time the queries, close the data dir, and report the part.

    ``figures`` holds what the part measured before: its ``corpus``, ``build`` and
    ``memory_mib`` entries (``rss_start`` and ``rss_before_load`` at least).
    """
    rss_loaded = memory_mib()["rss"]
    shard_points = rag.shards.shard(rag.tenant(TENANT).shard_id).points_count()
    optimize_seconds = optimize_timed(rag, shard_points)
    rss_optimized = memory_mib()["rss"]
    machine = OtherProcessesCpu()
    embed, modes = measure_queries(rag, TENANT, queries, warmup, progress)
    other_cores = machine.cores()
    peak = memory_mib()["peak"]
    rag.close()
    return PartReport(
        name=name,
        corpus={
            "tenant_chunks": written.points,
            "tenant_documents": written.documents,
            **figures["corpus"],
            "shard_points": shard_points,
            "queries": len(queries),
        },
        build={
            **figures["build"],
            "load_seconds": written.seconds,
            "load_points_per_second": round(written.points_per_second, 1),
            "optimize_seconds": optimize_seconds,
        },
        memory_mib={
            **figures["memory_mib"],
            "rss_after_load": rss_loaded,
            "rss_after_optimize": rss_optimized,
            "peak": peak,
            "disk": disk_mib(rag.data_dir),
            "raw_dense_vectors": round(shard_points * rag.embedder.dimension * 4 / 2**20, 1),
        },
        embed_query=embed,
        modes=modes,
        other_processes_cores=round(other_cores, 2),
    )


def run_real_text(
    work_dir: Path,
    chunks: int,
    other_tenant_chunks: int,
    unique_chunks: int,
    queries: int,
    warmup: int,
    seed: int,
    progress: Progress,
) -> PartReport:
    """Part A: a tenant of ``chunks`` perturbed CISI chunks next to a smaller tenant."""
    rng = np.random.default_rng(seed)
    reset_peak_memory()
    rss_start = memory_mib()["rss"]
    rag = open_bench_rag(work_dir / "real-text")
    try:
        embedder, settings = rag.embedder, rag.settings
        chunker = Chunker(embedder.tokenizer, settings.chunk_tokens, settings.chunk_overlap_tokens)
        unique, query_texts = cisi_text(DEFAULT_SOURCE, chunker, unique_chunks)
        embedder.embed_query("load the model weights before the clock starts")
        task = progress.add_task("embedding unique CISI chunks", total=len(unique))
        embed_start = time.perf_counter()
        rows: list[list[float]] = []
        for i in range(0, len(unique), settings.embed_batch_size):
            texts = [c.indexed_text for c in unique[i : i + settings.embed_batch_size]]
            rows.extend(embedder.embed_documents(texts))
            progress.advance(task, len(texts))
        embed_seconds = time.perf_counter() - embed_start
        vectors = np.asarray(rows, dtype=np.float32)
        wanted = cycled(query_texts, queries)
        vector_of = {text: embedder.embed_query(text) for text in dict.fromkeys(wanted)}

        rss_before = memory_mib()["rss"]
        tenant_shard = rag.create_tenant(TENANT).shard_id
        if rag.create_tenant(OTHER_TENANT).shard_id != tenant_shard:
            raise RuntimeError("both tenants must share one shard")
        engine = rag.shards.shard(tenant_shard)
        mine = load(
            engine,
            TENANT,
            perturbed_documents(unique, vectors, chunks, rng),
            progress,
            f"loading tenant {TENANT!r}",
            chunks,
        )
        theirs = load(
            engine,
            OTHER_TENANT,
            # Other copy numbers and another phase of the cycle: no point equals one of ours.
            perturbed_documents(unique[::-1], vectors[::-1], other_tenant_chunks, rng, 10**6),
            progress,
            f"loading tenant {OTHER_TENANT!r}",
            other_tenant_chunks,
        )
        return index_and_measure(
            "real_text",
            rag,
            mine,
            [Query(text, vector_of[text]) for text in wanted],
            warmup,
            progress,
            {
                "corpus": {
                    "other_tenant_chunks": theirs.points,
                    "unique_embedded_chunks": len(unique),
                    "unique_queries": len(vector_of),
                    "chunks_per_document": CHUNKS_PER_DOCUMENT,
                    "noise_sigma": NOISE_SIGMA,
                },
                "build": {
                    "embed_unique_seconds": embed_seconds,
                    "embed_chunks_per_second": round(len(unique) / embed_seconds, 1),
                    # Both tenants' writes; the load rate below is the measured tenant's.
                    "load_all_seconds": mine.seconds + theirs.seconds,
                },
                "memory_mib": {"rss_start": rss_start, "rss_before_load": rss_before},
            },
        )
    finally:
        rag.close()


def cycled(items: list[T], count: int) -> list[T]:
    """``count`` items, going round ``items`` as often as needed."""
    return [items[i % len(items)] for i in range(count)]


# -- part B: synthetic points -------------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    """Made-up words and their Zipf probabilities (rank r has weight 1/r)."""

    words: NDArray[np.str_]
    probabilities: NDArray[np.float64]

    @classmethod
    def made_up(cls, size: int, rng: np.random.Generator) -> Vocabulary:
        """``size`` distinct pronounceable non-words of 2 to 4 consonant-vowel syllables."""
        syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
        words: dict[str, None] = {}
        while len(words) < size:
            length = int(rng.integers(2, 5))
            words.setdefault("".join(rng.choice(syllables, length)), None)
        weights = 1.0 / np.arange(1, size + 1, dtype=np.float64) ** ZIPF_EXPONENT
        return cls(np.array(list(words)), weights / weights.sum())

    def texts(self, count: int, words: int, rng: np.random.Generator) -> list[str]:
        """``count`` texts of ``words`` words drawn independently by frequency."""
        drawn = rng.choice(len(self.words), size=(count, words), p=self.probabilities)
        return [" ".join(row) for row in self.words[drawn].tolist()]


def random_unit_vectors(count: int, dimension: int, rng: np.random.Generator) -> NDArray[Any]:
    """``count`` vectors uniformly distributed on the unit sphere."""
    return unit_rows(rng.standard_normal((count, dimension), dtype=np.float32))


def synthetic_documents(
    total: int, dimension: int, vocabulary: Vocabulary, rng: np.random.Generator
) -> Iterator[Document]:
    """``total`` random points in documents of 1000 chunks (the load's batch size)."""
    for start in range(0, total, SYNTHETIC_CHUNKS_PER_DOCUMENT):
        size = min(SYNTHETIC_CHUNKS_PER_DOCUMENT, total - start)
        vectors = random_unit_vectors(size, dimension, rng).tolist()
        texts = vocabulary.texts(size, WORDS_PER_CHUNK, rng)
        yield (
            f"synthetic-{start // SYNTHETIC_CHUNKS_PER_DOCUMENT}",
            [
                EmbeddedChunk(Chunk(i, text, "", content_hash(text), WORDS_PER_CHUNK), vector)
                for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))
            ],
        )


def run_synthetic(
    work_dir: Path, points: int, queries: int, warmup: int, seed: int, progress: Progress
) -> PartReport:
    """Part B: one tenant of ``points`` random vectors with Zipf-distributed texts."""
    rng = np.random.default_rng(seed + 1)
    vocabulary = Vocabulary.made_up(VOCABULARY_SIZE, rng)
    reset_peak_memory()
    rss_start = memory_mib()["rss"]
    rag = open_bench_rag(work_dir / "synthetic")
    try:
        dimension = rag.embedder.dimension
        query_set = [
            Query(text, vector)
            for text, vector in zip(
                vocabulary.texts(queries, WORDS_PER_QUERY, rng),
                random_unit_vectors(queries, dimension, rng).tolist(),
                strict=True,
            )
        ]
        rss_before = memory_mib()["rss"]
        written = load(
            rag.shards.shard(rag.create_tenant(TENANT).shard_id),
            TENANT,
            synthetic_documents(points, dimension, vocabulary, rng),
            progress,
            f"loading {points:,} synthetic points",
            points,
        )
        return index_and_measure(
            "synthetic",
            rag,
            written,
            query_set,
            warmup,
            progress,
            {
                "corpus": {
                    "vocabulary": VOCABULARY_SIZE,
                    "zipf_exponent": ZIPF_EXPONENT,
                    "words_per_chunk": WORDS_PER_CHUNK,
                    "words_per_query": WORDS_PER_QUERY,
                },
                "build": {},
                "memory_mib": {"rss_start": rss_start, "rss_before_load": rss_before},
            },
        )
    finally:
        rag.close()


# -- report -------------------------------------------------------------------------------------


def latency_table(part: PartReport) -> Table:
    """Every latency of a part beside its baseline, the bare engine query of the same mode."""
    corpus = part.corpus
    agree = ", ".join(f"{mode} {r.hits_agree:.0%}" for mode, r in part.modes.items())
    table = Table(
        title=(
            f"{part.name}: tenant of {corpus['tenant_chunks']:,} chunks, shard of "
            f"{corpus['shard_points']:,} points, {corpus['queries']} queries, k={K}, one thread"
        ),
        caption=(
            "search = Shardrag.search (text in); engine.search = ShardEngine.search (vector in); "
            "bare = EdgeShard.query on the same request (the limit); embed_query = the query "
            "embedding alone (keyword search embeds nothing); others = cores busy with other "
            f"processes while the measure ran (of {os.cpu_count()}). Same ranking from bare and "
            f"engine.search: {agree}."
        ),
    )
    columns = ("mode", "measure", "p50 ms", "p99 ms", "mean ms", "QPS", "p50/bare", "others")
    for column in columns:
        table.add_column(column, justify="left" if column in ("mode", "measure") else "right")
    for mode, report in part.modes.items():
        rows = [
            ("search", report.search),
            ("engine.search", report.engine_search),
            ("bare (baseline)", report.bare_query),
        ]
        if mode != SearchMode.KEYWORD.value:
            rows.append(("embed_query", part.embed_query))
        for position, (measure, latency) in enumerate(rows):
            table.add_row(
                mode if position == 0 else "",
                measure,
                f"{latency.p50_ms:.2f}",
                f"{latency.p99_ms:.2f}",
                f"{latency.mean_ms:.2f}",
                f"{latency.qps:,.0f}",
                f"{latency.p50_ms / report.bare_query.p50_ms:.1f}x",
                f"{latency.other_processes_cores:.2f}",
            )
        table.add_section()
    return table


def build_table(part: PartReport) -> Table:
    """Build and memory figures of a part, each beside its reference."""
    build, memory = part.build, part.memory_mib
    before = memory["rss_before_load"]
    table = Table(title=f"{part.name}: build and memory")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("reference", justify="right")
    if "embed_unique_seconds" in build:
        table.add_row(
            "embed unique chunks (once)",
            f"{build['embed_unique_seconds']:.1f} s",
            f"{build['embed_chunks_per_second']:.1f} chunks/s",
        )
    table.add_row(
        f"load tenant (upsert + commit, {part.corpus['tenant_documents']:,} documents)",
        f"{build['load_seconds']:.1f} s",
        f"{build['load_points_per_second']:,.0f} points/s",
    )
    table.add_row("optimize (index build)", f"{build['optimize_seconds']:.1f} s", "")
    table.add_row("RSS at part start", f"{memory['rss_start']:,.0f} MiB", "")
    table.add_row("RSS before load", f"{before:,.0f} MiB", "baseline")
    for key, label in (
        ("rss_after_load", "RSS after load"),
        ("rss_after_optimize", "RSS after optimize"),
        ("peak", "peak RSS (VmHWM) of the part"),
    ):
        table.add_row(label, f"{memory[key]:,.0f} MiB", f"+{memory[key] - before:,.0f} MiB")
    table.add_row(
        "data dir on disk",
        f"{memory['disk']:,.0f} MiB",
        f"raw float32 vectors {memory['raw_dense_vectors']:,.0f} MiB",
    )
    return table


def report_json(parts: list[PartReport], settings: dict[str, Any], seconds: float) -> str:
    """The whole report as JSON (latency samples included, for later analysis)."""
    return json.dumps(
        {
            "benchmark": "query",
            "settings": settings,
            "wall_seconds": round(seconds, 1),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "qdrant_edge_py": package_metadata.version("qdrant-edge-py"),
            },
            "parts": {part.name: asdict(part) for part in parts},
        },
        indent=2,
    )


def progress_bars() -> Progress:
    """Bars with counts, elapsed and remaining time."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both parts, print the tables, write the JSON report and return it."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks of the tenant (A)")
    parser.add_argument("--other-tenant-chunks", type=int, default=10_000)
    parser.add_argument("--unique-chunks", type=int, default=3000, help="CISI chunks embedded")
    parser.add_argument("--synthetic-points", type=int, default=1_000_000, help="0 skips B")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls per measure")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work-dir", type=Path, default=None, help="for the data dirs")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/query.json")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    work_dir = Path(tempfile.mkdtemp(prefix="shardrag-bench-query-", dir=args.work_dir))
    parts: list[PartReport] = []
    try:
        with progress_bars() as progress:
            parts.append(
                run_real_text(
                    work_dir,
                    args.chunks,
                    args.other_tenant_chunks,
                    args.unique_chunks,
                    args.queries,
                    args.warmup,
                    args.seed,
                    progress,
                )
            )
        if args.synthetic_points > 0:
            with progress_bars() as progress:
                parts.append(
                    run_synthetic(
                        work_dir,
                        args.synthetic_points,
                        args.queries,
                        args.warmup,
                        args.seed,
                        progress,
                    )
                )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    seconds = time.perf_counter() - started

    for part in parts:
        console.print(latency_table(part))
        console.print(build_table(part))
    settings = {
        key: value if not isinstance(value, Path) else str(value)
        for key, value in vars(args).items()
    }
    text = report_json(parts, {**settings, "k": K}, seconds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    console.print(f"wall time {seconds:,.0f} s; written to {args.out}")
    report: dict[str, Any] = json.loads(text)
    return report


if __name__ == "__main__":
    main()
