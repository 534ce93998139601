"""One large tenant split over several shards, searched through the router, beside exact search.

    python -m bench.tenant_scale [--points 2000000] [--shards 4] [--queries 300]
                                 [--quantization int8] [--out bench/results/tenant_scale.json]

The largest tenant this machine holds, measured the way the product serves it: ``--points``
points of one tenant (the synthetic corpus of bench/shard_scale.py: real CISI chunk embeddings
as centres plus shaped noise, texts from the centres' words) split by document over
``--shards`` shards of one ``ShardSet``, written shard after shard through
``ShardEngine.upsert`` + ``commit`` and each indexed by ``optimize()`` (a child process) right
after its writes, so at most one build's memory is on top of the shards'. Searched through the
production read path's parts: ``RoutedSearch`` → ``Router`` → the embedded mode's in-process
transport → ``SearchServer`` → each shard's engine; a hybrid search of a split tenant fuses the
shards' unfused candidates once (docs/retrieval.md).

Measured, ``--queries`` one at a time, k = 10, after ``--warmup``: dense and hybrid p50/p95/p99
of the whole fan-out (in one process the shards answer one after another: this is the sum of
the shards' work, where a cluster's nodes answer in parallel) and of the slowest shard alone
per query (each shard's own search, timed apart: what a fan-out to parallel nodes waits for);
dense recall@10 against **the baseline, exact search** over all the tenant's points (numpy, one
BLAS thread, timed in the same run); load and build time per shard, RSS, the builds' peak, disk.
"""

from __future__ import annotations

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from rich.table import Table  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

from bench.cisi_to_beir import DEFAULT_SOURCE  # noqa: E402
from bench.query import memory_mib  # noqa: E402
from bench.shard_scale import (  # noqa: E402
    CHUNKS_PER_DOCUMENT,
    SPREAD,
    K,
    NoiseShape,
    Scenario,
    Timing,
    chunks_of,
    console,
    cpu_percentiles,
    disk_by_component,
    doc_name,
    exact_search,
    load_centres,
    make_queries,
    point_of,
    recall_at_k,
    synthesize,
    tenant_name,
    time_calls,
    wall_percentiles,
)
from shardrag.cluster.local import LocalNode  # noqa: E402
from shardrag.cluster.routed import RoutedSearch  # noqa: E402
from shardrag.cluster.router import Router  # noqa: E402
from shardrag.cluster.transport import LocalTransport  # noqa: E402
from shardrag.engine import EngineSettings, ShardSet  # noqa: E402
from shardrag.log import SqliteLog  # noqa: E402
from shardrag.models import Fusion, SearchMode, ShardQuery  # noqa: E402


