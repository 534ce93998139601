"""The durable log protocol: append to a subject, consume with durable named consumers.

Delivery is at least once: a message fetched and neither acked nor nak'd within the
consumer's ``ack_wait`` is delivered again, so consumers must be idempotent (ARCHITECTURE.md
§2). A message nak'd (or left unacked) ``max_attempts`` times is moved to the dead letters
with its last error and never delivered again until an operator re-drives it.

Subjects are dot-separated tokens (``doc.ingest``, ``shard.3``); consumer filters take NATS
wildcards: ``*`` for one token, ``>`` for the rest.

Implementations: ``log/sqlite.py`` (embedded, in the data dir) and ``log/nats.py`` (JetStream).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from shardrag.errors import InvalidParameter


@dataclass(frozen=True)
class LogMessage:
    """One delivery of a message: ``attempts`` counts this delivery (1 on the first)."""

    subject: str
    data: bytes
    sequence: int
    attempts: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeadLetter:
    """A message a consumer gave up on, with the last error it reported."""

    dead_letter_id: int
    consumer: str
    subject: str
    data: bytes
    sequence: int
    attempts: int
    error: str
    failed_at: float
    headers: dict[str, str] = field(default_factory=dict)


class Consumer(Protocol):
    """A durable named consumer: its position and pending deliveries survive restarts."""

    name: str

    def fetch(self, batch: int = 16, timeout: float = 1.0) -> list[LogMessage]:
        """Up to ``batch`` messages, waiting up to ``timeout`` seconds for the first."""
        ...

    def ack(self, message: LogMessage) -> None:
        """The message is done; it is never delivered to this consumer again."""
        ...

    def nak(self, message: LogMessage, error: str, delay: float = 0.0) -> bool:
        """The message failed: deliver it again after ``delay`` seconds, or, if it has used
        its attempts, move it to the dead letters. True when it was dead-lettered."""
        ...


class Log(Protocol):
    """Subjects of ordered, durable messages."""

    def append(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None = None,
        message_id: str | None = None,
    ) -> int:
        """Append a message; return its sequence. A repeated ``message_id`` appends nothing
        and returns the first message's sequence (deduplication of retried appends)."""
        ...

    def consumer(
        self, name: str, subjects: str, max_attempts: int = 5, ack_wait: float = 30.0
    ) -> Consumer:
        """The durable consumer ``name`` of the subjects matching ``subjects``."""
        ...

    def read(
        self, subjects: str, after: int, limit: int = 64, timeout: float = 1.0
    ) -> list[LogMessage]:
        """Messages matching ``subjects`` with a sequence above ``after``, in log order.

        An ordered read without acknowledgements, for a reader that keeps its own position
        (an index applier replaying its shard's log from its last applied offset). Waits up
        to ``timeout`` seconds for the first message.
        """
        ...

    def last_sequence(self, subject: str, timeout: float | None = None) -> int:
        """The sequence of the newest message on ``subject`` (0 if none); ``Unavailable``
        if the log does not answer within ``timeout`` seconds (None: its default)."""
        ...

    def bury(self, consumer: str, message: LogMessage, error: str) -> None:
        """Record ``message`` as a dead letter of ``consumer`` (a reader that gave up on it)."""
        ...

    def dead_letters(self, consumer: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, oldest first (of one consumer, or all)."""
        ...

    def redrive(self, dead_letter_id: int) -> int:
        """Append a dead letter's message again (same subject, data, headers) for a new round
        of attempts, remove it from the dead letters; return the new sequence."""
        ...

    def close(self) -> None:
        """Release the log's resources."""
        ...


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` matches the NATS-style ``pattern`` (``*`` one token, ``>`` rest)."""
    want = pattern.split(".")
    have = subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(have) == len(want)


def check_subject(subject: str) -> None:
    """A subject to append to: dot-separated non-empty tokens, no wildcards, no spaces."""
    tokens = subject.split(".")
    if not subject or any(not t or t in ("*", ">") or " " in t for t in tokens):
        raise InvalidParameter(f"subject {subject!r} must be dot-separated non-empty tokens")
