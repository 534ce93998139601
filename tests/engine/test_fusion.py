"""Fusion of several shards' unfused candidates (``engine/fusion.py``), and what carries them:
the engine's candidate lists and chunk fetch, the wire form of calls and replies."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from shardrag.cluster.protocol import SearchCall, SearchReply
from shardrag.engine import EngineSettings, ShardEngine
from shardrag.engine.fusion import (
    RRF_K,
    best,
    fuse,
    global_idf,
    holding_of,
    idf,
    prefetch_depth,
    rescored,
)
from shardrag.models import (
    Chunk,
    EmbeddedChunk,
    Fusion,
    Hit,
    KeywordStats,
    Scored,
    SearchMode,
    ShardQuery,
)


def scored(doc: str, score: float) -> Scored:
    return Scored(doc, 1, 0, score)


def test_rrf_sums_one_over_sixty_plus_the_rank_from_zero_in_each_list() -> None:
    dense = [scored("a", 0.9), scored("b", 0.8)]
    keyword = [scored("b", 12.0), scored("c", 3.0)]
    fused = dict(fuse([dense, keyword], Fusion.RRF))
    assert fused[("a", 1, 0)] == pytest.approx(1 / RRF_K)
    assert fused[("b", 1, 0)] == pytest.approx(1 / (RRF_K + 1) + 1 / RRF_K)
    assert fused[("c", 1, 0)] == pytest.approx(1 / (RRF_K + 1))
    assert [key[0] for key, _ in fuse([dense, keyword], Fusion.RRF)] == ["b", "a", "c"]


def test_dbsf_maps_mean_plus_minus_three_sample_deviations_to_zero_and_one() -> None:
    scores = [4.0, 2.0, 0.0]
    mean, sd = 2.0, math.sqrt(sum((s - 2.0) ** 2 for s in scores) / 2)
    fused = dict(fuse([[scored(str(i), s) for i, s in enumerate(scores)]], Fusion.DBSF))
    for i, s in enumerate(scores):
        assert fused[(str(i), 1, 0)] == pytest.approx((s - (mean - 3 * sd)) / (6 * sd))
    # One candidate, or all alike: 0.5 each (no spread to normalise by).
    assert fuse([[scored("x", 7.0)]], Fusion.DBSF) == [(("x", 1, 0), 0.5)]
    alike = fuse([[scored("x", 1.0), scored("y", 1.0)]], Fusion.DBSF)
    assert [s for _, s in alike] == [0.5, 0.5]


def test_idf_solved_for_n_gives_n_back_and_sums_over_shards() -> None:
    for chunks, holding in [(10, 1), (1000, 3), (1000, 999), (1_000_000, 17)]:
        assert holding_of(chunks, idf(chunks, holding)) == pytest.approx(holding, abs=1e-6)
    one = KeywordStats(100, (5, 6), (1.0, 1.0), (10.0, 1.0))
    two = KeywordStats(300, (5, 6), (1.0, 1.0), (30.0, 0.0))
    assert global_idf([one, two]) == pytest.approx([idf(400, 40), idf(400, 1)])
    candidate = Scored("a", 1, 0, 0.0, (2.0, 0.5))
    (again,) = rescored([candidate], one, [3.0, 4.0])
    assert again.score == pytest.approx(2.0 * 3.0 + 0.5 * 4.0)


def test_the_best_of_several_shards_lists_is_one_list_cut_at_the_depth() -> None:
    one = [scored("a", 0.9), scored("c", 0.5)]
    two = [scored("b", 0.7), scored("d", 0.1)]
    assert [c.doc_id for c in best([one, two], 3)] == ["a", "b", "c"]
    assert prefetch_depth(10) == 100 and prefetch_depth(100) == 432


def test_calls_and_replies_carry_unfused_candidates_and_chunk_fetches() -> None:
    query = ShardQuery("acme", SearchMode.HYBRID, 5, "q", [0.5, 0.25], {}, Fusion.RRF, True)
    call = SearchCall(query, 3, 7, 0.5)
    assert SearchCall.decode(call.encode()) == call
    fetch = ShardQuery("acme", SearchMode.HYBRID, 2, chunks=(("a", 2, 0), ("b", 1, 3)))
    assert SearchCall.decode(SearchCall(fetch, 3).encode()).query == fetch
    reply = SearchReply(
        "node-1",
        9,
        [Hit("a", 2, 0, "text", 0.5, {"k": "v"})],
        dense=[Scored("a", 2, 0, 0.75)],
        keyword=[Scored("b", 1, 3, 11.5, (1.5, 0.0)), Scored("a", 2, 0, 2.0, (0.0, 1.25))],
        stats=KeywordStats(40, (17, 99), (1.0, 1.0), (3.0, 12.5)),
    )
    assert SearchReply.decode(reply.encode()) == reply


def chunk(index: int, text: str) -> Chunk:
    return Chunk(index, text, "", f"hash-{index}-{text}", len(text.split()))


def test_the_engine_fetches_only_live_chunks_of_the_tenant(tmp_path: Path) -> None:
    engine = ShardEngine(tmp_path / "shard", EngineSettings(dimension=2))
    try:
        one = [
            EmbeddedChunk(chunk(0, "alpha"), [1.0, 0.0]),
            EmbeddedChunk(chunk(1, "beta"), [0.0, 1.0]),
        ]
        engine.upsert("acme", "doc", 1, one, {}, "doc.txt")
        engine.commit("acme", "doc", 1)
        engine.upsert("acme", "doc", 2, [EmbeddedChunk(chunk(0, "gamma"), [1.0, 0.0])], {}, None)
        wanted = (("doc", 1, 1), ("doc", 2, 0), ("doc", 1, 0), ("gone", 1, 0))
        found = engine.search(ShardQuery("acme", SearchMode.KEYWORD, 3, chunks=wanted))
        # Version 2 is still pending: not live, not fetched; the order asked is kept.
        assert [(h.doc_id, h.version, h.chunk_index, h.text) for h in found] == [
            ("doc", 1, 1, "beta"),
            ("doc", 1, 0, "alpha"),
        ]
        assert engine.search(ShardQuery("other", SearchMode.KEYWORD, 3, chunks=wanted)) == []
    finally:
        engine.close()
