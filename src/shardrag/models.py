"""Domain types shared by every layer: parsed documents, chunks, versions, hits."""

from __future__ import annotations

import base64
import binascii
import enum
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from shardrag import acl as access
from shardrag.errors import InvalidParameter

Metadata = dict[str, Any]


class VersionState(enum.StrEnum):
    """Lifecycle of one version of a document (ARCHITECTURE.md §2, write path)."""

    PENDING = "pending"
    LIVE = "live"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    DELETED = "deleted"


class SearchMode(enum.StrEnum):
    """Which retrieval signal ranks the hits."""

    HYBRID = "hybrid"
    DENSE = "dense"
    KEYWORD = "keyword"


class ReadConcern(enum.StrEnum):
    """How fresh a search must be (ARCHITECTURE.md §2, read path)."""

    #: Whatever is live now.
    EVENTUAL = "eventual"
    #: At least as fresh as the write the ``write_token`` names (read-your-writes).
    SESSION = "session"
    #: After every write of the tenant accepted before the search.
    STRONG = "strong"


class Fusion(enum.StrEnum):
    """How hybrid search fuses the dense and keyword rankings (docs/retrieval.md)."""

    DBSF = "dbsf"
    RRF = "rrf"


@dataclass(frozen=True)
class Block:
    """One structural unit of parsed text: a paragraph, list item, table row or code block.

    ``headings`` is the path of section headings the block sits under, outermost first.
    """

    text: str
    headings: tuple[str, ...] = ()
    page: int | None = None


@dataclass(frozen=True)
class ParsedDocument:
    """What a parser returns: the document's text as blocks, with structure hints."""

    blocks: list[Block]
    title: str | None = None
    content_type: str = "text/plain"
    encoding: str | None = None

    @property
    def text(self) -> str:
        """All block text joined, for callers that need the plain text."""
        return "\n\n".join(b.text for b in self.blocks)


@dataclass(frozen=True)
class Chunk:
    """A passage of a document as it is embedded and indexed.

    ``text`` is the passage shown to users; ``context`` is its heading path, prepended to the
    text for embedding and keyword indexing (``indexed_text``) so a chunk keeps its section's
    meaning. ``content_hash`` covers ``indexed_text``: equal hashes mean equal vectors.
    """

    index: int
    text: str
    context: str
    content_hash: str
    token_count: int
    page: int | None = None

    @property
    def indexed_text(self) -> str:
        """The text the embedder and the BM25 index see."""
        return f"{self.context}\n{self.text}" if self.context else self.text


@dataclass(frozen=True)
class DocumentInput:
    """One document as a caller hands it in: bytes plus what the bytes do not say.

    ``title`` overrides the title the parser finds; it becomes the heading context of every
    chunk that has no heading of its own.
    """

    doc_id: str
    data: bytes
    filename: str | None = None
    metadata: Metadata = field(default_factory=dict)
    content_type: str | None = None
    title: str | None = None
    #: Access groups: who of the tenant may read it (``acl.py``); empty: every key.
    acl: tuple[str, ...] = ()


@dataclass(frozen=True)
class EmbeddedChunk:
    """A chunk with its dense vector, ready for the shard engine."""

    chunk: Chunk
    vector: list[float]


