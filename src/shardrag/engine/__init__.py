"""The shard engine over Qdrant Edge: apply versioned writes, hybrid search.

The only package that imports ``qdrant_edge`` (pinned in pyproject.toml).
"""

from shardrag.engine.shard import (
    CommitOutcome,
    EngineSettings,
    PointCount,
    ShardEngine,
    StoredVersion,
)
from shardrag.engine.shards import ShardSet

__all__ = [
    "CommitOutcome",
    "EngineSettings",
    "PointCount",
    "ShardEngine",
    "ShardSet",
    "StoredVersion",
]
