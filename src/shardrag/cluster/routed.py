"""A tenant's search through the router: the ``Searcher``'s target (one per query)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from shardrag.cluster.protocol import SearchCall
from shardrag.cluster.router import Router
from shardrag.engine.fusion import (
    best,
    fuse,
    global_idf,
    newest_versions,
    prefetch_depth,
    rescored,
)
from shardrag.errors import Unavailable
from shardrag.models import ChunkKey, Hit, SearchMode, ShardQuery

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
        if len(calls) > 1 and query.mode is SearchMode.HYBRID:
            hits, applied = self._fused_over_shards(calls, query)
        else:
            result = self.router.search(calls, query.k)
            hits, applied = result.hits, result.applied
        self._complete = bool(heads) and all(applied.get(s, 0) >= head for s, head in heads.items())
        return hits

    def _fused_over_shards(
        self, calls: list[SearchCall], query: ShardQuery
    ) -> tuple[list[Hit], dict[int, int]]:
        """A hybrid search of a tenant on several shards, fused once over the union of their
        candidates (``engine/fusion.py``): the hits one shard holding them all would give.

        Each shard answers its candidates of both signals with raw scores and the text of its
        own fused top. A globally fused hit whose text no shard sent (a chunk of middling rank
        in both signals of its shard) is fetched from its shard in a second step, from a
        replica at least as far as the one that answered.
        """
        unfused = replace(query, unfused=True)
        replies, result = self.router.gather([replace(c, query=unfused) for c in calls])
        depth = prefetch_depth(query.k)
        shard_of: dict[ChunkKey, int] = {}
        texts: dict[ChunkKey, Hit] = {}
        for call, reply in zip(calls, replies, strict=True):
            for candidate in (reply.dense or []) + (reply.keyword or []):
                shard_of[candidate.key] = call.shard_id
            for hit in reply.hits or []:
                texts[hit.key] = hit
        # Keyword scores rebuilt with the IDF of the tenant's chunks on all its shards.
        stats = [reply.stats for reply in replies if reply.stats is not None]
        idfs = global_idf(stats) if len(stats) == len(replies) else []
        keyword = [
            rescored(reply.keyword or [], reply.stats, idfs)
            if idfs and reply.stats is not None
            else reply.keyword or []
            for reply in replies
        ]
        fused = fuse(
            [best([reply.dense or [] for reply in replies], depth), best(keyword, depth)],
            query.fusion,
        )
        newest = newest_versions(key for key, _ in fused)
        top = [(key, score) for key, score in fused if key[1] == newest[key[0]]][: query.k]
        missing = [key for key, _ in top if key not in texts]
        if missing:
            texts.update(self._fetch(missing, shard_of, calls, result.applied, query))
        hits = [replace(texts[key], score=score) for key, score in top if key in texts]
        return hits, result.applied

    def _fetch(
        self,
        chunks: list[ChunkKey],
        shard_of: Mapping[ChunkKey, int],
        calls: list[SearchCall],
        applied: Mapping[int, int],
        query: ShardQuery,
    ) -> dict[ChunkKey, Hit]:
        """The text of ``chunks`` from their shards (those still live)."""
        fetches = []
        for call in calls:
            wanted = tuple(key for key in chunks if shard_of[key] == call.shard_id)
            if wanted:
                fetch = replace(query, unfused=False, chunks=wanted)
                # From a replica as far as the one that answered (it is one: a short wait).
                at = applied.get(call.shard_id, 0)
                wait = max(call.wait_seconds, 0.5)
                fetches.append(replace(call, query=fetch, min_applied=at, wait_seconds=wait))
        found = self.router.search(fetches, len(chunks)).hits
        return {hit.key: hit for hit in found}

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
