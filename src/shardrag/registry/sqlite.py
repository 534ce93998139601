"""The registry in one SQLite file (WAL mode, fully synchronous commits)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shardrag.errors import DocumentNotFound, NotFound, TenantExists
from shardrag.models import DocumentInfo, Metadata, VersionInfo, VersionState
from shardrag.registry.access import AuditEvent, KeyRecord, StoredResponse
from shardrag.registry.base import (
    ManifestEntry,
    NewVersion,
    PendingVersion,
    TenantRecord,
    key_table,
)
from shardrag.registry.rows import (
    DOCUMENT_STATE,
    WRAPPED_KEYS,
    StoredVersion,
    key_of,
    pending_of,
    state_counts,
    tenant_of,
    version_of,
)
from shardrag.sealing import Plain, Sealer
from shardrag.sqlitedb import immediate, open_durable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    tenant      TEXT PRIMARY KEY,
    shard_id    INTEGER NOT NULL,
    generation  INTEGER NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    tenant          TEXT NOT NULL REFERENCES tenants(tenant) ON DELETE CASCADE,
    doc_id          TEXT NOT NULL,
    live_version    INTEGER,
    latest_version  INTEGER NOT NULL,
    PRIMARY KEY (tenant, doc_id)
);
CREATE TABLE IF NOT EXISTS versions (
    tenant        TEXT NOT NULL,
    doc_id        TEXT NOT NULL,
    version       INTEGER NOT NULL,
    state         TEXT NOT NULL,
    content_hash  TEXT,
    filename      TEXT,
    size          INTEGER NOT NULL DEFAULT 0,
    metadata      TEXT NOT NULL DEFAULT '{}',
    chunk_count   INTEGER NOT NULL DEFAULT 0,
    error_code    TEXT,
    error         TEXT,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    PRIMARY KEY (tenant, doc_id, version),
    FOREIGN KEY (tenant, doc_id) REFERENCES documents(tenant, doc_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS versions_pending ON versions(state) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS chunks (
    tenant        TEXT NOT NULL,
    doc_id        TEXT NOT NULL,
    version       INTEGER NOT NULL,
    chunk_index   INTEGER NOT NULL,
    content_hash  TEXT NOT NULL,
    token_count   INTEGER NOT NULL,
    PRIMARY KEY (tenant, doc_id, version, chunk_index),
    FOREIGN KEY (tenant, doc_id, version) REFERENCES versions(tenant, doc_id, version)
        ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id       TEXT PRIMARY KEY,
    tenant       TEXT REFERENCES tenants(tenant) ON DELETE CASCADE,
    role         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    name         TEXT,
    created_at   REAL NOT NULL,
    revoked_at   REAL
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys(tenant);
CREATE TABLE IF NOT EXISTS audit (
    event_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant    TEXT,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    at        REAL NOT NULL,
    details   TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_tenant ON audit(tenant, event_id);
CREATE TABLE IF NOT EXISTS data_keys (
    tenant   TEXT PRIMARY KEY REFERENCES tenants(tenant) ON DELETE CASCADE,
    wrapped  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS deployment_keys (
    name     TEXT PRIMARY KEY,
    wrapped  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    tenant           TEXT NOT NULL REFERENCES tenants(tenant) ON DELETE CASCADE,
    idempotency_key  TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    status           INTEGER NOT NULL,
    body             TEXT NOT NULL,
    created_at       REAL NOT NULL,
    PRIMARY KEY (tenant, idempotency_key)
);
"""

# Columns added after the first release, with the statement that adds each to an old file.
_MIGRATIONS = {
    ("tenants", "name"): "ALTER TABLE tenants ADD COLUMN name TEXT",
    ("versions", "content_type"): "ALTER TABLE versions ADD COLUMN content_type TEXT",
    ("versions", "title"): "ALTER TABLE versions ADD COLUMN title TEXT",
    ("versions", "commit_position"): "ALTER TABLE versions ADD COLUMN commit_position INTEGER",
    ("versions", "reused_vectors"): (
        "ALTER TABLE versions ADD COLUMN reused_vectors INTEGER NOT NULL DEFAULT 0"
    ),
    ("versions", "embedded_chunks"): (
        "ALTER TABLE versions ADD COLUMN embedded_chunks INTEGER NOT NULL DEFAULT 0"
    ),
    ("api_keys", "groups"): "ALTER TABLE api_keys ADD COLUMN groups TEXT",
}


