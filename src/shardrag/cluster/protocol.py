"""What the router and the index nodes say to each other over NATS request-reply.

Subjects: ``<prefix>_rpc.search.<shard>`` is answered by one replica of the shard (a queue
group per shard: NATS picks one subscriber; a dead node's subscription is gone with its
connection) and ``<prefix>_rpc.search.<shard>.<node>`` by that node only (the router's
failover to a chosen replica). They stay outside ``<prefix>.>``, the log stream's subjects:
a request there would be stored in the log and answered by JetStream. Bodies are JSON; the
query vector travels as base64 float32.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from shardrag.models import Fusion, Hit, KeywordStats, Scored, SearchMode, ShardQuery


def search_subject(prefix: str, shard_id: int, node_id: str | None = None) -> str:
    """The subject a shard's replicas (or one node's replica) answer searches on."""
    base = f"{prefix}_rpc.search.{shard_id}"
    return f"{base}.{node_id}" if node_id else base


def queue_group(shard_id: int) -> str:
    """The queue group of a shard's replicas: each request goes to one of them."""
    return f"search-{shard_id}"


#: The query fields this version reads.
_QUERY_FIELDS = frozenset(f.name for f in fields(ShardQuery))


class UnknownQueryFields(ValueError):
    """A search request holds query fields this version does not know (a newer api).

    Never ignored: a field may restrict what the query may read (``groups`` did), and a
    replica that skipped it would answer more than the caller may see.
    """

    def __init__(self, names: list[str]) -> None:
        super().__init__(
            f"this index node does not know the query field(s) {', '.join(names)}: upgrade "
            'the index nodes before the api processes (docs/cluster.md, "Upgrades")'
        )
        self.names = names


@dataclass(frozen=True)
class SearchCall:
    """One shard's part of a query, as the router sends it to a replica."""

    query: ShardQuery
    shard_id: int
    #: Only a replica that has applied the shard's log up to here may answer (read concerns).
    min_applied: int = 0
    #: How long a replica behind ``min_applied`` may wait to catch up before refusing.
    wait_seconds: float = 0.0
    #: While the tenant moves here from other shards: source shard → offset of its log the
    #: replica must have followed too (so no document of the tenant is missing).
    min_source: dict[int, int] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The request body."""
        query: dict[str, Any] = asdict(self.query)
        query["mode"] = self.query.mode.value
        query["fusion"] = self.query.fusion.value
        if self.query.dense is not None:
            raw = np.asarray(self.query.dense, dtype="<f4").tobytes()
            query["dense"] = base64.b64encode(raw).decode()
        values = {
            "query": query,
            "shard_id": self.shard_id,
            "min_applied": self.min_applied,
            "wait_seconds": self.wait_seconds,
            "min_source": self.min_source,
        }
        return json.dumps(values).encode()

    @classmethod
    def decode(cls, data: bytes) -> SearchCall:
        """A request body read back (ValueError / KeyError / TypeError if malformed;
        ``UnknownQueryFields`` if it comes from a newer version)."""
        values: dict[str, Any] = json.loads(data)
        query: dict[str, Any] = dict(values["query"])
        unknown = sorted(set(query) - _QUERY_FIELDS)
        if unknown:
            raise UnknownQueryFields(unknown)
        dense = query.get("dense")
        if dense is not None:
            query["dense"] = np.frombuffer(base64.b64decode(dense), dtype="<f4").tolist()
        query["mode"] = SearchMode(query["mode"])
        query["fusion"] = Fusion(query["fusion"])
        if query.get("groups") is not None:
            query["groups"] = tuple(str(g) for g in query["groups"])
        query["chunks"] = tuple(
            (str(doc_id), int(version), int(chunk)) for doc_id, version, chunk in query["chunks"]
        )
        return cls(
            ShardQuery(**query),
            int(values["shard_id"]),
            int(values.get("min_applied", 0)),
            float(values.get("wait_seconds", 0.0)),
            {int(k): int(v) for k, v in values.get("min_source", {}).items()},
        )


@dataclass(frozen=True)
class SearchReply:
    """A replica's answer: its hits, or the error it hit; with how far it had applied.

    To an ``unfused`` query, also each signal's candidates with their raw scores (``dense``,
    ``keyword``; the hits are then the shard's own fused top, whose text the router uses).
    """

    node_id: str
    applied: int
    hits: list[Hit] | None = None
    error_code: str | None = None
    error_message: str | None = None
    dense: list[Scored] | None = None
    keyword: list[Scored] | None = None
    stats: KeywordStats | None = None

    def encode(self) -> bytes:
        """The reply body (candidates as compact [doc id, version, chunk, score, weights]
        rows)."""
        values = asdict(self)
        for signal in ("dense", "keyword"):
            candidates: list[Scored] | None = getattr(self, signal)
            if candidates is not None:
                values[signal] = [
                    [c.doc_id, c.version, c.chunk_index, c.score, list(c.weights)]
                    for c in candidates
                ]
        return json.dumps(values).encode()

    @classmethod
    def decode(cls, data: bytes) -> SearchReply:
        """A reply body read back."""
        values: dict[str, Any] = json.loads(data)
        hits = values.get("hits")
        if hits is not None:
            values["hits"] = [Hit(**h) for h in hits]
        for signal in ("dense", "keyword"):
            rows = values.get(signal)
            if rows is not None:
                values[signal] = [
                    Scored(str(d), int(v), int(c), float(x), tuple(float(w) for w in ws))
                    for d, v, c, x, ws in rows
                ]
        stats = values.get("stats")
        if stats is not None:
            values["stats"] = KeywordStats(
                int(stats["chunks"]),
                tuple(int(t) for t in stats["terms"]),
                tuple(float(w) for w in stats["query_weights"]),
                tuple(float(n) for n in stats["holding"]),
            )
        return cls(**values)
