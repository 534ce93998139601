"""Access groups in the shard engine: filtered inside the query on every read path, and a
restricted caller's BM25 statistics come from what it may read only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import qdrant_edge as qe
from tests.engine.test_shard_engine import DIM, chunks, vector

from shardrag import acl
from shardrag.engine import EngineSettings, ShardEngine
from shardrag.engine.ids import point_id
from shardrag.engine.terms import TermCounts
from shardrag.models import SearchMode, ShardQuery

DOCS = {
    "eng-1": ("eng",),
    "eng-2": ("eng",),
    "hr-1": ("hr",),
    "both": ("eng", "hr"),
    "open-1": (),
    "open-2": (),
}


def _text(doc_id: str) -> str:
    extra = " replication replication replication" if doc_id.startswith("hr") else ""
    return f"shard replication plan {doc_id}{extra}"


def _fill(engine: ShardEngine, docs: dict[str, tuple[str, ...]]) -> None:
    for doc_id, groups in docs.items():
        meta = acl.with_acl({"team": "a"}, groups)
        assert engine.upsert("t", doc_id, 1, chunks([_text(doc_id)]), meta, f"{doc_id}.txt")
        engine.commit("t", doc_id, 1)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[ShardEngine]:
    shard = ShardEngine(tmp_path / "s", EngineSettings(dimension=DIM))
    _fill(shard, DOCS)
    yield shard
    shard.close()


def _query(mode: SearchMode, groups: acl.Groups, **more: object) -> ShardQuery:
    text = "shard replication plan"
    return ShardQuery("t", mode, 10, text=text, dense=vector(text), groups=groups, **more)  # type: ignore[arg-type]


@pytest.mark.parametrize("groups", [None, (), ("eng",), ("hr",), ("eng", "hr"), ("legal",)])
def test_every_read_path_returns_only_readable_documents(
    engine: ShardEngine, groups: acl.Groups
) -> None:
    readable = {d for d, g in DOCS.items() if acl.may_read(groups, g)}
    for mode in SearchMode:
        hits = engine.search(_query(mode, groups))
        assert {h.doc_id for h in hits} == readable, (mode, groups)
        assert all("@acl" not in h.metadata for h in hits)
    found = engine.candidates(_query(SearchMode.HYBRID, groups))
    assert {c.doc_id for c in found.dense} == readable
    assert {c.doc_id for c in found.keyword} == readable
    assert found.stats.chunks == len(readable)
    keys = [(d, 1, 0) for d in DOCS]
    assert {h.doc_id for h in engine.fetch("t", keys, groups)} == readable


def test_a_restricted_callers_keyword_scores_ignore_documents_it_cannot_read(
    engine: ShardEngine, tmp_path: Path
) -> None:
    """The same scores as on a shard holding only what the caller may read: hidden
    documents' terms shape no score it sees (docs/access.md)."""
    eng = ("eng",)
    alone = ShardEngine(tmp_path / "alone", EngineSettings(dimension=DIM))
    try:
        _fill(alone, {d: g for d, g in DOCS.items() if acl.may_read(eng, g)})
        for mode in (SearchMode.KEYWORD, SearchMode.HYBRID):
            got = {h.doc_id: h.score for h in engine.search(_query(mode, eng))}
            want = {h.doc_id: h.score for h in alone.search(_query(mode, None))}
            assert got == pytest.approx(want, rel=1e-5), mode
        unrestricted = {h.doc_id: h.score for h in engine.search(_query(SearchMode.KEYWORD, None))}
        restricted = {h.doc_id: h.score for h in engine.search(_query(SearchMode.KEYWORD, eng))}
        assert unrestricted["eng-1"] != pytest.approx(restricted["eng-1"], rel=1e-5)
    finally:
        alone.close()


def test_points_written_before_access_groups_are_public(engine: ShardEngine) -> None:
    """A point without an ``acl`` field (an older shard's) reads as a document of no group."""
    assert engine.upsert("t", "old", 1, chunks([_text("old")]), {}, None)
    engine.commit("t", "old", 1)
    with engine._lock.exclusive():
        engine._shard.update(
            qe.UpdateOperation.delete_payload([point_id("t", "old", 1, 0)], ["acl"])
        )
    hits = engine.search(_query(SearchMode.KEYWORD, ("legal",)))
    assert "old" in {h.doc_id for h in hits}
    assert "eng-1" not in {h.doc_id for h in hits}


def test_term_counts_follow_a_change_of_groups(engine: ShardEngine, tmp_path: Path) -> None:
    """Counts per set of groups stay equal to a fresh count when a document moves between
    groups, and a restricted caller's scores stay those of a shard of what it reads."""
    moved = acl.with_acl({"team": "a"}, ("hr",))
    assert engine.upsert("t", "eng-1", 2, chunks([_text("eng-1")]), moved, None)
    engine.commit("t", "eng-1", 2)
    engine.delete("t", "open-2", 2)
    with engine._lock.shared():
        assert engine._terms == TermCounts.of(engine._live_terms([]))
    after = {"eng-1": ("hr",), "eng-2": ("eng",), "hr-1": ("hr",), "both": ("eng", "hr")}
    after["open-1"] = ()
    alone = ShardEngine(tmp_path / "alone", EngineSettings(dimension=DIM))
    try:
        _fill(alone, {d: g for d, g in after.items() if acl.may_read(("eng",), g)})
        got = {h.doc_id: h.score for h in engine.search(_query(SearchMode.KEYWORD, ("eng",)))}
        want = {h.doc_id: h.score for h in alone.search(_query(SearchMode.KEYWORD, None))}
        assert got == pytest.approx(want, rel=1e-5)
    finally:
        alone.close()
