"""``shardrag eval``: ingest a BEIR dataset into a fresh tenant and score every search mode."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from shardrag.embedded import Shardrag
from shardrag.errors import ShardragError
from shardrag.evaluation.beir import load_beir
from shardrag.evaluation.metrics import RetrievalScores, evaluate_run
from shardrag.models import DocumentInput, SearchMode
from shardrag.pipeline import DOCUMENTS_PER_BATCH

#: Passages fetched per query: enough distinct documents for recall@100 when docs have chunks.
HITS_PER_QUERY = 300


@dataclass(frozen=True)
class EvaluationReport:
    """Scores per mode and what was ingested."""

    tenant: str
    documents: int
    queries: int
    ingest_seconds: float
    modes: dict[str, RetrievalScores]


def run_evaluation(
    rag: Shardrag, dataset_dir: Path, split: str, progress: Progress | None
) -> EvaluationReport:
    """Ingest the corpus into a new tenant, then run every judged query in every mode."""
    dataset = load_beir(dataset_dir, split)
    tenant = f"eval-{int(time.time() * 1000)}"
    documents = [
        DocumentInput(doc.doc_id, doc.text.encode(), filename="document.txt", title=doc.title)
        for doc in dataset.corpus.values()
        if doc.text.strip() or doc.title.strip()
    ]
    task = progress.add_task("ingesting corpus", total=len(documents)) if progress else None
    started = time.perf_counter()
    failures: list[ShardragError] = []
    for start in range(0, len(documents), DOCUMENTS_PER_BATCH):
        batch = documents[start : start + DOCUMENTS_PER_BATCH]
        failures += [r for r in rag.put_documents(tenant, batch) if isinstance(r, ShardragError)]
        if progress and task is not None:
            progress.advance(task, len(batch))
    ingest_seconds = time.perf_counter() - started
    rag.optimize()
    if failures and len(failures) == len(documents):
        raise failures[0]

    queries = dataset.judged_queries()
    modes: dict[str, RetrievalScores] = {}
    for mode in SearchMode:
        task = progress.add_task(f"{mode.value} queries", total=len(queries)) if progress else None
        run: dict[str, list[str]] = {}
        for query_id, text in queries.items():
            hits = rag.search(tenant, text, k=HITS_PER_QUERY, mode=mode)
            # Documents ranked by their best passage.
            run[query_id] = list(dict.fromkeys(hit.doc_id for hit in hits))
            if progress and task is not None:
                progress.advance(task)
        modes[mode.value] = evaluate_run(run, dataset.qrels)
    return EvaluationReport(tenant, len(documents), len(queries), ingest_seconds, modes)
