"""The events between the write path's services, and their wire form.

    doc.ingest   IngestEvent   api → ingestion worker   (the original is in the blob store)
    chunk.embed  EmbedEvent    ingestion → embedding worker
    shard.<id>   ShardOp       embedding worker (and api, for deletes) → index applier

Every event names the version it belongs to, and every append carries a message id derived
from that version (``message_id``), so a retried append, a redelivered event and a replayed
log all land on the same deterministic point ids (ARCHITECTURE.md §2).

JSON on the wire; vectors as base64 of little-endian float32 (what the engine stores), so an
upsert op of ``UPSERT_BATCH`` chunks stays far below NATS' 1 MiB message limit. Chunk lists
above ``INLINE_CHUNK_BYTES`` travel through the blob store instead of the message.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shardrag.errors import InvalidParameter
from shardrag.models import Chunk, EmbeddedChunk, Metadata

DOC_INGEST = "doc.ingest"
CHUNK_EMBED = "chunk.embed"
SHARD_OPS = "shard.>"

#: Chunks per upsert op on a shard log.
UPSERT_BATCH = 32
#: Encoded chunk lists above this size go to the blob store, the event carries their digest.
INLINE_CHUNK_BYTES = 256 * 1024


def shard_subject(shard_id: int) -> str:
    """The subject of one shard's log."""
    return f"shard.{shard_id}"


def shard_of_subject(subject: str) -> int:
    """The shard id of a ``shard.<id>`` subject."""
    return int(subject.split(".", 1)[1])


@dataclass(frozen=True)
class VersionRef:
    """One version of one document: what every event is about."""

    tenant: str
    doc_id: str
    version: int
    shard_id: int
    #: A repair's own round (the reconciler re-driving a version): its events get ids of
    #: their own instead of being dropped as repeats of the first round's.
    round: str = ""
    #: Which incarnation of the tenant (its creation time): a tenant dropped and created
    #: again counts its versions from 1 again, and those must not be dropped as repeats.
    epoch: str = ""

    def message_id(self, step: str) -> str:
        """The dedupe id of this version's ``step`` (same version, same step → same id)."""
        parts: list[object] = [self.tenant, self.doc_id, self.version, self.round]
        if self.epoch:
            parts.append(self.epoch)
        key = json.dumps(parts, separators=(",", ":"))
        return f"{step}-{hashlib.sha256(key.encode()).hexdigest()[:40]}"


@dataclass(frozen=True)
class IngestEvent:
    """A stored original to parse and chunk (``doc.ingest``)."""

    ref: VersionRef
    content_hash: str
    filename: str | None = None
    content_type: str | None = None
    title: str | None = None
    metadata: Metadata = field(default_factory=dict)

    def encode(self) -> bytes:
        return _dump({"ref": dataclasses.asdict(self.ref), **_fields(self, skip="ref")})

    @classmethod
    def decode(cls, data: bytes) -> IngestEvent:
        raw = _load(data)
        return cls(ref=VersionRef(**raw.pop("ref")), **raw)


