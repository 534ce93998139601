"""Shard scale benchmark: one shard engine at growing sizes, beside exact search of the same data.

    python -m bench.shard_scale [--sizes 100000 300000 1000000] [--tenants 10]
                                [--queries 1000] [--warmup 20] [--centres 3000]
                                [--fanout 1 2 4 8] [--nats-url nats://127.0.0.1:4222]
                                [--out bench/results/shard_scale.json]

What the shard-key design (docs/shard-key.md) needs measured on this machine: how one shard's
search latency and recall grow with its size, what a point costs in memory and on disk, what
sharing a shard between tenants costs, and what the router's hop adds per shard of a fan-out.

**Corpus.** Realistic vectors, not uniform noise: HNSW's recall and speed depend on the
intrinsic structure of the data, and points spread uniformly over the 384-d sphere are a worst
case that no text corpus resembles. The first ``--centres`` unique CISI chunks (shardrag's own
chunker) are embedded with the bundled all-MiniLM-L6-v2, once (cached under bench/data/). Each
point is a random centre plus Gaussian noise *shaped like the real embeddings* (covariance =
``SPREAD``^2 x the covariance of the centres), normalised: the cloud keeps the spectrum of real
MiniLM vectors and its points are distinct passages on a centre's topic, not near-duplicates.
``SPREAD`` is calibrated so that a synthetic set of as many points as there are centres has the
nearest-neighbour cosines of the real chunks (printed as ``calibration``). A point's text, for
BM25 and the payload, is a random window of 50-100 % of its centre's words. Points are written
in documents of ``CHUNKS_PER_DOCUMENT`` chunks, with the payload ``ShardEngine.upsert`` writes
(tenant, doc_id, version, state, text, ...). Queries are the 112 CISI questions, embedded,
cycled to ``--queries`` with fresh noise of half the spread on every repeat, each with its text.

**Scenarios**, each in a fresh shard: one tenant of each of ``--sizes`` points (prefixes of the
same generated set), and ``--tenants`` tenants sharing a shard of the largest size (document j
belongs to tenant j mod T; query i asks tenant i mod T). Every shard is written through
``ShardEngine.upsert`` + ``commit`` per document with automatic optimisation off, then indexed
by one timed ``optimize()`` (the engine's default, optimising every 20k points, would interleave
index builds with the load and rebuild merged segments again and again).

**Measures**, one query at a time, k = 10, after ``--warmup`` untimed queries:
``ShardEngine.search`` in dense and hybrid mode with its tenant and live-state filter,
p50/p95/p99 of the wall time and p50/p99 of the CPU time (on a shared machine the CPU time is
what a search costs on idle cores; the wall time's tail also holds other processes' turns);
beside it **the baseline, exact search** (numpy, one BLAS thread: the brute-force dot product of
the query with every vector of the tenant, then the top 10), whose top 10 are the truth for the
engine's dense recall@10 and "similarity kept" (the hits' summed cosine over the truth's: a miss
that is a near-tie costs almost nothing). In the shared shard, also **a split tenant**: the
shard's tenants stand for the parts of one tenant split by document hash; each query asks every
part, the hits are merged by score as the router merges shards, and recall is against exact
search over every point; the latency is the slowest part's. Load and index time, RSS after each
step and its peak, and the shard's disk use by component (dense vectors, HNSW links, BM25,
payload, payload indexes, write-ahead log).

**Router** (``--fanout``; skipped when NATS does not answer at ``--nats-url``): the cost of the
distributed mode's hop alone. ``Router.search`` asks 1, 2, 4 ... shards over NATS request-reply;
a responder process (not an index node: no engine, nothing to wait for) decodes each request
and answers a canned reply of 10 hits of real chunk text, as a node would encode it. Beside it
the baseline: the same encoding and decoding of requests and replies and the merge, in-process.
"""

from __future__ import annotations

import os

# Exact search is the single-thread baseline: one BLAS thread, set before numpy loads.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gc  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from importlib import metadata as package_metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, TypeVar  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.cisi_to_beir import DEFAULT_SOURCE  # noqa: E402
from bench.query import (  # noqa: E402
    Latency,
    OtherProcessesCpu,
    cisi_text,
    content_hash,
    cycled,
    memory_mib,
    reset_peak_memory,
    time_each,
    unit_rows,
)
from shardrag.config import Settings  # noqa: E402
from shardrag.embed.bundled import BundledEmbedder  # noqa: E402
from shardrag.engine import EngineSettings, ShardEngine, build  # noqa: E402
from shardrag.engine.shard import BM25, DENSE  # noqa: E402
from shardrag.ingest import Chunker  # noqa: E402
from shardrag.models import Chunk, EmbeddedChunk, Fusion, Hit, SearchMode, ShardQuery  # noqa: E402

# Wide when written to a log file (not a terminal): the tables have many columns.
console = Console(width=None if sys.stdout.isatty() else 170)
T = TypeVar("T")

K = 10
MODES = (SearchMode.DENSE, SearchMode.HYBRID)
CHUNKS_PER_DOCUMENT = 100
# Larger than any shard here: the load measures writes alone, then one timed optimize.
NO_AUTO_OPTIMIZE = 10**12
DEFAULT_SIZES = (100_000, 300_000, 1_000_000)
# Noise covariance = SPREAD^2 x the centres' covariance (calibrated: see ``calibrate``).
SPREAD = 0.65
GENERATE_BATCH = 50_000


# -- corpus ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Centres:
    """Real CISI chunks and questions with their all-MiniLM-L6-v2 embeddings."""

    texts: list[str]
    vectors: NDArray[np.float32]
    query_texts: list[str]
    query_vectors: NDArray[np.float32]
    embed_seconds: float

    @property
    def dimension(self) -> int:
        """Dimension of the embeddings."""
        return int(self.vectors.shape[1])


