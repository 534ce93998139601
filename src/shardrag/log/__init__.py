"""The durable log between services: the protocol, SQLite (embedded) and NATS JetStream."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from shardrag.log.base import Consumer, DeadLetter, Log, LogMessage, subject_matches
from shardrag.log.sqlite import SqliteLog

if TYPE_CHECKING:
    from shardrag.natsconn import NatsConnection


def open_log(
    data_dir: Path,
    nats_url: str | None = None,
    prefix: str = "shardrag",
    replicas: int = 1,
    conn: NatsConnection | None = None,
) -> Log:
    """JetStream at ``nats_url`` (streams named after ``prefix``; over ``conn`` if given),
    else the data dir's file."""
    if nats_url:
        from shardrag.log.nats import NatsLog  # nats-py loads only when it is used

        return NatsLog(nats_url, prefix, replicas=replicas, conn=conn)
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
