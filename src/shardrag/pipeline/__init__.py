"""The write path as services over the durable log: accept, ingest, embed, index, reconcile."""

from shardrag.pipeline.applier import IndexApplier
from shardrag.pipeline.reconcile import Reconciler, ReconcileReport
from shardrag.pipeline.retry import Retry
from shardrag.pipeline.runtime import STAGES, Pipeline, parse_stages
from shardrag.pipeline.vectors import ChunkVectorizer, VectorJob
from shardrag.pipeline.writer import DOCUMENTS_PER_BATCH, Accepted, DocumentWriter

__all__ = [
    "DOCUMENTS_PER_BATCH",
    "STAGES",
    "Accepted",
    "ChunkVectorizer",
    "DocumentWriter",
    "IndexApplier",
    "Pipeline",
    "ReconcileReport",
    "Reconciler",
    "Retry",
    "VectorJob",
    "parse_stages",
]
