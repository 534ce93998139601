"""A tenant's search through the router: the ``Searcher``'s target (one per query)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from shardrag.cluster.protocol import SearchCall
from shardrag.cluster.router import Router
from shardrag.errors import Unavailable
from shardrag.models import Hit, ShardQuery

logger = logging.getLogger(__name__)


class RoutedSearch:
    """A tenant's search through the router, as the ``Searcher``'s target (one per query).

    ``heads`` gives a shard's log head. It is read before the search so that a result is
    cacheable only if every replica that answered had applied its shard up to there: the
    tenant's generation was read before the heads, so such a result shows every commit that
    generation counts, and a result of a lagging replica is never cached under it.

    ``sources``: while the tenant moves from them to ``shards`` (draining), each replica asked
    must have followed every source shard's log to its head as read now, so that no document
    committed on the old shards is missing from the answer (``min_source``).
    """

    def __init__(
        self,
        router: Router,
        shards: list[int],
        positions: Mapping[int, int],
        wait_seconds: float,
        heads: Callable[[int], int] | None = None,
        sources: Sequence[int] = (),
    ) -> None:
        self.router = router
        self.sources = list(sources)
        self.shards = shards
        self.positions = positions
        self.wait_seconds = wait_seconds
        self.heads = heads
        self._complete = False

    def search(self, query: ShardQuery) -> list[Hit]:
        """The tenant's top-k over all its shards."""
        heads = self._heads()
        min_source = self._source_heads()
        calls = [
            SearchCall(
                query,
                shard_id,
                self.positions.get(shard_id, 0),
                self.wait_seconds if self.positions.get(shard_id, 0) or min_source else 0.0,
                min_source,
            )
            for shard_id in self.shards
        ]
        result = self.router.search(calls, query.k)
        self._complete = bool(heads) and all(
            result.applied.get(s, 0) >= head for s, head in heads.items()
        )
        return result.hits

    def _source_heads(self) -> dict[int, int]:
        """The offsets of the sources' logs every replica must have followed (see the class);
        a log too slow to tell fails the query (503) rather than risk a missing document."""
        if not self.sources or self.heads is None:
            return {}
        found = {}
        for source in self.sources:
            try:
                head = self.heads(source)
            except Unavailable:
                head = self.heads(source)  # once more: a moment of leader election
            found[source] = max(head, self.positions.get(source, 0))
        return found

    def _heads(self) -> dict[int, int]:
        """Each shard's log head, or nothing (then the result is not cached) if the log is
        slow to tell: caching is worth no wait."""
        if self.heads is None:
            return {}
        try:
            return {s: self.heads(s) for s in self.shards}
        except Unavailable:
            logger.warning("log heads unavailable; this result is not cached")
            return {}

    def cacheable(self) -> bool:
        """Whether the last result may be cached (see the class)."""
        return self._complete
