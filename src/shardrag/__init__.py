"""shardrag: multi-tenant retrieval-augmented generation over sharded Qdrant Edge shards."""

from shardrag.config import Settings
from shardrag.embedded import Shardrag
from shardrag.errors import ShardragError
from shardrag.models import (
    DocumentInfo,
    DocumentInput,
    Fusion,
    Hit,
    SearchMode,
    VersionInfo,
    VersionState,
    WriteResult,
)

__version__ = "0.1.0"

__all__ = [
    "DocumentInfo",
    "DocumentInput",
    "Fusion",
    "Hit",
    "SearchMode",
    "Settings",
    "Shardrag",
    "ShardragError",
    "VersionInfo",
    "VersionState",
    "WriteResult",
    "__version__",
]
