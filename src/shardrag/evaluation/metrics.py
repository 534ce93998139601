"""Ranking quality metrics, computed the way BEIR (via pytrec_eval) computes them.

A *run* maps each query id to its ranked list of document ids, best first; *qrels* map each
query id to the graded relevance of judged documents (grade > 0 means relevant). A ranked
list that names a document twice is read as if the later copies were not there: retrievers
that return several chunks of one document must not be rewarded, or punished, twice for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shardrag.errors import InvalidInput, InvalidParameter

NDCG_CUTOFF = 10
RECALL_CUTOFF = 100


def ndcg_at_k(ranked: list[str], relevance: dict[str, int], k: int = 10) -> float:
    """Normalised discounted cumulative gain of the first ``k`` documents of ``ranked``.

    The gain of a document is its relevance grade (linear gain, as in pytrec_eval and BEIR;
    unjudged and negative grades gain 0), discounted by ``log2(rank + 1)``. The ideal DCG
    takes the ``k`` highest judged grades in order. Returns 0.0 when nothing is relevant.
    """
    _check_cutoff(k)
    ideal = sorted((grade for grade in relevance.values() if grade > 0), reverse=True)[:k]
    ideal_dcg = _dcg(ideal)
    if ideal_dcg == 0.0:
        return 0.0
    gains = [max(relevance.get(doc_id, 0), 0) for doc_id in _first_occurrences(ranked)[:k]]
    return _dcg(gains) / ideal_dcg


def recall_at_k(ranked: list[str], relevance: dict[str, int], k: int = 100) -> float:
    """Share of the relevant documents (grade > 0) found in the first ``k`` of ``ranked``.

    Returns 0.0 when nothing is relevant.
    """
    _check_cutoff(k)
    relevant = {doc_id for doc_id, grade in relevance.items() if grade > 0}
    if not relevant:
        return 0.0
    found = relevant.intersection(_first_occurrences(ranked)[:k])
    return len(found) / len(relevant)


@dataclass(frozen=True)
class QueryScores:
    """The metrics of one query."""

    ndcg_at_10: float
    recall_at_100: float


@dataclass(frozen=True)
class RetrievalScores:
    """Mean nDCG@10 and recall@100 over the judged queries, and each query's own values."""

    ndcg_at_10: float
    recall_at_100: float
    per_query: dict[str, QueryScores]

    @property
    def query_count(self) -> int:
        """How many judged queries the means are taken over."""
        return len(self.per_query)


def evaluate_run(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> RetrievalScores:
    """Score ``run`` against ``qrels`` over every query with at least one relevant document.

    A judged query missing from the run scores 0 (a system that answers nothing must not look
    better than one that answers badly); queries in the run without judgements are ignored.
    Raises ``InvalidInput`` when no query has a relevant document, as no mean exists then.
    """
    per_query = {
        query_id: QueryScores(
            ndcg_at_10=ndcg_at_k(run.get(query_id, []), relevance, NDCG_CUTOFF),
            recall_at_100=recall_at_k(run.get(query_id, []), relevance, RECALL_CUTOFF),
        )
        for query_id, relevance in qrels.items()
        if any(grade > 0 for grade in relevance.values())
    }
    if not per_query:
        raise InvalidInput("the qrels grade no document of any query as relevant")
    return RetrievalScores(
        ndcg_at_10=math.fsum(s.ndcg_at_10 for s in per_query.values()) / len(per_query),
        recall_at_100=math.fsum(s.recall_at_100 for s in per_query.values()) / len(per_query),
        per_query=per_query,
    )


def _dcg(gains: list[int]) -> float:
    return math.fsum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def _first_occurrences(ranked: list[str]) -> list[str]:
    return list(dict.fromkeys(ranked))


def _check_cutoff(k: int) -> None:
    if k < 1:
        raise InvalidParameter(f"cutoff k must be at least 1, got {k}", k=k)
