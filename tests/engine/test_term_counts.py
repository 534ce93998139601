"""BM25's IDF from the shard's own term counts: the engine's scores, kept exact by every write."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.engine.test_shard_engine import DIM, chunks, vector

from shardrag.engine import EngineSettings, ShardEngine
from shardrag.engine import shard as shard_module
from shardrag.engine.terms import TermCounts
from shardrag.models import SearchMode, ShardQuery

WORDS = [
    "replication",
    "shard",
    "tenant",
    "query",
    "index",
    "vector",
    "keyword",
    "cache",
    "failover",
    "router",
    "commit",
    "version",
    "snapshot",
    "latency",
    "recall",
]
QUERIES = ["replication shard", "tenant failover latency", "vector recall index", "cache"]


def text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[tuple[ShardEngine, ShardEngine]]:
    """One engine counting terms, one leaving the IDF to the engine, fed the same writes."""
    counting = ShardEngine(tmp_path / "counting", EngineSettings(dimension=DIM))
    plain = ShardEngine(tmp_path / "plain", EngineSettings(dimension=DIM), count_terms=False)
    yield counting, plain
    counting.close()
    plain.close()


def recount(engine: ShardEngine) -> TermCounts:
    """The counts a fresh scan of the shard gives."""
    with engine._lock.shared():
        return TermCounts.of(engine._live_terms([]))


def same_answers(counting: ShardEngine, plain: ShardEngine, tenant: str) -> None:
    """The same scores, rank by rank and chunk by chunk (chunks tied on a score may come in
    either order: the two IDFs differ in the last bits of a float)."""
    for q in QUERIES:
        for mode in (SearchMode.KEYWORD, SearchMode.HYBRID):
            for filters in ({}, {"team": "a"}):
                query = ShardQuery(tenant, mode, 10, text=q, dense=vector(q), filters=filters)
                got, want = counting.search(query), plain.search(query)
                assert got, (q, mode, filters)
                assert [h.score for h in got] == pytest.approx([h.score for h in want], rel=1e-5)
                theirs = {h.key: h.score for h in want}
                for hit in got:
                    if hit.key in theirs:
                        assert hit.score == pytest.approx(theirs[hit.key], rel=1e-5)


def test_scores_equal_the_engines_idf_through_every_kind_of_write(
    engines: tuple[ShardEngine, ShardEngine],
) -> None:
    counting, plain = engines
    rng = random.Random(7)
    versions: dict[tuple[str, str], int] = {}

    def put(tenant: str, doc: str, texts: list[str]) -> int:
        version = versions[tenant, doc] = versions.get((tenant, doc), 0) + 1
        team = rng.choice("ab")
        for e in engines:
            e.upsert(tenant, doc, version, chunks(texts), {"team": team}, None)
            e.commit(tenant, doc, version)
        return version

    for tenant in ("acme", "globex"):
        for d in range(30):
            put(tenant, f"d{d}", [text(rng) for _ in range(rng.randint(1, 4))])
    put("acme", "stop-words", ["the and of", "it is"])  # chunks without a BM25 term count
    assert counting._terms is not None and counting._terms == recount(counting)
    same_answers(counting, plain, "acme")

    # Updates (fewer or more chunks), deletes, a version overtaken, a purge, an abort.
    for d in range(0, 30, 3):
        put("acme", f"d{d}", [text(rng) for _ in range(rng.randint(1, 5))])
    for d in range(1, 30, 5):
        version = versions["acme", f"d{d}"] = versions["acme", f"d{d}"] + 1
        for e in engines:
            e.delete("acme", f"d{d}", version)
    stale = versions["acme", "d2"]
    put("acme", "d2", ["replication replication shard"])
    for e in engines:
        assert e.commit("acme", "d2", stale).value == "superseded"
        e.upsert("acme", "d4", 99, chunks(["replication never committed"]), {}, None)
        e.purge("acme", "d4", 99)
        e.upsert("acme", "d5", 98, chunks(["shard never committed"]), {}, None)
        e.abort("acme", "d5", 98)
    assert counting._terms == recount(counting)
    same_answers(counting, plain, "acme")
    same_answers(counting, plain, "globex")

    for e in engines:
        e.drop_tenant("globex")
    assert counting._terms == recount(counting)
    assert counting.search(ShardQuery("globex", SearchMode.KEYWORD, 10, text="shard")) == []
    same_answers(counting, plain, "acme")


def test_candidates_carry_the_exact_counts(tmp_path: Path) -> None:
    engine = ShardEngine(tmp_path / "shard", EngineSettings(dimension=DIM))
    for doc, body in {"a": "replication shard", "b": "replication", "c": "router"}.items():
        engine.upsert("acme", doc, 1, chunks([body]), {}, None)
        engine.commit("acme", doc, 1)
    engine.upsert("other", "x", 1, chunks(["replication replication"]), {}, None)
    engine.commit("other", "x", 1)
    query = ShardQuery("acme", SearchMode.HYBRID, 5, text="replication router", dense=vector("q"))
    stats = engine.candidates(query).stats
    assert stats.chunks == 3
    assert sorted(stats.holding) == [1.0, 2.0]  # router: 1 of 3, replication: 2 of 3
    engine.close()

    # Reopened, the counts are made again from the stored points: the same.
    reopened = ShardEngine(tmp_path / "shard", EngineSettings(dimension=DIM))
    assert reopened.candidates(query).stats == stats
    reopened.close()


def test_a_count_made_while_commits_go_on_ends_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "shard"
    rng = random.Random(3)
    first = ShardEngine(path, EngineSettings(dimension=DIM), count_terms=False)
    for d in range(300):
        first.upsert("acme", f"d{d}", 1, chunks([text(rng), text(rng)]), {}, None)
        first.commit("acme", f"d{d}", 1)
    first.close()

    # Counted in a thread, in pages of 10 points, while a writer commits new versions.
    monkeypatch.setattr(shard_module, "_COUNT_AT_OPEN", 0)
    monkeypatch.setattr(shard_module, "_TERM_PAGE", 10)
    engine = ShardEngine(path, EngineSettings(dimension=DIM))
    done = threading.Event()

    def write() -> None:
        for d in range(0, 300, 7):
            engine.upsert("acme", f"d{d}", 2, chunks([text(rng)]), {}, None)
            engine.commit("acme", f"d{d}", 2)
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    deadline = time.monotonic() + 60
    while engine._terms is None and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.join()
    assert done.is_set()
    assert engine._terms is not None, "the count never finished"
    assert engine._terms == recount(engine)
    engine.close()
