"""Accepting writes: what the api does before it answers 202 (ARCHITECTURE.md §2, step 1).

A version is accepted once three durable facts exist, in this order: the original in the blob
store (under its content hash), the ``pending`` version in the registry, and its ``doc.ingest``
event in the log. Everything after that — parsing, chunking, embedding, indexing — is the
workers' job. Only what can be checked without parsing is refused here: an empty or too large
body, an unsupported format; a document that turns out unparseable fails its version in the
ingestion worker (and ``wait=true`` reports that error).

A crash between the registry and the log leaves a pending version without an event:
``resubmit_pending`` appends it again (deduplicated by message id if it was there).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Protocol

from shardrag import acl as access
from shardrag.blobs import BlobStore
from shardrag.errors import (
    DocumentNotFound,
    DocumentTooLarge,
    EmptyDocument,
    InvalidInput,
    error_class,
    error_from,
)
from shardrag.ingest import parser_for
from shardrag.log import Log
from shardrag.models import DocumentInput, Metadata, VersionState, WriteResult
from shardrag.observability import tracing
from shardrag.pipeline.events import DOC_INGEST, IngestEvent, OpKind, ShardOp, VersionRef
from shardrag.pipeline.events import shard_subject as subject_of
from shardrag.pipeline.retry import as_error
from shardrag.registry import NewVersion, Registry, TenantRecord

#: Documents a client should hand to ``put_documents`` at once: the embedding worker sorts
#: the texts of a batch by length, so fuller batches pad less.
DOCUMENTS_PER_BATCH = 256


class TenantPlacer(Protocol):
    """Where tenants and their documents go (``cluster/placements.py``)."""

    def ensure_tenant(self, tenant: str) -> TenantRecord:
        """The tenant's record (shard and incarnation), creating the tenant if needed."""
        ...

    def shard_for(self, record: TenantRecord, doc_id: str) -> int:
        """The shard a new version of the tenant's document goes to, as placed now."""
        ...


@dataclass(frozen=True)
class Accepted:
    """A write the log now holds: its version, and the event that carries it."""

    ref: VersionRef
    result: WriteResult
    event: IngestEvent | None = None
    #: Deletes: where the tombstone's op is in the shard log.
    position: int | None = None


