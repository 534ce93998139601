"""The durable log on NATS JetStream (nats-py): the distributed backend.

One stream holds every subject of a log under ``<prefix>.``; a second stream,
``<STREAM>_DLQ``, holds the dead letters. Consumers are durable pull consumers with explicit
acks. JetStream counts deliveries; this backend decides when a message is dead (after
``max_attempts``), copies it with its last error into the dead-letter stream and terminates
it, so both backends bury at the same point. Deduplication of appends uses ``Nats-Msg-Id``
within the stream's duplicate window (2 minutes by default).

nats-py is asyncio; this class drives it through a ``NatsConnection`` (an event loop on a
thread of its own) and offers the same blocking methods as the SQLite backend. With
``replicas`` > 1 (a NATS cluster) both streams are replicated: losing a server loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import nats.errors
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import NotFoundError

from shardrag.errors import InvalidParameter, NotFound
from shardrag.log.base import DeadLetter, LogMessage, check_subject
from shardrag.natsconn import NatsConnection

_T = TypeVar("_T")
_MSG_ID = "Nats-Msg-Id"
# Headers the dead-letter copy carries about the original.
_DL = {
    "subject": "Shardrag-Subject",
    "consumer": "Shardrag-Consumer",
    "error": "Shardrag-Error",
    "attempts": "Shardrag-Attempts",
    "seq": "Shardrag-Sequence",
    "at": "Shardrag-Failed-At",
}


#: A reader that got nothing for this long checks that its consumer still exists.
READER_PROBE_SECONDS = 3.0


@dataclass
class _Reader:
    """An ephemeral ordered reader: its subscription, the last stream and consumer sequence
    it handed out, and when its consumer last showed it was alive."""

    sub: Any
    position: int
    delivered: int
    alive_at: float


class NatsLog:
    """A log on a JetStream server (or cluster) reachable at ``url``."""

    def __init__(
        self,
        url: str,
        prefix: str = "shardrag",
        timeout: float = 5.0,
        replicas: int = 1,
        conn: NatsConnection | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", prefix):
            raise InvalidParameter(f"log prefix {prefix!r} must be letters, digits, _ or -")
        self.prefix = prefix
        self.stream = prefix.upper().replace("-", "_")
        self.dead_stream = f"{self.stream}_DLQ"
        self.timeout = timeout
        self.replicas = replicas
        # Ordered readers by filter.
        self._readers: dict[str, _Reader] = {}
        # ``conn``: the process's one connection (``Backends``), which outlives this log.
        self._owns_conn = conn is None
        self._conn = (
            conn if conn is not None else NatsConnection(url, timeout, name="nats-log", tls=tls)
        )
        self._js = self._conn.js
        try:
            self._conn.run_patiently(self._create_streams)
        except BaseException:
            self.close()
            raise

    def _run(self, coroutine: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        return self._conn.run(coroutine, timeout)

    async def _create_streams(self) -> None:
        for name, subjects in (
            (self.stream, [f"{self.prefix}.>"]),
            (self.dead_stream, [f"{self.prefix}_dlq.>"]),
        ):
            try:
                await self._js.stream_info(name)
            except NotFoundError:
                await self._js.add_stream(
                    name=name, subjects=subjects, storage="file", num_replicas=self.replicas
                )

    def _subject(self, subject: str) -> str:
        return f"{self.prefix}.{subject}"

    def _unprefixed(self, subject: str) -> str:
        return subject[len(self.prefix) + 1 :]

    def append(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None = None,
        message_id: str | None = None,
    ) -> int:
        """Publish and wait for the stream's acknowledgement; return the sequence."""
        check_subject(subject)
        sent = dict(headers or {})
        if message_id is not None:
            sent[_MSG_ID] = message_id
        ack = self._run(
            self._js.publish(self._subject(subject), data, headers=sent or None, stream=self.stream)
        )
        return int(ack.seq)

    def consumer(
        self, name: str, subjects: str, max_attempts: int = 5, ack_wait: float = 30.0
    ) -> NatsConsumer:
        """The durable pull consumer ``name`` (created on first use, its filter fixed then)."""
        if max_attempts < 1 or ack_wait <= 0:
            raise InvalidParameter("a consumer needs max_attempts >= 1 and ack_wait > 0")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise InvalidParameter(f"consumer name {name!r} must be letters, digits, _ or -")
        wanted = self._subject(subjects)

        async def bind() -> Any:
            try:
                info = await self._js.consumer_info(self.stream, name)
                if info.config.filter_subject != wanted:
                    raise InvalidParameter(
                        f"consumer {name!r} exists with the filter "
                        f"{self._unprefixed(info.config.filter_subject or '')!r}, not {subjects!r}"
                    )
            except NotFoundError:
                pass
            config = api.ConsumerConfig(
                durable_name=name,
                filter_subject=wanted,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=ack_wait,
                max_deliver=-1,  # this backend decides when a message is dead
            )
            return await self._js.pull_subscribe(
                wanted, durable=name, stream=self.stream, config=config
            )

        return NatsConsumer(self, name, self._run(bind()), max_attempts, ack_wait)

    def read(
        self, subjects: str, after: int, limit: int = 64, timeout: float = 1.0
    ) -> list[LogMessage]:
        """Messages matching ``subjects`` after stream sequence ``after``, in order.

        An ephemeral pull consumer without acks, kept between calls while the caller reads
        on from where it stopped; a gap in its consumer sequence (a message that went to a
        fetch that had timed out) or a new position starts a fresh one from ``after``.

        An ephemeral consumer lives on one server: if that server dies, fetches only time
        out, exactly as on a quiet subject. So a reader that got nothing for
        ``READER_PROBE_SECONDS`` asks the server for its consumer; if none answers, it starts
        a fresh one from ``after`` (placed on a live server).
        """

        async def take() -> list[LogMessage]:
            started = time.monotonic()
            reader = self._readers.pop(subjects, None)
            if reader is not None and reader.position != after:
                await _unsubscribe(reader.sub)
                reader = None
            if reader is not None and started - reader.alive_at >= READER_PROBE_SECONDS:
                if await _consumer_answers(reader.sub, min(timeout, 1.0)):
                    reader.alive_at = time.monotonic()
                else:
                    await _unsubscribe(reader.sub)
                    reader = None
            if reader is None:
                config = api.ConsumerConfig(
                    deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=after + 1,
                    ack_policy=api.AckPolicy.NONE,
                    inactive_threshold=120.0,
                )
                sub = await self._js.pull_subscribe(
                    self._subject(subjects), durable=None, stream=self.stream, config=config
                )
                reader = _Reader(sub, after, 0, time.monotonic())
            remaining = timeout - (time.monotonic() - started)
            try:
                msgs = await reader.sub.fetch(limit, timeout=max(remaining, 0.01))
            except TimeoutError:
                msgs = []
            found: list[LogMessage] = []
            for msg in msgs:
                if int(msg.metadata.sequence.consumer) != reader.delivered + 1:
                    await _unsubscribe(reader.sub)  # a gap: start again after the last good one
                    return found
                reader.delivered += 1
                reader.position = int(msg.metadata.sequence.stream)
                found.append(
                    LogMessage(
                        subject=self._unprefixed(msg.subject),
                        data=msg.data,
                        sequence=reader.position,
                        attempts=1,
                        headers=_user_headers(msg.headers),
                    )
                )
            if found:
                reader.alive_at = time.monotonic()
            self._readers[subjects] = reader
            return found

        return self._run(take(), timeout=timeout)

    def bury(self, consumer: str, message: LogMessage, error: str) -> None:
        """Record a dead letter for a reader that gave up on ``message``."""
        self._run(self._publish_dead(consumer, message, error))

    def last_sequence(self, subject: str, timeout: float | None = None) -> int:
        """The sequence of the newest message on ``subject`` (0 if none); ``Unavailable``
        if the log does not answer within ``timeout`` seconds (None: its default)."""

        async def last() -> int:
            try:
                found = await asyncio.wait_for(
                    self._js.get_last_msg(self.stream, self._subject(subject)),
                    timeout or self.timeout,
                )
            except NotFoundError:
                return 0
            return int(found.seq or 0)

        return self._run(last(), timeout=timeout)

    async def _bury(self, consumer: str, msg: Msg, attempts: int, error: str) -> None:
        # A consumer's delivery: copied to the dead letters, then never delivered again.
        message = LogMessage(
            subject=self._unprefixed(msg.subject),
            data=msg.data,
            sequence=int(msg.metadata.sequence.stream),
            attempts=attempts,
            headers=_user_headers(msg.headers),
        )
        await self._publish_dead(consumer, message, error)
        await msg.term()

    async def _publish_dead(self, consumer: str, message: LogMessage, error: str) -> None:
        headers = dict(message.headers)
        headers.update(
            {
                _DL["subject"]: message.subject,
                _DL["consumer"]: consumer,
                _DL["error"]: error[:4000],
                _DL["attempts"]: str(message.attempts),
                _DL["seq"]: str(message.sequence),
                _DL["at"]: repr(time.time()),
            }
        )
        await self._js.publish(
            f"{self.prefix}_dlq.{consumer}", message.data, headers=headers, stream=self.dead_stream
        )

    def dead_letters(self, consumer: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, oldest first."""

        async def scan() -> list[DeadLetter]:
            found: list[DeadLetter] = []
            subject = f"{self.prefix}_dlq.{consumer or '*'}"
            seq = 1
            while len(found) < limit:
                try:
                    raw = await self._js.get_msg(
                        self.dead_stream, seq=seq, subject=subject, next=True
                    )
                except NotFoundError:
                    break
                found.append(_dead_letter(raw))
                seq = int(raw.seq or 0) + 1
            return found

        return self._run(scan())

    def redrive(self, dead_letter_id: int) -> int:
        """Publish a dead letter's message again, then delete the dead letter."""

        async def again() -> int:
            try:
                raw = await self._js.get_msg(self.dead_stream, seq=dead_letter_id)
            except NotFoundError:
                raise NotFound(
                    f"no dead letter {dead_letter_id}", dead_letter_id=dead_letter_id
                ) from None
            dead = _dead_letter(raw)
            ack = await self._js.publish(
                self._subject(dead.subject),
                dead.data,
                headers=dead.headers or None,
                stream=self.stream,
            )
            await self._js.delete_msg(self.dead_stream, dead_letter_id)
            return int(ack.seq)

        return self._run(again())

    def drop(self) -> None:
        """Delete both streams (tests, and ``cluster down``)."""

        async def drop() -> None:
            for name in (self.stream, self.dead_stream):
                with contextlib.suppress(NotFoundError):
                    await self._js.delete_stream(name)

        self._run(drop())

    def close(self) -> None:
        """Close the connection and stop the loop (when this log opened them)."""
        if self._owns_conn:
            self._conn.close()


class NatsConsumer:
    """A durable pull consumer of a ``NatsLog``."""

    def __init__(
        self, log: NatsLog, name: str, subscription: Any, max_attempts: int, ack_wait: float
    ) -> None:
        self._log = log
        self.name = name
        self._sub = subscription
        self.max_attempts = max_attempts
        self.ack_wait = ack_wait
        self._pending: dict[int, Msg] = {}
        # The latest delivery handed out per message still owed (to drop stale copies).
        self._attempts: dict[int, int] = {}
        self._pending_lock = threading.Lock()

    def fetch(self, batch: int = 16, timeout: float = 1.0) -> list[LogMessage]:
        """Up to ``batch`` messages, waiting up to ``timeout`` seconds for the first."""

        async def take() -> list[LogMessage]:
            try:
                msgs = await self._sub.fetch(batch, timeout=max(timeout, 0.01))
            except TimeoutError:
                return []
            taken = []
            for msg in msgs:
                attempts = int(msg.metadata.num_delivered)
                sequence = int(msg.metadata.sequence.stream)
                with self._pending_lock:
                    if attempts <= self._attempts.get(sequence, 0):
                        # A late copy of an older delivery (sent to a fetch that had timed
                        # out): its lease is already superseded.
                        continue
                    self._attempts[sequence] = attempts
                if attempts > self.max_attempts:
                    # Leased max_attempts times and never acked nor nak'd.
                    await self._log._bury(
                        self.name,
                        msg,
                        attempts - 1,
                        f"not acknowledged within {self.ack_wait:g} s",
                    )
                    continue
                with self._pending_lock:
                    self._pending[sequence] = msg
                taken.append(
                    LogMessage(
                        subject=self._log._unprefixed(msg.subject),
                        data=msg.data,
                        sequence=sequence,
                        attempts=attempts,
                        headers=_user_headers(msg.headers),
                    )
                )
            return taken

        return self._log._run(take(), timeout=timeout)

    def _msg(self, message: LogMessage) -> Msg | None:
        with self._pending_lock:
            self._attempts.pop(message.sequence, None)
            return self._pending.pop(message.sequence, None)

    def ack(self, message: LogMessage) -> None:
        """Done with the message. If the server does not confirm (``Unavailable``) the message
        stays owed, so the caller may try again."""
        with self._pending_lock:
            msg = self._pending.get(message.sequence)
        if msg is None:
            return
        self._log._run(msg.ack_sync())
        self._msg(message)

    def nak(self, message: LogMessage, error: str, delay: float = 0.0) -> bool:
        """Retry after ``delay``, or dead-letter it after the last attempt."""
        msg = self._msg(message)
        if msg is None:
            return False
        if message.attempts >= self.max_attempts:
            self._log._run(self._log._bury(self.name, msg, message.attempts, error))
            return True
        self._log._run(msg.nak(delay=delay if delay > 0 else None))
        return False


async def _consumer_answers(subscription: Any, timeout: float) -> bool:
    """Whether the server still has ``subscription``'s consumer (answers within ``timeout``)."""
    try:
        await asyncio.wait_for(subscription.consumer_info(), timeout)
    except (nats.errors.Error, TimeoutError, OSError):
        return False
    return True


async def _unsubscribe(subscription: Any) -> None:
    with contextlib.suppress(Exception):  # the server drops it after inactive_threshold anyway
        await subscription.unsubscribe()


def _user_headers(headers: dict[str, str] | None) -> dict[str, str]:
    # JetStream's own headers (Nats-Msg-Id, Nats-Expected-Stream ...) are not the caller's.
    return {str(k): str(v) for k, v in (headers or {}).items() if not k.startswith("Nats-")}


def _dead_letter(raw: api.RawStreamMsg) -> DeadLetter:
    headers = dict(raw.headers or {})
    original = _user_headers({k: v for k, v in headers.items() if k not in _DL.values()})
    return DeadLetter(
        dead_letter_id=int(raw.seq or 0),
        consumer=headers.get(_DL["consumer"], ""),
        subject=headers.get(_DL["subject"], ""),
        data=raw.data or b"",
        sequence=int(headers.get(_DL["seq"], 0)),
        attempts=int(headers.get(_DL["attempts"], 0)),
        error=headers.get(_DL["error"], ""),
        failed_at=float(headers.get(_DL["at"], 0)),
        headers=original,
    )


__all__ = ["NatsConsumer", "NatsLog"]
