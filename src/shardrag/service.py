"""``RagService``: what a shardrag user calls, in this process or over HTTP.

``Shardrag`` (the service itself, embedded or an api core of a cluster) and ``ShardragClient``
(the HTTP API of a running ``shardrag serve``) both satisfy it with the same argument and
result types and the same errors (``ShardragError`` subclasses by code), so code written
against one runs against the other; ``tests/test_service.py`` runs one behaviour suite
against both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from shardrag.cluster.shardmap import ClusterStatus
from shardrag.context import AnswerResult, AnswerStream
from shardrag.errors import ShardragError
from shardrag.models import (
    DeadLetterInfo,
    DocumentInfo,
    DocumentInput,
    Fusion,
    Hit,
    Metadata,
    ReadConcern,
    SearchMode,
    VersionState,
    WriteResult,
)
from shardrag.pipeline.reconcile import ReconcileReport


@runtime_checkable
class RagService(Protocol):
    """Documents in, cited answers out, for many tenants (see the module)."""

    def put_document(
        self,
        tenant: str,
        doc_id: str,
        data: bytes,
        filename: str | None = None,
        metadata: Metadata | None = None,
        content_type: str | None = None,
        title: str | None = None,
        wait: bool = True,
        idempotency_key: str | None = None,
        acl: Iterable[str] | None = None,
    ) -> WriteResult:
        """Store a new version of a document (live on return unless ``wait=False``)."""
        ...

    def put_documents(
        self, tenant: str, documents: Iterable[DocumentInput]
    ) -> list[WriteResult | ShardragError]:
        """Store many documents; one outcome per document, in order."""
        ...

    def delete_document(
        self, tenant: str, doc_id: str, groups: Iterable[str] | None = None
    ) -> WriteResult:
        """Delete a document (none of its chunks is searchable on return); with ``groups``,
        only one those groups read (else ``DocumentNotFound``)."""
        ...

    def get_document(
        self, tenant: str, doc_id: str, groups: Iterable[str] | None = None
    ) -> DocumentInfo:
        """A document's live and latest versions."""
        ...

    def get_original(self, tenant: str, doc_id: str, groups: Iterable[str] | None = None) -> bytes:
        """The bytes the live version of a document was written with."""
        ...

    def list_documents(
        self,
        tenant: str,
        state: VersionState | str | None = None,
        limit: int = 100,
        after: str | None = None,
        groups: Iterable[str] | None = None,
    ) -> list[DocumentInfo]:
        """A page of the tenant's documents by id."""
        ...

    def search(
        self,
        tenant: str,
        query: str,
        k: int = 10,
        mode: SearchMode | str = SearchMode.HYBRID,
        filters: Metadata | None = None,
        fusion: Fusion | str | None = None,
        read_concern: ReadConcern | str = ReadConcern.EVENTUAL,
        write_token: str | None = None,
        groups: Iterable[str] | None = None,
    ) -> list[Hit]:
        """The top-k passages of the tenant's live documents."""
        ...

    def embed(self, tenant: str, texts: list[str], query: bool = False) -> list[list[float]]:
        """Vectors of texts by the service's own model (as indexed, or ``query``: as searched)."""
        ...

    def answer(
        self,
        tenant: str,
        question: str,
        k: int = 8,
        max_context_tokens: int | None = None,
        filters: Metadata | None = None,
        groups: Iterable[str] | None = None,
        mode: SearchMode | str = SearchMode.HYBRID,
    ) -> AnswerResult:
        """An answer from the tenant's documents, with citations."""
        ...

    def answer_stream(
        self,
        tenant: str,
        question: str,
        k: int = 8,
        max_context_tokens: int | None = None,
        filters: Metadata | None = None,
        groups: Iterable[str] | None = None,
        mode: SearchMode | str = SearchMode.HYBRID,
    ) -> AnswerStream:
        """The answer as it is written: hits and context first, then the text in pieces."""
        ...

    def dead_letters(self, tenant: str, limit: int = 100) -> list[DeadLetterInfo]:
        """The tenant's events a stage gave up on."""
        ...

    def redrive(self, tenant: str, dead_letter_id: int) -> DeadLetterInfo:
        """Put a dead letter back in its stream."""
        ...

    def reconcile(self, dry_run: bool = False) -> ReconcileReport:
        """Compare the registry with the shards and repair drift."""
        ...

    def rotate_master_key(self) -> int:
        """Re-wrap every data key under the current master key; how many."""
        ...

    def cluster_status(self) -> ClusterStatus:
        """The layout, replicas, log heads and live nodes."""
        ...

    def close(self) -> None:
        """Release what the service holds."""
        ...
