"""Retrieval quality evaluation: BEIR-format test collections and ranking metrics."""

from shardrag.evaluation.beir import BeirDataset, BeirDocument, load_beir, write_beir
from shardrag.evaluation.metrics import (
    QueryScores,
    RetrievalScores,
    evaluate_run,
    ndcg_at_k,
    recall_at_k,
)

__all__ = [
    "BeirDataset",
    "BeirDocument",
    "QueryScores",
    "RetrievalScores",
    "evaluate_run",
    "load_beir",
    "ndcg_at_k",
    "recall_at_k",
    "write_beir",
]
