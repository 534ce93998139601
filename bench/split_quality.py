"""Split-tenant quality: one tenant whole on one shard vs split over several, same run.

    python -m bench.split_quality [--splits 2 4] [--k 40] [--json]
                                  [--out bench/results/split_quality.json]

CISI (1,460 real abstracts, 76 judged questions) is chunked by shardrag's chunker, embedded
once with the bundled model, and written through ``ShardEngine.upsert`` + ``commit``: whole
into one shard, and for each ``--splits`` N split by document hash over N more shards
(``Placement.shard_of``, what a promotion does). Every judged question is searched in hybrid
mode (DBSF and RRF) through the production read path's parts: ``RoutedSearch`` → ``Router`` →
the embedded mode's in-process transport → ``SearchServer`` → engine. For each split:

* **one fusion** (shardrag): the shards' unfused candidates, keyword scores rebuilt with the
  IDF of all shards, fused once over the union (``engine/fusion.py``);
* **the baseline, merge by shard score**: each shard's own fused top merged by those scores,
  what the router did before (and what a naive fan-out does).

Printed per fusion and setup: nDCG@10 and recall@100 over documents (ranked by their best of
``--k`` chunks), the share of questions whose top 10 is the whole tenant's (same documents in
the same order, up to equal scores and float rounding), and the median and p99 time of one
search in this process (the transport is in-process: this is the fan-out's and the fusion's
own cost, not the network's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO_ROOT = Path(__file__).resolve().parents[1]

from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.cisi_to_beir import DEFAULT_SOURCE, convert_cisi  # noqa: E402
from shardrag.cluster.local import LocalNode  # noqa: E402
from shardrag.cluster.protocol import SearchCall  # noqa: E402
from shardrag.cluster.routed import RoutedSearch  # noqa: E402
from shardrag.cluster.router import Router  # noqa: E402
from shardrag.cluster.shardmap import Placement  # noqa: E402
from shardrag.cluster.transport import LocalTransport  # noqa: E402
from shardrag.config import Settings  # noqa: E402
from shardrag.embed import open_embedder  # noqa: E402
from shardrag.engine import EngineSettings, ShardSet  # noqa: E402
from shardrag.evaluation.beir import BeirDataset, load_beir  # noqa: E402
from shardrag.evaluation.metrics import evaluate_run  # noqa: E402
from shardrag.ingest.chunker import Chunker  # noqa: E402
from shardrag.ingest.formats import parse  # noqa: E402
from shardrag.log import SqliteLog  # noqa: E402
from shardrag.models import EmbeddedChunk, Fusion, Hit, SearchMode, ShardQuery  # noqa: E402

TENANT = "library"
console = Console(stderr=True)

#: Documents with the score of their best chunk, best first.
Ranked = list[tuple[str, float]]


@dataclass
class Collection:
    """CISI written whole (shard 0) and split (``splits``: shard count → its shard ids)."""

    dataset: BeirDataset
    #: Judged query id → (text, vector).
    questions: dict[str, tuple[str, list[float]]]
    shards: ShardSet
    router: Router
    splits: dict[int, list[int]]
    whole: list[int]
    chunks: int


@contextmanager
def collection(
    source: Path, work_dir: Path, splits: list[int], progress: Progress | None = None
) -> Iterator[Collection]:
    """CISI embedded once, written whole and split, served through an in-process router."""
    convert_cisi(source, work_dir / "cisi")
    dataset = load_beir(work_dir / "cisi", "test")
    settings = Settings()
    embedder = open_embedder(settings)
    chunker = Chunker(embedder.tokenizer, settings.chunk_tokens, settings.chunk_overlap_tokens)
    documents = []
    for doc in dataset.corpus.values():
        text = f"{doc.title}\n\n{doc.text}".strip()
        if text:
            parsed = parse(text.encode(), "document.txt", None)
            documents.append((doc.doc_id, chunker.chunk(parsed)))
    texts = [chunk.indexed_text for _, chunks in documents for chunk in chunks]
    task = progress.add_task("embedding CISI", total=len(texts)) if progress else None
    vectors: list[list[float]] = []
    for start in range(0, len(texts), 256):
        vectors += embedder.embed_documents(texts[start : start + 256])
        if progress and task is not None:
            progress.update(task, completed=len(vectors))
    layout: dict[int, list[int]] = {}
    next_shard = 1
    for count in splits:
        layout[count] = list(range(next_shard, next_shard + count))
        next_shard += count
    shards = ShardSet(
        work_dir / "shards", EngineSettings(dimension=embedder.dimension), optimize_threshold=10**9
    )
    placements = [Placement(tuple(ids)) for ids in layout.values()]
    task = progress.add_task("writing shards", total=len(documents)) if progress else None
    remaining = iter(vectors)
    for doc_id, chunks in documents:
        embedded = [EmbeddedChunk(chunk, next(remaining)) for chunk in chunks]
        for shard_id in [0, *(p.shard_of(doc_id) for p in placements)]:
            engine = shards.shard(shard_id)
            engine.upsert(TENANT, doc_id, 1, embedded, {}, "document.txt")
            engine.commit(TENANT, doc_id, 1)
        if progress and task is not None:
            progress.advance(task)
    for shard_id in range(next_shard):
        shards.shard(shard_id).optimize()
    judged = dataset.judged_queries()
    questions = {qid: (text, embedder.embed_query(text)) for qid, text in judged.items()}
    log = SqliteLog(work_dir / "log.sqlite3")
    node = LocalNode(shards, next_shard, None, threading.Condition(), log)
    transport = LocalTransport(node.server)
    try:
        yield Collection(
            dataset, questions, shards, Router(transport, node, "split"), layout, [0], len(texts)
        )
    finally:
        transport.close()
        log.close()
        shards.close()


def query_of(text: str, vector: list[float], fusion: Fusion, k: int) -> ShardQuery:
    """A hybrid query of the tenant."""
    return ShardQuery(TENANT, SearchMode.HYBRID, k, text, vector, {}, fusion)


def ranked(hits: list[Hit]) -> Ranked:
    """Documents by their best chunk, with its score."""
    best: dict[str, float] = {}
    for hit in hits:
        best.setdefault(hit.doc_id, hit.score)
    return list(best.items())


def close(x: float, y: float) -> bool:
    """Equal up to float32 rounding (the engine fuses in float32)."""
    return abs(x - y) <= 1e-5 + 1e-4 * abs(x)


def same_top_10(one: Ranked, two: Ranked) -> bool:
    """The same first 10 documents in the same order, up to the order of equal scores (RRF
    ties often: rank r of one list scores like rank r of the other, and the engine orders
    equal scores arbitrarily) and to float rounding."""
    a, b = one[:10], two[:10]
    if len(a) != len(b) or not all(close(x, y) for (_, x), (_, y) in zip(a, b, strict=True)):
        return False
    where = dict(b)
    last = a[-1][1] if a else 0.0
    # A document of one that the other lacks may only be one of a tie at the cut.
    return all(close(where[d], s) if d in where else close(s, last) for d, s in a)


def same_documents_in_order(one: Ranked, two: Ranked) -> bool:
    """The same first 10 documents in the same order (scores not compared: the baseline's
    merged shard scores are on another scale)."""
    return [d for d, _ in one[:10]] == [d for d, _ in two[:10]]


def one_fusion(c: Collection, shards: list[int], query: ShardQuery) -> list[Hit]:
    """shardrag's search of the tenant on ``shards``."""
    return RoutedSearch(c.router, shards, {}, 0.0).search(query)


