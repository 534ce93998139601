"""The ingestion and embedding workers: durable consumers around the stages.

Each worker fetches a batch from its consumer, runs its stage, appends the output with
deterministic message ids, and only then acks: a crash anywhere redelivers the event and the
repeated appends are deduplicated. Failures:

* the input itself is refused (``InvalidInput``: a broken PDF, no text) → the version is
  ``failed`` with that error at once; retrying cannot help;
* anything else → nak with exponential backoff and jitter; after ``max_attempts`` deliveries
  the log moves the event to the dead letters, and the version is marked ``failed`` with the
  last error and an ``abort`` op removes whatever points it left (the previous version stays
  live). ``POST .../dead-letters/{id}/redrive`` puts it back in the stream once fixed.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from shardrag.errors import ShardragError, Unavailable
from shardrag.log import Consumer, Log, LogMessage
from shardrag.observability import tracing
from shardrag.pipeline.events import (
    CHUNK_EMBED,
    DOC_INGEST,
    EmbedEvent,
    IngestEvent,
    OpKind,
    ShardOp,
    VersionRef,
    shard_subject,
)
from shardrag.pipeline.retry import Retry, as_error, permanent
from shardrag.pipeline.stages import EmbedStage, IngestStage
from shardrag.registry import Registry

logger = logging.getLogger(__name__)
StageT = TypeVar("StageT")
_R = TypeVar("_R")


class StageWorker(Generic[StageT]):
    """Shared mechanics of a worker: its stage and consumer, retries, failing a version."""

    subject: str = ""
    name: str = ""
    batch: int = 8

    def __init__(
        self,
        log: Log,
        registry: Registry,
        stage: StageT,
        changed: threading.Condition,
        retry: Retry,
    ) -> None:
        self.log = log
        self.registry = registry
        self.stage = stage
        self.changed = changed
        self.retry = retry
        self.consumer: Consumer = log.consumer(
            self.name, self.subject, max_attempts=retry.max_attempts, ack_wait=retry.ack_wait
        )

    def step(self, timeout: float = 0.5) -> int:
        """Handle the next batch of events (waiting up to ``timeout`` for one); how many."""
        messages = self.consumer.fetch(self.batch, timeout=timeout)
        if messages:
            self.handle(messages)
        return len(messages)

    def handle(self, messages: list[LogMessage]) -> None:
        raise NotImplementedError

    def _undecodable(self, message: LogMessage, exc: Exception) -> None:
        # No retry can make these bytes an event: straight to the dead letters.
        self.log.bury(self.name, message, f"undecodable {self.subject} event: {exc}")
        self.consumer.ack(message)

    def _failed(self, message: LogMessage, ref: VersionRef, exc: BaseException) -> None:
        error = as_error(exc)
        if permanent(error):
            self._fail_version(ref, error.code, error.message)
            self.consumer.ack(message)
            return
        logger.warning(
            "%s: %s v%s failed on attempt %d: %s",
            self.name,
            ref.doc_id,
            ref.version,
            message.attempts,
            error.message,
            exc_info=not isinstance(exc, ShardragError),
        )
        reason = f"{error.code}: {error.message}"
        if self.consumer.nak(message, reason, delay=self.retry.delay(message.attempts)):
            self._fail_version(
                ref,
                error.code,
                f"{error.message} (dead-lettered after {message.attempts} attempts)",
            )
            # Compensate: whatever points this version has anywhere must go.
            abort = ShardOp(OpKind.ABORT, ref)
            self.log.append(shard_subject(ref.shard_id), abort.encode())

    def _patiently(self, action: Callable[[], _R], started: float) -> _R:
        """``action()``, tried again while it meets an outage (``Unavailable``: NATS electing
        a leader, the registry restarting) for most of the event's lease: an outage is not
        the event's fault and must not spend the attempts that bury poison events."""
        deadline = started + 0.8 * self.retry.ack_wait
        failures = 0
        while True:
            try:
                return action()
            except Unavailable:
                failures += 1
                if time.monotonic() > deadline:
                    raise
                logger.warning("%s: outage, trying again (%d)", self.name, failures)
                time.sleep(min(self.retry.delay(failures), max(0.0, deadline - time.monotonic())))

    def _ack(self, message: LogMessage, started: float) -> None:
        """Acknowledge a handled event, waiting out an outage like an append (the stream's
        leader moving after a NATS server died); if the ack is lost anyway the event comes
        back after its lease and is handled again, which changes nothing."""
        try:
            self._patiently(functools.partial(self.consumer.ack, message), started)
        except Exception:
            logger.warning("%s: could not acknowledge an event; it will be redelivered", self.name)

    def _fail_version(self, ref: VersionRef, code: str, message: str) -> None:
        self.registry.mark_failed(ref.tenant, ref.doc_id, ref.version, code, message)
        with self.changed:
            self.changed.notify_all()


