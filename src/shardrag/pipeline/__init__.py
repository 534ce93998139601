"""The write path: parse, chunk, embed, index, commit (synchronous in the embedded mode)."""

from shardrag.pipeline.vectors import ChunkVectorizer, VectorJob
from shardrag.pipeline.writer import DocumentWriter

__all__ = ["ChunkVectorizer", "DocumentWriter", "VectorJob"]
