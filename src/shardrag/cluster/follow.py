"""A source follower: how a shard being filled by a move gets its tenant's documents.

A replica of a new shard (a tenant promoted to dedicated shards, or split) follows the log of
each source shard from the position of the snapshot it started from, and applies to its own
engine only the ops of the moving tenant whose documents belong to it (``Move.keeps``). Ops
are idempotent and version-aware (``engine/shard.py``), so interleaving them with the new
shard's own log, or applying one a writer also sent to the new shard, changes nothing.

The registry hears nothing from a follower: the source shard's replicas report the same
commits. A ``drop_tenant`` of a source is never followed: the mover appends one to the
source when the tenant has left it, and a real drop of the tenant reaches the new shard's own
log too.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from shardrag.cluster.shardmap import Move
from shardrag.engine import ShardEngine
from shardrag.errors import ShardragError
from shardrag.log import Log, LogMessage
from shardrag.pipeline.applier import IndexApplier
from shardrag.pipeline.events import OpKind, ShardOp, shard_subject
from shardrag.pipeline.retry import Retry
from shardrag.registry import Registry

logger = logging.getLogger(__name__)


class SourceFollower(IndexApplier):
    """Applies one source shard's ops of a moving tenant to the shard it moves to."""

    def __init__(
        self,
        log: Log,
        engine: ShardEngine,
        registry: Registry,
        move: Move,
        source: int,
        state_path: Path,
        changed: threading.Condition,
        retry: Retry,
        name: str,
    ) -> None:
        super().__init__(
            log,
            lambda _shard_id: engine,
            registry,
            state_path,
            changed,
            retry,
            name=name,
            subjects=shard_subject(source),
        )
        self.move = move
        self.source = source
        self.engine = engine

    def _apply_message(self, message: LogMessage) -> None:
        try:
            op = ShardOp.decode(message.data)
        except (ShardragError, ValueError, KeyError, TypeError):
            return  # the source's own applier buries it
        if op.kind is OpKind.DROP_TENANT or not self.move.keeps(op.ref.tenant, op.ref.doc_id):
            return
        attempts = 0
        while True:
            attempts += 1
            try:
                self.apply(self.engine, op)
                return
            except Exception:
                if attempts >= self.retry.max_attempts:
                    # The source's replicas dead-letter a poison op and abort its version;
                    # the abort op follows here too.
                    logger.exception("following %s of %s failed; skipped", op.kind, op.ref)
                    return
                self._sleep(self.retry.delay(attempts))
