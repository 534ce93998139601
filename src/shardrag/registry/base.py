"""The registry protocol: tenants, documents, versions and their chunk manifests.

The registry is the source of truth for what *should* be searchable; the shards hold what is.
Implementations: ``registry/sqlite.py`` (one file in the data dir, embedded mode) and
``registry/postgres.py`` (one database shared by every process, distributed mode); the contract
tests in ``tests/registry/test_registry_contract.py`` hold both to the same behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shardrag.models import DocumentInfo, Metadata, VersionInfo, VersionState
from shardrag.registry.access import AuditEvent, KeyRecord, StoredResponse
from shardrag.sealing import Sealer


def key_table(owner: str) -> tuple[str, str]:
    """The table, and its name column, of an owner's wrapped data key: the deployment's own
    keys are named ``@...``, every other owner is a tenant."""
    return ("deployment_keys", "name") if owner.startswith("@") else ("data_keys", "tenant")


@dataclass(frozen=True)
class TenantRecord:
    """A tenant, the shard that holds its documents, and its cache generation."""

    tenant: str
    shard_id: int
    generation: int
    created_at: float
    name: str = ""

    @property
    def incarnation(self) -> str:
        """Which life of the tenant id this is: a tenant dropped and made again under the same
        id is another incarnation, and shares nothing with the dropped one (docs/security.md).
        """
        return f"{self.created_at:.6f}"


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
    content_type: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class PendingVersion:
    """A version that was begun but neither committed nor failed."""

    tenant: str
    doc_id: str
    version: int
    tombstone: bool
    created_at: float = 0.0


class Registry(Protocol):
    """Durable records of tenants, documents and versions. Every method is atomic."""

    #: Seals what a version's row says of its document (file name, title, metadata) under
    #: its tenant's key; ``Plain`` until the process has a master key (``backends.py``).
    sealer: Sealer

    def ensure_tenant(self, tenant: str, shard_id: int, name: str | None = None) -> TenantRecord:
        """The tenant's record, creating it on ``shard_id`` if it does not exist."""
        ...

    def create_tenant(self, tenant: str, shard_id: int, name: str) -> TenantRecord:
        """Create a new tenant; ``TenantExists`` if the id is taken."""
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

    def begin_tombstone(self, tenant: str, doc_id: str, metadata: Metadata | None = None) -> int:
        """Record a pending delete of the document as a new version; return its number.

        ``metadata``: what the deletion marker keeps of the deleted version (its access
        groups, so the marker is hidden from whoever could not read the document).
        """
        ...

    def record_manifest(
        self,
        tenant: str,
        doc_id: str,
        version: int,
        entries: list[ManifestEntry],
        reused: int = 0,
        embedded: int = 0,
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

    def pending_versions(self, tenant: str | None = None) -> list[PendingVersion]:
        """Every version still pending (of one tenant, or all), oldest first."""
        ...

    def version(self, tenant: str, doc_id: str, version: int) -> VersionInfo | None:
        """One version of a document, or None."""
        ...

    def record_commit(self, tenant: str, doc_id: str, version: int, position: int) -> None:
        """Remember where the version's commit op is in its shard's log."""
        ...

    def mark_superseded(self, tenant: str, doc_id: str, version: int) -> None:
        """A pending version overtaken by a newer committed one: it never goes live."""
        ...

    def reopen(self, tenant: str, doc_id: str, version: int) -> bool:
        """Make a failed version pending again (its event is re-driven); False if not failed."""
        ...

    def document_counts(self) -> dict[VersionState, int]:
        """How many documents (of every tenant) are in each state."""
        ...

    def tenant_size(self, tenant: str) -> int:
        """Chunks of the tenant's live versions (what its placement is sized by)."""
        ...

    # -- access: keys, audit, idempotency ------------------------------------------------------

    def add_key(self, key: KeyRecord) -> None:
        """Store a new key."""
        ...

    def key(self, key_id: str) -> KeyRecord | None:
        """The key of that id (revoked or not), or None."""
        ...

    def keys(self, tenant: str | None) -> list[KeyRecord]:
        """The keys of a tenant (``None``: the operator's root keys), oldest first."""
        ...

    def revoke_key(self, key_id: str) -> KeyRecord:
        """Mark a key revoked (idempotent) and return it."""
        ...

    def append_audit(self, event: AuditEvent) -> None:
        """Append one event to the audit log."""
        ...

    def audit(self, tenant: str, limit: int = 100, before: int | None = None) -> list[AuditEvent]:
        """A tenant's audit events, newest first, ``limit`` of them older than id ``before``."""
        ...

    def stored_response(self, tenant: str, idempotency_key: str) -> StoredResponse | None:
        """The answer first given to ``idempotency_key`` in the tenant, or None."""
        ...

    def store_response(self, tenant: str, idempotency_key: str, response: StoredResponse) -> None:
        """Remember the answer to ``idempotency_key`` (the first one stored wins)."""
        ...

    # -- encryption at rest (blobs/encrypted.py) ------------------------------------------------

    def data_key(self, owner: str) -> bytes | None:
        """The wrapped data key of ``owner``, or None: a tenant's (dropped with the tenant),
        or the deployment's own keys, named ``@...`` (no tenant id holds an ``@``)."""
        ...

    def add_data_key(self, owner: str, wrapped: bytes) -> bytes:
        """Keep ``wrapped`` as ``owner``'s data key unless it has one; the one kept."""
        ...

    def wrapped_keys(self) -> dict[str, bytes]:
        """Every wrapped data key by owner (for a re-wrap under a new master key)."""
        ...

    def rewrap_key(self, owner: str, old: bytes, new: bytes) -> bool:
        """Replace ``owner``'s wrapped key ``old`` by ``new``; False if it is not ``old``."""
        ...

    def close(self) -> None:
        """Release the registry's resources."""
        ...
