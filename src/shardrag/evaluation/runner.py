"""``shardrag eval``: ingest a BEIR dataset into a fresh tenant and score every search mode."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
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
    #: Documents indexed, and those the service refused (their errors by code).
    documents: int
    queries: int
    ingest_seconds: float
    modes: dict[str, RetrievalScores]
    refused: dict[str, int] = field(default_factory=dict)


def run_evaluation(
    rag: Shardrag, dataset_dir: Path, split: str, progress: Progress | None
) -> EvaluationReport:
    """Ingest the corpus into a new tenant, then run every judged query in every mode."""
    dataset = load_beir(dataset_dir, split)
    tenant = f"eval-{int(time.time() * 1000)}"
    # The title heads every chunk (it is indexed with each); a document with a title and no
    # body is its title. One with neither is sent too: it is refused, and counted as such.
    documents = [
        DocumentInput(
            doc.doc_id,
            (doc.text if doc.text.strip() else doc.title).encode(),
            filename="document.txt",
            title=doc.title,
        )
        for doc in dataset.corpus.values()
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
    refused = Counter(f.code for f in failures)
    indexed = len(documents) - len(failures)
    return EvaluationReport(tenant, indexed, len(queries), ingest_seconds, modes, dict(refused))
