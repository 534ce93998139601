"""What access groups cost a search: one tenant's shard, searched with and without groups.

    python -m bench.access_groups [--points 100000] [--groups 10] [--queries 300]
                                  [--out bench/results/access_groups.json]

The corpus is bench/shard_scale.py's (CISI-shaped synthetic vectors, texts from the CISI
chunks), one tenant of ``--points`` points in documents of 100 chunks. Every document but the
public fifth belongs to one of ``--groups`` groups, round robin. Measured one query at a time
(k = 10, ``ShardEngine.search``) in dense, keyword and hybrid mode, in this order per mode:

- **baseline**: no groups (a key without groups: no access condition in the engine query);
- **one group**: a key of one group (reads its documents and the public ones, 30 %);
- **half the groups**: a key of half the groups (~60 %);
- keyword and hybrid also **half the groups, engine IDF (before)**: the same key, BM25's
  statistics over what it may read counted by the engine at every query (what a restricted
  query did before the shard kept term counts per set of groups, ``engine/terms.py``).

Also reported: recall@10 of the restricted dense search against exact search over the
readable points (the filter must not cost recall).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.cisi_to_beir import DEFAULT_SOURCE  # noqa: E402
from bench.shard_scale import (  # noqa: E402
    CHUNKS_PER_DOCUMENT,
    NO_AUTO_OPTIMIZE,
    SPREAD,
    NoiseShape,
    ScaleQuery,
    Timing,
    chunks_of,
    exact_top_k,
    load_centres,
    make_queries,
    recall_at_k,
    synthesize,
    time_calls,
)
from shardrag import acl  # noqa: E402
from shardrag.engine import EngineSettings, ShardEngine  # noqa: E402
from shardrag.models import SearchMode, ShardQuery  # noqa: E402

console = Console(stderr=True)
K = 10
TENANT = "t0"
#: The comparison case of keyword and hybrid mode: half the groups, the engine's IDF.
ENGINE_IDF = "half the groups, engine IDF (before)"
#: Every fifth document has no group (public).
PUBLIC_EVERY = 5


def group_of(document: int, groups: int) -> str | None:
    """The group of a document (None: public)."""
    if document % PUBLIC_EVERY == 0:
        return None
    return f"g{document % groups}"


def cases(groups: int) -> dict[str, tuple[str, ...] | None]:
    """The keys compared: none, one group, half the groups."""
    return {
        "baseline (no groups)": None,
        "one group": ("g1",),
        "half the groups": tuple(f"g{i}" for i in range(1, groups // 2 + 1)),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--centres", type=int, default=3000)
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "bench" / "data")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    centres = load_centres(DEFAULT_SOURCE, args.centres, args.cache_dir)
    shape = NoiseShape(centres.vectors)
    corpus = synthesize(centres.vectors, shape, args.points, SPREAD, rng)
    words = [text.split() for text in centres.texts]
    queries = make_queries(centres, shape, args.queries, 1, rng)
    documents = args.points // CHUNKS_PER_DOCUMENT
    owner = [group_of(d, args.groups) for d in range(documents)]
    with tempfile.TemporaryDirectory(prefix="acl-bench-") as tmp:
        engine = ShardEngine(
            Path(tmp) / "shard",
            EngineSettings(dimension=centres.vectors.shape[1]),
            NO_AUTO_OPTIMIZE,
        )
        try:
            started = time.perf_counter()
            for document in range(documents):
                group = owner[document]
                meta = acl.with_acl({}, (group,) if group else ())
                name = f"doc-{document}"
                engine.upsert(TENANT, name, 1, chunks_of(corpus, words, document), meta, None)
                engine.commit(TENANT, name, 1)
                if (document + 1) % max(1, documents // 5) == 0:
                    console.print(f"  loaded {(document + 1) * CHUNKS_PER_DOCUMENT:,} points")
            engine.optimize()
            console.print(f"loaded and indexed in {time.perf_counter() - started:.0f} s")
            report = measure(engine, corpus.vectors, owner, queries, args)
        finally:
            engine.close()
    show(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return report


def measure(
    engine: ShardEngine,
    vectors: Any,
    owner: list[str | None],
    queries: list[ScaleQuery],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Latency per mode and case, recall of restricted dense search vs exact search."""
    point_owner = np.repeat(np.array(owner, dtype=object), CHUNKS_PER_DOCUMENT)
    results: dict[str, Any] = {"points": args.points, "groups": args.groups, "modes": {}}
    for mode in (SearchMode.DENSE, SearchMode.KEYWORD, SearchMode.HYBRID):
        per_case = {}
        for name, groups in cases(args.groups).items():

            def search(
                item: ScaleQuery,
                groups: tuple[str, ...] | None = groups,
                mode: SearchMode = mode,
            ) -> None:
                engine.search(
                    ShardQuery(TENANT, mode, K, item.text, item.vector.tolist(), groups=groups)
                )

            timing: Timing = time_calls(search, queries, args.warmup)
            entry: dict[str, Any] = {
                "wall_p50_ms": timing.wall.p50_ms,
                "wall_p99_ms": timing.wall.p99_ms,
            }
            if mode is SearchMode.DENSE:
                entry["recall_at_10"] = restricted_recall(
                    engine, vectors, point_owner, queries[:100], groups
                )
            readable = np.array([acl.may_read(groups, (o,) if o else ()) for o in owner])
            entry["readable_share"] = round(float(readable.mean()), 3)
            per_case[name] = entry
        if mode is not SearchMode.DENSE:
            # What a restricted query cost before the counts per set of groups: the engine
            # counting BM25's statistics over the filter at every query.
            counts, engine._terms = engine._terms, None
            half = cases(args.groups)["half the groups"]

            def engine_idf(
                item: ScaleQuery,
                mode: SearchMode = mode,
                groups: tuple[str, ...] | None = half,
            ) -> None:
                engine.search(
                    ShardQuery(TENANT, mode, K, item.text, item.vector.tolist(), groups=groups)
                )

            try:
                timing = time_calls(engine_idf, queries, args.warmup)
            finally:
                engine._terms = counts
            per_case[ENGINE_IDF] = {
                "wall_p50_ms": timing.wall.p50_ms,
                "wall_p99_ms": timing.wall.p99_ms,
                "readable_share": per_case["half the groups"]["readable_share"],
            }
        results["modes"][mode.value] = per_case
    return results