def timing_dict(timing: Timing) -> dict[str, Any]:
    """A ``Timing`` as JSON."""
    return asdict(timing)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=2_000_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--centres", type=int, default=3000)
    parser.add_argument("--quantization", default="int8", choices=["none", "int8"])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "bench/data")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/tenant_scale.json")
    args = parser.parse_args(argv)
    if args.points % (CHUNKS_PER_DOCUMENT * args.shards):
        parser.error(f"--points must be a multiple of {CHUNKS_PER_DOCUMENT} x --shards")
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    centres = load_centres(DEFAULT_SOURCE, args.centres, args.cache_dir)
    shape = NoiseShape(centres.vectors)
    console.print(f"generating {args.points:,} points around {len(centres.texts):,} centres")
    corpus = synthesize(centres.vectors, shape, args.points, SPREAD, rng)
    words = [text.split() for text in centres.texts]
    queries = make_queries(centres, shape, args.queries, 1, np.random.default_rng(args.seed))
    tenant = tenant_name(0)
    console.print("exact search over every point (baseline) ...")
    exact, truth = exact_search(Scenario(args.points, 1), corpus, queries, args.warmup)

    work = Path(tempfile.mkdtemp(prefix="shardrag-bench-tenant-scale-", dir=args.work_dir))
    rss_before = memory_mib()["rss"]
    shards = ShardSet(
        work / "shards",
        EngineSettings(dimension=corpus.vectors.shape[1], quantization=args.quantization),
        optimize_threshold=2**62,
    )
    log = SqliteLog(work / "log.sqlite3")
    node = LocalNode(shards, args.shards, None, threading.Condition(), log)
    transport = LocalTransport(node.server)
    documents = args.points // CHUNKS_PER_DOCUMENT
    built: list[dict[str, float]] = []
    try:
        for shard_id in range(args.shards):
            engine = shards.shard(shard_id)
            start = time.perf_counter()
            mine = range(shard_id, documents, args.shards)
            for n, document in enumerate(mine, 1):
                chunks = chunks_of(corpus, words, document)
                engine.upsert(tenant, doc_name(document), 1, chunks, {}, "document.txt")
                engine.commit(tenant, doc_name(document), 1)
                if n % max(1, len(mine) // 5) == 0:
                    console.print(f"  shard {shard_id}: {n * CHUNKS_PER_DOCUMENT:,} points")
            loaded = time.perf_counter() - start
            console.print(f"  shard {shard_id}: building its indexes ...")
            start = time.perf_counter()
            engine.optimize()
            built.append(
                {
                    "points": len(mine) * CHUNKS_PER_DOCUMENT,
                    "load_seconds": round(loaded, 1),
                    "build_seconds": round(time.perf_counter() - start, 1),
                }
            )
        rss_loaded = memory_mib()["rss"]
        router = Router(transport, node, "tenant-scale")
        ids = list(range(args.shards))

        def routed(mode: SearchMode) -> Any:
            def search(i: int) -> Any:
                q = queries[i]
                query = ShardQuery(tenant, mode, K, q.text, q.vector.tolist(), fusion=Fusion.DBSF)
                return RoutedSearch(router, ids, {}, 0.0).search(query)

            return search

        report_modes: dict[str, Any] = {}
        for mode in (SearchMode.DENSE, SearchMode.HYBRID):
            console.print(f"searching, {mode.value} ...")
            timing = time_calls(routed(mode), range(len(queries)), args.warmup)
            # The slowest shard of each query, each shard's own search timed apart.
            per_shard = []
            for shard_id in ids:
                engine = shards.shard(shard_id)

                def alone(i: int, engine: Any = engine, mode: SearchMode = mode) -> Any:
                    q = queries[i]
                    return engine.search(ShardQuery(tenant, mode, K, q.text, q.vector.tolist()))

                per_shard.append(time_calls(alone, range(len(queries)), args.warmup))
            slowest = np.max([t.wall.samples_ms for t in per_shard], axis=0)
            found = [[point_of(h) for h in routed(mode)(i)] for i in range(len(queries))]
            recall = (
                float(np.mean([recall_at_k(f, t) for f, t in zip(found, truth, strict=True)]))
                if mode is SearchMode.DENSE
                else None
            )
            report_modes[mode.value] = {
                "routed": timing_dict(timing),
                "slowest_shard_ms": {
                    "p50": round(float(np.percentile(slowest, 50)), 2),
                    "p95": round(float(np.percentile(slowest, 95)), 2),
                    "p99": round(float(np.percentile(slowest, 99)), 2),
                },
                "recall_at_10": recall,
            }
        memory = {
            "rss_before": rss_before,
            "rss_after_load_and_builds": rss_loaded,
            "rss_after_queries": memory_mib()["rss"],
            "build_child_peak": round(
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
            ),
        }
        disk = disk_by_component(work / "shards")
    finally:
        transport.close()
        log.close()
        shards.close()
        shutil.rmtree(work, ignore_errors=True)

    report = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "shards": built,
        "exact": timing_dict(exact),
        "modes": report_modes,
        "memory_mib": memory,
        "disk_mib": {**disk, "total": round(sum(disk.values()), 1)},
        "rss_bytes_per_point": round(
            (memory["rss_after_queries"] - rss_before) * 2**20 / args.points, 1
        ),
        "seconds": round(time.perf_counter() - started, 1),
    }
    table = Table(
        title=f"one tenant of {args.points:,} points over {args.shards} shards "
        f"({args.quantization}), k={K}, {args.queries} queries, ms"
    )
    for column in (
        "search",
        "routed wall p50/p95/p99",
        "routed CPU p50/p99",
        "slowest shard alone p50/p95/p99",
        "recall@10",
    ):
        table.add_column(column)
    for name, mode in report_modes.items():
        slowest_ms = mode["slowest_shard_ms"]
        table.add_row(
            name,
            "{p50_ms:.2f} / {p95:.2f} / {p99_ms:.2f}".format(
                p95=mode["routed"]["wall_p95_ms"], **mode["routed"]["wall"]
            ),
            "{p50_ms:.2f} / {p99_ms:.2f}".format(**mode["routed"]["cpu"]),
            f"{slowest_ms['p50']:.2f} / {slowest_ms['p95']:.2f} / {slowest_ms['p99']:.2f}",
            "" if mode["recall_at_10"] is None else f"{mode['recall_at_10']:.3f}",
        )
    table.add_row(
        "exact (baseline)",
        wall_percentiles(exact),
        cpu_percentiles(exact),
        "",
        "1.000",
    )
    console.print(table)
    console.print(
        f"shards: {built}; RSS +{memory['rss_after_queries'] - rss_before:,.0f} MiB "
        f"({report['rss_bytes_per_point']:,.0f} B/point), build child peak "
        f"{memory['build_child_peak']:,.0f} MiB, disk {report['disk_mib']['total']:,.0f} MiB"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
