"""A tenant split over several shards ranks as it would on one: the router fuses the union of
the shards' dense and keyword candidates once (``engine/fusion.py``, ``cluster/routed.py``).

CISI (real abstracts, real questions and relevance judgements) is written twice through the
production read path's parts: whole into shard 0, and split by document hash over shards 1-4
(``Placement.shard_of``, what a promotion does). Every judged question is searched in hybrid
mode on both through the router (the embedded mode's in-process transport), and beside it the
old merge, each shard's own fused list merged by score, as the baseline.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from bench.cisi_to_beir import convert_cisi

from shardrag.cluster.local import LocalNode
from shardrag.cluster.protocol import SearchCall
from shardrag.cluster.routed import RoutedSearch
from shardrag.cluster.router import Router
from shardrag.cluster.shardmap import Placement
from shardrag.cluster.transport import LocalTransport
from shardrag.config import Settings
from shardrag.embed import open_embedder
from shardrag.engine import EngineSettings, ShardSet
from shardrag.engine.fusion import best, fuse, global_idf, rescored
from shardrag.evaluation.beir import BeirDataset, load_beir
from shardrag.evaluation.metrics import evaluate_run
from shardrag.ingest.chunker import Chunker
from shardrag.ingest.formats import parse
from shardrag.log import SqliteLog
from shardrag.models import EmbeddedChunk, Fusion, Hit, SearchMode, ShardQuery
from tests.support import CISI_DIR, require

TENANT = "library"
WHOLE = [0]
SPLIT = [1, 2, 3, 4]
#: Chunks asked per question; documents ranked by their best chunk, the first 10 scored.
K = 40


@dataclass
class Collection:
    dataset: BeirDataset
    questions: dict[str, tuple[str, list[float]]]  # query id -> (text, vector)
    shards: ShardSet
    router: Router


@pytest.fixture(scope="module")
def cisi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collection]:
    require((CISI_DIR / "CISI.ALL").exists(), f"CISI collection missing at {CISI_DIR}")
    root = tmp_path_factory.mktemp("ranking")
    convert_cisi(CISI_DIR, root / "cisi")
    dataset = load_beir(root / "cisi", "test")
    settings = Settings()
    embedder = open_embedder(settings)
    chunker = Chunker(embedder.tokenizer, settings.chunk_tokens, settings.chunk_overlap_tokens)
    documents = []
    for doc in dataset.corpus.values():
        text = f"{doc.title}\n\n{doc.text}".strip()
        if text:
            documents.append(
                (doc.doc_id, chunker.chunk(parse(text.encode(), "document.txt", None)))
            )
    vectors = iter(embedder.embed_documents([c.indexed_text for _, cs in documents for c in cs]))
    shards = ShardSet(
        root / "shards", EngineSettings(dimension=embedder.dimension), optimize_threshold=10**9
    )
    split = Placement(tuple(SPLIT))
    for doc_id, chunks in documents:
        embedded = [EmbeddedChunk(chunk, next(vectors)) for chunk in chunks]
        for shard_id in (WHOLE[0], split.shard_of(doc_id)):
            engine = shards.shard(shard_id)
            engine.upsert(TENANT, doc_id, 1, embedded, {}, "document.txt")
            engine.commit(TENANT, doc_id, 1)
    for shard_id in WHOLE + SPLIT:
        shards.shard(shard_id).optimize()
    judged = dataset.judged_queries()
    query_vectors = [embedder.embed_query(text) for text in judged.values()]
    questions = {
        qid: (text, vector)
        for (qid, text), vector in zip(judged.items(), query_vectors, strict=True)
    }
    log = SqliteLog(root / "log.sqlite3")
    node = LocalNode(shards, len(WHOLE + SPLIT), None, threading.Condition(), log)
    transport = LocalTransport(node.server)
    router = Router(transport, node, "ranking")
    try:
        yield Collection(dataset, questions, shards, router)
    finally:
        transport.close()
        log.close()
        shards.close()


def query_of(text: str, vector: list[float], fusion: Fusion, k: int = K) -> ShardQuery:
    return ShardQuery(TENANT, SearchMode.HYBRID, k, text, vector, {}, fusion)


Ranked = list[tuple[str, float]]


def ranked(hits: list[Hit]) -> Ranked:
    """Documents by their best chunk, with its score."""
    best: dict[str, float] = {}
    for hit in hits:
        best.setdefault(hit.doc_id, hit.score)
    return list(best.items())


def docs(ranking: Ranked) -> list[str]:
    return [doc for doc, _ in ranking]


def same_top_10(one: Ranked, two: Ranked) -> bool:
    """The same first 10 documents in the same order, up to the order of equal scores (RRF
    ties often: rank r of one list and rank r of the other score alike, and the engine orders
    equal scores arbitrarily) and to float rounding (the engine fuses in float32)."""
    a, b = one[:10], two[:10]
    if len(a) != len(b) or not all(close(x, y) for (_, x), (_, y) in zip(a, b, strict=True)):
        return False
    where = {doc: score for doc, score in b}
    last = a[-1][1] if a else 0.0
    # A document of one that the other lacks may only be one of a tie at the cut.
    return all(close(where[d], s) if d in where else close(s, last) for d, s in a)


def close(x: float, y: float) -> bool:
    return abs(x - y) <= 1e-5 + 1e-4 * abs(x)


def run_of(cisi: Collection, shards: list[int], fusion: Fusion) -> dict[str, Ranked]:
    return {
        qid: ranked(RoutedSearch(cisi.router, shards, {}, 0.0).search(query_of(text, v, fusion)))
        for qid, (text, v) in cisi.questions.items()
    }


def merged_by_shard_scores(cisi: Collection, fusion: Fusion) -> dict[str, Ranked]:
    """The old way, the baseline: each shard's own fused top, merged by those scores."""
    return {
        qid: ranked(
            cisi.router.search(
                [SearchCall(query_of(text, v, fusion), shard) for shard in SPLIT], K
            ).hits
        )
        for qid, (text, v) in cisi.questions.items()
    }