def load_centres(source: Path, limit: int, cache_dir: Path) -> Centres:
    """The embedded CISI chunks and questions, from ``cache_dir`` when embedded before.

    The cache file is named by the model and a hash of the texts, so another chunker, corpus
    or model embeds again.
    """
    embedder = BundledEmbedder()
    settings = Settings()
    chunker = Chunker(embedder.tokenizer, settings.chunk_tokens, settings.chunk_overlap_tokens)
    chunks, questions = cisi_text(source, chunker, limit)
    texts = [chunk.indexed_text for chunk in chunks]
    digest = hashlib.sha256("\0".join([embedder.model_id, *texts, *questions]).encode())
    cache = cache_dir / f"shard-scale-centres-{digest.hexdigest()[:16]}.npz"
    if cache.is_file():
        stored = np.load(cache)
        return Centres(
            texts,
            stored["vectors"],
            questions,
            stored["query_vectors"],
            float(stored["embed_seconds"]),
        )
    console.print(f"embedding {len(texts):,} CISI chunks and {len(questions)} questions (once)")
    start = time.perf_counter()
    vectors = np.asarray(embedder.embed_documents(texts), dtype=np.float32)
    embed_seconds = time.perf_counter() - start
    # all-MiniLM-L6-v2 embeds queries and passages alike: one batched call for both.
    query_vectors = np.asarray(embedder.embed_documents(questions), dtype=np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, vectors=vectors, query_vectors=query_vectors, embed_seconds=embed_seconds)
    return Centres(texts, vectors, questions, query_vectors, embed_seconds)


class NoiseShape:
    """Gaussian noise with the covariance of a set of real embeddings, times a spread."""

    def __init__(self, embeddings: NDArray[np.float32]) -> None:
        covariance = np.cov(embeddings.astype(np.float64), rowvar=False)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        # z @ basis has covariance V diag(lambda) V^T = the embeddings' covariance.
        self.basis = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))).T.astype(np.float32)

    def sample(self, count: int, spread: float, rng: np.random.Generator) -> NDArray[np.float32]:
        """``count`` noise vectors."""
        z = rng.standard_normal((count, self.basis.shape[0]), dtype=np.float32)
        noise: NDArray[np.float32] = (z @ self.basis) * np.float32(spread)
        return noise


@dataclass(frozen=True)
class Corpus:
    """Synthetic points around the centres: unit vectors, their centre, their text window."""

    vectors: NDArray[np.float32]
    centre: NDArray[np.int64]
    #: Start and length of each point's window of its centre's words (fractions of the words).
    window_start: NDArray[np.float32]
    window_length: NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def text(self, words: list[list[str]], point: int) -> str:
        """The point's text: a window of 50-100 % of its centre's words."""
        source = words[int(self.centre[point])]
        length = max(1, round(len(source) * float(self.window_length[point])))
        start = round((len(source) - length) * float(self.window_start[point]))
        return " ".join(source[start : start + length])


def synthesize(
    centres: NDArray[np.float32],
    shape: NoiseShape,
    count: int,
    spread: float,
    rng: np.random.Generator,
) -> Corpus:
    """``count`` points, each a random centre plus shaped noise, normalised."""
    vectors = np.empty((count, centres.shape[1]), dtype=np.float32)
    picks = rng.integers(0, len(centres), count)
    for start in range(0, count, GENERATE_BATCH):
        end = min(count, start + GENERATE_BATCH)
        vectors[start:end] = unit_rows(
            centres[picks[start:end]] + shape.sample(end - start, spread, rng)
        )
    return Corpus(
        vectors,
        picks,
        rng.random(count, dtype=np.float32),
        rng.uniform(0.5, 1.0, count).astype(np.float32),
    )


def nearest_neighbour_cosines(vectors: NDArray[np.float32]) -> NDArray[np.float64]:
    """Each vector's cosine to its nearest other vector (unit vectors)."""
    similarities = vectors @ vectors.T
    np.fill_diagonal(similarities, -np.inf)
    found: NDArray[np.float64] = similarities.max(axis=1).astype(np.float64)
    return found


@dataclass(frozen=True)
class Calibration:
    """Nearest-neighbour cosines of the real chunks and of a synthetic set of as many points."""

    spread: float
    real_p10_p50_p90: list[float]
    synthetic_p10_p50_p90: list[float]
    synthetic_cosine_to_centre: float


def calibrate(
    centres: NDArray[np.float32], shape: NoiseShape, spread: float, rng: np.random.Generator
) -> Calibration:
    """How close the synthetic cloud's neighbourhoods are to the real chunks' at equal size."""
    synthetic = synthesize(centres, shape, len(centres), spread, rng)
    to_centre = (synthetic.vectors * centres[synthetic.centre]).sum(axis=1)
    return Calibration(
        spread,
        np.percentile(nearest_neighbour_cosines(centres), [10, 50, 90]).round(3).tolist(),
        np.percentile(nearest_neighbour_cosines(synthetic.vectors), [10, 50, 90]).round(3).tolist(),
        round(float(to_centre.mean()), 3),
    )


@dataclass(frozen=True)
class ScaleQuery:
    """One query: the tenant it asks, its text and its vector."""

    tenant: str
    text: str
    vector: NDArray[np.float32]


def make_queries(
    centres: Centres, shape: NoiseShape, count: int, tenants: int, rng: np.random.Generator
) -> list[ScaleQuery]:
    """The CISI questions cycled to ``count``; every repeat moved by fresh noise (half spread).

    Query i asks tenant ``i mod tenants``.
    """
    base = len(centres.query_texts)
    vectors = centres.query_vectors[np.arange(count) % base].copy()
    repeats = np.arange(count) >= base
    vectors[repeats] = unit_rows(
        vectors[repeats] + shape.sample(int(repeats.sum()), SPREAD / 2, rng)
    )
    return [
        ScaleQuery(tenant_name(i % tenants), centres.query_texts[i % base], vectors[i])
        for i in range(count)
    ]


def tenant_name(index: int) -> str:
    """The name of tenant ``index``."""
    return f"tenant-{index}"


