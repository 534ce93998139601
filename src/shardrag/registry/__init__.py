"""Documents, versions and tenants: the protocol and its embedded (SQLite) implementation."""

from pathlib import Path

from shardrag.registry.base import (
    ManifestEntry,
    NewVersion,
    PendingVersion,
    Registry,
    TenantRecord,
)
from shardrag.registry.sqlite import SqliteRegistry


def open_registry(data_dir: Path) -> Registry:
    """The registry of an embedded data dir."""
    return SqliteRegistry(data_dir / "registry.sqlite3")


__all__ = [
    "ManifestEntry",
    "NewVersion",
    "PendingVersion",
    "Registry",
    "TenantRecord",
    "open_registry",
]
