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

A caller restricted to access groups (``acl.py``) scores with the IDF over what it may read
(docs/access.md). So the counts are kept per tenant *and per set of groups* a document carries
(each chunk has exactly one set; public chunks the empty one): what a caller may read is the
sum over the sets that meet its groups, what the whole tenant holds the sum over all of them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from shardrag import acl as access
from shardrag.engine.fusion import idf

#: The engine's IDF of any term over a corpus of no points: ln(1 + 0.5 / 0.5).
EMPTY_CORPUS_IDF = math.log(2.0)

#: A document's access groups as the counts key them (empty: public).
AclSet = tuple[str, ...]
#: One live chunk as counted: its access groups and its BM25 terms (each once).
CountedChunk = tuple[AclSet, Sequence[int]]


@dataclass
class Counts:
    """Live chunks and, per BM25 term, how many of them hold it."""

    chunks: int = 0
    holding: Counter[int] = field(default_factory=Counter)

    def add(self, terms: Iterable[int], sign: int = 1) -> None:
        """Count (``sign`` 1) or uncount (-1) one chunk holding ``terms``."""
        self.chunks += sign
        for term in terms:
            self.holding[term] += sign
            if not self.holding[term]:
                del self.holding[term]


class TermCounts:
    """Every tenant's counts on one shard, per set of access groups.

    Not thread-safe by itself: the shard engine changes it under the exclusive side of its
    lock and reads it under the shared side, as it does the shard.
    """

    def __init__(self) -> None:
        self._tenants: dict[str, dict[AclSet, Counts]] = {}

    @classmethod
    def of(cls, chunks: Iterable[tuple[str, AclSet, Sequence[int]]]) -> TermCounts:
        """The counts of ``(tenant, groups, terms)`` of live chunks."""
        counts = cls()
        for tenant, groups, terms in chunks:
            counts.count(tenant, terms, groups)
        return counts

    def count(self, tenant: str, terms: Iterable[int], acl: AclSet = ()) -> None:
        """Count one more live chunk of ``tenant`` of groups ``acl``, holding ``terms``."""
        found = self._tenants.setdefault(tenant, {}).setdefault(acl, Counts())
        found.chunks += 1
        found.holding.update(terms)

    def change(
        self, tenant: str, before: Sequence[CountedChunk], after: Sequence[CountedChunk]
    ) -> None:
        """A document's live chunks went from ``before`` to ``after``."""
        sets = self._tenants.setdefault(tenant, {})
        for chunks, sign in ((before, -1), (after, 1)):
            for groups, terms in chunks:
                sets.setdefault(groups, Counts()).add(terms, sign)
        for groups in [g for g, c in sets.items() if not c.chunks]:
            del sets[groups]
        if not sets:
            del self._tenants[tenant]

    def drop(self, tenant: str) -> None:
        """``tenant`` has no live chunk here any more."""
        self._tenants.pop(tenant, None)

    def stats(
        self, tenant: str, terms: Sequence[int], groups: access.Groups = None
    ) -> tuple[int, list[int]]:
        """The live chunks of ``tenant`` that ``groups`` may read (None: all) and, per term,
        those of them holding it."""
        readable = [
            c for acl, c in self._tenants.get(tenant, {}).items() if access.may_read(groups, acl)
        ]
        chunks = sum(c.chunks for c in readable)
        return chunks, [sum(c.holding.get(term, 0) for c in readable) for term in terms]

    def weights(
        self,
        tenant: str,
        terms: Sequence[int],
        values: Sequence[float],
        groups: access.Groups = None,
    ) -> list[float]:
        """Query weights that, scored by an engine whose IDF is ``EMPTY_CORPUS_IDF`` for
        every term, give BM25 with the IDF over the live chunks ``groups`` may read."""
        chunks, holding = self.stats(tenant, terms, groups)
        return [
            value * idf(chunks, n) / EMPTY_CORPUS_IDF
            for value, n in zip(values, holding, strict=True)
        ]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TermCounts):
            return NotImplemented
        return self._comparable() == other._comparable()

    def _comparable(self) -> dict[tuple[str, AclSet], tuple[int, Counter[int]]]:
        return {
            (tenant, acl): (c.chunks, +c.holding)
            for tenant, sets in self._tenants.items()
            for acl, c in sets.items()
            if c.chunks
        }

    def __repr__(self) -> str:
        sizes = {t: sum(c.chunks for c in sets.values()) for t, sets in self._tenants.items()}
        return f"TermCounts({sizes})"
