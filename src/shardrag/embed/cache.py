"""The embedding cache: vectors by (tenant, model, content hash), in SQLite, bounded.

Scoped per tenant on purpose: a cache shared across tenants would let one tenant learn, from
how fast its upload is embedded, that another tenant holds the same passage.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    tenant        TEXT NOT NULL,
    model         TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    vector        BLOB NOT NULL,
    used_at       REAL NOT NULL,
    PRIMARY KEY (tenant, model, content_hash)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vectors_used_at ON vectors(used_at);
"""
_MAX_VARIABLES = 500


class EmbeddingCache:
    """Up to ``max_entries`` float32 vectors; the least recently used go first."""

    def __init__(self, path: Path, max_entries: int) -> None:
        self.max_entries = max_entries
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._writes_since_trim = 0
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # A lost cache entry only costs a re-embedding: no fsync per write.
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.executescript(_SCHEMA)

    def get_many(self, tenant: str, model: str, hashes: list[str]) -> dict[str, list[float]]:
        """Cached vectors of the given content hashes (absent ones are left out)."""
        found: dict[str, list[float]] = {}
        unique = list(dict.fromkeys(hashes))
        with self._lock:
            for start in range(0, len(unique), _MAX_VARIABLES):
                batch = unique[start : start + _MAX_VARIABLES]
                marks = ",".join("?" * len(batch))
                rows = self._db.execute(
                    f"SELECT content_hash, vector FROM vectors WHERE tenant = ? AND model = ? "
                    f"AND content_hash IN ({marks})",
                    (tenant, model, *batch),
                ).fetchall()
                for digest, blob in rows:
                    found[digest] = np.frombuffer(blob, dtype=np.float32).tolist()
            if found:
                self._db.executemany(
                    "UPDATE vectors SET used_at = ? WHERE tenant = ? AND model = ? "
                    "AND content_hash = ?",
                    [(time.time(), tenant, model, h) for h in found],
                )
        return found

    def put_many(self, tenant: str, model: str, vectors: dict[str, list[float]]) -> None:
        """Store vectors by content hash, evicting the least recently used beyond the bound."""
        if not vectors or self.max_entries <= 0:
            return
        now = time.time()
        rows = [
            (tenant, model, h, np.asarray(v, dtype=np.float32).tobytes(), now)
            for h, v in vectors.items()
        ]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?, ?)", rows)
            self._writes_since_trim += len(rows)
            # Trimming scans an index: do it once per tenth of the bound, not on every write.
            if self._writes_since_trim * 10 >= self.max_entries:
                self._writes_since_trim = 0
                self._db.execute(
                    "DELETE FROM vectors WHERE used_at < (SELECT used_at FROM vectors "
                    "ORDER BY used_at DESC LIMIT 1 OFFSET ?)",
                    (self.max_entries,),
                )

    def forget(self, scope_prefix: str) -> int:
        """Delete every vector of the scopes that start with ``scope_prefix`` (a dropped
        tenant's: ``pipeline.vectors.reuse_scope``); how many."""
        with self._lock:
            done = self._db.execute(
                "DELETE FROM vectors WHERE substr(tenant, 1, ?) = ?",
                (len(scope_prefix), scope_prefix),
            )
        return int(done.rowcount)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
