"""The write path: parse, chunk, embed, index, commit; a backlog for asynchronous writes."""

from shardrag.pipeline.backlog import IndexBacklog
from shardrag.pipeline.vectors import ChunkVectorizer, VectorJob
from shardrag.pipeline.writer import DOCUMENTS_PER_BATCH, DocumentWriter, VersionBuild

__all__ = [
    "DOCUMENTS_PER_BATCH",
    "ChunkVectorizer",
    "DocumentWriter",
    "IndexBacklog",
    "VectorJob",
    "VersionBuild",
]