class SqliteRegistry:
    """Registry over SQLite; one connection shared by all threads behind a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sealer: Sealer = Plain()
        self._lock = threading.Lock()
        with self._lock:
            self._db = open_durable(path, _SCHEMA, secure_delete=True)
            for (table, column), statement in _MIGRATIONS.items():
                columns = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
                if column not in columns:
                    self._db.execute(statement)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, immediate(self._db) as db:
            yield db

    def _query(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- tenants ------------------------------------------------------------------------------

    def ensure_tenant(self, tenant: str, shard_id: int, name: str | None = None) -> TenantRecord:
        """The tenant's record, creating it on ``shard_id`` if needed."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO tenants(tenant, shard_id, created_at, name) "
                "VALUES (?, ?, ?, ?)",
                (tenant, shard_id, time.time(), name or tenant),
            )
            row = db.execute("SELECT * FROM tenants WHERE tenant = ?", (tenant,)).fetchone()
        return tenant_of(row)

    def create_tenant(self, tenant: str, shard_id: int, name: str) -> TenantRecord:
        """Create a new tenant; ``TenantExists`` if the id is taken."""
        with self._tx() as db:
            try:
                db.execute(
                    "INSERT INTO tenants(tenant, shard_id, created_at, name) VALUES (?, ?, ?, ?)",
                    (tenant, shard_id, time.time(), name),
                )
            except sqlite3.IntegrityError:
                raise TenantExists(f"tenant {tenant!r} exists already", tenant=tenant) from None
            row = db.execute("SELECT * FROM tenants WHERE tenant = ?", (tenant,)).fetchone()
        return tenant_of(row)

    def get_tenant(self, tenant: str) -> TenantRecord | None:
        """The tenant's record, or None."""
        rows = self._query("SELECT * FROM tenants WHERE tenant = ?", tenant)
        return tenant_of(rows[0]) if rows else None

    def list_tenants(self) -> list[TenantRecord]:
        """Every tenant, by id."""
        return [tenant_of(r) for r in self._query("SELECT * FROM tenants ORDER BY tenant")]

    def delete_tenant(self, tenant: str) -> None:
        """Forget the tenant and all its documents.

        Its rows are zeroed in the file (``secure_delete``), and the write-ahead log that
        held them is emptied: its wrapped data key is then in no page of either.
        """
        with self._tx() as db:
            db.execute("DELETE FROM tenants WHERE tenant = ?", (tenant,))
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- versions -----------------------------------------------------------------------------

    def begin_version(self, tenant: str, doc_id: str, new: NewVersion) -> int:
        """Record version latest+1 as pending and return its number."""
        return self._begin(tenant, doc_id, new)

    def begin_tombstone(self, tenant: str, doc_id: str, metadata: Metadata | None = None) -> int:
        """Record a pending delete as a new version of the document."""
        return self._begin(tenant, doc_id, None, metadata or {})

    def _begin(
        self, tenant: str, doc_id: str, new: NewVersion | None, tombstone: Metadata | None = None
    ) -> int:
        stored = StoredVersion.of(self.sealer, tenant, new, tombstone)
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT latest_version FROM documents WHERE tenant = ? AND doc_id = ?",
                (tenant, doc_id),
            ).fetchone()
            if row is None and new is None:
                raise DocumentNotFound(
                    f"no document {doc_id!r} in tenant {tenant!r}", doc_id=doc_id
                )
            version = 1 if row is None else int(row["latest_version"]) + 1
            db.execute(
                "INSERT INTO documents(tenant, doc_id, latest_version) VALUES (?, ?, ?) "
                "ON CONFLICT(tenant, doc_id) DO UPDATE "
                "SET latest_version = excluded.latest_version",
                (tenant, doc_id, version),
            )
            db.execute(
                "INSERT INTO versions(tenant, doc_id, version, state, content_hash, filename, size,"
                " metadata, content_type, title, created_at, updated_at) "
                "VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tenant,
                    doc_id,
                    version,
                    new.content_hash if new else None,
                    stored.filename,
                    new.size if new else 0,
                    json.dumps(stored.metadata),
                    new.content_type if new else None,
                    stored.title,
                    now,
                    now,
                ),
            )
        return version

    def record_manifest(
        self,
        tenant: str,
        doc_id: str,
        version: int,
        entries: list[ManifestEntry],
        reused: int = 0,
        embedded: int = 0,
    ) -> None:
        """Store the chunk manifest of a version (and how many vectors it reused)."""
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (tenant, doc_id, version, e.chunk_index, e.content_hash, e.token_count)
                    for e in entries
                ],
            )
            db.execute(
                "UPDATE versions SET chunk_count = ?, reused_vectors = ?, embedded_chunks = ?, "
                "updated_at = ? WHERE tenant = ? AND doc_id = ? AND version = ?",
                (len(entries), reused, embedded, time.time(), tenant, doc_id, version),
            )

    def record_commit(self, tenant: str, doc_id: str, version: int, position: int) -> None:
        """Remember where the version's commit op is in its shard's log."""
        with self._tx() as db:
            db.execute(
                "UPDATE versions SET commit_position = ? "
                "WHERE tenant = ? AND doc_id = ? AND version = ?",
                (position, tenant, doc_id, version),
            )

    def version(self, tenant: str, doc_id: str, version: int) -> VersionInfo | None:
        """One version of a document, or None."""
        rows = self._query(
            "SELECT * FROM versions WHERE tenant = ? AND doc_id = ? AND version = ?",
            tenant,
            doc_id,
            version,
        )
        return version_of(rows[0], sealer=self.sealer) if rows else None

    def mark_superseded(self, tenant: str, doc_id: str, version: int) -> None:
        """A pending (or failed) version overtaken by a newer committed one."""
        with self._tx() as db:
            db.execute(
                "UPDATE versions SET state = 'superseded', updated_at = ? "
                "WHERE tenant = ? AND doc_id = ? AND version = ? "
                "AND state IN ('pending', 'failed')",
                (time.time(), tenant, doc_id, version),
            )

    def reopen(self, tenant: str, doc_id: str, version: int) -> bool:
        """Make a failed version pending again (its event is re-driven)."""
        with self._tx() as db:
            changed = db.execute(
                "UPDATE versions SET state = 'pending', error_code = NULL, error = NULL, "
                "updated_at = ? WHERE tenant = ? AND doc_id = ? AND version = ? "
                "AND state = 'failed'",
                (time.time(), tenant, doc_id, version),
            ).rowcount
        return bool(changed)

    def manifest(self, tenant: str, doc_id: str, version: int) -> list[ManifestEntry]:
        """The chunk manifest of a version, by chunk index."""
        rows = self._query(
            "SELECT chunk_index, content_hash, token_count FROM chunks "
            "WHERE tenant = ? AND doc_id = ? AND version = ? ORDER BY chunk_index",
            tenant,
            doc_id,
            version,
        )
        return [ManifestEntry(r["chunk_index"], r["content_hash"], r["token_count"]) for r in rows]

    def mark_live(self, tenant: str, doc_id: str, version: int) -> None:
        """Make ``version`` live, supersede the previous live version, bump the generation."""
        self._finish(tenant, doc_id, version, VersionState.LIVE)

    def mark_deleted(self, tenant: str, doc_id: str, version: int) -> None:
        """Apply a tombstone version: nothing of the document stays live."""
        self._finish(tenant, doc_id, version, VersionState.DELETED)

    def _finish(self, tenant: str, doc_id: str, version: int, state: VersionState) -> None:
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT live_version FROM documents WHERE tenant = ? AND doc_id = ?",
                (tenant, doc_id),
            ).fetchone()
            if row is None:
                return  # dropped with its tenant while the version was on its way
            previous = row["live_version"]
            newer = db.execute(
                "SELECT 1 FROM versions WHERE tenant = ? AND doc_id = ? AND version > ? "
                "AND state IN ('live', 'deleted') LIMIT 1",
                (tenant, doc_id, version),
            ).fetchone()
            if newer is not None or (previous is not None and previous > version):
                # A newer version is already live (or deleted the document): this one was
                # overtaken. Replicas apply the same log at their own pace, so a lagging one
                # reports old commits after a newer one was recorded; they change nothing.
                db.execute(
                    "UPDATE versions SET state = 'superseded', updated_at = ? "
                    "WHERE tenant = ? AND doc_id = ? AND version = ?",
                    (now, tenant, doc_id, version),
                )
                return
            if previous is not None and previous != version:
                db.execute(
                    "UPDATE versions SET state = 'superseded', updated_at = ? "
                    "WHERE tenant = ? AND doc_id = ? AND version = ?",
                    (now, tenant, doc_id, previous),
                )
            db.execute(
                "UPDATE versions SET state = ?, updated_at = ? "
                "WHERE tenant = ? AND doc_id = ? AND version = ?",
                (state.value, now, tenant, doc_id, version),
            )
            db.execute(
                "UPDATE documents SET live_version = ? WHERE tenant = ? AND doc_id = ?",
                (version if state is VersionState.LIVE else None, tenant, doc_id),
            )
            db.execute("UPDATE tenants SET generation = generation + 1 WHERE tenant = ?", (tenant,))

    def mark_failed(
        self, tenant: str, doc_id: str, version: int, error_code: str, error: str
    ) -> None:
        """Record why a pending version failed; the live version stays live."""
        with self._tx() as db:
            db.execute(
                "UPDATE versions SET state = 'failed', error_code = ?, error = ?, updated_at = ? "
                "WHERE tenant = ? AND doc_id = ? AND version = ? AND state = 'pending'",
                (error_code, error, time.time(), tenant, doc_id, version),
            )

    # -- reads --------------------------------------------------------------------------------

    def document(self, tenant: str, doc_id: str) -> DocumentInfo | None:
        """The document's live and latest versions, or None."""
        rows = self._query(
            "SELECT live_version, latest_version FROM documents WHERE tenant = ? AND doc_id = ?",
            tenant,
            doc_id,
        )
        if not rows:
            return None
        return self._info(tenant, doc_id, rows[0]["live_version"], rows[0]["latest_version"])

    def _info(
        self, tenant: str, doc_id: str, live_version: int | None, latest_version: int
    ) -> DocumentInfo:
        wanted = {latest_version} | ({live_version} if live_version is not None else set())
        marks = ",".join("?" * len(wanted))
        rows = self._query(
            f"SELECT * FROM versions WHERE tenant = ? AND doc_id = ? AND version IN ({marks})",
            tenant,
            doc_id,
            *wanted,
        )
        versions = {int(r["version"]): version_of(r, sealer=self.sealer) for r in rows}
        return DocumentInfo(
            tenant=tenant,
            doc_id=doc_id,
            live=versions.get(live_version) if live_version is not None else None,
            latest=versions[latest_version],
        )

    def documents(
        self,
        tenant: str,
        state: VersionState | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[DocumentInfo]:
        """A page of the tenant's documents by id; deleted ones only when asked for; with
        ``failed``, those whose latest version failed (a live older one or not)."""
        sql = (
            f"SELECT d.doc_id, d.live_version, d.latest_version, {DOCUMENT_STATE} AS doc_state "
            "FROM documents d JOIN versions latest ON latest.tenant = d.tenant "
            "AND latest.doc_id = d.doc_id AND latest.version = d.latest_version "
            "WHERE d.tenant = ? AND d.doc_id > ? "
        )
        args: list[Any] = [tenant, after or ""]
        if state is None:
            sql += f"AND {DOCUMENT_STATE} != 'deleted' "
        elif state is VersionState.FAILED:
            # Failed: the latest attempt failed, whether or not an older version is live.
            sql += "AND latest.state = 'failed' "
        else:
            sql += f"AND {DOCUMENT_STATE} = ? "
            args.append(state.value)
        sql += "ORDER BY d.doc_id LIMIT ?"
        args.append(limit)
        rows = self._query(sql, *args)
        return [
            self._info(tenant, r["doc_id"], r["live_version"], r["latest_version"]) for r in rows
        ]

    def pending_versions(self, tenant: str | None = None) -> list[PendingVersion]:
        """Every version still pending (of one tenant, or all), oldest first."""
        rows = self._query(
            "SELECT tenant, doc_id, version, content_hash, created_at FROM versions "
            "WHERE state = 'pending' AND (? IS NULL OR tenant = ?) ORDER BY created_at",
            tenant,
            tenant,
        )
        return [pending_of(r) for r in rows]

    def document_counts(self) -> dict[VersionState, int]:
        """How many documents (of every tenant) are in each state."""
        rows = self._query(
            f"SELECT {DOCUMENT_STATE} AS doc_state, count(*) AS n FROM documents d "
            "JOIN versions latest ON latest.tenant = d.tenant AND latest.doc_id = d.doc_id "
            "AND latest.version = d.latest_version GROUP BY doc_state"
        )
        return state_counts(rows)

    def tenant_size(self, tenant: str) -> int:
        """Chunks of the tenant's live versions."""
        rows = self._query(
            "SELECT coalesce(sum(v.chunk_count), 0) AS n FROM documents d "
            "JOIN versions v ON v.tenant = d.tenant AND v.doc_id = d.doc_id "
            "AND v.version = d.live_version WHERE d.tenant = ?",
            tenant,
        )
        return int(rows[0]["n"]) if rows else 0

    # -- access: keys, audit, idempotency ------------------------------------------------------

    def add_key(self, key: KeyRecord) -> None:
        """Store a new key."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO api_keys(key_id, tenant, role, secret_hash, name, created_at, "
                "revoked_at, groups) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.key_id,
                    key.tenant,
                    key.role.value,
                    key.secret_hash,
                    key.name,
                    key.created_at,
                    key.revoked_at,
                    None if key.groups is None else json.dumps(list(key.groups)),
                ),
            )

    def key(self, key_id: str) -> KeyRecord | None:
        """The key of that id, or None."""
        rows = self._query("SELECT * FROM api_keys WHERE key_id = ?", key_id)
        return key_of(rows[0]) if rows else None

    def keys(self, tenant: str | None) -> list[KeyRecord]:
        """The keys of a tenant (None: root keys), oldest first."""
        rows = self._query(
            "SELECT * FROM api_keys WHERE tenant IS ? ORDER BY created_at, key_id", tenant
        )
        return [key_of(r) for r in rows]

    def revoke_key(self, key_id: str) -> KeyRecord:
        """Mark a key revoked (the first revocation time stays) and return it."""
        with self._tx() as db:
            db.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE key_id = ?",
                (time.time(), key_id),
            )
            row = db.execute("SELECT * FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
        if row is None:
            raise NotFound(f"no key {key_id!r}", key_id=key_id)
        return key_of(row)

    def data_key(self, owner: str) -> bytes | None:
        """The wrapped data key of ``owner`` (a tenant, or ``@name``), or None."""
        table, column = key_table(owner)
        rows = self._query(f"SELECT wrapped FROM {table} WHERE {column} = ?", owner)
        return bytes(rows[0]["wrapped"]) if rows else None

    def add_data_key(self, owner: str, wrapped: bytes) -> bytes:
        """Keep ``wrapped`` unless ``owner`` has a data key; the one kept."""
        table, column = key_table(owner)
        with self._tx() as db:
            db.execute(
                f"INSERT INTO {table}({column}, wrapped) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (owner, wrapped),
            )
            row = db.execute(f"SELECT wrapped FROM {table} WHERE {column} = ?", (owner,)).fetchone()
        return bytes(row["wrapped"])

    def wrapped_keys(self) -> dict[str, bytes]:
        """Every wrapped data key by owner."""
        rows = self._query(WRAPPED_KEYS)
        return {r["owner"]: bytes(r["wrapped"]) for r in rows}

    def rewrap_key(self, owner: str, old: bytes, new: bytes) -> bool:
        """Replace ``owner``'s wrapped key ``old`` by ``new``; False if it is not ``old``."""
        table, column = key_table(owner)
        with self._tx() as db:
            done = db.execute(
                f"UPDATE {table} SET wrapped = ? WHERE {column} = ? AND wrapped = ?",
                (new, owner, old),
            )
        return done.rowcount == 1

    def append_audit(self, event: AuditEvent) -> None:
        """Append one event to the audit log."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO audit(tenant, actor, action, target, outcome, at, details) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    event.tenant,
                    event.actor,
                    event.action,
                    event.target,
                    event.outcome,
                    event.at,
                    json.dumps(event.details),
                ),
            )

    def audit(self, tenant: str, limit: int = 100, before: int | None = None) -> list[AuditEvent]:
        """A tenant's audit events, newest first."""
        rows = self._query(
            "SELECT * FROM audit WHERE tenant = ? AND event_id < ? ORDER BY event_id DESC LIMIT ?",
            tenant,
            before if before is not None else 2**62,
            limit,
        )
        return [
            AuditEvent(
                tenant=r["tenant"],
                actor=r["actor"],
                action=r["action"],
                target=r["target"],
                outcome=r["outcome"],
                at=r["at"],
                details=json.loads(r["details"]),
                event_id=int(r["event_id"]),
            )
            for r in rows
        ]

    def stored_response(self, tenant: str, idempotency_key: str) -> StoredResponse | None:
        """The answer first given to ``idempotency_key`` in the tenant, or None."""
        rows = self._query(
            "SELECT * FROM idempotency WHERE tenant = ? AND idempotency_key = ?",
            tenant,
            idempotency_key,
        )
        if not rows:
            return None
        row = rows[0]
        return StoredResponse(
            row["request_hash"], int(row["status"]), json.loads(row["body"]), row["created_at"]
        )

    def store_response(self, tenant: str, idempotency_key: str, response: StoredResponse) -> None:
        """Remember the answer to ``idempotency_key``; the first one stored wins."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO idempotency VALUES (?, ?, ?, ?, ?, ?)",
                (
                    tenant,
                    idempotency_key,
                    response.request_hash,
                    response.status,
                    json.dumps(response.body),
                    response.created_at,
                ),
            )

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()
