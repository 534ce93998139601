"""The durable log in one SQLite file (WAL, fully synchronous): the embedded default.

Consumers keep a cursor (the highest sequence handed to them) and a row per message in flight;
acking deletes the row, so the tables hold only what is still owed. Consumers in the same
process are woken as soon as a message is appended.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardrag.errors import InvalidParameter, NotFound
from shardrag.log.base import DeadLetter, LogMessage, check_subject, subject_matches
from shardrag.sqlitedb import immediate, open_durable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    subject     TEXT NOT NULL,
    data        BLOB NOT NULL,
    headers     TEXT NOT NULL DEFAULT '{}',
    message_id  TEXT UNIQUE,
    created_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_subject ON messages(subject, seq);
CREATE TABLE IF NOT EXISTS consumers (
    name          TEXT PRIMARY KEY,
    subjects      TEXT NOT NULL,
    max_attempts  INTEGER NOT NULL,
    ack_wait      REAL NOT NULL,
    cursor        INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS in_flight (
    consumer      TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    attempts      INTEGER NOT NULL,
    available_at  REAL NOT NULL,
    last_error    TEXT,
    PRIMARY KEY (consumer, seq)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    dead_letter_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer        TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    subject         TEXT NOT NULL,
    data            BLOB NOT NULL,
    headers         TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    error           TEXT NOT NULL,
    failed_at       REAL NOT NULL
);
"""

# Messages examined per scan for a consumer's new messages (its filter may skip many).
_SCAN = 512


@dataclass(frozen=True)
class _ConsumerConfig:
    name: str
    subjects: str
    max_attempts: int
    ack_wait: float


