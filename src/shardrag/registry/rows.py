"""What both registries share about their tables: rows read back as records, and the SQL of a
document's listed state. The schema is the same in SQLite and PostgreSQL; only the drivers'
row types differ (both are read by column name)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from shardrag.models import Metadata, VersionInfo, VersionState
from shardrag.registry.access import KeyRecord, Role
from shardrag.registry.base import NewVersion, PendingVersion, TenantRecord
from shardrag.sealing import Plain, Sealer, seal_text, unseal_text

#: Every wrapped data key by owner: a tenant's, and the deployment's own (``@...``).
WRAPPED_KEYS = (
    "SELECT tenant AS owner, wrapped FROM data_keys "
    "UNION ALL SELECT name, wrapped FROM deployment_keys"
)
#: Where sealed metadata sits in the ``metadata`` column (a JSON object, as unsealed).
SEALED_METADATA = "@sealed"
_PURPOSE = "registry version"
_PLAIN = Plain()


@dataclass(frozen=True)
class StoredVersion:
    """What a version's row holds of what a document says: its file name, title and
    metadata, sealed under its tenant's key when the registry seals (``sealing.py``)."""

    filename: str | None
    title: str | None
    metadata: Metadata

    @classmethod
    def of(
        cls, sealer: Sealer, tenant: str, new: NewVersion | None, tombstone: Metadata | None
    ) -> StoredVersion:
        """The stored form of a new version (or of a tombstone keeping ``tombstone``)."""
        metadata = new.metadata if new else tombstone or {}
        if not sealer.active:
            return cls(new.filename if new else None, new.title if new else None, metadata)
        sealing = sealer.bound(tenant)  # one read of the tenant's key for the row
        return cls(
            seal_text(sealing, new.filename if new else None, _PURPOSE),
            seal_text(sealing, new.title if new else None, _PURPOSE),
            {SEALED_METADATA: seal_text(sealing, json.dumps(metadata), _PURPOSE)},
        )


def _unsealed_metadata(sealer: Sealer, metadata: Metadata) -> Metadata:
    if SEALED_METADATA not in metadata:
        return metadata
    opened = unseal_text(sealer, metadata[SEALED_METADATA], _PURPOSE)
    value: Metadata = json.loads(opened) if opened is not None else {}
    return value


# The state a document shows in listings: live while a version is, else its latest version's.
DOCUMENT_STATE = """
CASE WHEN latest.state = 'deleted' THEN 'deleted'
     WHEN d.live_version IS NOT NULL THEN 'live'
     ELSE latest.state END
"""


class Row(Protocol):
    """A result row read by column name (``sqlite3.Row``, psycopg's ``DictRow``)."""

    def __getitem__(self, key: str, /) -> Any: ...


def tenant_of(row: Row) -> TenantRecord:
    """A ``tenants`` row."""
    return TenantRecord(
        row["tenant"],
        int(row["shard_id"]),
        int(row["generation"]),
        row["created_at"],
        row["name"] or row["tenant"],
    )


def key_of(row: Row) -> KeyRecord:
    """An ``api_keys`` row."""
    return KeyRecord(
        key_id=row["key_id"],
        tenant=row["tenant"],
        role=Role(row["role"]),
        secret_hash=row["secret_hash"],
        name=row["name"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        groups=_groups(row["groups"]),
    )


def _groups(value: Any) -> tuple[str, ...] | None:
    """A key's ``groups`` column: NULL, or a JSON array (text in SQLite, jsonb in Postgres)."""
    if value is None:
        return None
    names = json.loads(value) if isinstance(value, str) else value
    return tuple(str(n) for n in names)


def version_of(row: Row, prefix: str = "", sealer: Sealer = _PLAIN) -> VersionInfo:
    """The version whose ``versions`` columns are named ``prefix`` + column in ``row``.

    Metadata arrives as JSON text (SQLite) or already decoded (PostgreSQL's jsonb); sealed
    columns are opened with ``sealer``.
    """
    metadata = row[prefix + "metadata"]
    metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
    return VersionInfo(
        version=int(row[prefix + "version"]),
        state=VersionState(row[prefix + "state"]),
        content_hash=row[prefix + "content_hash"],
        filename=unseal_text(sealer, row[prefix + "filename"], _PURPOSE),
        size=int(row[prefix + "size"]),
        chunk_count=int(row[prefix + "chunk_count"]),
        metadata=_unsealed_metadata(sealer, metadata),
        error_code=row[prefix + "error_code"],
        error=row[prefix + "error"],
        created_at=row[prefix + "created_at"],
        updated_at=row[prefix + "updated_at"],
        content_type=row[prefix + "content_type"],
        title=unseal_text(sealer, row[prefix + "title"], _PURPOSE),
        commit_position=row[prefix + "commit_position"],
        reused_vectors=int(row[prefix + "reused_vectors"]),
        embedded_chunks=int(row[prefix + "embedded_chunks"]),
    )


def pending_of(row: Row) -> PendingVersion:
    """A pending ``versions`` row (tenant, doc_id, version, content_hash, created_at)."""
    return PendingVersion(
        row["tenant"],
        row["doc_id"],
        int(row["version"]),
        row["content_hash"] is None,
        float(row["created_at"]),
    )


def state_counts(rows: list[Any]) -> dict[VersionState, int]:
    """Documents per state from rows of (doc_state, n), every state present."""
    counts = dict.fromkeys(VersionState, 0)
    counts.update({VersionState(r["doc_state"]): int(r["n"]) for r in rows})
    return counts
