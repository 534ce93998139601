"""Tenants, documents, versions, keys, audit: the protocol and its SQLite and PostgreSQL stores."""

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shardrag.errors import InvalidParameter
from shardrag.extras import require_extra
from shardrag.registry.access import AuditEvent, KeyRecord, Role, StoredResponse
from shardrag.registry.base import (
    ManifestEntry,
    NewVersion,
    PendingVersion,
    Registry,
    TenantRecord,
)
from shardrag.registry.sqlite import SqliteRegistry

if TYPE_CHECKING:
    from shardrag.registry.postgres import PostgresRegistry

_POSTGRES_SCHEMES = ("postgresql", "postgres")


def open_registry(data_dir: Path, url: str | None = None) -> Registry:
    """The registry at ``url`` (setting ``registry_url``), else the SQLite file of the data dir."""
    if url is None:
        return SqliteRegistry(data_dir / "registry.sqlite3")
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _POSTGRES_SCHEMES:
        # Only the scheme is repeated: the rest of a URL may hold a password.
        raise InvalidParameter(
            "registry_url must be a postgresql:// or postgres:// URL, or unset for the data "
            f"dir's SQLite file (its scheme: {scheme!r})",
            setting="registry_url",
            scheme=scheme,
        )
    require_extra("psycopg", "cluster", "the PostgreSQL registry")
    from shardrag.registry.postgres import PostgresRegistry

    return PostgresRegistry(url)


def __getattr__(name: str) -> Any:
    # psycopg is imported only by processes that use PostgreSQL.
    if name == "PostgresRegistry":
        from shardrag.registry.postgres import PostgresRegistry

        return PostgresRegistry
    raise AttributeError(name)


__all__ = [
    "AuditEvent",
    "KeyRecord",
    "ManifestEntry",
    "NewVersion",
    "PendingVersion",
    "PostgresRegistry",
    "Registry",
    "Role",
    "StoredResponse",
    "TenantRecord",
    "open_registry",
]
