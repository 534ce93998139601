"""The shard engine over Qdrant Edge: apply versioned writes, hybrid search.

The only package that imports ``qdrant_edge`` (pinned in pyproject.toml).
"""

from shardrag.engine.shard import EngineSettings, PointCount, ShardEngine
from shardrag.engine.shards import ShardSet

__all__ = ["EngineSettings", "PointCount", "ShardEngine", "ShardSet"]