@dataclass(frozen=True)
class Hit:
    """One search result: a passage of the live version of a document."""

    doc_id: str
    version: int
    chunk_index: int
    text: str
    score: float
    metadata: Metadata
    context: str = ""
    filename: str | None = None
    page: int | None = None

    @property
    def key(self) -> ChunkKey:
        """The chunk it is: (doc id, version, chunk index)."""
        return (self.doc_id, self.version, self.chunk_index)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (CLI --json, API)."""
        return asdict(self)


@dataclass(frozen=True)
class VersionInfo:
    """One version of a document as the registry records it."""

    version: int
    state: VersionState
    content_hash: str | None
    filename: str | None
    size: int
    chunk_count: int
    metadata: Metadata
    error_code: str | None = None
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    content_type: str | None = None
    title: str | None = None
    #: Where the version's commit op is in its shard's log, once it was appended.
    commit_position: int | None = None
    reused_vectors: int = 0
    embedded_chunks: int = 0


@dataclass(frozen=True)
class DocumentInfo:
    """A document's state: the live version (what search returns) and the latest attempt."""

    tenant: str
    doc_id: str
    live: VersionInfo | None
    latest: VersionInfo

    @property
    def version(self) -> int:
        """The live version, or the latest one when none is live."""
        return self.live.version if self.live else self.latest.version

    @property
    def state(self) -> VersionState:
        """``live`` while a version is searchable; else the latest version's state."""
        if self.latest.state is VersionState.DELETED:
            return VersionState.DELETED
        return VersionState.LIVE if self.live else self.latest.state

    @property
    def chunk_count(self) -> int:
        """Chunks of the live version (0 when nothing is live)."""
        return self.live.chunk_count if self.live else 0

    @property
    def metadata(self) -> Metadata:
        """The user's metadata of the live version, else of the latest."""
        return access.split((self.live or self.latest).metadata)[0]

    @property
    def acl(self) -> tuple[str, ...]:
        """Access groups of the live version, else of the latest (empty: every key)."""
        return access.split((self.live or self.latest).metadata)[1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (CLI --json, API)."""
        latest = self.latest
        return {
            "tenant": self.tenant,
            "doc_id": self.doc_id,
            "version": self.version,
            "state": self.state.value,
            "chunk_count": self.chunk_count,
            "metadata": self.metadata,
            "acl": list(self.acl),
            "filename": (self.live or latest).filename,
            "latest_version": latest.version,
            "latest_state": latest.state.value,
            "error": (
                {"code": latest.error_code, "message": latest.error} if latest.error_code else None
            ),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DocumentInfo:
        """A document as ``to_dict`` gave it (what ``to_dict`` leaves out comes back empty:
        hashes, sizes, times)."""
        error = values.get("error") or {}
        state = VersionState(values["state"])
        latest_state = VersionState(values["latest_state"])
        latest_version = int(values["latest_version"])
        metadata = access.with_acl(dict(values.get("metadata") or {}), values.get("acl"))
        has_live = state is VersionState.LIVE or (
            state is VersionState.DELETED and int(values["version"]) != latest_version
        )
        live = (
            VersionInfo(
                int(values["version"]),
                VersionState.LIVE,
                None,
                values.get("filename"),
                0,
                int(values["chunk_count"]),
                metadata,
            )
            if has_live
            else None
        )
        latest = (
            live
            if live is not None and latest_version == live.version
            else VersionInfo(
                latest_version,
                latest_state,
                None,
                values.get("filename"),
                0,
                0,
                metadata,
                error.get("code"),
                error.get("message"),
            )
        )
        return cls(values["tenant"], values["doc_id"], live, latest)


@dataclass(frozen=True)
class WriteResult:
    """What ``put_document`` returns: the version and whether anything changed."""

    tenant: str
    doc_id: str
    version: int
    state: VersionState
    chunk_count: int
    unchanged: bool = False
    reused_vectors: int = 0
    embedded_chunks: int = 0
    write_token: str | None = None
    #: The result of an earlier write with the same idempotency key, given again (not part
    #: of the result's value: ``to_dict`` leaves it out).
    replayed: bool = field(default=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (CLI --json, API); the state is its string value."""
        values = asdict(self)
        del values["replayed"]
        return {**values, "state": self.state.value}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> WriteResult:
        """The result ``to_dict`` gave (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)} - {"replayed"}
        known = {k: v for k, v in values.items() if k in names}
        return cls(**{**known, "state": VersionState(values["state"])})


@dataclass(frozen=True)
class SearchRequest:
    """A validated search: what retrieval plans and the engine executes."""

    tenant: str
    query: str
    k: int = 10
    mode: SearchMode = SearchMode.HYBRID
    filters: Metadata = field(default_factory=dict)
    fusion: Fusion = Fusion.DBSF
    #: The caller's effective access groups (``acl.py``): None reads every document.
    groups: tuple[str, ...] | None = None


#: One chunk of one version of a document: (doc id, version, chunk index).
ChunkKey = tuple[str, int, int]


@dataclass(frozen=True)
class ShardQuery:
    """One search as each shard runs it: a validated ``SearchRequest`` with its query vector.

    Built once by the searcher and carried unchanged through the router and the transport to
    every replica's engine; no layer spells its fields out again.
    """

    tenant: str
    mode: SearchMode
    k: int
    text: str = ""
    #: The query's embedding (None for a keyword search).
    dense: list[float] | None = None
    filters: Metadata = field(default_factory=dict)
    fusion: Fusion = Fusion.DBSF
    #: A hybrid search of a tenant on several shards: each shard answers its candidates of
    #: each signal unfused too (``SearchReply.dense``/``keyword``), and the router fuses their
    #: union once, as one shard holding everything would (``engine/fusion.py``).
    unfused: bool = False
    #: Not a search: these chunks (doc id, version, chunk index), those still live, with their
    #: text (the router's second step when a globally fused hit came without it).
    chunks: tuple[ChunkKey, ...] = ()
    #: The caller's effective access groups, filtered inside the engine query: None reads
    #: every document of the tenant; a tuple, documents of those groups and those of none.
    groups: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Scored:
    """One candidate of one signal (dense or keyword) of a shard, unfused: the chunk it is and
    its raw score (cosine; BM25 over the tenant's chunks on that shard)."""

    doc_id: str
    version: int
    chunk_index: int
    score: float
    #: A keyword candidate's BM25 weight of each term of the query (``KeywordStats.terms``),
    #: before IDF: what its score is rebuilt from with the IDF of all the tenant's shards.
    weights: tuple[float, ...] = ()

    @property
    def key(self) -> ChunkKey:
        """The chunk it is."""
        return (self.doc_id, self.version, self.chunk_index)


@dataclass(frozen=True)
class KeywordStats:
    """What BM25's IDF of a query's terms is computed from, on one shard for one tenant: the
    tenant's live chunks there and, per term of the query, how many of them hold it. Summed
    over a tenant's shards they give the IDF one shard holding everything would use."""

    #: The tenant's live chunks matching the query's filters on the shard (BM25's N).
    chunks: int
    #: The query's BM25 terms (the engine's token ids) and their weights in the query.
    terms: tuple[int, ...] = ()
    query_weights: tuple[float, ...] = ()
    #: Per term, the chunks holding it (BM25's n; recovered from the engine's IDF, a float).
    holding: tuple[float, ...] = ()


@dataclass(frozen=True)
class WriteToken:
    """Names one accepted write; a session read with it sees that write or a later one.

    Opaque to callers: ``wt1.`` and URL-safe base64 of JSON. It carries only what its holder
    already knows (tenant, document id, version) and where the write lands: its shard and,
    once known, the position of its commit in that shard's log (a replica that has applied
    the log up to there shows it). A search checks the tenant it names.
    """

    tenant: str
    doc_id: str
    version: int
    shard_id: int | None = None
    position: int | None = None

    _PREFIX = "wt1."

    def encode(self) -> str:
        """The token as a string for the caller."""
        fields: dict[str, Any] = {"t": self.tenant, "d": self.doc_id, "v": self.version}
        if self.shard_id is not None:
            fields["s"] = self.shard_id
        if self.position is not None:
            fields["p"] = self.position
        raw = json.dumps(fields, separators=(",", ":")).encode()
        return self._PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> WriteToken:
        """Parse a token; ``InvalidParameter`` if it is not one of ours."""
        if not token.startswith(cls._PREFIX) or len(token) > 2048:
            raise InvalidParameter("write_token is not a shardrag write token")
        body = token[len(cls._PREFIX) :]
        try:
            fields = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            parsed = cls(
                _token_text(fields["t"]),
                _token_text(fields["d"]),
                _token_int(fields["v"]),
                _token_int(fields["s"]) if fields.get("s") is not None else None,
                _token_int(fields["p"]) if fields.get("p") is not None else None,
            )
        except (binascii.Error, ValueError, KeyError, TypeError, AttributeError):
            raise InvalidParameter("write_token is not a shardrag write token") from None
        return parsed


#: Numbers in a write token fit a signed 64-bit column (SQLite's INTEGER, PostgreSQL's
#: BIGINT): a forged larger one must be refused here, not overflow in a database.
_TOKEN_INT_MAX = 2**63 - 1


def _token_int(value: Any) -> int:
    """A whole number of a token, 0 to 2**63-1 (JSON's true/false/"5" are not numbers)."""
    if type(value) is not int or not 0 <= value <= _TOKEN_INT_MAX:
        raise ValueError("not a token number")
    return value


def _token_text(value: Any) -> str:
    """A string of a token (a tenant or document id), as the token was made."""
    if not isinstance(value, str):
        raise ValueError("not a token string")
    return value


@dataclass(frozen=True)
class DeadLetterInfo:
    """An event of a tenant's write that a stage gave up on, with its last error."""

    dead_letter_id: int
    stage: str
    subject: str
    doc_id: str
    version: int
    attempts: int
    error: str
    failed_at: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (CLI --json, API)."""
        return asdict(self)
