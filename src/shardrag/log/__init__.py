"""The durable log between services: the protocol, SQLite (embedded) and NATS JetStream."""

from pathlib import Path

from shardrag.log.base import Consumer, DeadLetter, Log, LogMessage, subject_matches
from shardrag.log.sqlite import SqliteLog


def open_log(
    data_dir: Path, nats_url: str | None = None, prefix: str = "shardrag", replicas: int = 1
) -> Log:
    """JetStream at ``nats_url`` (streams named after ``prefix``), else the data dir's file."""
    if nats_url:
        from shardrag.log.nats import NatsLog  # nats-py loads only when it is used

        return NatsLog(nats_url, prefix, replicas=replicas)
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
