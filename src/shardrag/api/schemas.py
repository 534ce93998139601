"""Request and response bodies of the API, as pydantic models (they make the OpenAPI).

Requests forbid unknown fields: a misspelt parameter is a 422, not silently ignored. Numbers
and booleans are strict: ``"k": "5"`` or ``"k": true`` is a 422, not a 5 or a 1.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shardrag.models import Fusion, ReadConcern, SearchMode
from shardrag.registry import Role
from shardrag.validation import MAX_QUERY_CHARS

Filters = dict[str, Any]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantCreate(_Request):
    """A new tenant. Without ``id``, the id is made from the name (``Acme Corp`` → ``acme-corp``);
    without ``name``, the name is the id."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    id: str | None = Field(default=None, min_length=1, max_length=63)


class TenantOut(BaseModel):
    """A tenant."""

    id: str
    name: str
    created_at: float


class TenantList(BaseModel):
    """Every tenant (root key only)."""

    tenants: list[TenantOut]


class KeyCreate(_Request):
    """A new key of the tenant, with its role and an optional label."""

    role: Role = Field(description="admin (keys, audit), writer (documents) or reader (search)")
    name: str | None = Field(default=None, max_length=200)
    groups: list[str] | None = Field(
        default=None,
        description="access groups: the key reads documents of these groups and documents "
        "without groups; omitted, every document of the tenant",
    )


class KeyOut(BaseModel):
    """A key as listed: never its secret."""

    id: str
    tenant: str | None
    role: Role
    name: str | None
    created_at: float
    revoked_at: float | None
    groups: list[str] | None = None


class KeyCreated(KeyOut):
    """A new key; ``key`` is the secret, shown this once."""

    key: str


class KeyList(BaseModel):
    """The keys of a tenant."""

    keys: list[KeyOut]


class Whoami(BaseModel):
    """The caller's key."""

    key_id: str
    tenant: str | None
    role: Role
    groups: list[str] | None = None


class VersionError(BaseModel):
    """Why a version failed."""

    code: str
    message: str | None


class DocumentOut(BaseModel):
    """A document: its live version (or latest, when none is live) and the latest attempt."""

    tenant: str
    doc_id: str
    version: int
    state: str
    chunk_count: int
    metadata: dict[str, Any]
    acl: list[str] = Field(
        default_factory=list, description="access groups that read it; empty: every key"
    )
    filename: str | None
    latest_version: int
    latest_state: str
    error: VersionError | None


class DocumentList(BaseModel):
    """A page of documents; pass ``next_after`` as ``after`` for the next page."""

    documents: list[DocumentOut]
    next_after: str | None


class WriteOut(BaseModel):
    """The outcome of a write: the version, its state, and a token for read-your-writes."""

    tenant: str
    doc_id: str
    version: int
    state: str
    chunk_count: int
    unchanged: bool
    reused_vectors: int
    embedded_chunks: int
    write_token: str | None


class SearchBody(_Request):
    """A search of the tenant's live documents."""

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(default=10, ge=1, le=1000, strict=True)
    mode: SearchMode = SearchMode.HYBRID
    filters: Filters | None = Field(
        default=None, description='metadata equality {"team": "ops"} or any-of {"team": [..]}'
    )
    fusion: Fusion | None = None
    read_concern: ReadConcern = ReadConcern.EVENTUAL
    write_token: str | None = Field(default=None, max_length=2048)


class HitOut(BaseModel):
    """One passage."""

    doc_id: str
    version: int
    chunk_index: int
    text: str
    score: float
    metadata: dict[str, Any]
    context: str
    filename: str | None
    page: int | None


class SearchOut(BaseModel):
    """The hits, best first."""

    hits: list[HitOut]


class AnswerBody(_Request):
    """A question answered from the tenant's documents."""

    question: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(default=8, ge=1, le=100, strict=True)
    max_context_tokens: int | None = Field(default=None, ge=1, le=100_000, strict=True)
    filters: Filters | None = None
    mode: SearchMode = Field(default=SearchMode.HYBRID, description="how the passages are searched")
    stream: bool = Field(
        default=False,
        strict=True,
        description="answer as server-sent events: context, delta..., done (or error)",
    )


class EmbedBody(_Request):
    """Texts to embed with the service's own model."""

    texts: list[str] = Field(min_length=1, max_length=256)
    kind: Literal["document", "query"] = Field(
        default="document",
        description="document: passages as they are indexed; query: questions as searched",
    )


class EmbedOut(BaseModel):
    """One vector per text, in order, and the model that made them."""

    model: str
    dimension: int
    vectors: list[list[float]]


