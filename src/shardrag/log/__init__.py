"""The durable log between services: the protocol and its embedded (SQLite) backend."""

from pathlib import Path

from shardrag.log.base import Consumer, DeadLetter, Log, LogMessage, subject_matches
from shardrag.log.sqlite import SqliteLog


def open_log(data_dir: Path) -> Log:
    """The log of an embedded data dir."""
    return SqliteLog(data_dir / "log.sqlite3")


__all__ = [
    "Consumer",
    "DeadLetter",
    "Log",
    "LogMessage",
    "SqliteLog",
    "open_log",
    "subject_matches",
]
