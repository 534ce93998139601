"""Hybrid fusion outside the engine: the union of several shards' candidates, fused once.

A tenant split over several shards is searched on each of them. Fusing each shard's dense and
keyword lists on the shard (what one engine call does) and then merging the shards' fused
scores compares numbers that mean different things: DBSF normalises each list by its own mean
and spread, RRF scores a rank within one shard's list, so the merge interleaves the shards by
rank rather than by relevance. Instead each shard answers its candidates of each signal with
their raw scores (cosine similarity, and BM25 whose IDF counts the tenant's chunks on that
shard), the router keeps the best ``prefetch_depth(k)`` of each signal over all shards, the
list one shard holding every chunk would have produced, and fuses those two lists here, the
way the engine fuses its prefetches:

- **RRF**: each chunk scores the sum over the lists it appears in of ``1 / (RRF_K + rank)``,
  rank counted from 0 as the engine counts it (``RRF_K`` = 60, its constant);
- **DBSF**: each list is normalised with its mean ± 3 sample standard deviations mapped to
  0 and 1 (a list of one scores 0.5; all equal: 0.5 each), then the chunk's normalised
  scores are summed.

Fused on one shard's own lists, the result is the engine's own fused order (a test holds
both to it).

Raw BM25 scores of different shards are not comparable as they come: the engine's IDF counts
the tenant's chunks on its own shard, and a split tenant's shards each hold a sample of it
(on CISI split in four, the keyword top 10 kept the order of the unsplit tenant for 4 % of
the questions). So each shard also answers ``KeywordStats`` (its count of the tenant's chunks
and, per query term, of those holding it) and each keyword candidate's BM25 weight per query
term; ``global_idf`` sums the counts over the shards and ``rescored`` rebuilds every
candidate's score with that IDF: exactly the score one shard holding the tenant would give.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from shardrag.models import ChunkKey, Fusion, KeywordStats, Scored

#: The engine's RRF constant (``qe.Fusion.Rrf(k=60)``).
RRF_K = 60


def prefetch_depth(k: int) -> int:
    """How many candidates of each signal a hybrid search of ``k`` hits fuses: the
    over-fetch of ``k`` (8 more: the per-document version check may drop a few), at least 100
    and four times that for large ``k``."""
    return max(100, 4 * (k + 8))


def idf(chunks: float, holding: float) -> float:
    """BM25's inverse document frequency as the engine computes it: ln(1 + (N - n + 0.5) /
    (n + 0.5)) for ``chunks`` N and ``holding`` n."""
    return math.log(1.0 + (chunks - holding + 0.5) / (holding + 0.5))


def holding_of(chunks: int, term_idf: float) -> float:
    """The n that gives ``term_idf`` over ``chunks`` chunks (``idf`` solved for n)."""
    x = math.exp(term_idf) - 1.0
    return (chunks + 0.5 - 0.5 * x) / (x + 1.0)


def global_idf(stats: Sequence[KeywordStats]) -> list[float]:
    """The IDF of each query term over the union of the shards' corpora (all the shards'
    stats are of the same query: the same terms in the same order)."""
    if not stats:
        return []
    chunks = sum(s.chunks for s in stats)
    return [idf(chunks, sum(s.holding[i] for s in stats)) for i in range(len(stats[0].terms))]


def rescored(
    candidates: Sequence[Scored], stats: KeywordStats, idfs: Sequence[float]
) -> list[Scored]:
    """Keyword candidates scored with ``idfs`` instead of their shard's own, best first."""
    found = [
        Scored(
            c.doc_id,
            c.version,
            c.chunk_index,
            sum(q * w * f for q, w, f in zip(stats.query_weights, c.weights, idfs, strict=True)),
            c.weights,
        )
        for c in candidates
    ]
    found.sort(key=lambda c: c.score, reverse=True)
    return found


def newest_versions(chunks: Iterable[ChunkKey]) -> dict[str, int]:
    """Per document, the newest version among ``chunks`` (a crash window may leave two
    versions of a document live for a moment: only the newest is shown)."""
    newest: dict[str, int] = {}
    for doc_id, version, _ in chunks:
        newest[doc_id] = max(version, newest.get(doc_id, version))
    return newest


def best(lists: Sequence[Sequence[Scored]], depth: int) -> list[Scored]:
    """The ``depth`` highest raw scores of several shards' lists of one signal, best first."""
    merged = [candidate for candidates in lists for candidate in candidates]
    merged.sort(key=lambda c: c.score, reverse=True)
    return merged[:depth]


def fuse(signals: Sequence[Sequence[Scored]], fusion: Fusion) -> list[tuple[ChunkKey, float]]:
    """The chunks of every signal's list (each best first), by fused score, best first."""
    fused: dict[ChunkKey, float] = {}
    for candidates in signals:
        scores = _rrf(candidates) if fusion is Fusion.RRF else _distribution(candidates)
        for candidate, score in zip(candidates, scores, strict=True):
            fused[candidate.key] = fused.get(candidate.key, 0.0) + score
    return sorted(fused.items(), key=lambda item: item[1], reverse=True)


def _rrf(candidates: Sequence[Scored]) -> list[float]:
    return [1.0 / (RRF_K + rank) for rank in range(len(candidates))]


def _distribution(candidates: Sequence[Scored]) -> list[float]:
    """Scores mapped so that mean - 3 sd is 0 and mean + 3 sd is 1 (sample sd)."""
    if len(candidates) < 2:
        return [0.5] * len(candidates)
    scores = [c.score for c in candidates]
    mean = sum(scores) / len(scores)
    spread = math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - 1))
    low, high = mean - 3 * spread, mean + 3 * spread
    if high == low:
        return [0.5] * len(scores)
    return [(s - low) / (high - low) for s in scores]
