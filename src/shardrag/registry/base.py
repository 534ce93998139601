"""The registry protocol: tenants, documents, versions and their chunk manifests.

The registry is the source of truth for what *should* be searchable; the shards hold what is.
Implementations: ``registry/sqlite.py`` (embedded). PostgreSQL follows with the distributed mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shardrag.models import DocumentInfo, Metadata, VersionState


@dataclass(frozen=True)
class TenantRecord:
    """A tenant, the shard that holds its documents, and its cache generation."""

    tenant: str
    shard_id: int
    generation: int
    created_at: float


@dataclass(frozen=True)
class ManifestEntry:
    """One chunk of a version: enough to reuse its vector when a later version has it too."""

    chunk_index: int
    content_hash: str
    token_count: int


@dataclass(frozen=True)
class NewVersion:
    """What a writer records before it starts processing a version."""

    content_hash: str
    filename: str | None
    size: int
    metadata: Metadata


@dataclass(frozen=True)
class PendingVersion:
    """A version that was begun but neither committed nor failed."""

    tenant: str
    doc_id: str
    version: int
    tombstone: bool


class Registry(Protocol):
    """Durable records of tenants, documents and versions. Every method is atomic."""

    def ensure_tenant(self, tenant: str, shard_id: int) -> TenantRecord:
        """The tenant's record, creating it on ``shard_id`` if it does not exist."""
        ...

    def get_tenant(self, tenant: str) -> TenantRecord | None:
        """The tenant's record, or None."""
        ...

    def list_tenants(self) -> list[TenantRecord]:
        """Every tenant, by id."""
        ...

    def delete_tenant(self, tenant: str) -> None:
        """Forget the tenant and all its documents."""
        ...

    def begin_version(self, tenant: str, doc_id: str, new: NewVersion) -> int:
        """Record version latest+1 of the document as ``pending`` and return its number."""
        ...

    def begin_tombstone(self, tenant: str, doc_id: str) -> int:
        """Record a pending delete of the document as a new version; return its number."""
        ...

    def record_manifest(
        self, tenant: str, doc_id: str, version: int, entries: list[ManifestEntry]
    ) -> None:
        """Store the chunk manifest of a version (before it commits)."""
        ...

    def manifest(self, tenant: str, doc_id: str, version: int) -> list[ManifestEntry]:
        """The chunk manifest of a version, by chunk index."""
        ...

    def mark_live(self, tenant: str, doc_id: str, version: int) -> None:
        """Make ``version`` the live one (older live → superseded); bump the tenant generation."""
        ...

    def mark_deleted(self, tenant: str, doc_id: str, version: int) -> None:
        """Apply a tombstone: nothing of the document is live any more; bump the generation."""
        ...

    def mark_failed(
        self, tenant: str, doc_id: str, version: int, error_code: str, error: str
    ) -> None:
        """Record why a version failed; the live version (if any) stays live."""
        ...

    def document(self, tenant: str, doc_id: str) -> DocumentInfo | None:
        """The document's live and latest versions, or None if it was never written."""
        ...

    def documents(
        self,
        tenant: str,
        state: VersionState | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[DocumentInfo]:
        """Documents of a tenant ordered by id, ``limit`` of them after the id ``after``."""
        ...

    def pending_versions(self) -> list[PendingVersion]:
        """Every version still pending, oldest first (for crash recovery)."""
        ...

    def close(self) -> None:
        """Release the registry's resources."""
        ...
