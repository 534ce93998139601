"""The write path: parse, chunk, embed, index, commit (synchronous in the embedded mode)."""

from shardrag.pipeline.vectors import ChunkVectorizer, VectorJob
from shardrag.pipeline.writer import DOCUMENTS_PER_BATCH, DocumentWriter

__all__ = ["DOCUMENTS_PER_BATCH", "ChunkVectorizer", "DocumentWriter", "VectorJob"]