def restricted_recall(
    engine: ShardEngine,
    vectors: Any,
    point_owner: Any,
    queries: list[ScaleQuery],
    groups: tuple[str, ...] | None,
) -> float:
    """Dense recall@10 against exact search over the points the key may read."""
    readable = np.array([acl.may_read(groups, (o,) if o else ()) for o in point_owner])
    indexes = np.flatnonzero(readable)
    matrix = vectors[indexes]
    scores = []
    for item in queries:
        truth = indexes[exact_top_k(matrix, item.vector, K)]
        hits = engine.search(
            ShardQuery(TENANT, SearchMode.DENSE, K, item.text, item.vector.tolist(), groups=groups)
        )
        found = [int(h.doc_id.split("-")[1]) * CHUNKS_PER_DOCUMENT + h.chunk_index for h in hits]
        scores.append(recall_at_k(found, [int(t) for t in truth]))
    return round(float(np.mean(scores)), 4)


def show(report: dict[str, Any]) -> None:
    table = Table(title=f"access groups, {report['points']:,} points, k={K} (wall ms)")
    for column in ("mode", "key", "readable", "p50", "p99", "vs baseline p50", "recall@10"):
        table.add_column(column)
    for mode, per_case in report["modes"].items():
        base = per_case["baseline (no groups)"]["wall_p50_ms"]
        for name, entry in per_case.items():
            table.add_row(
                mode,
                name,
                f"{entry['readable_share']:.0%}",
                f"{entry['wall_p50_ms']:.2f}",
                f"{entry['wall_p99_ms']:.2f}",
                f"{entry['wall_p50_ms'] / base:.2f}x",
                str(entry.get("recall_at_10", "")),
            )
    Console().print(table)


if __name__ == "__main__":
    main()
