"""Per tenant, the counts BM25's IDF is made of, kept in step with a shard's live chunks.

BM25 weighs a query term by its inverse document frequency over the tenant's live chunks,
ln(1 + (N - n + 0.5) / (n + 0.5)) with N the tenant's live chunks and n those holding the
term. The engine can compute it at query time over a filter (``IdfParams(corpus=...)``), but
it does so by counting, per query term, the points that pass the filter among those holding
the term: a scan that grows with the tenant (43.9 ms p50 of a 55.7 ms keyword query at 1M
points, against 5.1 ms for the same query with the shard's IDF; docs/shard-key.md).

So the shard keeps N and n per tenant itself, in memory: built once by one scan of the live
points when the shard opens, then changed by every commit, delete and purge by the difference
between the document's live points before and after. A keyword query then gives the engine
IDF-weighted query weights and an IDF corpus that holds nothing (the engine's IDF is then
ln 2 for every term, which the weights divide out): the same scores, without the scan.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from shardrag.engine.fusion import idf

#: The engine's IDF of any term over a corpus of no points: ln(1 + 0.5 / 0.5).
EMPTY_CORPUS_IDF = math.log(2.0)


@dataclass
class TenantTerms:
    """One tenant's live chunks on a shard and, per BM25 term, how many of them hold it."""

    chunks: int = 0
    holding: Counter[int] = field(default_factory=Counter)

    def add(self, terms: Iterable[Iterable[int]], sign: int = 1) -> None:
        """Count (``sign`` 1) or uncount (-1) chunks, each given by its terms."""
        for chunk in terms:
            self.chunks += sign
            for term in chunk:
                self.holding[term] += sign
                if not self.holding[term]:
                    del self.holding[term]


class TermCounts:
    """Every tenant's ``TenantTerms`` on one shard.

    Not thread-safe by itself: the shard engine changes it under the exclusive side of its
    lock and reads it under the shared side, as it does the shard.
    """

    def __init__(self, tenants: dict[str, TenantTerms] | None = None) -> None:
        self._tenants = tenants or {}

    @classmethod
    def of(cls, chunks: Iterable[tuple[str, Sequence[int]]]) -> TermCounts:
        """The counts of ``(tenant, terms of one live chunk)`` pairs."""
        counts = cls()
        for tenant, terms in chunks:
            counts.count(tenant, terms)
        return counts

    def count(self, tenant: str, terms: Iterable[int]) -> None:
        """Count one more live chunk of ``tenant``, holding ``terms`` (each once)."""
        counts = self.tenant(tenant)
        counts.chunks += 1
        counts.holding.update(terms)

    def tenant(self, tenant: str) -> TenantTerms:
        """The counts of ``tenant`` (empty if it has no live chunk here)."""
        found = self._tenants.get(tenant)
        if found is None:
            found = self._tenants[tenant] = TenantTerms()
        return found

    def change(
        self, tenant: str, before: Sequence[Sequence[int]], after: Sequence[Sequence[int]]
    ) -> None:
        """A document's live chunks went from ``before`` to ``after`` (terms per chunk)."""
        counts = self.tenant(tenant)
        counts.add(before, -1)
        counts.add(after, 1)
        if not counts.chunks:
            del self._tenants[tenant]

    def drop(self, tenant: str) -> None:
        """``tenant`` has no live chunk here any more."""
        self._tenants.pop(tenant, None)

    def stats(self, tenant: str, terms: Sequence[int]) -> tuple[int, list[int]]:
        """``tenant``'s live chunks and, per term, those holding it."""
        counts = self._tenants.get(tenant) or TenantTerms()
        return counts.chunks, [counts.holding.get(term, 0) for term in terms]

    def weights(self, tenant: str, terms: Sequence[int], values: Sequence[float]) -> list[float]:
        """Query weights that, scored by an engine whose IDF is ``EMPTY_CORPUS_IDF`` for
        every term, give BM25 with the IDF over ``tenant``'s live chunks."""
        chunks, holding = self.stats(tenant, terms)
        return [
            value * idf(chunks, n) / EMPTY_CORPUS_IDF
            for value, n in zip(values, holding, strict=True)
        ]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TermCounts):
            return NotImplemented
        mine = {t: (c.chunks, c.holding) for t, c in self._tenants.items() if c.chunks}
        theirs = {t: (c.chunks, c.holding) for t, c in other._tenants.items() if c.chunks}
        return mine == theirs

    def __repr__(self) -> str:
        return f"TermCounts({ {t: c.chunks for t, c in self._tenants.items()} })"
