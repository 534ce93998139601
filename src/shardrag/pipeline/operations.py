"""What an operator asks of the write path: its progress, and the events it gave up on."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from shardrag.errors import DeadLetterNotFound
from shardrag.log import Log
from shardrag.models import DeadLetterInfo
from shardrag.observability.metrics import PipelineStats
from shardrag.pipeline.events import ref_of, shard_subject
from shardrag.registry import Registry


def pipeline_stats(
    registry: Registry, log: Log, shards: int, replicas: Iterable[Mapping[int, int]]
) -> PipelineStats:
    """Pending writes, dead letters, each of the ``shards``' log head, and how far its slowest
    live replica has applied it (``replicas``: each node's applied offset per shard)."""
    applied: dict[int, int] = {}
    for offsets in replicas:
        for shard_id, offset in offsets.items():
            applied[shard_id] = min(offset, applied.get(shard_id, offset))
    return PipelineStats(
        pending_writes=len(registry.pending_versions()),
        dead_letters=len(log.dead_letters(limit=100_000)),
        applied=applied,
        log_head={s: log.last_sequence(shard_subject(s)) for s in range(shards)},
    )


def dead_letters_of(
    log: Log,
    tenant: str,
    limit: int = 100,
    incarnation: str = "",
    readable: Callable[[str], bool] = lambda doc_id: True,
) -> list[DeadLetterInfo]:
    """The tenant's events that a stage gave up on, oldest first: of its ``incarnation`` (when
    given; a dropped tenant's are not its successor's) and of documents ``readable`` says the
    caller may read."""
    found = []
    for dead in log.dead_letters(limit=100_000):
        ref = ref_of(dead.subject, dead.data)
        if ref is None or ref.tenant != tenant:
            continue
        if incarnation and ref.epoch and ref.epoch != incarnation:
            continue
        if not readable(ref.doc_id):
            continue
        found.append(
            DeadLetterInfo(
                dead.dead_letter_id,
                dead.consumer,
                dead.subject,
                ref.doc_id,
                ref.version,
                dead.attempts,
                dead.error,
                dead.failed_at,
            )
        )
        if len(found) >= limit:
            break
    return found


def redrive(
    log: Log,
    registry: Registry,
    tenant: str,
    dead_letter_id: int,
    incarnation: str = "",
    readable: Callable[[str], bool] = lambda doc_id: True,
) -> DeadLetterInfo:
    """Put a dead letter of the tenant back in its stream; its version is pending again."""
    for dead in dead_letters_of(log, tenant, 100_000, incarnation, readable):
        if dead.dead_letter_id == dead_letter_id:
            registry.reopen(tenant, dead.doc_id, dead.version)
            log.redrive(dead_letter_id)
            return dead
    raise DeadLetterNotFound(
        f"no dead letter {dead_letter_id} in tenant {tenant!r}", dead_letter_id=dead_letter_id
    )
