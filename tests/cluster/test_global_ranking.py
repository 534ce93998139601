"""A tenant split over several shards ranks as it would on one: the router fuses the union of
the shards' dense and keyword candidates once, with BM25's IDF over all of them
(``engine/fusion.py``, ``cluster/routed.py``).

CISI (real abstracts, real questions and relevance judgements) is written whole into shard 0
and split by document hash over shards 1-4 (``Placement.shard_of``, what a promotion does), by
``bench/split_quality.py``, whose report the last test checks: every judged question searched
in hybrid mode through the production read path's parts, and beside it the baseline, each
shard's own fused top merged by score (what the router did before).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from bench.cisi_to_beir import DEFAULT_SOURCE
from bench.split_quality import Collection, collection, print_report, query_of, run
from rich.console import Console

from shardrag.engine.fusion import best, fuse, global_idf, rescored
from shardrag.models import Fusion, Hit
from tests.support import require

SPLIT = 4


@pytest.fixture(scope="module")
def cisi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collection]:
    require((DEFAULT_SOURCE / "CISI.ALL").exists(), f"CISI collection missing at {DEFAULT_SOURCE}")
    with collection(DEFAULT_SOURCE, tmp_path_factory.mktemp("ranking"), [SPLIT]) as found:
        yield found


@pytest.mark.parametrize("fusion", [Fusion.DBSF, Fusion.RRF])
def test_fusing_one_shards_own_candidates_gives_the_engines_fused_hits(
    cisi: Collection, fusion: Fusion
) -> None:
    engine = cisi.shards.shard(cisi.whole[0])
    for text, vector in list(cisi.questions.values())[:25]:
        query = query_of(text, vector, fusion, k=10)
        found = engine.candidates(query)
        assert len(found.dense) == len(found.keyword) == 100  # the prefetch depth for k=10
        mine = fuse([best([found.dense], 100), best([found.keyword], 100)], fusion)
        theirs = engine.search(query)
        assert [round(h.score, 4) for h in theirs] == [round(s, 4) for _, s in mine[:10]]
        # Same chunks, up to the order of equal scores.
        by_score = {h.key: round(h.score, 4) for h in theirs}
        assert by_score == {key: round(s, 4) for key, s in mine[:10]} or _ties_only(theirs, mine)


def _ties_only(theirs: list[Hit], mine: list[tuple[tuple[str, int, int], float]]) -> bool:
    """Whether the two top-10s differ only in which of equally scored chunks made the cut."""
    last = round(theirs[-1].score, 4)
    keep = {h.key for h in theirs if round(h.score, 4) > last}
    return keep == {key for key, s in mine[:10] if round(s, 4) > last}


def test_the_shards_counts_add_up_to_the_whole_tenants_and_rebuild_its_bm25_scores(
    cisi: Collection,
) -> None:
    whole = cisi.shards.shard(cisi.whole[0])
    for text, vector in list(cisi.questions.values())[:25]:
        query = query_of(text, vector, Fusion.DBSF, k=10)
        mine = whole.candidates(query)
        parts = [cisi.shards.shard(s).candidates(query).stats for s in cisi.splits[SPLIT]]
        # BM25's N and each term's n over the split shards are the whole tenant's.
        assert sum(p.chunks for p in parts) == mine.stats.chunks
        for i in range(len(mine.stats.terms)):
            assert sum(p.holding[i] for p in parts) == pytest.approx(
                mine.stats.holding[i], abs=0.05
            )
        # On one shard, the scores rebuilt from the weights and the IDF are the engine's own.
        again = rescored(mine.keyword, mine.stats, global_idf([mine.stats]))
        assert [c.score for c in again] == pytest.approx([c.score for c in mine.keyword], rel=1e-4)
        # And from the split shards' counts, the same scores again.
        assert [c.score for c in rescored(mine.keyword, mine.stats, global_idf(parts))] == (
            pytest.approx([c.score for c in mine.keyword], rel=1e-4)
        )


def test_a_tenant_split_over_four_shards_ranks_as_it_does_on_one(cisi: Collection) -> None:
    report = run(cisi, k=40)
    out = io.StringIO()
    print_report(
        {"fusions": report, "questions": len(cisi.questions), "k": 40},
        Console(file=out, width=120),
    )
    print(out.getvalue())
    for fusion in Fusion:
        rows = report[fusion.value]
        assert set(rows) == {
            "whole",
            f"{SPLIT} shards, one fusion",
            f"{SPLIT} shards, merge by shard score",
        }
        whole, split = rows["whole"], rows[f"{SPLIT} shards, one fusion"]
        baseline = rows[f"{SPLIT} shards, merge by shard score"]
        assert whole["same_top10"] == 1.0  # the whole tenant agrees with itself
        assert abs(split["ndcg@10"] - whole["ndcg@10"]) <= 0.005
        assert split["same_top10"] >= 0.95
        # The baseline kept the whole tenant's order for fewer questions.
        assert baseline["same_documents_top10"] < split["same_documents_top10"]
        assert all(row["p50_ms"] > 0 and row["p99_ms"] >= row["p50_ms"] for row in rows.values())
        assert str(round(split["ndcg@10"], 4))[:4] in out.getvalue()