class CitationOut(BaseModel):
    """A numbered source of the answer."""

    number: int
    doc_id: str
    version: int
    chunk_indexes: list[int]
    filename: str | None
    page: int | None
    text: str


class AnswerOut(BaseModel):
    """The answer, the sources it cites, and the hits it was drawn from."""

    answer: str
    generated: bool
    citations: list[CitationOut]
    hits: list[HitOut]


class AuditEventOut(BaseModel):
    """One audited action."""

    id: int
    at: float
    tenant: str | None
    actor: str
    action: str
    target: str
    outcome: str
    details: dict[str, Any]


class AuditList(BaseModel):
    """Audit events, newest first; pass ``next_before`` as ``before`` for older ones."""

    events: list[AuditEventOut]
    next_before: int | None


class ErrorDetail(BaseModel):
    """What went wrong."""

    code: str
    message: str
    details: dict[str, Any]


class ErrorOut(BaseModel):
    """Every error answer."""

    error: ErrorDetail


class DeadLetterOut(BaseModel):
    """An event of the tenant's write that a pipeline stage gave up on."""

    dead_letter_id: int
    stage: str = Field(description="the consumer that gave up: ingest, embed or index")
    subject: str
    doc_id: str
    version: int
    attempts: int
    error: str
    failed_at: float


class DeadLetterList(BaseModel):
    """The tenant's dead letters, oldest first."""

    dead_letters: list[DeadLetterOut]


class RepairOut(BaseModel):
    """One drift the reconciler found, and what it did."""

    kind: str = Field(description="orphaned_vectors | phantom_document | lost_tombstone | ...")
    tenant: str
    doc_id: str
    version: int
    shard_id: int
    points: int
    action: str


class ReconcileOut(BaseModel):
    """One reconciliation pass: what was checked and repaired."""

    shards: list[int]
    versions_checked: int
    documents_checked: int
    counts: dict[str, int]
    repaired: int
    repairs: list[RepairOut]
    dry_run: bool
    seconds: float


class LayoutOut(BaseModel):
    """The shape of the cluster."""

    shards: int
    replicas: int
    model: str
    dimension: int
    revision: int


class ShardStatusOut(BaseModel):
    """A shard: the nodes that hold it and the head of its log."""

    shard: int
    replicas: list[str]
    log_head: int


class ReplicaStatusOut(BaseModel):
    """A node's replica of a shard: how far it applied the log, and how far behind it is."""

    shard: int
    applied: int
    lag: int
    searches: int = Field(0, description="Searches this replica answered since its node started.")


class NodeStatusOut(BaseModel):
    """A live node, from its last heartbeat."""

    id: str
    pid: int
    address: str
    healthy: bool
    heartbeat_age_seconds: float
    shards: list[ReplicaStatusOut]
    lag: int
    following: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="Shards a tenant move fills on this node: source shard → offset of its "
        "log followed.",
    )


class TenantPlacementOut(BaseModel):
    """Where a tenant lives when that is not one shared shard, and how far a move is."""

    tenant: str
    shards: list[int] = Field(description="The shards its reads and writes use now.")
    phase: str = Field(description="settled, copying (to target) or draining (from source).")
    target: list[int] = Field(default_factory=list)
    source: list[int] = Field(default_factory=list)


class PromoteIn(BaseModel):
    """A tenant promotion (or split): how many dedicated shards it gets."""

    shards: int = Field(
        1, ge=1, le=64, strict=True, description="Dedicated shards (>1: a split by doc id)."
    )


class ReplicaMoveOut(BaseModel):
    """One replica moved between nodes."""

    shard: int
    from_node: str
    to_node: str


class RebalanceOut(BaseModel):
    """The replica moves of a rebalance (planned only, with ``dry_run``)."""

    dry_run: bool
    moves: list[ReplicaMoveOut]


class ClusterStatusOut(BaseModel):
    """``shardrag cluster status``: layout, shards, live nodes."""

    layout: LayoutOut
    shards: list[ShardStatusOut]
    nodes: list[NodeStatusOut]
    tenants: list[TenantPlacementOut] = Field(
        default_factory=list, description="Tenants on dedicated shards or moving."
    )
    breakers: dict[str, str] = Field(
        default_factory=dict,
        description="Circuit breaker (closed, half_open, open) of each node this api "
        "process's router has asked; each api process has its own (see api_pid).",
    )
    api_pid: int | None = Field(None, description="The api process that answered.")


class RotateOut(BaseModel):
    """A master-key rotation: how many data keys were wrapped again under the new key."""

    rewrapped: int
