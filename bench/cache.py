"""Hot-tier benchmark: a repeated query served from the result cache vs. computed.

    python -m bench.cache [--docs 300] [--queries 50] [--rounds 5]

Both sides run in the same process on the same data: the baseline is a Shardrag with the cache
turned off (every search embeds the query and asks the shard), the measured side is one with
the cache on, after one pass that fills it. Prints p50/p99 of each and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console
from rich.table import Table

from bench.cisi_to_beir import DEFAULT_SOURCE, convert_cisi
from bench.ingest import percentiles
from shardrag import DocumentInput, Shardrag


def timed_searches(rag: Shardrag, queries: list[str], rounds: int) -> list[float]:
    """Seconds per hybrid search, every query ``rounds`` times."""
    samples = []
    for _ in range(rounds):
        for query in queries:
            start = time.perf_counter()
            rag.search("bench", query, k=10)
            samples.append(time.perf_counter() - start)
    return samples


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both sides, print the table, write bench/results/cache.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/cache.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = convert_cisi(DEFAULT_SOURCE, Path(tmp))
    documents = [
        DocumentInput(d.doc_id, d.text.encode(), filename="d.txt", title=d.title)
        for d in list(dataset.corpus.values())[: args.docs]
    ]
    queries = list(dataset.queries.values())[: args.queries]
    workdir = Path(tempfile.mkdtemp(prefix="shardrag-bench-cache-"))
    try:
        with Shardrag.open(workdir, result_cache_entries=0) as rag:
            rag.put_documents("bench", documents)
            uncached = timed_searches(rag, queries, args.rounds)
        with Shardrag.open(workdir) as rag:
            timed_searches(rag, queries, 1)  # fill the cache
            cached = timed_searches(rag, queries, args.rounds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = {"cached": percentiles(cached), "uncached": percentiles(uncached)}
    report["speedup_p50"] = round(report["uncached"]["p50_ms"] / report["cached"]["p50_ms"], 1)
    table = Table(title=f"repeated hybrid search, {args.docs} CISI documents, k=10")
    for column in ("", "p50 ms", "p99 ms", "searches"):
        table.add_column(column, justify="right")
    for label, key in (("cache hit (measured)", "cached"), ("no cache (baseline)", "uncached")):
        row = report[key]
        table.add_row(label, str(row["p50_ms"]), str(row["p99_ms"]), str(row["count"]))
    console = Console()
    console.print(table)
    console.print(f"speed-up at p50: {report['speedup_p50']}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
