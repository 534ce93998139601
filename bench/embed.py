"""Embedding benchmark: the bundled model's runtimes against bare PyTorch fp32, same run.

    python -m bench.embed [--docs 300] [--queries 60] [--out bench/results/embed.json]

Each candidate runs in a process of its own, one after another (ONNX Runtime and PyTorch each
keep thread pools; two in one process would steal cores from each other):

- ``torch-fp32 (baseline)``: bare ``SentenceTransformer.encode``, batch size 8, normalised;
- ``shardrag onnx-fp32`` and ``shardrag onnx-int8``: ``BundledEmbedder`` on that runtime.

Every candidate embeds the same texts: the unique chunks the pipeline makes of the first
``--docs`` CISI abstracts (batch, every core), then short questions and long CISI questions one
at a time on one thread (query p50/p99). The default runtime's process then measures the
product paths: ``put_documents`` of the same documents through the durable log on SQLite, and
``search`` (result cache off, every query distinct) over them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rich.console import Console
from rich.table import Table

from bench.cisi_to_beir import DEFAULT_SOURCE, convert_cisi
from bench.ingest import percentiles
from shardrag import DocumentInput, Shardrag
from shardrag.ingest import Chunker, parse
from shardrag.pipeline import DOCUMENTS_PER_BATCH

console = Console()
BASELINE = "torch-fp32"
CANDIDATES = (BASELINE, "onnx-fp32", "onnx-int8")
SHORT_QUESTIONS = [
    "how do shards fail over?",
    "library catalog automation",
    "indexing by citation",
    "information needs of scientists",
    "cost of online retrieval",
    "thesaurus construction",
]


def workload(docs: int, queries: int) -> dict[str, Any]:
    """The documents, their unique chunk texts, and the short and long questions."""
    with tempfile.TemporaryDirectory() as tmp:
        dataset = convert_cisi(DEFAULT_SOURCE, Path(tmp))
        with Shardrag.open(Path(tmp) / "probe", stages="none") as rag:
            settings = rag.settings
            chunker = Chunker(
                rag.embedder.tokenizer, settings.chunk_tokens, settings.chunk_overlap_tokens
            )
    documents = list(dataset.corpus.values())[:docs]
    chunks: dict[str, str] = {}
    for doc in documents:
        for chunk in chunker.chunk(parse(doc.text.encode(), "document.txt")):
            chunks.setdefault(chunk.content_hash, chunk.indexed_text)
    long_questions = [q for q in dataset.queries.values()][:queries]
    short = [f"{q} ({i})" for i in range(queries // len(SHORT_QUESTIONS) + 1)
             for q in SHORT_QUESTIONS][:queries]  # fmt: skip
    return {
        "documents": [{"id": d.doc_id, "text": d.text} for d in documents],
        "chunks": list(chunks.values()),
        "short": short,
        "long": long_questions,
    }


def _timed(call: Any, items: list[str]) -> list[float]:
    samples = []
    for item in items:
        started = time.perf_counter()
        call(item)
        samples.append(time.perf_counter() - started)
    return samples


def run_candidate(name: str, work: dict[str, Any]) -> dict[str, Any]:
    """Measure one candidate in this process."""
    chunks: list[str] = work["chunks"]
    if name == BASELINE:
        import torch
        from sentence_transformers import SentenceTransformer

        from shardrag.embed.bundled import bundled_model_dir

        started = time.perf_counter()
        model = SentenceTransformer(str(bundled_model_dir()), device="cpu")
        load = time.perf_counter() - started
        model.encode(chunks[:8], batch_size=8)  # warm-up
        started = time.perf_counter()
        model.encode(chunks, batch_size=8, normalize_embeddings=True)
        batch_seconds = time.perf_counter() - started
        torch.set_num_threads(1)

        def query(text: str) -> None:
            model.encode([text], normalize_embeddings=True)

    else:
        from shardrag.embed.bundled import BundledEmbedder

        embedder = BundledEmbedder(runtime=name)
        started = time.perf_counter()
        embedder.encoder()
        load = time.perf_counter() - started
        embedder.embed_documents(chunks[:8])  # warm-up
        started = time.perf_counter()
        embedder.embed_documents(chunks)
        batch_seconds = time.perf_counter() - started
        query = embedder.embed_query
    query(work["short"][0])  # warm-up of the one-thread path
    result: dict[str, Any] = {
        "load_seconds": round(load, 3),
        "batch_chunks_per_second": round(len(chunks) / batch_seconds, 2),
        "query_short": percentiles(_timed(query, work["short"])),
        "query_long": percentiles(_timed(query, work["long"])),
    }
    if name == os.environ.get("BENCH_PRODUCT_RUNTIME"):
        result.update(product_paths(work))
    return result


def product_paths(work: dict[str, Any]) -> dict[str, Any]:
    """``put_documents`` through the log (SQLite) and uncached ``search``, default settings."""
    documents = [
        DocumentInput(d["id"], d["text"].encode(), filename="document.txt")
        for d in work["documents"]
    ]
    with (
        tempfile.TemporaryDirectory() as tmp,
        Shardrag.open(Path(tmp), result_cache_entries=0) as rag,
    ):
        rag.embedder.embed_query("warm-up")
        started = time.perf_counter()
        chunks = 0
        for i in range(0, len(documents), DOCUMENTS_PER_BATCH):
            for written in rag.put_documents("bench", documents[i : i + DOCUMENTS_PER_BATCH]):
                if isinstance(written, Exception):
                    raise written
                chunks += written.embedded_chunks
        put_seconds = time.perf_counter() - started
        rag.search("bench", "warm-up question", k=10)
        return {
            "put_chunks_per_second": round(chunks / put_seconds, 2),
            "put_documents_per_second": round(len(documents) / put_seconds, 2),
            "search_short": percentiles(
                _timed(lambda q: rag.search("bench", q, k=10), work["short"])
            ),
            "search_long": percentiles(
                _timed(lambda q: rag.search("bench", q, k=10), work["long"])
            ),
        }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every candidate in its own process, print the tables, write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--out", type=Path, default=Path("bench/results/embed.json"))
    parser.add_argument("--candidate", help=argparse.SUPPRESS)
    parser.add_argument("--workload", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.candidate:  # a child process: one candidate, JSON on stdout
        work = json.loads(args.workload.read_text())
        print(json.dumps(run_candidate(args.candidate, work)))
        return {}

    from shardrag.embed.runtime import choose_runtime, cpu_features

    default_runtime = choose_runtime("auto")
    work = workload(args.docs, args.queries)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "workload.json"
        path.write_text(json.dumps(work))
        for name in args.candidates.split(","):
            console.print(f"measuring {name} ...")
            done = subprocess.run(
                [sys.executable, "-m", "bench.embed", "--candidate", name, "--workload", str(path)],
                capture_output=True,
                text=True,
                env={**os.environ, "BENCH_PRODUCT_RUNTIME": default_runtime},
                check=False,
            )
            if done.returncode != 0:
                raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])

    base = results.get(BASELINE)
    report = {
        "chunks": len(work["chunks"]),
        "documents": len(work["documents"]),
        "default_runtime": default_runtime,
        "cpu_flags": sorted(cpu_features() & {"avx2", "avx512f", "avx512_vnni", "amx_int8"}),
        "cores": os.cpu_count(),
        "results": results,
    }
    table = Table(title=f"embedding: {len(work['chunks'])} CISI chunks; queries one at a time")
    for column in ("candidate", "load s", "batch chunks/s", "x baseline",
                   "short query p50/p99 ms", "long query p50/p99 ms"):  # fmt: skip
        table.add_column(column, justify="right")
    for name, r in results.items():
        ratio = (
            f"{r['batch_chunks_per_second'] / base['batch_chunks_per_second']:.2f}" if base else "-"
        )
        table.add_row(
            name + (" (baseline)" if name == BASELINE else ""),
            f"{r['load_seconds']:.2f}",
            f"{r['batch_chunks_per_second']:.1f}",
            ratio,
            f"{r['query_short']['p50_ms']:.2f} / {r['query_short']['p99_ms']:.2f}",
            f"{r['query_long']['p50_ms']:.2f} / {r['query_long']['p99_ms']:.2f}",
        )
    console.print(table)
    product = results.get(default_runtime, {})
    if "put_chunks_per_second" in product and base:
        paths = Table(title=f"product paths on {default_runtime} vs bare torch fp32 encode")
        for column in ("measure", "shardrag", "torch fp32 encode (baseline)", "ratio"):
            paths.add_column(column, justify="right")
        paths.add_row(
            "put_documents (log on SQLite), chunks/s",
            f"{product['put_chunks_per_second']:.1f}",
            f"{base['batch_chunks_per_second']:.1f}",
            f"{product['put_chunks_per_second'] / base['batch_chunks_per_second']:.2f}x",
        )
        for kind in ("short", "long"):
            ours, theirs = product[f"search_{kind}"], base[f"query_{kind}"]
            paths.add_row(
                f"search p50 / p99 ms, {kind} questions (cache off)",
                f"{ours['p50_ms']:.2f} / {ours['p99_ms']:.2f}",
                f"{theirs['p50_ms']:.2f} / {theirs['p99_ms']:.2f} (encode only)",
                f"{ours['p50_ms'] / theirs['p50_ms']:.2f}x p50",
            )
        console.print(paths)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"written to {args.out}")
    return report


if __name__ == "__main__":
    main()