class IngestWorker(StageWorker[IngestStage]):
    """``doc.ingest`` → parse + chunk → ``chunk.embed``."""

    subject = DOC_INGEST
    name = "ingest"

    def handle(self, messages: list[LogMessage]) -> None:
        for message in messages:
            try:
                event = IngestEvent.decode(message.data)
            except Exception as exc:
                self._undecodable(message, exc)
                continue
            started = time.monotonic()
            with tracing.span("ingest", "server", message.headers, _attributes(event.ref)):
                try:
                    out = self.stage.run(event)
                    if out is not None:
                        append = functools.partial(
                            self.log.append,
                            CHUNK_EMBED,
                            out.encode(),
                            message_id=event.ref.message_id("embed"),
                            headers=tracing.inject() or None,
                        )
                        self._patiently(append, started)
                except Exception as exc:
                    self._failed(message, event.ref, exc)
                    continue
            self._ack(message, started)


class EmbedWorker(StageWorker[EmbedStage]):
    """``chunk.embed`` → vectors → upsert ops and the commit on ``shard.<id>``."""

    subject = CHUNK_EMBED
    name = "embed"
    batch = 32

    def handle(self, messages: list[LogMessage]) -> None:
        events: list[tuple[LogMessage, EmbedEvent]] = []
        for message in messages:
            try:
                events.append((message, EmbedEvent.decode(message.data)))
            except Exception as exc:
                self._undecodable(message, exc)
        if not events:
            return
        try:
            results = self.stage.run([e for _, e in events])
        except Exception:
            if len(events) == 1:
                message, event = events[0]
                self._run_alone(message, event)
                return
            # One bad event must not fail its batch-mates: try each on its own.
            for message, event in events:
                self._run_alone(message, event)
            return
        for (message, event), ops in zip(events, results, strict=True):
            self._publish(message, event, ops)

    def _run_alone(self, message: LogMessage, event: EmbedEvent) -> None:
        try:
            (ops,) = self.stage.run([event])
        except Exception as exc:
            self._failed(message, event.ref, exc)
            return
        self._publish(message, event, ops)

    def _publish(self, message: LogMessage, event: EmbedEvent, ops: list[ShardOp] | None) -> None:
        ref = event.ref
        started = time.monotonic()
        with tracing.span("embed", "server", message.headers, _attributes(ref)):
            self._publish_ops(message, ref, ops, started)

    def _publish_ops(
        self, message: LogMessage, ref: VersionRef, ops: list[ShardOp] | None, started: float
    ) -> None:
        try:
            for op in ops or []:
                append = functools.partial(
                    self.log.append,
                    shard_subject(ref.shard_id),
                    op.encode(),
                    message_id=op.message_id(),
                    headers=tracing.inject() or None,
                )
                position = self._patiently(append, started)
                if op.kind is OpKind.COMMIT:
                    record = functools.partial(
                        self.registry.record_commit, ref.tenant, ref.doc_id, ref.version, position
                    )
                    self._patiently(record, started)
        except Exception as exc:
            self._failed(message, ref, exc)
            return
        self._ack(message, started)


def _attributes(ref: VersionRef) -> dict[str, Any]:
    """A version's span attributes."""
    return {
        "shardrag.tenant": ref.tenant,
        "shardrag.doc_id": ref.doc_id,
        "shardrag.version": ref.version,
    }


def run_until(stopped: threading.Event, step: Callable[[float], int], name: str) -> None:
    """Call ``step`` until ``stopped`` is set; a step that raises is logged and retried."""
    while not stopped.is_set():
        try:
            step(0.5)
        except Exception:
            logger.exception("the %s worker failed a step; continuing", name)
            stopped.wait(1.0)
