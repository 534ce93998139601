"""Ingest benchmark: chunks/s through the whole pipeline vs. bare SentenceTransformer.encode.

    python -m bench.ingest [--docs 1460] [--out bench/results/ingest.json]

It also measures what ingestion does to searches served by the same process: hybrid search
p50/p99 while another thread ingests the corpus, beside the same searches on an idle process.

The corpus is CISI (real abstracts). The baseline encodes exactly the chunks the pipeline
embeds (same chunker, unique content only) with the same model object and batch size, so the
difference is what parsing, chunking, BM25, the shard engine, the registry, the blob store and
the embedding cache cost on top of the model. The baseline runs before and after the pipeline
and the mean is used, so drift of the machine during the run shows up in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rich.console import Console
from rich.table import Table

from bench.cisi_to_beir import DEFAULT_SOURCE, convert_cisi
from shardrag import DocumentInput, Shardrag
from shardrag.embed.bundled import bundled_model_dir
from shardrag.ingest import Chunker, parse
from shardrag.pipeline import DOCUMENTS_PER_BATCH

console = Console()


def corpus(docs: int) -> list[DocumentInput]:
    """The first ``docs`` CISI documents as the CLI would hand them in."""
    with tempfile.TemporaryDirectory() as tmp:
        dataset = convert_cisi(DEFAULT_SOURCE, Path(tmp))
    return [
        DocumentInput(d.doc_id, d.text.encode(), filename="document.txt", title=d.title)
        for d in list(dataset.corpus.values())[:docs]
    ]


def unique_chunk_texts(rag: Shardrag, documents: list[DocumentInput]) -> list[str]:
    """Exactly the texts the pipeline will embed: chunked the same way, deduplicated."""
    settings = rag.settings
    chunker = Chunker(rag.embedder.tokenizer, settings.chunk_tokens, settings.chunk_overlap_tokens)
    texts: dict[str, str] = {}
    for doc in documents:
        parsed = parse(doc.data, doc.filename)
        if doc.title:
            parsed = replace(parsed, title=doc.title)
        for chunk in chunker.chunk(parsed):
            texts.setdefault(chunk.content_hash, chunk.indexed_text)
    return list(texts.values())


def bare_encode(texts: list[str], batch_size: int) -> float:
    """Seconds for SentenceTransformer.encode (PyTorch fp32, the reference) over ``texts``."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(bundled_model_dir()), device="cpu")
    model.encode(texts[:batch_size], batch_size=batch_size)  # warm-up
    start = time.perf_counter()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    return time.perf_counter() - start


def pipeline(data_dir: Path, documents: list[DocumentInput]) -> tuple[float, int]:
    """Seconds to ingest ``documents`` into a fresh data dir, and the chunks embedded."""
    with Shardrag.open(data_dir) as rag:
        start = time.perf_counter()
        embedded = 0
        for i in range(0, len(documents), DOCUMENTS_PER_BATCH):
            for result in rag.put_documents("bench", documents[i : i + DOCUMENTS_PER_BATCH]):
                if isinstance(result, Exception):
                    raise result
                embedded += result.embedded_chunks
        return time.perf_counter() - start, embedded


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50 and p99 of latencies in seconds, as milliseconds."""
    ordered = sorted(samples)
    return {
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
        "count": len(ordered),
    }


def search_latency_during_ingest(
    data_dir: Path, documents: list[DocumentInput], queries: list[str]
) -> dict[str, dict[str, float]]:
    """Hybrid search latency on an idle data dir, then while another thread ingests."""
    with Shardrag.open(data_dir) as rag:
        rag.put_documents("searched", documents[:200])

        def timed_searches(stop: threading.Event | None, rounds: int) -> list[float]:
            samples: list[float] = []
            while len(samples) < rounds or (stop is not None and not stop.is_set()):
                query = queries[len(samples) % len(queries)]
                start = time.perf_counter()
                rag.search("searched", query, k=10)
                samples.append(time.perf_counter() - start)
            return samples

        idle = timed_searches(None, 200)
        stop = threading.Event()

        def ingest() -> None:
            for i in range(0, len(documents), DOCUMENTS_PER_BATCH):
                rag.put_documents("ingesting", documents[i : i + DOCUMENTS_PER_BATCH])
            stop.set()

        writer = threading.Thread(target=ingest)
        writer.start()
        busy = timed_searches(stop, 1)
        writer.join()
    return {"idle": percentiles(idle), "during_ingest": percentiles(busy)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=1460)
    parser.add_argument("--out", type=Path, default=Path("bench/results/ingest.json"))
    args = parser.parse_args(argv)

    documents = corpus(args.docs)
    workdir = Path(tempfile.mkdtemp(prefix="shardrag-bench-ingest-"))
    try:
        with Shardrag.open(workdir / "probe") as rag:
            texts = unique_chunk_texts(rag, documents)
            batch_size = rag.settings.embed_batch_size
            rag.embedder.embed_documents(["warm-up"] * batch_size)  # load weights, warm caches
        bare_before = bare_encode(texts, batch_size)
        pipeline_seconds, embedded = pipeline(workdir / "data", documents)
        bare_after = bare_encode(texts, batch_size)
        queries = [d.title or d.doc_id for d in documents]
        latency = search_latency_during_ingest(workdir / "mixed", documents, queries)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    if embedded != len(texts):
        raise SystemExit(f"pipeline embedded {embedded} chunks, baseline {len(texts)}")
    bare = (bare_before + bare_after) / 2
    report = {
        "documents": len(documents),
        "chunks": len(texts),
        "bare_encode_seconds": [round(bare_before, 3), round(bare_after, 3)],
        "bare_chunks_per_second": round(len(texts) / bare, 2),
        "pipeline_seconds": round(pipeline_seconds, 3),
        "pipeline_chunks_per_second": round(len(texts) / pipeline_seconds, 2),
        "pipeline_documents_per_second": round(len(documents) / pipeline_seconds, 2),
        "overhead_percent": round((pipeline_seconds / bare - 1) * 100, 1),
        "batch_size": batch_size,
        "batch_documents": DOCUMENTS_PER_BATCH,
        "cores": os.cpu_count(),
        "search_latency": latency,
    }
    table = Table(title=f"ingest: {len(documents)} CISI documents, {len(texts)} chunks")
    table.add_column("measure")
    table.add_column("shardrag pipeline", justify="right")
    table.add_column("bare encode (baseline)", justify="right")
    table.add_row("seconds", f"{pipeline_seconds:.2f}", f"{bare_before:.2f} / {bare_after:.2f}")
    table.add_row(
        "chunks/s", f"{report['pipeline_chunks_per_second']}", f"{report['bare_chunks_per_second']}"
    )
    table.add_row("overhead", f"{report['overhead_percent']} %", "0 %")
    console.print(table)
    mixed = Table(title="hybrid search latency, same process, same run")
    for column in ("while", "p50 ms", "p99 ms", "searches"):
        mixed.add_column(column, justify="right")
    for label, key in (("ingest runs (measured)", "during_ingest"), ("idle (baseline)", "idle")):
        row = latency[key]
        mixed.add_row(label, str(row["p50_ms"]), str(row["p99_ms"]), str(row["count"]))
    console.print(mixed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"written to {args.out}")
    return report


if __name__ == "__main__":
    main()
