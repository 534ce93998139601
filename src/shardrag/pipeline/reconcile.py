"""The reconciler: compare the registry with the shards and repair both ways (ARCHITECTURE §2.7).

* Orphaned vectors — points of a version the registry does not show: failed, superseded, or
  of a tenant that no longer exists. Repaired with a ``purge`` (or ``drop_tenant``) op on the
  shard log, so every replica repairs the same way, in order with the writes around it.
* Phantom documents — live in the registry, no live points in the shard. Re-driven from the
  stored original: the same version's ``doc.ingest`` event is appended again and flows through
  the pipeline; the engine's commit makes it live again.
* Lost tombstones — deleted in the registry, live points in the shard: the delete op is
  appended again.
* A version the shard shows live while the registry says it failed is recorded live: the
  shard's state is what readers see, and the write path rolls forward, never back.

Repairs race with writes only in ways the engine makes harmless: the shard is scanned before
the registry is read (a point exists only after its version is begun), purges never remove
live points of a version that is still the newest committed, and a re-driven version that is
already live or overtaken changes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from shardrag.engine import StoredVersion
from shardrag.log import Log
from shardrag.models import DocumentInfo, VersionState
from shardrag.pipeline.events import OpKind, ShardOp, VersionRef, ref_of, shard_subject
from shardrag.pipeline.stages import ShardLookup
from shardrag.pipeline.writer import DocumentWriter
from shardrag.registry import Registry

logger = logging.getLogger(__name__)

# Entries listed per kind in a report (the counts are always complete).
_LISTED = 100


@dataclass
class Repair:
    """One thing the reconciler found and what it did about it."""

    kind: str  # orphaned_vectors | phantom_document | lost_tombstone | registry_behind
    tenant: str
    doc_id: str
    version: int
    shard_id: int
    points: int = 0
    action: str = ""


@dataclass
class ReconcileReport:
    """What one reconciliation pass checked and repaired."""

    shards: list[int]
    versions_checked: int = 0
    documents_checked: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    repairs: list[Repair] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0

    def add(self, repair: Repair) -> None:
        self.counts[repair.kind] = self.counts.get(repair.kind, 0) + 1
        if len(self.repairs) < _LISTED * 4:
            self.repairs.append(repair)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (CLI --json, API)."""
        return {**asdict(self), "repaired": sum(self.counts.values())}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ReconcileReport:
        """A report as ``to_dict`` gave it."""
        return cls(
            [int(s) for s in values["shards"]],
            int(values["versions_checked"]),
            int(values["documents_checked"]),
            {str(k): int(v) for k, v in values.get("counts", {}).items()},
            [Repair(**r) for r in values.get("repairs", [])],
            bool(values.get("dry_run", False)),
            float(values.get("seconds", 0.0)),
        )


