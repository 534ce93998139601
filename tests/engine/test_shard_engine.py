"""The shard engine's consistency protocol: pending, commit, abort, tombstones, isolation."""

from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from shardrag.engine import EngineSettings, ShardEngine
from shardrag.errors import InvalidParameter
from shardrag.models import Chunk, EmbeddedChunk, Hit, SearchMode, ShardQuery

DIM = 8


def vector(text: str) -> list[float]:
    """A deterministic unit vector per text (the engine's input, not a model)."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [b - 127.5 for b in digest[:DIM]]
    norm = sum(x * x for x in raw) ** 0.5
    return [x / norm for x in raw]


def chunks(texts: list[str]) -> list[EmbeddedChunk]:
    return [
        EmbeddedChunk(
            Chunk(i, t, "", hashlib.sha256(t.encode()).hexdigest(), len(t.split())), vector(t)
        )
        for i, t in enumerate(texts)
    ]


@pytest.fixture
def engine(tmp_path: Path) -> ShardEngine:
    e = ShardEngine(tmp_path / "shard", EngineSettings(dimension=DIM))
    yield e
    e.close()


def find(engine: ShardEngine, tenant: str, mode: SearchMode, k: int, **fields: Any) -> list[Hit]:
    """``engine.search`` of a ``ShardQuery`` made of these fields."""
    return engine.search(ShardQuery(tenant, mode, k, **fields))


def put(
    engine: ShardEngine, tenant: str, doc: str, version: int, texts: list[str], **meta: object
) -> None:
    engine.upsert(tenant, doc, version, chunks(texts), dict(meta), f"{doc}.txt")
    engine.commit(tenant, doc, version)


def test_pending_points_are_invisible_until_commit(engine: ShardEngine) -> None:
    engine.upsert("acme", "doc", 1, chunks(["alpha replication"]), {}, None)
    assert find(engine, "acme", SearchMode.KEYWORD, 10, text="replication") == []
    assert engine.count("acme", "doc", 1).pending == 1
    engine.commit("acme", "doc", 1)
    hits = find(engine, "acme", SearchMode.KEYWORD, 10, text="replication")
    assert [(h.doc_id, h.version) for h in hits] == [("doc", 1)]


def test_commit_replaces_older_versions_and_is_idempotent(engine: ShardEngine) -> None:
    put(engine, "acme", "doc", 1, ["replication one", "replication two"])
    put(engine, "acme", "doc", 2, ["replication three"])
    engine.commit("acme", "doc", 2)
    assert engine.count("acme", "doc").live == 1
    hits = find(engine, "acme", SearchMode.KEYWORD, 10, text="replication")
    assert {h.version for h in hits} == {2}


def test_replaying_an_old_commit_never_removes_a_newer_version(engine: ShardEngine) -> None:
    put(engine, "acme", "doc", 1, ["replication one"])
    put(engine, "acme", "doc", 2, ["replication two"])
    engine.commit("acme", "doc", 1)  # a redelivered, older commit
    hits = find(engine, "acme", SearchMode.KEYWORD, 10, text="replication")
    assert [h.version for h in hits] == [2]


def test_abort_removes_only_the_failed_version(engine: ShardEngine) -> None:
    put(engine, "acme", "doc", 1, ["replication one"])
    engine.upsert("acme", "doc", 2, chunks(["replication broken"]), {}, None)
    engine.abort("acme", "doc", 2)
    assert engine.count("acme", "doc", 2).pending == 0
    assert [h.version for h in find(engine, "acme", SearchMode.KEYWORD, 5, text="replication")] == [
        1
    ]


def test_tombstone_commit_deletes_every_chunk(engine: ShardEngine) -> None:
    put(engine, "acme", "doc", 1, [f"replication part {i}" for i in range(5)])
    engine.commit("acme", "doc", 2)  # version 2 has no points: a delete
    count = engine.count("acme", "doc")
    assert (count.live, count.pending) == (0, 0)


def test_searches_never_see_a_commit_half_applied(engine: ShardEngine) -> None:
    # Odd versions have 2 chunks, even ones 3: a reader that ever counts 0 or 5 live chunks
    # saw a document missing or two versions at once. Switching threads every microsecond
    # makes readers land between the steps of a commit if anything lets them.
    put(engine, "acme", "doc", 1, ["a one", "a two"])
    stop = threading.Event()
    seen: set[int] = set()

    def read() -> None:
        while not stop.is_set():
            seen.add(engine.count("acme", "doc").live)
            seen.add(len(find(engine, "acme", SearchMode.DENSE, 10, dense=vector("a one"))))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    readers = [threading.Thread(target=read) for _ in range(3)]
    try:
        for r in readers:
            r.start()
        for version in range(2, 600):
            size = 2 if version % 2 else 3
            put(engine, "acme", "doc", version, [f"v{version} c{i}" for i in range(size)])
    finally:
        stop.set()
        for r in readers:
            r.join()
        sys.setswitchinterval(interval)
    assert seen <= {2, 3}
    assert seen == {2, 3}


def test_a_tenant_never_sees_another_tenants_points(engine: ShardEngine) -> None:
    put(engine, "a", "same", 1, ["identical text about replication"], owner="a")
    put(engine, "b", "same", 1, ["identical text about replication"], owner="b")
    for tenant in ("a", "b"):
        for mode in SearchMode:
            hits = find(
                engine,
                tenant,
                mode,
                10,
                dense=vector("identical text about replication"),
                text="replication",
            )
            assert hits and {h.metadata["owner"] for h in hits} == {tenant}


def test_keyword_scores_ignore_other_tenants_corpora(engine: ShardEngine) -> None:
    put(engine, "a", "doc", 1, ["replication of shards", "failover of nodes"])
    before = find(engine, "a", SearchMode.KEYWORD, 1, text="replication")[0].score
    for i in range(50):
        put(engine, "b", f"noise{i}", 1, [f"replication replication item {i}"])
    after = find(engine, "a", SearchMode.KEYWORD, 1, text="replication")[0].score
    assert after == pytest.approx(before)


def test_metadata_filters(engine: ShardEngine) -> None:
    put(engine, "acme", "ops", 1, ["runbook replication"], team="ops", level=2, public=True)
    put(engine, "acme", "dev", 1, ["design replication"], team="dev", level=3, public=False)

    def docs(filters: dict[str, object]) -> set[str]:
        hits = find(engine, "acme", SearchMode.KEYWORD, 10, text="replication", filters=filters)
        return {h.doc_id for h in hits}

    assert docs({"team": "ops"}) == {"ops"}
    assert docs({"level": 3}) == {"dev"}
    assert docs({"public": True}) == {"ops"}
    assert docs({"public": False}) == {"dev"}
    assert docs({"team": ["ops", "dev"]}) == {"ops", "dev"}
    assert docs({"team": "nobody"}) == set()
    with pytest.raises(InvalidParameter):
        docs({"team": {"nested": 1}})


def test_stored_vectors_are_returned_for_reuse(engine: ShardEngine) -> None:
    put(engine, "acme", "doc", 1, ["first", "second"])
    found = engine.vectors("acme", "doc", 1, [1])
    assert list(found) == [1]
    assert found[1] == pytest.approx(vector("second"), abs=1e-6)


def test_reopening_with_other_settings_is_refused(tmp_path: Path) -> None:
    ShardEngine(tmp_path / "s", EngineSettings(dimension=DIM)).close()
    with pytest.raises(InvalidParameter, match="built with"):
        ShardEngine(tmp_path / "s", EngineSettings(dimension=DIM * 2))


def test_an_abort_after_the_commit_removes_nothing_live(engine: ShardEngine) -> None:
    put(engine, "acme", "doc", 1, ["replication one"])
    put(engine, "acme", "doc", 2, ["replication two"])
    engine.abort("acme", "doc", 2)  # late or redelivered abort of a committed version
    assert [h.version for h in find(engine, "acme", SearchMode.KEYWORD, 5, text="replication")] == [
        2
    ]
