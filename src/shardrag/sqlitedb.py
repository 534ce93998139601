"""The SQLite conventions of the data dir's durable files (registry, log)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def open_durable(path: Path, schema: str, secure_delete: bool = False) -> sqlite3.Connection:
    """A connection shared by threads (callers serialise it), in WAL mode with FULL sync.

    FULL: what a caller was told is stored survives power loss, not only a process kill.
    Autocommit mode: writes group in ``immediate`` transactions. Rows read as ``sqlite3.Row``.
    ``secure_delete``: deleted rows are overwritten with zeros, not left in free pages (the
    wrapped data key of a dropped tenant must not be recoverable from the file).
    """
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    if secure_delete:
        db.execute("PRAGMA secure_delete=ON")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(schema)
    return db


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction taken at once (BEGIN IMMEDIATE); rolled back if the block raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