class DocumentWriter:
    """Turns uploads and deletes into pending versions and log events."""

    def __init__(
        self,
        registry: Registry,
        blobs: BlobStore,
        log: Log,
        placer: TenantPlacer,
        max_document_bytes: int,
    ) -> None:
        self.registry = registry
        self.blobs = blobs
        self.log = log
        self.placer = placer
        self.max_document_bytes = max_document_bytes

    def _shard(self, record: TenantRecord, doc_id: str) -> int:
        """The shard a new version of ``doc_id`` goes to. Asked after the version is pending,
        so a tenant move that flips the placement later waits for this version (see
        ``cluster/placement.py``); one that flipped it before is seen here."""
        return self.placer.shard_for(record, doc_id)

    def accept(
        self, tenant: str, upload: DocumentInput, submit: bool = True
    ) -> Accepted | WriteResult:
        """Accept a new version (pending, in the log), or return the unchanged live one.

        Raises at once what needs no parsing: ``EmptyDocument``, ``DocumentTooLarge``,
        ``UnsupportedFormat``. Without ``submit`` the event is not appended: the caller runs
        the stages itself (the direct path); if it dies first, ``resubmit_pending`` appends it.
        """
        doc_id = upload.doc_id
        if not upload.data:
            raise EmptyDocument(f"document {doc_id!r} is empty (0 bytes)")
        if len(upload.data) > self.max_document_bytes:
            raise DocumentTooLarge(
                f"document {doc_id!r} is {len(upload.data)} bytes; the limit is "
                f"{self.max_document_bytes} (setting max_document_bytes)",
                size=len(upload.data),
                limit=self.max_document_bytes,
            )
        parser_for(upload.filename, upload.content_type)  # UnsupportedFormat before a version
        record = self.placer.ensure_tenant(tenant)
        content_hash = hashlib.sha256(upload.data).hexdigest()
        current = self.registry.document(tenant, doc_id)
        live = current.live if current else None
        refused = current.latest if current else None
        if (
            refused is not None
            and refused.state is VersionState.FAILED
            and refused.error_code is not None
            and issubclass(error_class(refused.error_code), InvalidInput)
            and refused.content_hash == content_hash
            and refused.filename == upload.filename
            and _same_json(refused.metadata, upload.metadata)
        ):
            # The same bytes failed for what they are (not for a passing outage): trying them
            # again would fail again. The failed version is the answer; no new one is made.
            raise error_from(
                refused.error_code,
                refused.error or "",
                version=refused.version,
                unchanged=True,
            )
        if (
            current is not None
            and live is not None
            and current.latest.version == live.version  # nothing newer on its way
            and live.content_hash == content_hash
            and live.filename == upload.filename
            and _same_json(live.metadata, upload.metadata)
        ):
            return WriteResult(
                tenant, doc_id, live.version, VersionState.LIVE, live.chunk_count, unchanged=True
            )
        self.blobs.put(upload.data, owner=tenant)
        new = NewVersion(
            content_hash,
            upload.filename,
            len(upload.data),
            upload.metadata,
            upload.content_type,
            upload.title,
        )
        version = self.registry.begin_version(tenant, doc_id, new)
        shard_id = self._shard(record, doc_id)
        ref = VersionRef(tenant, doc_id, version, shard_id, epoch=epoch_of(record))
        event = IngestEvent(
            ref, content_hash, upload.filename, upload.content_type, upload.title, upload.metadata
        )
        try:
            if submit:
                self.submit(event)
        except Exception as exc:
            # Not accepted: the caller hears the error, and the version must not wait forever.
            error = as_error(exc)
            self.registry.mark_failed(tenant, doc_id, version, error.code, error.message)
            raise
        result = WriteResult(tenant, doc_id, version, VersionState.PENDING, 0)
        return Accepted(ref, result, event)

    def submit(self, event: IngestEvent) -> int:
        """Append a version's ``doc.ingest`` event (a repeat of the same version is dropped)."""
        return self.log.append(
            DOC_INGEST,
            event.encode(),
            message_id=event.ref.message_id("ingest"),
            headers=tracing.inject() or None,  # the version's trace goes on (tracing.md)
        )

    def delete(self, tenant: str, doc_id: str) -> Accepted:
        """Accept a delete: a tombstone version and its op on the document's shard log."""
        current = self.registry.document(tenant, doc_id)
        if current is None or current.state is VersionState.DELETED:
            raise DocumentNotFound(f"no document {doc_id!r} in tenant {tenant!r}", doc_id=doc_id)
        # The marker keeps the deleted version's groups: a deletion must not reveal, to a
        # caller outside them, that the document existed (docs/access.md).
        marker = access.with_acl({}, current.acl)
        version = self.registry.begin_tombstone(tenant, doc_id, marker)
        record = self.placer.ensure_tenant(tenant)
        shard_id = self._shard(record, doc_id)
        ref = VersionRef(tenant, doc_id, version, shard_id, epoch=epoch_of(record))
        position = self._append_tombstone(ref)
        return Accepted(
            ref, WriteResult(tenant, doc_id, version, VersionState.PENDING, 0), None, position
        )

    def _append_tombstone(self, ref: VersionRef) -> int:
        op = ShardOp(OpKind.DELETE, ref)
        position = self.log.append(
            subject_of(ref.shard_id), op.encode(), message_id=op.message_id()
        )
        self.registry.record_commit(ref.tenant, ref.doc_id, ref.version, position)
        return position

    def drop_tenant(self, tenant: str, shards: list[int]) -> dict[int, int]:
        """Forget the tenant in the registry, then append the op that empties it from each of
        ``shards``; where each op is."""
        self.registry.delete_tenant(tenant)
        positions = {}
        for shard_id in shards:
            op = ShardOp(OpKind.DROP_TENANT, VersionRef(tenant, "", 0, shard_id))
            positions[shard_id] = self.log.append(subject_of(shard_id), op.encode())
        return positions

    def resubmit_pending(self) -> int:
        """Append again the event of every pending version (after a crash); how many."""
        count = 0
        for pending in self.registry.pending_versions():
            record = self.placer.ensure_tenant(pending.tenant)
            ref = VersionRef(
                pending.tenant,
                pending.doc_id,
                pending.version,
                self._shard(record, pending.doc_id),
                epoch=epoch_of(record),
            )
            if pending.tombstone:
                self._append_tombstone(ref)
            else:
                event = self.event_of(ref)
                if event is None:
                    continue
                self.submit(event)
            count += 1
        return count

    def event_of(self, ref: VersionRef) -> IngestEvent | None:
        """The ``doc.ingest`` event of a stored version, rebuilt from the registry."""
        info = self.registry.version(ref.tenant, ref.doc_id, ref.version)
        if info is None or info.content_hash is None:
            return None
        return IngestEvent(
            ref, info.content_hash, info.filename, info.content_type, info.title, info.metadata
        )


def epoch_of(record: TenantRecord) -> str:
    """The tenant incarnation that a version's event ids carry (see ``VersionRef.epoch``)."""
    return record.incarnation


def _same_json(a: Metadata, b: Metadata) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