def doc_name(document: int) -> str:
    """The doc id of document ``document`` (it holds points j*CHUNKS_PER_DOCUMENT + i)."""
    return f"doc-{document}"


def point_of(hit: Hit) -> int:
    """The corpus position of a hit."""
    return int(hit.doc_id.removeprefix("doc-")) * CHUNKS_PER_DOCUMENT + hit.chunk_index


# -- exact search (the baseline) -----------------------------------------------------------------


def exact_top_k(matrix: NDArray[np.float32], query: NDArray[np.float32], k: int) -> NDArray[Any]:
    """Rows of the ``k`` largest dot products with ``query``, best first (brute force)."""
    scores = matrix @ query
    k = min(k, len(scores))
    top = np.argpartition(scores, -k)[-k:]
    return top[np.argsort(-scores[top], kind="stable")]


def recall_at_k(found: Sequence[int], truth: Sequence[int]) -> float:
    """Share of the true top k among what was found."""
    return len(set(found) & set(truth)) / len(truth) if len(truth) else 1.0


# -- one shard -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A shard of ``points`` points shared by ``tenants`` tenants (one tenant per document)."""

    points: int
    tenants: int
    #: The dense vectors' quantization (``EngineSettings.quantization``).
    quantization: str = "none"

    @property
    def name(self) -> str:
        """E.g. ``1,000,000 pts / 10 tenants`` (`` / int8`` when quantized)."""
        quantized = f" / {self.quantization}" if self.quantization != "none" else ""
        plural = "s" if self.tenants > 1 else ""
        return f"{self.points:,} pts / {self.tenants} tenant{plural}{quantized}"

    def tenant_of(self, point: int) -> str:
        """The tenant a corpus position belongs to."""
        return tenant_name((point // CHUNKS_PER_DOCUMENT) % self.tenants)

    def members(self, tenant: int) -> NDArray[Any]:
        """Corpus positions of a tenant's points (every tenant-th document)."""
        positions = np.arange(self.points)
        found: NDArray[Any] = positions[(positions // CHUNKS_PER_DOCUMENT) % self.tenants == tenant]
        return found


@dataclass(frozen=True)
class Timing:
    """Per-call wall time and CPU time of one measure.

    CPU time counts every thread of this process (``time.process_time_ns``), not the time the
    call waited for a core: on a shared machine it is close to what the call takes on an idle
    core, while the wall time's tail also holds the other processes' turns.
    """

    wall: Latency
    wall_p95_ms: float
    cpu: Latency
    cpu_p95_ms: float


def time_calls(call: Callable[[T], object], items: Sequence[T], warmup: int) -> Timing:
    """``bench.query.time_each`` of ``call``, with the CPU time of each timed call beside."""
    cpu_ns: list[int] = []

    def counted(item: T) -> None:
        start = time.process_time_ns()
        call(item)
        cpu_ns.append(time.process_time_ns() - start)

    wall = time_each(counted, items, warmup)
    cpu = Latency.of(cpu_ns[-len(items) :], wall.other_processes_cores)
    return Timing(wall, p95(wall), cpu, p95(cpu))


@dataclass(frozen=True)
class ModeReport:
    """``ShardEngine.search`` latency in one mode; dense recall is against exact search."""

    timing: Timing
    recall_at_10: float | None
    #: Mean over queries of the summed cosine of the hits over that of the true top 10: how
    #: much similarity the missed neighbours cost (near-ties cost almost nothing). Dense only.
    similarity_kept: float | None
    #: Hits of another tenant than the query's (must be 0: the tenant filter).
    foreign_hits: int


@dataclass(frozen=True)
class ScenarioReport:
    """What one shard measured."""

    name: str
    points: int
    tenants: int
    quantization: str
    tenant_points: int
    documents: int
    load_seconds: float
    load_points_per_second: float
    optimize_seconds: float
    segments: int
    memory_mib: dict[str, float]
    disk_mib: dict[str, float]
    disk_bytes_per_point: dict[str, float]
    modes: dict[str, ModeReport]
    exact: Timing
    #: Shared shards only: the shard's points as one tenant split over its tenants (see
    #: ``search_mode``), beside exact search over every point.
    split: dict[str, ModeReport]
    split_exact: Timing | None
    other_processes_cores: float
    #: One tenant only: dense search at each HNSW search effort (``--efforts``; 0: the
    #: engine's default), the same queries and truth.
    efforts: dict[str, ModeReport] = field(default_factory=dict)
    #: One tenant only (``--keyword-idf``): keyword and hybrid search with BM25's IDF from the
    #: shard's term counts and, the baseline, from the engine counting over the tenant's filter.
    keyword_idf: dict[str, Timing] = field(default_factory=dict)
    #: With ``keyword_idf``: seconds and RSS growth (MiB) of counting the terms from scratch.
    term_counting: dict[str, float] = field(default_factory=dict)


def p95(latency: Latency) -> float:
    """The 95th percentile of a latency's samples (linear interpolation, as p50 and p99)."""
    return float(np.percentile(latency.samples_ms, 95))


def segment_count(path: Path) -> int:
    """The segments of the shard at ``path``, in the generation it serves now (a build in a
    child process moves its files to ``gen-N``, engine/build.py)."""
    return sum(1 for p in (build.data_dir(path) / "segments").iterdir() if p.is_dir())


def disk_by_component(path: Path) -> dict[str, float]:
    """MiB on disk under ``path`` (allocated blocks), by what the files hold."""
    components = {
        f"vector_storage-{DENSE}": "dense_vectors",
        f"vector_index-{DENSE}": "hnsw_links",
        f"vector_storage-{BM25}": "bm25",
        f"vector_index-{BM25}": "bm25",
        "payload_storage": "payload",
        "payload_index": "payload_indexes",
        "wal": "wal",
    }
    sizes = dict.fromkeys([*dict.fromkeys(components.values()), "int8_vectors", "other"], 0.0)
    for file in path.rglob("*"):
        if file.is_file():
            kind = next((components[p] for p in file.parts if p in components), "other")
            if kind == "dense_vectors" and file.name.startswith("quantized"):
                kind = "int8_vectors"
            sizes[kind] += file.stat().st_blocks * 512 / 2**20
    return {kind: round(mib, 3) for kind, mib in sizes.items()}


def chunks_of(corpus: Corpus, words: list[list[str]], document: int) -> list[EmbeddedChunk]:
    """The chunks of one document, as the embedding stage would hand them to the engine."""
    start = document * CHUNKS_PER_DOCUMENT
    embedded = []
    for index in range(CHUNKS_PER_DOCUMENT):
        text = corpus.text(words, start + index)
        chunk = Chunk(index, text, "", content_hash(text), len(text.split()))
        embedded.append(EmbeddedChunk(chunk, corpus.vectors[start + index].tolist()))
    return embedded


def load_shard(
    engine: ShardEngine, scenario: Scenario, corpus: Corpus, words: list[list[str]]
) -> float:
    """Write the scenario's documents (upsert + commit each); seconds in engine calls."""
    documents = scenario.points // CHUNKS_PER_DOCUMENT
    elapsed = 0
    report_every = max(1, documents // 10)
    started = time.perf_counter()
    for document in range(documents):
        chunks = chunks_of(corpus, words, document)
        tenant = tenant_name(document % scenario.tenants)
        start = time.perf_counter_ns()
        engine.upsert(tenant, doc_name(document), 1, chunks, {}, "document.txt")
        engine.commit(tenant, doc_name(document), 1)
        elapsed += time.perf_counter_ns() - start
        if (document + 1) % report_every == 0:
            done = (document + 1) * CHUNKS_PER_DOCUMENT
            console.print(
                f"  loaded {done:,} / {scenario.points:,} points "
                f"({done / (time.perf_counter() - started):,.0f} points/s)"
            )
    return elapsed / 1e9


def search_mode(
    engine: ShardEngine,
    mode: SearchMode,
    queries: list[ScaleQuery],
    fusion: Fusion,
    warmup: int,
    scenario: Scenario,
    truth: list[list[int]],
    vectors: NDArray[np.float32],
    split: bool = False,
) -> ModeReport:
    """Time ``ShardEngine.search`` in one mode; recall and similarity kept (dense), and hits
    of other tenants; ``vectors`` are the corpus's, for the similarity of hits.

    With ``split``, every query asks every tenant of the shard and merges their hits by score,
    as the router merges a split tenant's shards: the shard's tenants stand for the parts of one
    tenant split by document hash (document j is in part j mod T). The timing is then, per
    query, the slowest part's (a fan-out waits for its slowest shard; here the parts are asked
    one after the other, so this assumes each would have a core of its own).
    """

    def asked(query: ScaleQuery) -> list[str]:
        return [tenant_name(t) for t in range(scenario.tenants)] if split else [query.tenant]

    def search(call: tuple[ScaleQuery, str]) -> list[Hit]:
        query, tenant = call
        return engine.search(
            ShardQuery(tenant, mode, K, query.text, query.vector.tolist(), fusion=fusion)
        )

    recalls: list[float] = []
    kept: list[float] = []
    foreign = 0
    for query, true_top in zip(queries, truth, strict=True):
        hits: list[Hit] = []
        for tenant in asked(query):
            part = search((query, tenant))
            foreign += sum(scenario.tenant_of(point_of(hit)) != tenant for hit in part)
            hits.extend(part)
        found = [point_of(hit) for hit in sorted(hits, key=lambda h: h.score, reverse=True)[:K]]
        recalls.append(recall_at_k(found, true_top))
        kept.append(
            float((vectors[found] @ query.vector).sum() / (vectors[true_top] @ query.vector).sum())
        )
    calls = [(query, tenant) for query in queries for tenant in asked(query)]
    timing = time_calls(search, calls, warmup * len(asked(queries[0])))
    dense = mode is SearchMode.DENSE
    return ModeReport(
        slowest_per_query(timing, scenario.tenants) if split else timing,
        float(np.mean(recalls)) if dense else None,
        float(np.mean(kept)) if dense else None,
        foreign,
    )


def slowest_per_query(timing: Timing, parts: int) -> Timing:
    """Of every ``parts`` consecutive calls (one query's), the slowest; wall and CPU apart."""

    def slowest(latency: Latency) -> Latency:
        ms = np.asarray(latency.samples_ms).reshape(-1, parts).max(axis=1)
        return Latency.of(
            (ms * 1e6).round().astype(np.int64).tolist(), latency.other_processes_cores
        )

    wall, cpu = slowest(timing.wall), slowest(timing.cpu)
    return Timing(wall, p95(wall), cpu, p95(cpu))


def exact_search(
    scenario: Scenario, corpus: Corpus, queries: list[ScaleQuery], warmup: int
) -> tuple[Timing, list[list[int]]]:
    """Time exact search per query over the query's tenant; its top ``K`` are the truth.

    Each tenant's vectors are one contiguous matrix, as a brute-force index would hold them.
    """
    tenants = []
    for tenant in range(scenario.tenants):
        if scenario.tenants == 1:
            members = np.arange(scenario.points)
            matrix = corpus.vectors[: scenario.points]
        else:
            members = scenario.members(tenant)
            matrix = np.ascontiguousarray(corpus.vectors[members])
        tenants.append((members, matrix))
    truth: dict[int, list[int]] = {}

    def exact(position: int) -> None:
        members, matrix = tenants[position % scenario.tenants]
        truth[position] = members[exact_top_k(matrix, queries[position].vector, K)].tolist()

    timing = time_calls(exact, list(range(len(queries))), warmup)
    return timing, [truth[i] for i in range(len(queries))]


def keyword_idf(
    engine: ShardEngine, queries: list[ScaleQuery], fusion: Fusion, warmup: int
) -> tuple[dict[str, Timing], dict[str, float]]:
    """``ShardEngine.search`` in keyword and hybrid mode, BM25's IDF taken from the shard's
    term counts (what it does, ``engine/terms.py``) beside the baseline, the engine's IDF
    counted over the tenant's live chunks at every query (what it did), same queries, one
    after the other; then the time and the memory of counting the terms from scratch (what
    opening the shard costs)."""
    counted = engine._terms

    def timed(mode: SearchMode) -> Timing:
        def search(item: ScaleQuery) -> None:
            engine.search(
                ShardQuery(item.tenant, mode, K, item.text, item.vector.tolist(), fusion=fusion)
            )

        return time_calls(search, queries, warmup)

    timings = {}
    for name, terms in (("engine_idf", None), ("term_counts", counted)):
        engine._terms = terms
        for mode in (SearchMode.KEYWORD, SearchMode.HYBRID):
            timings[f"{mode.value}_{name}"] = timed(mode)
    engine._terms = None
    gc.collect()
    rss = memory_mib()["rss"]
    start = time.perf_counter()
    engine._count_terms()
    seconds = time.perf_counter() - start
    return timings, {
        "count_seconds": round(seconds, 2),
        "count_rss_mib": round(memory_mib()["rss"] - rss, 1),
    }


def run_scenario(
    scenario: Scenario,
    corpus: Corpus,
    words: list[list[str]],
    queries: list[ScaleQuery],
    warmup: int,
    work_dir: Path,
    efforts: Sequence[int] = (),
    idf_probe: bool = False,
) -> ScenarioReport:
    """Build one shard, index it, and measure it beside exact search; the shard is removed."""
    console.print(f"[bold]{scenario.name}[/bold]: exact search (baseline) ...")
    exact, truth = exact_search(scenario, corpus, queries, warmup)
    split = scenario.tenants > 1
    if split:
        # The split's baseline and truth: exact search over every point of the shard.
        split_exact, split_truth = exact_search(
            Scenario(scenario.points, 1), corpus, queries, warmup
        )
    path = work_dir / f"shard-{scenario.points}-{scenario.tenants}-{scenario.quantization}"
    reset_peak_memory()
    rss_before = memory_mib()["rss"]
    settings = EngineSettings(dimension=corpus.vectors.shape[1], quantization=scenario.quantization)
    engine = ShardEngine(path, settings, NO_AUTO_OPTIMIZE)
    try:
        load_seconds = load_shard(engine, scenario, corpus, words)
        rss_loaded = memory_mib()["rss"]
        console.print(
            f"  optimize: building the indexes of {scenario.points:,} points "
            "(beyond 20k points in a child process, on a copy: engine/build.py) ..."
        )
        start = time.perf_counter()
        engine.optimize()
        optimize_seconds = time.perf_counter() - start
        console.print(f"  optimize: {optimize_seconds:,.1f} s")
        rss_optimized = memory_mib()["rss"]
        engine.flush()
        disk = disk_by_component(path)
        segments = segment_count(path)
        console.print("  searching ...")
        machine = OtherProcessesCpu()
        fusion = Settings().fusion
        modes = {
            mode.value: search_mode(
                engine, mode, queries, fusion, warmup, scenario, truth, corpus.vectors
            )
            for mode in MODES
        }
        split_modes = {
            mode.value: search_mode(
                engine, mode, queries, fusion, warmup, scenario, split_truth, corpus.vectors, True
            )
            for mode in MODES
            if split
        }
        swept = {}
        for effort in efforts if not split else ():
            engine.search_ef = effort
            swept[str(effort)] = search_mode(
                engine, SearchMode.DENSE, queries, fusion, warmup, scenario, truth, corpus.vectors
            )
        engine.search_ef = 0
        idf, counting = (
            keyword_idf(engine, queries, fusion, warmup) if idf_probe and not split else ({}, {})
        )
        others = machine.cores()
        memory = {
            "rss_before": rss_before,
            "rss_after_load": rss_loaded,
            "rss_after_optimize": rss_optimized,
            "rss_after_queries": memory_mib()["rss"],
            "peak": memory_mib()["peak"],
            # The index build's own peak, in its child process (beyond 20k points).
            "build_child_peak": round(
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
            ),
        }
    finally:
        engine.close()
        shutil.rmtree(path, ignore_errors=True)
    total = sum(disk.values())
    return ScenarioReport(
        name=scenario.name,
        points=scenario.points,
        tenants=scenario.tenants,
        quantization=scenario.quantization,
        tenant_points=len(scenario.members(0)),
        documents=scenario.points // CHUNKS_PER_DOCUMENT,
        load_seconds=load_seconds,
        load_points_per_second=round(scenario.points / load_seconds, 1),
        optimize_seconds=optimize_seconds,
        segments=segments,
        memory_mib=memory,
        disk_mib={**disk, "total": round(total, 1)},
        disk_bytes_per_point={
            kind: round(mib * 2**20 / scenario.points, 1)
            for kind, mib in {**disk, "total": total}.items()
        },
        modes=modes,
        exact=exact,
        split=split_modes,
        split_exact=split_exact if split else None,
        other_processes_cores=round(others, 2),
        efforts=swept,
        keyword_idf=idf,
        term_counting=counting,
    )


# -- the router's hop ---------------------------------------------------------------------------


def nats_answers(url: str) -> bool:
    """Whether the first server of ``url`` accepts a TCP connection."""
    first = urlsplit(url.split(",")[0].strip())
    try:
        with socket.create_connection((first.hostname or "127.0.0.1", first.port or 4222), 1):
            return True
    except OSError:
        return False


def canned_hits(texts: list[str]) -> list[Hit]:
    """``K`` hits of real chunk text, what a node's reply carries."""
    return [
        Hit(
            doc_id=doc_name(i),
            version=1,
            chunk_index=i,
            text=text,
            score=1.0 - i / 100,
            metadata={},
            filename="document.txt",
        )
        for i, text in enumerate(cycled(texts, K))
    ]


def serve_canned_replies(url: str, prefix: str, shards: int, texts: list[str], ready: Any) -> None:
    """Answer every search request of ``shards`` shards with canned hits (a child process).

    Decodes each request and encodes the reply as an index node does, without the engine.
    """
    # Imported here: the child process needs nothing else of this module.
    import nats

    from shardrag.cluster.protocol import SearchCall, SearchReply, queue_group, search_subject

    hits = canned_hits(texts)

    async def serve() -> None:
        client = await nats.connect(url)

        async def answer(msg: Any) -> None:
            call = SearchCall.decode(msg.data)
            await msg.respond(SearchReply("responder", 0, hits[: call.query.k]).encode())

        for shard in range(shards):
            await client.subscribe(
                search_subject(prefix, shard), queue=queue_group(shard), cb=answer
            )
        await client.flush()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(serve())


@dataclass(frozen=True)
class RouterReport:
    """``Router.search`` over NATS to ``fanout`` shards, and the same work in-process."""

    fanout: int
    router: Timing
    in_process: Timing


def measure_router(
    url: str,
    fanouts: list[int],
    queries: list[ScaleQuery],
    texts: list[str],
    warmup: int,
    work_dir: Path,
) -> list[RouterReport]:
    """The router's round trip to 1..n canned shards vs. encoding and merging in-process."""
    from shardrag.cluster.protocol import SearchCall, SearchReply
    from shardrag.cluster.router import Router
    from shardrag.cluster.shardmap import SqliteShardMap
    from shardrag.cluster.transport import NatsTransport
    from shardrag.natsconn import NatsConnection

    prefix = f"shardscale{secrets.token_hex(4)}"
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    responder = context.Process(
        target=serve_canned_replies,
        args=(url, prefix, max(fanouts), texts, ready),
        daemon=True,
    )
    responder.start()
    conn = NatsConnection(url, name="shard-scale-router")
    shard_map = SqliteShardMap(work_dir / "shardmap.sqlite3")
    hits = canned_hits(texts)
    fusion = Settings().fusion
    try:
        if not ready.wait(60):
            raise RuntimeError("the canned responder did not subscribe within 60 s")
        router = Router(NatsTransport(conn, prefix), shard_map, prefix)
        reports = []
        for fanout in fanouts:

            def calls(query: ScaleQuery, fanout: int = fanout) -> list[SearchCall]:
                return [
                    SearchCall(
                        ShardQuery(
                            query.tenant,
                            SearchMode.DENSE,
                            K,
                            query.text,
                            query.vector.tolist(),
                            fusion=fusion,
                        ),
                        shard,
                    )
                    for shard in range(fanout)
                ]

            def routed(query: ScaleQuery, fanout: int = fanout) -> object:
                return router.search(calls(query, fanout), K)

            def in_process(query: ScaleQuery, fanout: int = fanout) -> object:
                merged: list[Hit] = []
                for call in calls(query, fanout):
                    SearchCall.decode(call.encode())
                    reply = SearchReply.decode(SearchReply("local", 0, hits).encode())
                    merged.extend(reply.hits or [])
                merged.sort(key=lambda h: h.score, reverse=True)
                return merged[:K]

            console.print(f"  router: fan-out to {fanout} shard(s) ...")
            over_nats = time_calls(routed, queries, warmup)
            reports.append(RouterReport(fanout, over_nats, time_calls(in_process, queries, warmup)))
        return reports
    finally:
        conn.close()
        shard_map.close()
        responder.terminate()
        responder.join(10)


def measure_embed_query(questions: list[str], count: int, warmup: int) -> Timing:
    """The bundled model's query embedding alone (one thread, as searches embed)."""
    embedder = BundledEmbedder()
    return time_calls(embedder.embed_query, cycled(questions, count), warmup)


# -- report -------------------------------------------------------------------------------------


def search_table(reports: list[ScenarioReport], queries: int) -> Table:
    """Per shard: engine search latency per mode and dense recall, beside exact search."""
    table = Table(
        title=f"ShardEngine.search vs exact search, k={K}, {queries} queries, one at a time",
        caption=(
            "ms, wall p50 / p95 / p99 and CPU p50 / p99. dense and hybrid = ShardEngine.search "
            "with the tenant and live-state filter (HNSW, engine defaults); exact = numpy brute "
            "force over the tenant's vectors, one BLAS thread (the baseline, and the truth for "
            "recall@10; similarity kept = summed cosine of the dense hits / of the true top 10). "
            "The split row: every query asks each part and merges; latency = its slowest part; "
            "exact over every point. CPU = CPU time of this process per call, every thread "
            "(the engine may search segments in parallel: CPU can exceed wall): what a call "
            "costs on idle cores. "
            "others = cores busy with other processes while the engine searched "
            f"(of {os.cpu_count()})."
        ),
    )
    for column in (
        "shard",
        "tenant pts",
        "dense wall",
        "dense CPU",
        "hybrid wall",
        "hybrid CPU",
        "recall@10",
        "similarity kept",
        "exact wall (baseline)",
        "exact CPU",
        "others",
    ):
        table.add_column(column, justify="left" if column == "shard" else "right")
    for r in reports:
        rows = [(r.name, r.tenant_points, r.modes, r.exact)]
        if r.split_exact is not None:
            name = f"{r.points:,} pts as 1 tenant in {r.tenants} parts (slowest part)"
            rows.append((name, r.points, r.split, r.split_exact))
        for name, points, modes, exact in rows:
            dense, hybrid = modes[SearchMode.DENSE.value], modes[SearchMode.HYBRID.value]
            table.add_row(
                name,
                f"{points:,}",
                wall_percentiles(dense.timing),
                cpu_percentiles(dense.timing),
                wall_percentiles(hybrid.timing),
                cpu_percentiles(hybrid.timing),
                f"{dense.recall_at_10:.3f}",
                f"{dense.similarity_kept:.4f}",
                wall_percentiles(exact),
                cpu_percentiles(exact),
                f"{r.other_processes_cores:.2f}",
            )
    return table


def effort_table(reports: list[ScenarioReport]) -> Table:
    """Dense recall and latency at each HNSW search effort, beside exact search."""
    table = Table(
        title=f"dense search by HNSW search effort (ef), k={K}, one tenant",
        caption=(
            "ef 0 = shardrag's default by shard size (search_effort_for); 100 = the engine's "
            "own default (its ef_construct); exact = the baseline"
        ),
    )
    for column in ("shard", "ef", "recall@10", "similarity kept", "wall p50/p95/p99", "CPU"):
        table.add_column(column, justify="left" if column == "shard" else "right")
    for r in reports:
        for effort, mode in r.efforts.items():
            table.add_row(
                r.name,
                str(effort),
                f"{mode.recall_at_10:.3f}",
                f"{mode.similarity_kept:.4f}",
                wall_percentiles(mode.timing),
                cpu_percentiles(mode.timing),
            )
        if r.efforts:
            table.add_row(r.name, "exact", "1.000", "1.0000", wall_percentiles(r.exact), "")
    return table


def keyword_idf_table(report: ScenarioReport) -> Table:
    """Keyword and hybrid search, IDF from the term counts vs counted by the engine."""
    table = Table(
        title=f"{report.name}: BM25's IDF from the shard's term counts vs counted by the engine "
        f"over the tenant at each query (baseline); counting from scratch "
        f"{report.term_counting.get('count_seconds')} s, "
        f"+{report.term_counting.get('count_rss_mib')} MiB RSS"
    )
    table.add_column("search")
    table.add_column("IDF")
    table.add_column("wall p50 / p95 / p99 ms", justify="right")
    table.add_column("CPU p50 / p99 ms", justify="right")
    for mode in ("keyword", "hybrid"):
        for name, label in (("engine_idf", "engine, over the tenant"), ("term_counts", "counts")):
            timing = report.keyword_idf[f"{mode}_{name}"]
            table.add_row(mode, label, wall_percentiles(timing), cpu_percentiles(timing))
    return table


def wall_percentiles(timing: Timing) -> str:
    """Wall ``p50 / p95 / p99`` in ms."""
    wall = timing.wall
    return f"{wall.p50_ms:.2f} / {timing.wall_p95_ms:.2f} / {wall.p99_ms:.2f}"


def cpu_percentiles(timing: Timing) -> str:
    """CPU ``p50 / p99`` in ms."""
    return f"{timing.cpu.p50_ms:.2f} / {timing.cpu.p99_ms:.2f}"


def build_table(reports: list[ScenarioReport]) -> Table:
    """Per shard: write and index time, memory, disk by component per point."""
    table = Table(
        title="build and footprint",
        caption=(
            "load = upsert + commit per document of "
            f"{CHUNKS_PER_DOCUMENT} chunks (engine calls only); optimize = one index build "
            "(in a child process beyond 20k points: its peak RSS is the child's, shown apart). "
            "RSS deltas are over the RSS before the shard was opened (the corpus arrays "
            "excluded). Bytes per point on disk: dense vectors / HNSW links / BM25 (sparse "
            "vectors + inverted index) / payload / payload indexes / write-ahead log / other "
            "(id tracker, config); int8: the quantized copies. RSS +queries per point: the "
            "process's growth once searched (an upper bound: the allocator keeps what the "
            "index build freed)."
        ),
    )
    for column in (
        "shard",
        "load s (pts/s)",
        "optimize s",
        "segments",
        "RSS +load / +optimize / peak MiB (build child peak)",
        "disk MiB",
        "B/pt dense / int8 / hnsw / bm25 / payload / idx / wal / other",
        "B/pt total",
        "RSS +queries B/pt",
    ):
        table.add_column(column, justify="left" if column == "shard" else "right")
    for r in reports:
        m, b = r.memory_mib, r.disk_bytes_per_point
        table.add_row(
            r.name,
            f"{r.load_seconds:,.0f} ({r.load_points_per_second:,.0f})",
            f"{r.optimize_seconds:,.0f}",
            str(r.segments),
            f"+{m['rss_after_load'] - m['rss_before']:,.0f} / "
            f"+{m['rss_after_optimize'] - m['rss_before']:,.0f} / "
            f"+{m['peak'] - m['rss_before']:,.0f} ({m.get('build_child_peak', 0):,.0f})",
            f"{r.disk_mib['total']:,.0f}",
            " / ".join(
                f"{b[kind]:,.0f}"
                for kind in (
                    "dense_vectors",
                    "int8_vectors",
                    "hnsw_links",
                    "bm25",
                    "payload",
                    "payload_indexes",
                    "wal",
                    "other",
                )
            ),
            f"{b['total']:,.0f}",
            f"{(m['rss_after_queries'] - m['rss_before']) * 2**20 / r.points:,.0f}",
        )
    return table


def router_table(reports: list[RouterReport], embed: Timing | None) -> Table:
    """The router's hop per fan-out beside the same work in-process."""
    table = Table(
        title="the router's hop: Router.search over NATS to canned shards",
        caption=(
            "ms, wall p50 / p95 / p99 and CPU p50 / p99 (of this process: the router's side). "
            "One responder process answers every shard with 10 canned "
            "hits (no engine); in-process = the same request/reply encoding and merge without "
            "NATS (the baseline)."
            + (
                f" Query embedding alone (bundled model, one thread): wall "
                f"{wall_percentiles(embed)}, CPU {cpu_percentiles(embed)} ms."
                if embed
                else ""
            )
        ),
    )
    for column in (
        "shards asked",
        "router over NATS",
        "router CPU",
        "in-process (baseline)",
        "in-process CPU",
        "hop p50",
    ):
        table.add_column(column, justify="right")
    for r in reports:
        table.add_row(
            str(r.fanout),
            wall_percentiles(r.router),
            cpu_percentiles(r.router),
            wall_percentiles(r.in_process),
            cpu_percentiles(r.in_process),
            f"{r.router.wall.p50_ms - r.in_process.wall.p50_ms:.2f}",
        )
    return table


def print_tables(report: dict[str, Any], parts: BenchParts) -> None:
    """Every table of what was measured so far."""
    calibration = parts.calibration
    console.print(
        f"corpus: {parts.centres} CISI chunk centres, spread {calibration.spread}; nearest-"
        f"neighbour cosine p10/p50/p90 real {calibration.real_p10_p50_p90}, synthetic "
        f"{calibration.synthetic_p10_p50_p90}; a point's cosine to its centre "
        f"{calibration.synthetic_cosine_to_centre}"
    )
    if parts.scenarios:
        console.print(search_table(parts.scenarios, report["settings"]["queries"]))
        if any(r.efforts for r in parts.scenarios):
            console.print(effort_table(parts.scenarios))
        for r in parts.scenarios:
            if r.keyword_idf:
                console.print(keyword_idf_table(r))
        console.print(build_table(parts.scenarios))
    if parts.router:
        console.print(router_table(parts.router, parts.embed_query))
    elif parts.embed_query:
        embed = parts.embed_query
        console.print(
            f"query embedding alone: wall {wall_percentiles(embed)}, "
            f"CPU {cpu_percentiles(embed)} ms"
        )


@dataclass
class BenchParts:
    """Everything measured in one run."""

    centres: int
    calibration: Calibration
    scenarios: list[ScenarioReport]
    router: list[RouterReport]
    embed_query: Timing | None = None


def report_dict(parts: BenchParts, settings: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The whole report, JSON-ready (latency samples included, for later analysis)."""
    return {
        "benchmark": "shard_scale",
        "settings": settings,
        "wall_seconds": round(seconds, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "qdrant_edge_py": package_metadata.version("qdrant-edge-py"),
        },
        "corpus": {"centres": parts.centres, "calibration": asdict(parts.calibration)},
        "scenarios": [asdict(r) for r in parts.scenarios],
        "router": [asdict(r) for r in parts.router],
        "embed_query": asdict(parts.embed_query) if parts.embed_query else None,
    }


def scenarios_of(
    sizes: list[int], tenants: int, quantizations: Sequence[str] = ("none",)
) -> list[Scenario]:
    """One tenant at each size in each quantization, then ``tenants`` tenants sharing the
    largest (if > 1)."""
    found = [Scenario(size, 1, q) for size in sorted(sizes) for q in quantizations]
    if tenants > 1:
        found.append(Scenario(max(sizes), tenants, quantizations[0]))
    return found


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every scenario, the router and embedding measures; print, write and return JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--tenants", type=int, default=10, help="sharing the largest; 1: no")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls per measure")
    parser.add_argument("--centres", type=int, default=3000, help="CISI chunks embedded")
    parser.add_argument("--spread", type=float, default=SPREAD)
    parser.add_argument("--fanout", type=int, nargs="*", default=[1, 2, 4, 8])
    parser.add_argument(
        "--keyword-idf",
        action="store_true",
        help="keyword and hybrid search, IDF from term counts vs counted by the engine",
    )
    parser.add_argument(
        "--quantization",
        nargs="+",
        default=["none"],
        choices=["none", "int8"],
        help="dense vectors of each one-tenant shard: float32 (none) and/or int8",
    )
    parser.add_argument(
        "--efforts",
        type=int,
        nargs="*",
        default=[],
        help="HNSW search efforts (ef) to sweep dense search over, one tenant; 0: by size",
    )
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--embed-queries", type=int, default=300, help="0 skips")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work-dir", type=Path, default=None, help="for the shards")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "bench/data")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/shard_scale.json")
    args = parser.parse_args(argv)
    for size in args.sizes:
        if size % CHUNKS_PER_DOCUMENT or size % (CHUNKS_PER_DOCUMENT * args.tenants):
            parser.error(f"every size must be a multiple of {CHUNKS_PER_DOCUMENT} x tenants")

    started = time.perf_counter()
    settings = {
        key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
    }
    settings["k"] = K
    rng = np.random.default_rng(args.seed)
    centres = load_centres(DEFAULT_SOURCE, args.centres, args.cache_dir)
    shape = NoiseShape(centres.vectors)
    console.print(f"generating {max(args.sizes):,} points around {len(centres.texts):,} centres")
    corpus = synthesize(centres.vectors, shape, max(args.sizes), args.spread, rng)
    words = [text.split() for text in centres.texts]
    parts = BenchParts(
        len(centres.texts), calibrate(centres.vectors, shape, args.spread, rng), [], []
    )
    work_dir = Path(tempfile.mkdtemp(prefix="shardrag-bench-shard-scale-", dir=args.work_dir))

    def write() -> dict[str, Any]:
        report = report_dict(parts, settings, time.perf_counter() - started)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        return report

    try:
        for scenario in scenarios_of(args.sizes, args.tenants, args.quantization):
            queries = make_queries(
                centres, shape, args.queries, scenario.tenants, np.random.default_rng(args.seed)
            )
            parts.scenarios.append(
                run_scenario(
                    scenario,
                    corpus,
                    words,
                    queries,
                    args.warmup,
                    work_dir,
                    args.efforts,
                    args.keyword_idf,
                )
            )
            print_tables(write(), parts)
        if args.embed_queries:
            console.print("query embedding ...")
            parts.embed_query = measure_embed_query(
                centres.query_texts, args.embed_queries, args.warmup
            )
        if args.fanout and nats_answers(args.nats_url):
            queries = make_queries(
                centres, shape, args.queries, 1, np.random.default_rng(args.seed)
            )
            parts.router = measure_router(
                args.nats_url, args.fanout, queries, centres.texts, args.warmup, work_dir
            )
        elif args.fanout:
            console.print(f"router: skipped, no NATS server answers at {args.nats_url}")
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    report = write()
    print_tables(report, parts)
    console.print(f"wall time {report['wall_seconds']:,.0f} s; written to {args.out}")
    return report


if __name__ == "__main__":
    main()