def merged_by_shard_score(c: Collection, shards: list[int], query: ShardQuery) -> list[Hit]:
    """The baseline: each shard's own fused top, merged by those scores."""
    return c.router.search([SearchCall(query, shard) for shard in shards], query.k).hits


def measure(
    c: Collection, shards: list[int], fusion: Fusion, k: int, merged: bool
) -> tuple[dict[str, Ranked], list[float]]:
    """Every judged question's ranking and each search's seconds."""
    search = merged_by_shard_score if merged else one_fusion
    rankings, seconds = {}, []
    for qid, (text, vector) in c.questions.items():
        started = time.perf_counter()
        hits = search(c, shards, query_of(text, vector, fusion, k))
        seconds.append(time.perf_counter() - started)
        rankings[qid] = ranked(hits)
    return rankings, seconds


def figures(
    c: Collection, rankings: dict[str, Ranked], seconds: list[float], whole: dict[str, Ranked]
) -> dict[str, Any]:
    """nDCG@10, recall@100, agreement with the whole tenant, latency of one setup."""
    scores = evaluate_run({q: [d for d, _ in r] for q, r in rankings.items()}, c.dataset.qrels)
    ordered = sorted(seconds)
    return {
        "ndcg@10": round(scores.ndcg_at_10, 4),
        "recall@100": round(scores.recall_at_100, 4),
        "same_top10": round(sum(same_top_10(rankings[q], whole[q]) for q in whole) / len(whole), 4),
        "same_documents_top10": round(
            sum(same_documents_in_order(rankings[q], whole[q]) for q in whole) / len(whole), 4
        ),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2),
    }


def run(c: Collection, k: int) -> dict[str, Any]:
    """Every fusion on the whole tenant and on each split, one fusion and the baseline."""
    report: dict[str, Any] = {}
    for fusion in Fusion:
        whole, seconds = measure(c, c.whole, fusion, k, merged=False)
        rows = {"whole": figures(c, whole, seconds, whole)}
        for count, shards in c.splits.items():
            for name, merged in (("one fusion", False), ("merge by shard score", True)):
                rankings, seconds = measure(c, shards, fusion, k, merged)
                rows[f"{count} shards, {name}"] = figures(c, rankings, seconds, whole)
        report[fusion.value] = rows
    return report


def print_report(report: dict[str, Any], console_out: Console | None = None) -> None:
    """One table per fusion."""
    out = console_out or Console()
    for fusion, rows in report["fusions"].items():
        table = Table(title=f"{fusion}: CISI, {report['questions']} questions, k={report['k']}")
        for column in ("setup", "nDCG@10", "recall@100", "same top 10", "p50 ms", "p99 ms"):
            table.add_column(column, justify="left" if column == "setup" else "right")
        for name, row in rows.items():
            table.add_row(
                name,
                f"{row['ndcg@10']:.4f}",
                f"{row['recall@100']:.4f}",
                f"{row['same_top10']:.1%}"
                if "merge" not in name
                else f"{row['same_documents_top10']:.1%} (docs)",
                f"{row['p50_ms']:.2f}",
                f"{row['p99_ms']:.2f}",
            )
        out.print(table)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Build the collection, measure every setup, print and write the report, return it."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--splits", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--k", type=int, default=40, help="chunks asked per question")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/split_quality.json")
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="shardrag-split-") as work,
        Progress(console=console, transient=True) as progress,
        collection(args.source, Path(work), args.splits, progress) as c,
    ):
        report = {
            "benchmark": "split_quality",
            "questions": len(c.questions),
            "chunks": c.chunks,
            "k": args.k,
            "splits": {str(n): shards for n, shards in c.splits.items()},
            "fusions": run(c, args.k),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return report


if __name__ == "__main__":
    main()