class Reconciler:
    """Finds and repairs drift between the registry and the shards of this process."""

    def __init__(
        self,
        registry: Registry,
        log: Log,
        writer: DocumentWriter,
        shard: ShardLookup,
        shard_ids: Callable[[], Iterable[int]],
    ) -> None:
        self.registry = registry
        self.log = log
        self.writer = writer
        self.shard = shard
        self.shard_ids = shard_ids

    def run(self, dry_run: bool = False) -> ReconcileReport:
        """One pass over every shard; with ``dry_run``, report without repairing."""
        started = time.monotonic()
        report = ReconcileReport(shards=sorted(self.shard_ids()), dry_run=dry_run)
        self._buried(report)
        for shard_id in report.shards:
            stored = self.shard(shard_id).stored_versions()  # before the registry: see module doc
            report.versions_checked += len(stored)
            self._orphans(shard_id, stored, report)
            self._phantoms(shard_id, stored, report)
        report.seconds = round(time.monotonic() - started, 3)
        return report

    def _buried(self, report: ReconcileReport) -> None:
        """Versions still pending whose event the log buried on its own (every lease expired)."""
        for dead in self.log.dead_letters(limit=100_000):
            ref = ref_of(dead.subject, dead.data)
            if ref is None:
                continue
            info = self.registry.version(ref.tenant, ref.doc_id, ref.version)
            if info is None or info.state is not VersionState.PENDING:
                continue
            repair = Repair(
                "dead_lettered_pending",
                ref.tenant,
                ref.doc_id,
                ref.version,
                ref.shard_id,
                action="mark failed with the dead letter's error; abort its points",
            )
            report.add(repair)
            if report.dry_run:
                continue
            self.registry.mark_failed(
                ref.tenant, ref.doc_id, ref.version, "dead_lettered", dead.error
            )
            abort = ShardOp(OpKind.ABORT, ref)
            self.log.append(shard_subject(ref.shard_id), abort.encode())

    def _orphans(self, shard_id: int, stored: list[StoredVersion], report: ReconcileReport) -> None:
        gone_tenants: set[str] = set()
        for sv in stored:
            if sv.tenant in gone_tenants:
                continue
            if self.registry.get_tenant(sv.tenant) is None:
                gone_tenants.add(sv.tenant)
                points = sum(s.pending + s.live for s in stored if s.tenant == sv.tenant)
                repair = Repair("orphaned_vectors", sv.tenant, "*", 0, shard_id, points)
                self._op(report, repair, OpKind.DROP_TENANT, "drop the tenant's points")
                continue
            info = self.registry.version(sv.tenant, sv.doc_id, sv.version)
            state = info.state if info else None
            points = sv.pending + sv.live
            if state in (VersionState.PENDING, VersionState.DELETED, VersionState.LIVE):
                continue  # in flight, a tombstone marker, or what readers should see
            if state is VersionState.FAILED and sv.live and not self._newer_committed(sv, stored):
                # The shard shows it: the registry missed the commit's outcome.
                if not report.dry_run:
                    self.registry.mark_live(sv.tenant, sv.doc_id, sv.version)
                report.add(
                    Repair(
                        "registry_behind",
                        sv.tenant,
                        sv.doc_id,
                        sv.version,
                        shard_id,
                        sv.live,
                        "recorded live: the shard shows it",
                    )
                )
                continue
            if points == 0:
                continue
            if sv.live and not self._newer_committed(sv, stored):
                # Still what the shard shows for the document: a purge would keep it. Either
                # a delete never reached the shard (a lost tombstone, repaired below) or a
                # newer version is still on its way.
                continue
            repair = Repair("orphaned_vectors", sv.tenant, sv.doc_id, sv.version, shard_id, points)
            self._op(report, repair, OpKind.PURGE, "purge the version's points")

    @staticmethod
    def _newer_committed(sv: StoredVersion, stored: list[StoredVersion]) -> bool:
        return any(
            o.tenant == sv.tenant
            and o.doc_id == sv.doc_id
            and o.version > sv.version
            and (o.live or o.tombstone)
            for o in stored
        )

    def _phantoms(
        self, shard_id: int, stored: list[StoredVersion], report: ReconcileReport
    ) -> None:
        live_points = {(s.tenant, s.doc_id, s.version) for s in stored if s.live}
        live_docs = {(s.tenant, s.doc_id) for s in stored if s.live}
        for tenant in self.registry.list_tenants():
            if tenant.shard_id != shard_id:
                continue
            for doc in self._documents(tenant.tenant, None):
                report.documents_checked += 1
                live = doc.live
                if live is None or live.chunk_count == 0:
                    continue
                if (tenant.tenant, doc.doc_id, live.version) in live_points:
                    continue
                repair = Repair(
                    "phantom_document",
                    tenant.tenant,
                    doc.doc_id,
                    live.version,
                    shard_id,
                    action="re-drive from the stored original",
                )
                report.add(repair)
                if not report.dry_run:
                    ref = VersionRef(
                        tenant.tenant,
                        doc.doc_id,
                        live.version,
                        shard_id,
                        f"repair-{uuid.uuid4()}",
                        epoch=tenant.incarnation,
                    )
                    event = self.writer.event_of(ref)
                    if event is not None:
                        self.writer.submit(event)
            for doc in self._documents(tenant.tenant, VersionState.DELETED):
                if (tenant.tenant, doc.doc_id) not in live_docs:
                    continue
                ref = VersionRef(tenant.tenant, doc.doc_id, doc.latest.version, shard_id)
                repair = Repair("lost_tombstone", ref.tenant, ref.doc_id, ref.version, shard_id)
                self._op(report, repair, OpKind.DELETE, "append the delete again")

    def _documents(self, tenant: str, state: VersionState | None) -> Iterator[DocumentInfo]:
        after: str | None = None
        while True:
            page = self.registry.documents(tenant, state, 500, after)
            yield from page
            if len(page) < 500:
                return
            after = page[-1].doc_id

    def _op(self, report: ReconcileReport, repair: Repair, kind: OpKind, action: str) -> None:
        repair.action = action
        report.add(repair)
        if report.dry_run:
            return
        ref = VersionRef(repair.tenant, repair.doc_id, repair.version, repair.shard_id)
        op = ShardOp(kind, ref)
        # A fresh id: a repair must not be mistaken for a retry of an earlier one.
        self.log.append(
            shard_subject(ref.shard_id), op.encode(), message_id=f"repair-{uuid.uuid4()}"
        )


class PeriodicReconciler:
    """Runs a reconciliation pass every ``interval`` seconds on a thread of its own."""

    def __init__(self, run: Callable[[], ReconcileReport], interval: float) -> None:
        self.run = run
        self.interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def _loop(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                report = self.run()
            except Exception:
                logger.exception("a reconciliation pass failed")
                continue
            if report.counts:
                logger.warning("reconciler repaired %s", report.counts)
            else:
                logger.info("reconciler found nothing to repair in %.3f s", report.seconds)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
