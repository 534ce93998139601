"""The registry in PostgreSQL, shared by every process of a distributed deployment.

Each protocol method is one transaction on a pooled connection. Where SQLite serialises writers
with ``BEGIN IMMEDIATE``, this module takes row locks: version numbers come from an upsert of the
document row, a version goes live under a lock on its tenant's row, and the generation is bumped
in place, so concurrent callers in many processes get the same guarantees.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Json, Jsonb
from psycopg_pool import ConnectionPool

from shardrag.errors import (
    DocumentNotFound,
    InvalidParameter,
    NotFound,
    ShardragError,
    TenantExists,
    Unavailable,
)
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

logger = logging.getLogger(__name__)

# The schema, one step per release that changed it; step n is schema version n. Never edit a
# released step: append a new one. Ids are COLLATE "C" so listings sort byte-wise, as SQLite does.
_MIGRATIONS: tuple[str, ...] = (
    # 1: tenants, documents, their versions and chunk manifests.
    """
    CREATE TABLE tenants (
        tenant      text COLLATE "C" PRIMARY KEY,
        shard_id    integer NOT NULL,
        generation  bigint NOT NULL DEFAULT 0,
        created_at  double precision NOT NULL,
        name        text
    );
    CREATE TABLE documents (
        tenant          text COLLATE "C" NOT NULL REFERENCES tenants ON DELETE CASCADE,
        doc_id          text COLLATE "C" NOT NULL,
        live_version    integer,
        latest_version  integer NOT NULL,
        PRIMARY KEY (tenant, doc_id)
    );
    CREATE TABLE versions (
        tenant           text COLLATE "C" NOT NULL,
        doc_id           text COLLATE "C" NOT NULL,
        version          integer NOT NULL,
        state            text NOT NULL
            CHECK (state IN ('pending', 'live', 'failed', 'superseded', 'deleted')),
        content_hash     text,
        filename         text,
        size             bigint NOT NULL DEFAULT 0,
        metadata         jsonb NOT NULL DEFAULT '{}',
        chunk_count      integer NOT NULL DEFAULT 0,
        error_code       text,
        error            text,
        created_at       double precision NOT NULL,
        updated_at       double precision NOT NULL,
        content_type     text,
        title            text,
        commit_position  bigint,
        reused_vectors   integer NOT NULL DEFAULT 0,
        embedded_chunks  integer NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, doc_id, version),
        FOREIGN KEY (tenant, doc_id) REFERENCES documents ON DELETE CASCADE
    );
    CREATE INDEX versions_pending ON versions (created_at) WHERE state = 'pending';
    CREATE TABLE chunks (
        tenant        text COLLATE "C" NOT NULL,
        doc_id        text COLLATE "C" NOT NULL,
        version       integer NOT NULL,
        chunk_index   integer NOT NULL,
        content_hash  text NOT NULL,
        token_count   integer NOT NULL,
        PRIMARY KEY (tenant, doc_id, version, chunk_index),
        FOREIGN KEY (tenant, doc_id, version) REFERENCES versions ON DELETE CASCADE
    );
    """,
    # 2: access control: API keys, the audit log, idempotent responses.
    """
    CREATE TABLE api_keys (
        key_id       text COLLATE "C" PRIMARY KEY,
        tenant       text COLLATE "C" REFERENCES tenants ON DELETE CASCADE,
        role         text NOT NULL,
        secret_hash  text NOT NULL,
        name         text,
        created_at   double precision NOT NULL,
        revoked_at   double precision
    );
    CREATE INDEX api_keys_tenant ON api_keys (tenant);
    CREATE TABLE audit (
        event_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant    text COLLATE "C",
        actor     text NOT NULL,
        action    text NOT NULL,
        target    text NOT NULL,
        outcome   text NOT NULL,
        at        double precision NOT NULL,
        details   jsonb NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_tenant ON audit (tenant, event_id);
    -- body is json, not jsonb: a replayed answer keeps the first one's key order.
    CREATE TABLE idempotency (
        tenant           text COLLATE "C" NOT NULL REFERENCES tenants ON DELETE CASCADE,
        idempotency_key  text NOT NULL,
        request_hash     text NOT NULL,
        status           integer NOT NULL,
        body             json NOT NULL,
        created_at       double precision NOT NULL,
        PRIMARY KEY (tenant, idempotency_key)
    );
    """,
    # 3: access groups of keys (docs/access.md; NULL: every document of the tenant), and
    # tenants' wrapped data keys (blobs/encrypted.py), dropped with the tenant.
    """
    ALTER TABLE api_keys ADD COLUMN groups jsonb;
    CREATE TABLE data_keys (
        tenant   text COLLATE "C" PRIMARY KEY REFERENCES tenants ON DELETE CASCADE,
        wrapped  bytea NOT NULL
    );
    """,
    # 4: the deployment's own wrapped keys (the snapshots' key), re-wrapped with the tenants'
    # when the master key changes (docs/security.md).
    """
    CREATE TABLE deployment_keys (
        name     text COLLATE "C" PRIMARY KEY,
        wrapped  bytea NOT NULL
    );
    """,
)

#: The schema version this code writes and reads.
SCHEMA_VERSION = len(_MIGRATIONS)

# Key of the advisory lock that serialises migrations of one database ("shardrag" in ASCII).
_MIGRATION_LOCK = 0x7368617264726167

# How long to wait for a connection when the URL does not say (libpq waits indefinitely).
_CONNECT_TIMEOUT_S = 10


_VERSION_COLUMNS = (
    "version",
    "state",
    "content_hash",
    "filename",
    "size",
    "chunk_count",
    "metadata",
    "error_code",
    "error",
    "created_at",
    "updated_at",
    "content_type",
    "title",
    "commit_position",
    "reused_vectors",
    "embedded_chunks",
)

# A document with its latest and live versions in one row, their columns prefixed by role.
_DOCUMENT_ROWS = (
    "SELECT d.doc_id, "
    + ", ".join(f"latest.{c} AS latest_{c}, live.{c} AS live_{c}" for c in _VERSION_COLUMNS)
    + " FROM documents d"
    " JOIN versions latest ON latest.tenant = d.tenant AND latest.doc_id = d.doc_id"
    " AND latest.version = d.latest_version"
    " LEFT JOIN versions live ON live.tenant = d.tenant AND live.doc_id = d.doc_id"
    " AND live.version = d.live_version "
)


class PostgresRegistry:
    """Registry over PostgreSQL through a connection pool; safe across threads and processes."""

    def __init__(
        self, url: str, min_size: int = 1, max_size: int = 8, *, timeout: float = 30.0
    ) -> None:
        """Migrate the database at ``url`` and pool ``min_size`` to ``max_size`` connections.

        A call waits up to ``timeout`` seconds for a connection, then raises ``Unavailable``.
        """
        conninfo = _with_connect_timeout(url)
        self.sealer: Sealer = Plain()
        self._where = _describe(conninfo)
        with self._reachable(), psycopg.connect(conninfo) as conn:
            _migrate(conn)
        self._pool = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            open=False,
            # A connection broken by a server restart is replaced, not handed out.
            check=ConnectionPool.check_connection,
            name="shardrag-registry",
            timeout=timeout,
        )
        self._pool.open()

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        """Turn a lost or refused connection into ``Unavailable``, and a NUL character (which
        PostgreSQL text and jsonb cannot hold) into ``InvalidParameter`` instead of a fault."""
        try:
            yield
        except psycopg.OperationalError as e:
            reason = " ".join(str(e).split())
            raise Unavailable(
                f"the registry database {self._where} is unavailable: {reason}",
                registry=self._where,
            ) from e
        except psycopg.DataError as e:
            if "NUL" not in str(e) and "\\u0000" not in str(e):
                raise
            raise InvalidParameter("text may not contain NUL (U+0000) characters") from e

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[DictRow]]:
        """One transaction on a pooled connection; rolled back if the block raises."""
        with (
            self._reachable(),
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            yield cur

    def _query(self, sql: str, *args: Any) -> list[DictRow]:
        """The rows a statement returns, in a transaction of its own."""
        with self._tx() as cur:
            return cur.execute(sql, args).fetchall()

    def _execute(self, sql: str, *args: Any) -> int:
        """Run a statement in a transaction of its own; how many rows it changed."""
        with self._tx() as cur:
            return cur.execute(sql, args).rowcount

    # -- tenants ------------------------------------------------------------------------------

    def ensure_tenant(self, tenant: str, shard_id: int, name: str | None = None) -> TenantRecord:
        """The tenant's record, creating it on ``shard_id`` if needed."""
        with self._tx() as cur:
            # Found, else created. A tenant created or dropped by another process between the
            # two statements only means another turn.
            while True:
                row = (
                    cur.execute("SELECT * FROM tenants WHERE tenant = %s", (tenant,)).fetchone()
                    or cur.execute(
                        "INSERT INTO tenants(tenant, shard_id, created_at, name) "
                        "VALUES (%s, %s, %s, %s) ON CONFLICT (tenant) DO NOTHING RETURNING *",
                        (tenant, shard_id, time.time(), name or tenant),
                    ).fetchone()
                )
                if row is not None:
                    return tenant_of(row)

    def create_tenant(self, tenant: str, shard_id: int, name: str) -> TenantRecord:
        """Create a new tenant; ``TenantExists`` if the id is taken."""
        rows = self._query(
            "INSERT INTO tenants(tenant, shard_id, created_at, name) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (tenant) DO NOTHING RETURNING *",
            tenant,
            shard_id,
            time.time(),
            name,
        )
        if not rows:
            raise TenantExists(f"tenant {tenant!r} exists already", tenant=tenant)
        return tenant_of(rows[0])

    def get_tenant(self, tenant: str) -> TenantRecord | None:
        """The tenant's record, or None."""
        rows = self._query("SELECT * FROM tenants WHERE tenant = %s", tenant)
        return tenant_of(rows[0]) if rows else None

    def list_tenants(self) -> list[TenantRecord]:
        """Every tenant, by id."""
        return [tenant_of(r) for r in self._query("SELECT * FROM tenants ORDER BY tenant")]

    def delete_tenant(self, tenant: str) -> None:
        """Forget the tenant and all its documents.

        Its wrapped data key would stay in a dead row of ``data_keys`` until the page is
        written again: the table (a row per tenant) is rewritten at once, so no page of it
        holds the key (docs/security.md says what PostgreSQL's WAL may still hold).
        """
        self._execute("DELETE FROM tenants WHERE tenant = %s", tenant)
        try:
            with self._reachable(), self._pool.connection() as conn:
                conn.autocommit = True  # VACUUM runs outside a transaction
                try:
                    conn.execute("VACUUM FULL data_keys")
                finally:
                    conn.autocommit = False
        except (psycopg.Error, ShardragError):
            # The tenant is gone either way; the row's bytes go with the next rewrite.
            logger.warning("could not rewrite data_keys after dropping %s", tenant, exc_info=True)

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
        # Incrementing in the statement that locks the document row hands concurrent writers
        # distinct, consecutive numbers.
        if new is None:
            next_version = (
                "UPDATE documents SET latest_version = latest_version + 1 "
                "WHERE tenant = %s AND doc_id = %s RETURNING latest_version"
            )
        else:
            next_version = (
                "INSERT INTO documents(tenant, doc_id, latest_version) VALUES (%s, %s, 1) "
                "ON CONFLICT (tenant, doc_id) "
                "DO UPDATE SET latest_version = documents.latest_version + 1 "
                "RETURNING latest_version"
            )
        with self._tx() as cur:
            row = cur.execute(next_version, (tenant, doc_id)).fetchone()
            if row is None:
                raise DocumentNotFound(
                    f"no document {doc_id!r} in tenant {tenant!r}", doc_id=doc_id
                )
            version = int(row["latest_version"])
            now = time.time()  # read under the lock: a later version is never older
            cur.execute(
                "INSERT INTO versions(tenant, doc_id, version, state, content_hash, filename, "
                "size, metadata, content_type, title, created_at, updated_at) "
                "VALUES (%s, %s, %s, 'pending', %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    tenant,
                    doc_id,
                    version,
                    new.content_hash if new else None,
                    stored.filename,
                    new.size if new else 0,
                    Jsonb(stored.metadata),
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
        with self._tx() as cur:
            cur.executemany(
                "INSERT INTO chunks VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (tenant, doc_id, version, chunk_index) DO UPDATE "
                "SET content_hash = excluded.content_hash, token_count = excluded.token_count",
                [
                    (tenant, doc_id, version, e.chunk_index, e.content_hash, e.token_count)
                    for e in entries
                ],
            )
            cur.execute(
                "UPDATE versions SET chunk_count = %s, reused_vectors = %s, embedded_chunks = %s, "
                "updated_at = %s WHERE tenant = %s AND doc_id = %s AND version = %s",
                (len(entries), reused, embedded, time.time(), tenant, doc_id, version),
            )

    def record_commit(self, tenant: str, doc_id: str, version: int, position: int) -> None:
        """Remember where the version's commit op is in its shard's log."""
        self._update_version(tenant, doc_id, version, "commit_position = %s", position)

    def version(self, tenant: str, doc_id: str, version: int) -> VersionInfo | None:
        """One version of a document, or None."""
        rows = self._query(
            "SELECT * FROM versions WHERE tenant = %s AND doc_id = %s AND version = %s",
            tenant,
            doc_id,
            version,
        )
        return version_of(rows[0], sealer=self.sealer) if rows else None

    def mark_superseded(self, tenant: str, doc_id: str, version: int) -> None:
        """A pending (or failed) version overtaken by a newer committed one."""
        self._update_version(
            tenant,
            doc_id,
            version,
            "state = 'superseded', updated_at = %s",
            time.time(),
            only_in=("pending", "failed"),
        )

    def reopen(self, tenant: str, doc_id: str, version: int) -> bool:
        """Make a failed version pending again (its event is re-driven)."""
        return self._update_version(
            tenant,
            doc_id,
            version,
            "state = 'pending', error_code = NULL, error = NULL, updated_at = %s",
            time.time(),
            only_in=("failed",),
        )

    def mark_failed(
        self, tenant: str, doc_id: str, version: int, error_code: str, error: str
    ) -> None:
        """Record why a pending version failed; the live version stays live."""
        self._update_version(
            tenant,
            doc_id,
            version,
            "state = 'failed', error_code = %s, error = %s, updated_at = %s",
            error_code,
            error,
            time.time(),
            only_in=("pending",),
        )

    def _update_version(
        self,
        tenant: str,
        doc_id: str,
        version: int,
        assignments: str,
        *values: Any,
        only_in: tuple[str, ...] | None = None,
    ) -> bool:
        """Set ``assignments`` on one version (if its state is one of ``only_in``); changed?"""
        sql = (
            f"UPDATE versions SET {assignments} WHERE tenant = %s AND doc_id = %s AND version = %s"
        )
        args: list[Any] = [*values, tenant, doc_id, version]
        if only_in is not None:
            sql += " AND state = ANY(%s)"
            args.append(list(only_in))
        return self._execute(sql, *args) > 0

    def manifest(self, tenant: str, doc_id: str, version: int) -> list[ManifestEntry]:
        """The chunk manifest of a version, by chunk index."""
        rows = self._query(
            "SELECT chunk_index, content_hash, token_count FROM chunks "
            "WHERE tenant = %s AND doc_id = %s AND version = %s ORDER BY chunk_index",
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
        with self._tx() as cur:
            # The tenant row first, then the document's: the order delete_tenant locks them in,
            # so the two never deadlock.
            cur.execute("SELECT 1 FROM tenants WHERE tenant = %s FOR NO KEY UPDATE", (tenant,))
            row = cur.execute(
                "SELECT live_version FROM documents WHERE tenant = %s AND doc_id = %s FOR UPDATE",
                (tenant, doc_id),
            ).fetchone()
            if row is None:
                return  # dropped with its tenant while the version was on its way
            set_version = (
                "UPDATE versions SET state = %s, updated_at = %s "
                "WHERE tenant = %s AND doc_id = %s AND version = %s"
            )
            previous = row["live_version"]
            newer = cur.execute(
                "SELECT 1 FROM versions WHERE tenant = %s AND doc_id = %s AND version > %s "
                "AND state IN ('live', 'deleted') LIMIT 1",
                (tenant, doc_id, version),
            ).fetchone()
            if newer is not None or (previous is not None and previous > version):
                # A newer version is already live (or deleted the document): this one was
                # overtaken. Replicas apply the same log at their own pace, so a lagging one
                # reports old commits after a newer one was recorded; they change nothing.
                cur.execute(set_version, ("superseded", now, tenant, doc_id, version))
                return
            if previous is not None and previous != version:
                cur.execute(set_version, ("superseded", now, tenant, doc_id, previous))
            cur.execute(set_version, (state.value, now, tenant, doc_id, version))
            cur.execute(
                "UPDATE documents SET live_version = %s WHERE tenant = %s AND doc_id = %s",
                (version if state is VersionState.LIVE else None, tenant, doc_id),
            )
            cur.execute(
                "UPDATE tenants SET generation = generation + 1 WHERE tenant = %s", (tenant,)
            )

    # -- reads --------------------------------------------------------------------------------

    def document(self, tenant: str, doc_id: str) -> DocumentInfo | None:
        """The document's live and latest versions, or None."""
        rows = self._query(_DOCUMENT_ROWS + "WHERE d.tenant = %s AND d.doc_id = %s", tenant, doc_id)
        return _document(tenant, rows[0], self.sealer) if rows else None

    def documents(
        self,
        tenant: str,
        state: VersionState | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[DocumentInfo]:
        """A page of the tenant's documents by id; deleted ones only when asked for; with
        ``failed``, those whose latest version failed (a live older one or not)."""
        sql = _DOCUMENT_ROWS + "WHERE d.tenant = %s AND d.doc_id > %s "
        args: list[Any] = [tenant, after or ""]
        if state is None:
            sql += f"AND {DOCUMENT_STATE} != 'deleted' "
        elif state is VersionState.FAILED:
            # Failed: the latest attempt failed, whether or not an older version is live.
            sql += "AND latest.state = 'failed' "
        else:
            sql += f"AND {DOCUMENT_STATE} = %s "
            args.append(state.value)
        sql += "ORDER BY d.doc_id LIMIT %s"
        args.append(limit)
        return [_document(tenant, r, self.sealer) for r in self._query(sql, *args)]

    def pending_versions(self, tenant: str | None = None) -> list[PendingVersion]:
        """Every version still pending (of one tenant, or all), oldest first."""
        rows = self._query(
            "SELECT tenant, doc_id, version, content_hash, created_at FROM versions "
            "WHERE state = 'pending' AND (%s::text IS NULL OR tenant = %s) "
            "ORDER BY created_at, tenant, doc_id, version",
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
            "AND v.version = d.live_version WHERE d.tenant = %s",
            tenant,
        )
        return int(rows[0]["n"]) if rows else 0

    # -- access: keys, audit, idempotency ------------------------------------------------------

    def add_key(self, key: KeyRecord) -> None:
        """Store a new key."""
        self._execute(
            "INSERT INTO api_keys(key_id, tenant, role, secret_hash, name, created_at, "
            "revoked_at, groups) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            key.key_id,
            key.tenant,
            key.role.value,
            key.secret_hash,
            key.name,
            key.created_at,
            key.revoked_at,
            None if key.groups is None else Jsonb(list(key.groups)),
        )

    def key(self, key_id: str) -> KeyRecord | None:
        """The key of that id, or None."""
        rows = self._query("SELECT * FROM api_keys WHERE key_id = %s", key_id)
        return key_of(rows[0]) if rows else None

    def keys(self, tenant: str | None) -> list[KeyRecord]:
        """The keys of a tenant (None: root keys), oldest first."""
        rows = self._query(
            "SELECT * FROM api_keys WHERE tenant IS NOT DISTINCT FROM %s::text "
            "ORDER BY created_at, key_id",
            tenant,
        )
        return [key_of(r) for r in rows]

    def revoke_key(self, key_id: str) -> KeyRecord:
        """Mark a key revoked (the first revocation time stays) and return it."""
        rows = self._query(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, %s) WHERE key_id = %s "
            "RETURNING *",
            time.time(),
            key_id,
        )
        if not rows:
            raise NotFound(f"no key {key_id!r}", key_id=key_id)
        return key_of(rows[0])

    def data_key(self, owner: str) -> bytes | None:
        """The wrapped data key of ``owner`` (a tenant, or ``@name``), or None."""
        table, column = key_table(owner)
        rows = self._query(f"SELECT wrapped FROM {table} WHERE {column} = %s", owner)
        return bytes(rows[0]["wrapped"]) if rows else None

    def add_data_key(self, owner: str, wrapped: bytes) -> bytes:
        """Keep ``wrapped`` unless ``owner`` has a data key; the one kept."""
        table, column = key_table(owner)
        self._execute(
            f"INSERT INTO {table}({column}, wrapped) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            owner,
            wrapped,
        )
        rows = self._query(f"SELECT wrapped FROM {table} WHERE {column} = %s", owner)
        return bytes(rows[0]["wrapped"])

    def wrapped_keys(self) -> dict[str, bytes]:
        """Every wrapped data key by owner."""
        rows = self._query(WRAPPED_KEYS)
        return {r["owner"]: bytes(r["wrapped"]) for r in rows}

    def rewrap_key(self, owner: str, old: bytes, new: bytes) -> bool:
        """Replace ``owner``'s wrapped key ``old`` by ``new``; False if it is not ``old``."""
        table, column = key_table(owner)
        changed = self._execute(
            f"UPDATE {table} SET wrapped = %s WHERE {column} = %s AND wrapped = %s",
            new,
            owner,
            old,
        )
        return changed == 1

    def append_audit(self, event: AuditEvent) -> None:
        """Append one event to the audit log.

        The target is what the request named (a document id, a path), refused or not: a NUL
        in it, which PostgreSQL text cannot hold, is recorded as U+FFFD rather than failing
        the request that is being audited.
        """
        self._execute(
            "INSERT INTO audit(tenant, actor, action, target, outcome, at, details) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            event.tenant,
            event.actor,
            event.action,
            event.target.replace("\x00", "\ufffd"),
            event.outcome,
            event.at,
            Jsonb(event.details),
        )

    def audit(self, tenant: str, limit: int = 100, before: int | None = None) -> list[AuditEvent]:
        """A tenant's audit events, newest first."""
        rows = self._query(
            "SELECT * FROM audit WHERE tenant = %s AND event_id < %s "
            "ORDER BY event_id DESC LIMIT %s",
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
                details=r["details"],
                event_id=int(r["event_id"]),
            )
            for r in rows
        ]

    def stored_response(self, tenant: str, idempotency_key: str) -> StoredResponse | None:
        """The answer first given to ``idempotency_key`` in the tenant, or None."""
        rows = self._query(
            "SELECT * FROM idempotency WHERE tenant = %s AND idempotency_key = %s",
            tenant,
            idempotency_key,
        )
        if not rows:
            return None
        row = rows[0]
        return StoredResponse(
            row["request_hash"], int(row["status"]), row["body"], row["created_at"]
        )

    def store_response(self, tenant: str, idempotency_key: str, response: StoredResponse) -> None:
        """Remember the answer to ``idempotency_key``; the first one stored wins."""
        self._execute(
            "INSERT INTO idempotency VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (tenant, idempotency_key) DO NOTHING",
            tenant,
            idempotency_key,
            response.request_hash,
            response.status,
            Json(response.body),
            response.created_at,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._pool.close()


def _migrate(conn: psycopg.Connection[Any]) -> None:
    """Apply the steps the database lacks, in one transaction under an advisory lock.

    The lock makes processes that open the registry at once take turns: the first applies the
    missing steps, the others find them recorded.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version integer PRIMARY KEY, applied_at double precision NOT NULL)"
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        applied = int(row[0]) if row else 0
        if applied > SCHEMA_VERSION:
            raise Unavailable(
                f"the registry database is at schema version {applied}, newer than the "
                f"{SCHEMA_VERSION} this shardrag knows: upgrade shardrag to use it",
                schema_version=applied,
                supported=SCHEMA_VERSION,
            )
        for number in range(applied + 1, SCHEMA_VERSION + 1):
            conn.execute(_MIGRATIONS[number - 1])
            conn.execute(
                "INSERT INTO schema_migrations(version, applied_at) VALUES (%s, %s)",
                (number, time.time()),
            )


def _with_connect_timeout(url: str) -> str:
    """The connection string, with a connect timeout unless the URL sets one."""
    if "connect_timeout" in conninfo_to_dict(url):
        return url
    return make_conninfo(url, connect_timeout=_CONNECT_TIMEOUT_S)


def _describe(conninfo: str) -> str:
    """``host:port/dbname`` of a connection string, for messages (never its password)."""
    params = conninfo_to_dict(conninfo)
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


def _document(tenant: str, row: DictRow, sealer: Sealer) -> DocumentInfo:
    """A row of ``_DOCUMENT_ROWS`` as the document's state."""
    return DocumentInfo(
        tenant=tenant,
        doc_id=row["doc_id"],
        live=version_of(row, "live_", sealer) if row["live_version"] is not None else None,
        latest=version_of(row, "latest_", sealer),
    )
