"""The index applier: a shard's log → the shard engine, in log order, one op at a time.

A replica's state is (engine, applied offset). The applier reads ``shard.<id>`` from its own
position (an ordered read, not a work queue: a redelivery must never reorder ops), applies
each op, then records how far it got in ``<state file>`` — after the engine, so a crash in
between replays ops, which every engine op tolerates (``engine/shard.py``). The applied
offset per shard is what a write token waits for (read-your-writes).

Failures: an engine op that keeps failing is retried in place (backoff with jitter) and, after
``retry.max_attempts``, buried as a dead letter of ``index`` with its version marked failed
and its partial points aborted. A registry update that fails after the engine applied the op
is retried without limit (an outage, not a poison op) and the position does not move, so a
restart replays the op and finishes it: the shard is rolled forward, never back.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from shardrag.engine import CommitOutcome, ShardEngine
from shardrag.errors import ShardragError
from shardrag.log import Log, LogMessage
from shardrag.observability import tracing
from shardrag.pipeline.events import SHARD_OPS, OpKind, ShardOp, shard_of_subject
from shardrag.pipeline.retry import Retry, as_error
from shardrag.pipeline.stages import ShardLookup
from shardrag.registry import Registry

logger = logging.getLogger(__name__)


class _Stopping(Exception):
    """The applier was asked to stop in the middle of an op; it stays unapplied."""


class IndexApplier:
    """Applies shard ops to the engines of this process and tracks applied offsets."""

    def __init__(
        self,
        log: Log,
        shard: ShardLookup,
        registry: Registry,
        state_path: Path,
        changed: threading.Condition,
        retry: Retry | None = None,
        name: str = "index",
        subjects: str = SHARD_OPS,
    ) -> None:
        self.log = log
        self.shard = shard
        self.registry = registry
        self.state_path = state_path
        self.changed = changed
        self.retry = retry or Retry()
        self.name = name
        self.subjects = subjects
        self._stop = threading.Event()
        state = self._load()
        self._position: int = int(state.get("position", 0))
        self._applied: dict[int, int] = {int(k): int(v) for k, v in state["shards"].items()}

    # -- positions ----------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The log sequence up to which every op (of every shard) is applied."""
        return self._position

    def applied(self, shard_id: int) -> int:
        """The sequence of the last op of ``shard_id`` applied (0 if none)."""
        return self._applied.get(shard_id, 0)

    def applied_offsets(self) -> dict[int, int]:
        """Every shard's applied offset."""
        return dict(self._applied)

    def _load(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {"position": 0, "shards": {}}
        return state

    def _save(self) -> None:
        body = json.dumps({"position": self._position, "shards": self._applied})
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(body)
        os.replace(tmp, self.state_path)

    # -- the loop -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``step`` to return as soon as the op in hand is applied or left alone."""
        self._stop.set()

    def step(self, timeout: float = 0.5) -> int:
        """Apply the next ops on the log (waiting up to ``timeout`` for one); how many."""
        messages = self.log.read(self.subjects, self._position, limit=64, timeout=timeout)
        done = 0
        try:
            for message in messages:
                if self._stop.is_set():
                    break
                self._apply_message(message)
                self._position = message.sequence
                self._applied[shard_of_subject(message.subject)] = message.sequence
                done += 1
        except _Stopping:
            pass
        finally:
            if done:
                self._save()
                with self.changed:
                    self.changed.notify_all()
        return done

    def _apply_message(self, message: LogMessage) -> None:
        try:
            op = ShardOp.decode(message.data)
        except (ShardragError, ValueError, KeyError, TypeError) as exc:
            self.log.bury(self.name, message, f"undecodable shard op: {exc}")
            return
        with tracing.span(
            f"apply {op.kind.value}",
            "server",
            message.headers,
            {"shardrag.tenant": op.ref.tenant, "shardrag.doc_id": op.ref.doc_id},
        ):
            self._apply_op(message, op)

    def _apply_op(self, message: LogMessage, op: ShardOp) -> None:
        engine = self.shard(shard_of_subject(message.subject))
        attempts = 0
        while True:
            attempts += 1
            try:
                outcome = self.apply(engine, op)
                break
            except Exception as exc:
                error = as_error(exc)
                if attempts >= self.retry.max_attempts:
                    self._give_up(engine, message, op, error, attempts)
                    return
                logger.warning("shard op %s of %s failed (%s); retrying", op.kind, op.ref, error)
                self._sleep(self.retry.delay(attempts))
        failures = 0
        while True:
            try:
                record_outcome(self.registry, op, outcome, message.sequence)
                return
            except Exception:
                failures += 1
                logger.exception(
                    "recording %s of %s in the registry failed; retrying", op.kind, op.ref
                )
                self._sleep(self.retry.delay(failures))

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopping

    @staticmethod
    def apply(engine: ShardEngine, op: ShardOp) -> CommitOutcome | None:
        """Apply one op to the engine (idempotent, see ``engine/shard.py``)."""
        ref = op.ref
        if op.kind is OpKind.UPSERT:
            engine.upsert(ref.tenant, ref.doc_id, ref.version, op.points, op.metadata, op.filename)
        elif op.kind is OpKind.COMMIT:
            return engine.commit(ref.tenant, ref.doc_id, ref.version, op.expected)
        elif op.kind is OpKind.DELETE:
            return engine.delete(ref.tenant, ref.doc_id, ref.version)
        elif op.kind is OpKind.ABORT:
            engine.abort(ref.tenant, ref.doc_id, ref.version)
        elif op.kind is OpKind.PURGE:
            engine.purge(ref.tenant, ref.doc_id, ref.version)
        elif op.kind is OpKind.DROP_TENANT:
            engine.drop_tenant(ref.tenant)
        return None

    def _give_up(
        self,
        engine: ShardEngine,
        message: LogMessage,
        op: ShardOp,
        error: ShardragError,
        attempts: int,
    ) -> None:
        reason = f"{error.code}: {error.message} (gave up after {attempts} attempts)"
        logger.error("shard op %s of %s dead-lettered: %s", op.kind, op.ref, reason)
        self.log.bury(self.name, message, reason)
        if op.kind in (OpKind.UPSERT, OpKind.COMMIT, OpKind.DELETE):
            ref = op.ref
            self.registry.mark_failed(ref.tenant, ref.doc_id, ref.version, error.code, reason)
            try:
                engine.abort(ref.tenant, ref.doc_id, ref.version)
            except Exception:
                logger.exception("aborting %s failed; the reconciler will remove its points", ref)


def record_outcome(
    registry: Registry, op: ShardOp, outcome: CommitOutcome | None, position: int | None = None
) -> None:
    """The registry learns what the shard now shows (every replica may tell it again)."""
    ref = op.ref
    if position is not None and op.kind in (OpKind.COMMIT, OpKind.DELETE):
        # Before the state: whoever sees the version decided finds where its commit is.
        registry.record_commit(ref.tenant, ref.doc_id, ref.version, position)
    if outcome is CommitOutcome.SUPERSEDED:
        registry.mark_superseded(ref.tenant, ref.doc_id, ref.version)
    elif outcome is CommitOutcome.APPLIED and op.kind is OpKind.COMMIT:
        registry.mark_live(ref.tenant, ref.doc_id, ref.version)
    elif outcome is CommitOutcome.APPLIED and op.kind is OpKind.DELETE:
        registry.mark_deleted(ref.tenant, ref.doc_id, ref.version)