class SqliteLog:
    """A log over one SQLite file, shared by the threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._appended = threading.Condition(self._lock)
        with self._lock:
            self._db = open_durable(path, _SCHEMA)
            # One process owns the file (the data dir's lock): deliveries still in flight
            # were leased by a process that is gone, so they are due again now rather than
            # after their ack_wait.
            with self._tx() as db:
                db.execute("UPDATE in_flight SET available_at = 0")

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        # The caller holds self._lock.
        return immediate(self._db)

    def append(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None = None,
        message_id: str | None = None,
    ) -> int:
        """Append a message; a repeated ``message_id`` returns the first one's sequence."""
        check_subject(subject)
        with self._lock, self._tx() as db:
            if message_id is not None:
                row = db.execute(
                    "SELECT seq FROM messages WHERE message_id = ?", (message_id,)
                ).fetchone()
                if row is not None:
                    return int(row["seq"])
            cursor = db.execute(
                "INSERT INTO messages(subject, data, headers, message_id, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (subject, data, json.dumps(headers or {}), message_id, time.time()),
            )
            sequence = int(cursor.lastrowid or 0)
        with self._appended:
            self._appended.notify_all()
        return sequence

    def consumer(
        self, name: str, subjects: str, max_attempts: int = 5, ack_wait: float = 30.0
    ) -> SqliteConsumer:
        """The durable consumer ``name``; created on first use, its filter fixed then."""
        if max_attempts < 1 or ack_wait <= 0:
            raise InvalidParameter("a consumer needs max_attempts >= 1 and ack_wait > 0")
        with self._lock, self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO consumers(name, subjects, max_attempts, ack_wait) "
                "VALUES (?, ?, ?, ?)",
                (name, subjects, max_attempts, ack_wait),
            )
            row = db.execute("SELECT * FROM consumers WHERE name = ?", (name,)).fetchone()
        if row["subjects"] != subjects:
            raise InvalidParameter(
                f"consumer {name!r} exists with the filter {row['subjects']!r}, not {subjects!r}"
            )
        config = _ConsumerConfig(name, subjects, max_attempts, ack_wait)
        return SqliteConsumer(self, config)

    def read(
        self, subjects: str, after: int, limit: int = 64, timeout: float = 1.0
    ) -> list[LogMessage]:
        """Messages matching ``subjects`` after sequence ``after``, in order."""
        deadline = time.monotonic() + timeout
        with self._appended:
            while True:
                found: list[LogMessage] = []
                position = after
                while len(found) < limit:
                    rows = self._db.execute(
                        "SELECT seq, subject, data, headers FROM messages WHERE seq > ? "
                        "ORDER BY seq LIMIT ?",
                        (position, _SCAN),
                    ).fetchall()
                    if not rows:
                        break
                    for row in rows:
                        position = int(row["seq"])
                        if subject_matches(subjects, row["subject"]):
                            found.append(_message(row, 1))
                            if len(found) == limit:
                                break
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                after = position  # what was scanned matched nothing; wait for more
                self._appended.wait(remaining)

    def bury(self, consumer: str, message: LogMessage, error: str) -> None:
        """Record a dead letter for a reader that gave up on ``message``."""
        with self._lock, self._tx() as db:
            self._bury(db, consumer, message, error, time.time())

    def last_sequence(self, subject: str, timeout: float | None = None) -> int:
        """The sequence of the newest message on ``subject`` (0 if none); ``Unavailable``
        if the log does not answer within ``timeout`` seconds (None: its default)."""
        with self._lock:
            row = self._db.execute(
                "SELECT max(seq) AS seq FROM messages WHERE subject = ?", (subject,)
            ).fetchone()
        return int(row["seq"] or 0)

    def dead_letters(self, consumer: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM dead_letters WHERE ? IS NULL OR consumer = ? "
                "ORDER BY dead_letter_id LIMIT ?",
                (consumer, consumer, limit),
            ).fetchall()
        return [
            DeadLetter(
                dead_letter_id=int(r["dead_letter_id"]),
                consumer=r["consumer"],
                subject=r["subject"],
                data=bytes(r["data"]),
                sequence=int(r["seq"]),
                attempts=int(r["attempts"]),
                error=r["error"],
                failed_at=r["failed_at"],
                headers=json.loads(r["headers"]),
            )
            for r in rows
        ]

    def redrive(self, dead_letter_id: int) -> int:
        """Append a dead letter's message again and forget the dead letter."""
        with self._lock, self._tx() as db:
            row = db.execute(
                "SELECT * FROM dead_letters WHERE dead_letter_id = ?", (dead_letter_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no dead letter {dead_letter_id}", dead_letter_id=dead_letter_id)
            db.execute("DELETE FROM dead_letters WHERE dead_letter_id = ?", (dead_letter_id,))
            cursor = db.execute(
                "INSERT INTO messages(subject, data, headers, created_at) VALUES (?, ?, ?, ?)",
                (row["subject"], row["data"], row["headers"], time.time()),
            )
            sequence = int(cursor.lastrowid or 0)
        with self._appended:
            self._appended.notify_all()
        return sequence

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    # -- used by SqliteConsumer ------------------------------------------------------------

    def _fetch(self, config: _ConsumerConfig, batch: int, timeout: float) -> list[LogMessage]:
        deadline = time.monotonic() + timeout
        with self._appended:
            while True:
                found = self._take(config, batch)
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                # Woken by appends; a nak'd message comes due without one, hence the cap.
                self._appended.wait(min(remaining, 0.05))

    def _take(self, config: _ConsumerConfig, batch: int) -> list[LogMessage]:
        now = time.time()
        taken: list[LogMessage] = []
        with self._tx() as db:
            # Messages due again (nak'd with a delay, or not acked within ack_wait) go first.
            due = db.execute(
                "SELECT f.seq, f.attempts, f.last_error, m.subject, m.data, m.headers "
                "FROM in_flight f JOIN messages m ON m.seq = f.seq "
                "WHERE f.consumer = ? AND f.available_at <= ? ORDER BY f.seq LIMIT ?",
                (config.name, now, batch),
            ).fetchall()
            for row in due:
                if row["attempts"] >= config.max_attempts:
                    error = row["last_error"] or f"not acknowledged within {config.ack_wait:g} s"
                    self._bury(db, config.name, _message(row, int(row["attempts"])), error, now)
                    continue
                attempts = int(row["attempts"]) + 1
                db.execute(
                    "UPDATE in_flight SET attempts = ?, available_at = ? "
                    "WHERE consumer = ? AND seq = ?",
                    (attempts, now + config.ack_wait, config.name, row["seq"]),
                )
                taken.append(_message(row, attempts))
            cursor = int(
                db.execute(
                    "SELECT cursor FROM consumers WHERE name = ?", (config.name,)
                ).fetchone()["cursor"]
            )
            while len(taken) < batch:
                rows = db.execute(
                    "SELECT seq, subject, data, headers FROM messages WHERE seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (cursor, _SCAN),
                ).fetchall()
                if not rows:
                    break
                for row in rows:
                    cursor = int(row["seq"])
                    if not subject_matches(config.subjects, row["subject"]):
                        continue
                    db.execute(
                        "INSERT INTO in_flight(consumer, seq, attempts, available_at) "
                        "VALUES (?, ?, 1, ?)",
                        (config.name, cursor, now + config.ack_wait),
                    )
                    taken.append(_message(row, 1))
                    if len(taken) == batch:
                        break
            db.execute("UPDATE consumers SET cursor = ? WHERE name = ?", (cursor, config.name))
        return taken

    def _bury(
        self, db: sqlite3.Connection, consumer: str, message: LogMessage, error: str, now: float
    ) -> None:
        db.execute(
            "INSERT INTO dead_letters(consumer, seq, subject, data, headers, attempts, error, "
            "failed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                consumer,
                message.sequence,
                message.subject,
                message.data,
                json.dumps(message.headers),
                message.attempts,
                error,
                now,
            ),
        )
        db.execute(
            "DELETE FROM in_flight WHERE consumer = ? AND seq = ?", (consumer, message.sequence)
        )

    def _ack(self, config: _ConsumerConfig, message: LogMessage) -> None:
        with self._lock, self._tx() as db:
            db.execute(
                "DELETE FROM in_flight WHERE consumer = ? AND seq = ?",
                (config.name, message.sequence),
            )

    def _nak(self, config: _ConsumerConfig, message: LogMessage, error: str, delay: float) -> bool:
        now = time.time()
        with self._lock, self._tx() as db:
            row = db.execute(
                "SELECT f.seq, f.attempts, m.subject, m.data, m.headers FROM in_flight f "
                "JOIN messages m ON m.seq = f.seq WHERE f.consumer = ? AND f.seq = ?",
                (config.name, message.sequence),
            ).fetchone()
            if row is None:
                return False  # acked or buried already: a late nak changes nothing
            if int(row["attempts"]) >= config.max_attempts:
                self._bury(db, config.name, _message(row, int(row["attempts"])), error, now)
                return True
            db.execute(
                "UPDATE in_flight SET available_at = ?, last_error = ? "
                "WHERE consumer = ? AND seq = ?",
                (now + max(0.0, delay), error, config.name, message.sequence),
            )
        return False


class SqliteConsumer:
    """A durable consumer of a ``SqliteLog``."""

    def __init__(self, log: SqliteLog, config: _ConsumerConfig) -> None:
        self._log = log
        self._config = config
        self.name = config.name

    def fetch(self, batch: int = 16, timeout: float = 1.0) -> list[LogMessage]:
        """Up to ``batch`` messages, waiting up to ``timeout`` seconds for the first."""
        return self._log._fetch(self._config, batch, timeout)

    def ack(self, message: LogMessage) -> None:
        """Done with the message."""
        self._log._ack(self._config, message)

    def nak(self, message: LogMessage, error: str, delay: float = 0.0) -> bool:
        """Retry after ``delay``, or dead-letter it after the last attempt."""
        return self._log._nak(self._config, message, error, delay)


def _message(row: sqlite3.Row, attempts: int) -> LogMessage:
    headers: dict[str, Any] = json.loads(row["headers"])
    return LogMessage(
        subject=row["subject"],
        data=bytes(row["data"]),
        sequence=int(row["seq"]),
        attempts=attempts,
        headers={str(k): str(v) for k, v in headers.items()},
    )