@pytest.mark.parametrize("fusion", [Fusion.DBSF, Fusion.RRF])
def test_fusing_one_shards_own_candidates_gives_the_engines_fused_hits(
    cisi: Collection, fusion: Fusion
) -> None:
    engine = cisi.shards.shard(WHOLE[0])
    for text, vector in list(cisi.questions.values())[:25]:
        query = query_of(text, vector, fusion, k=10)
        found = engine.candidates(query)
        assert len(found.dense) == len(found.keyword) == 100  # the prefetch depth for k=10
        mine = fuse([best([found.dense], 100), best([found.keyword], 100)], fusion)
        theirs = engine.search(query)
        assert [round(h.score, 4) for h in theirs] == [round(s, 4) for _, s in mine[:10]]
        # Same chunks, up to the order of equal scores.
        by_score = {(h.doc_id, h.version, h.chunk_index): round(h.score, 4) for h in theirs}
        assert by_score == {key: round(s, 4) for key, s in mine[:10]} or _ties_only(theirs, mine)


def _ties_only(theirs: list[Hit], mine: list[tuple[tuple[str, int, int], float]]) -> bool:
    """Whether the two top-10s differ only in which of equally scored chunks made the cut."""
    last = round(theirs[-1].score, 4)
    keep = {(h.doc_id, h.version, h.chunk_index) for h in theirs if round(h.score, 4) > last}
    return keep == {key for key, s in mine[:10] if round(s, 4) > last}


@pytest.mark.parametrize("fusion", [Fusion.DBSF, Fusion.RRF])
def test_a_tenant_split_over_four_shards_ranks_as_it_does_on_one(
    cisi: Collection, fusion: Fusion
) -> None:
    whole = run_of(cisi, WHOLE, fusion)
    split = run_of(cisi, SPLIT, fusion)
    old = merged_by_shard_scores(cisi, fusion)
    qrels = cisi.dataset.qrels
    ndcg = {
        name: evaluate_run({q: docs(r) for q, r in run.items()}, qrels).ndcg_at_10
        for name, run in [("whole", whole), ("split", split), ("old merge", old)]
    }
    same = sum(same_top_10(split[q], whole[q]) for q in whole) / len(whole)
    same_before = sum(docs(old[q])[:10] == docs(whole[q])[:10] for q in whole) / len(whole)
    print(f"{fusion.value}: nDCG@10 {ndcg}; same top-10 {same:.3f} (old merge {same_before:.3f})")
    assert abs(ndcg["split"] - ndcg["whole"]) <= 0.005
    assert same >= 0.95


def test_the_shards_counts_add_up_to_the_whole_tenants_and_rebuild_its_bm25_scores(
    cisi: Collection,
) -> None:
    whole = cisi.shards.shard(WHOLE[0])
    for text, vector in list(cisi.questions.values())[:25]:
        query = query_of(text, vector, Fusion.DBSF, k=10)
        mine = whole.candidates(query)
        parts = [cisi.shards.shard(s).candidates(query).stats for s in SPLIT]
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