@dataclass(frozen=True)
class EmbedEvent:
    """The chunks of a version to embed (``chunk.embed``): inline, or by blob digest."""

    ref: VersionRef
    filename: str | None
    metadata: Metadata
    chunks: list[Chunk] = field(default_factory=list)
    chunks_blob: str | None = None

    def encode(self) -> bytes:
        return _dump(
            {
                "ref": dataclasses.asdict(self.ref),
                "filename": self.filename,
                "metadata": self.metadata,
                "chunks": [dataclasses.asdict(c) for c in self.chunks],
                "chunks_blob": self.chunks_blob,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> EmbedEvent:
        raw = _load(data)
        return cls(
            ref=VersionRef(**raw["ref"]),
            filename=raw["filename"],
            metadata=raw["metadata"],
            chunks=[Chunk(**c) for c in raw["chunks"]],
            chunks_blob=raw.get("chunks_blob"),
        )


def encode_chunks(chunks: list[Chunk]) -> bytes:
    """A chunk list as stored in the blob store when it is too large to travel inline."""
    return _dump([dataclasses.asdict(c) for c in chunks])


def decode_chunks(data: bytes) -> list[Chunk]:
    return [Chunk(**c) for c in json.loads(data)]


class OpKind(enum.StrEnum):
    """What a shard op does to the engine (see ``IndexApplier``)."""

    UPSERT = "upsert"  # write points of a version, invisible
    COMMIT = "commit"  # make the version live (if complete and not superseded)
    DELETE = "delete"  # tombstone: the version that removes the document
    ABORT = "abort"  # remove the pending points of a version that will never commit
    PURGE = "purge"  # remove every point of a version (the reconciler's repair)
    DROP_TENANT = "drop_tenant"  # remove every point of a tenant


@dataclass(frozen=True)
class ShardOp:
    """One operation on a shard's log, applied by every replica in log order."""

    kind: OpKind
    ref: VersionRef
    #: UPSERT: the chunks with vectors, their document's metadata and filename.
    points: list[EmbeddedChunk] = field(default_factory=list)
    metadata: Metadata = field(default_factory=dict)
    filename: str | None = None
    #: UPSERT: which batch of the version this is. COMMIT: how many points the version has.
    part: int = 0
    expected: int = 0

    def message_id(self) -> str:
        step = f"{self.kind.value}:{self.part}" if self.kind is OpKind.UPSERT else self.kind.value
        return self.ref.message_id(step)

    def encode(self) -> bytes:
        body: dict[str, Any] = {"kind": self.kind.value, "ref": dataclasses.asdict(self.ref)}
        if self.kind is OpKind.UPSERT:
            body.update(
                part=self.part,
                metadata=self.metadata,
                filename=self.filename,
                points=[
                    {
                        "chunk": dataclasses.asdict(p.chunk),
                        "vector": base64.b64encode(
                            np.asarray(p.vector, dtype="<f4").tobytes()
                        ).decode(),
                    }
                    for p in self.points
                ],
            )
        if self.kind is OpKind.COMMIT:
            body["expected"] = self.expected
        return _dump(body)

    @classmethod
    def decode(cls, data: bytes) -> ShardOp:
        raw = _load(data)
        try:
            kind = OpKind(raw["kind"])
        except ValueError:
            raise InvalidParameter(f"unknown shard op {raw.get('kind')!r}") from None
        points = [
            EmbeddedChunk(
                Chunk(**p["chunk"]),
                np.frombuffer(base64.b64decode(p["vector"]), dtype="<f4").tolist(),
            )
            for p in raw.get("points", [])
        ]
        return cls(
            kind=kind,
            ref=VersionRef(**raw["ref"]),
            points=points,
            metadata=raw.get("metadata", {}),
            filename=raw.get("filename"),
            part=int(raw.get("part", 0)),
            expected=int(raw.get("expected", 0)),
        )


def upsert_ops(
    ref: VersionRef, points: list[EmbeddedChunk], metadata: Metadata, filename: str | None
) -> list[ShardOp]:
    """A version's points as upsert ops of at most ``UPSERT_BATCH`` chunks, then its commit."""
    ops = [
        ShardOp(
            OpKind.UPSERT,
            ref,
            points=points[start : start + UPSERT_BATCH],
            metadata=metadata,
            filename=filename,
            part=start // UPSERT_BATCH,
        )
        for start in range(0, len(points), UPSERT_BATCH)
    ]
    ops.append(ShardOp(OpKind.COMMIT, ref, expected=len(points)))
    return ops


def _fields(obj: Any, skip: str) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name != skip}


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _load(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise InvalidParameter(f"an event is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidParameter("an event is not a JSON object")
    return value


def ref_of(subject: str, data: bytes) -> VersionRef | None:
    """The version an event on ``subject`` is about (None if it cannot be read)."""
    try:
        if subject == DOC_INGEST:
            return IngestEvent.decode(data).ref
        if subject == CHUNK_EMBED:
            return EmbedEvent.decode(data).ref
        if subject.startswith("shard."):
            return ShardOp.decode(data).ref
    except (InvalidParameter, ValueError, KeyError, TypeError):
        return None
    return None
