"""Tenants, documents, versions, keys, audit: the protocol and its SQLite implementation."""

from pathlib import Path

from shardrag.registry.access import AuditEvent, KeyRecord, Role, StoredResponse
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
    "AuditEvent",
    "KeyRecord",
    "ManifestEntry",
    "NewVersion",
    "PendingVersion",
    "Registry",
    "Role",
    "StoredResponse",
    "TenantRecord",
    "open_registry",
]
