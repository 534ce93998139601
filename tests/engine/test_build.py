"""Index builds in a child process: the shard keeps serving, and no write is lost in the swap."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.engine.test_shard_engine import DIM, chunks, vector

from shardrag.blobs.local import LocalBlobStore
from shardrag.cluster.snapshot import restore_snapshot, take_snapshot
from shardrag.engine import EngineSettings, ShardEngine
from shardrag.engine import build as build_module
from shardrag.engine import shard as shard_module
from shardrag.errors import InternalError
from shardrag.models import SearchMode, ShardQuery

SETTINGS = EngineSettings(dimension=DIM)


def put(engine: ShardEngine, doc: str, version: int, texts: list[str]) -> None:
    engine.upsert("acme", doc, version, chunks(texts), {}, None)
    engine.commit("acme", doc, version)


def state(engine: ShardEngine) -> tuple[object, ...]:
    """What a reader can tell about the shard: stored versions and a few searches (hits as
    a set: equal scores come in the order of the segments, which a build changes), scores to
    6 significant digits (the engine's float32)."""
    searches = tuple(
        frozenset((h.key, float(f"{h.score:.6g}")) for h in engine.search(query))
        for query in (
            ShardQuery("acme", SearchMode.KEYWORD, 500, text="replication"),
            ShardQuery("acme", SearchMode.HYBRID, 500, text="shard", dense=vector("shard")),
        )
    )
    return tuple(engine.stored_versions()), searches


@pytest.fixture
def apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every build runs in a child process, however small the shard."""
    monkeypatch.setattr(shard_module, "BUILD_IN_PROCESS_UP_TO", 0)


@pytest.mark.usefixtures("apart")
def test_a_build_apart_serves_meanwhile_and_loses_no_write(tmp_path: Path) -> None:
    engine = ShardEngine(tmp_path / "shard", SETTINGS)
    twin = ShardEngine(tmp_path / "twin", SETTINGS)  # never built
    for e in (engine, twin):
        for d in range(40):
            put(e, f"d{d}", 1, [f"replication shard {d}", f"tenant {d} notes"])

    served: list[float] = []
    writes = 0
    result: list[bool] = []
    builder = threading.Thread(target=lambda: result.append(engine.optimize()))
    builder.start()
    while engine._child is None and builder.is_alive():
        time.sleep(0.001)
    # While the child builds: searches answer, and writes of every kind land.
    while builder.is_alive():
        if engine._child is not None:
            engine.search(ShardQuery("acme", SearchMode.KEYWORD, 5, text="replication"))
            served.append(time.monotonic())
        if writes < 30:
            for e in (engine, twin):
                put(e, f"d{writes}", 2, [f"replication shard v2 {writes}"])
                if writes % 5 == 0:
                    e.delete("acme", f"d{writes + 1}", 3)
                e.upsert("acme", f"new{writes}", 1, chunks(["pending replication"]), {}, None)
                if writes % 3 == 0:
                    e.abort("acme", f"new{writes}", 1)
            writes += 1
    builder.join()
    assert len(result) == 1  # whether the tiny shard needed indexes is the engine's call
    assert served, "no search was answered while the child built"
    assert writes > 0, "no write ran while the child built"

    # The build's generation is current, the old files are gone, nothing was lost.
    current = (tmp_path / "shard" / build_module.CURRENT).read_text()
    assert sorted(p.name for p in (tmp_path / "shard").iterdir()) == sorted(
        [build_module.CURRENT, current, "shardrag-engine.json"]
    )
    assert state(engine) == state(twin)
    # Writes after the swap land in the new generation, and it reopens as it was.
    for e in (engine, twin):
        put(e, "after", 1, ["replication after the swap"])
    want = state(twin)
    assert state(engine) == want
    engine.close()
    reopened = ShardEngine(tmp_path / "shard", SETTINGS)
    assert state(reopened) == want
    # A second build moves on to the next generation.
    assert reopened.optimize() in (True, False)
    assert (tmp_path / "shard" / build_module.CURRENT).read_text() != current
    assert state(reopened) == want
    reopened.close()
    twin.close()


@pytest.mark.usefixtures("apart")
def test_a_failed_build_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = ShardEngine(tmp_path / "shard", SETTINGS)
    put(engine, "a", 1, ["replication"])
    before = state(engine)

    def failing(target: Path) -> subprocess.Popen[str]:
        code = "import sys; sys.stderr.write('no memory'); sys.exit(3)"
        return subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    monkeypatch.setattr(build_module, "run_child", failing)
    with pytest.raises(InternalError, match="no memory"):
        engine.optimize()
    assert engine._journal is None
    assert sorted(p.name for p in (tmp_path / "shard").iterdir() if p.name.startswith("gen-")) == []
    put(engine, "b", 1, ["replication again"])
    assert len(state(engine)[0]) == len(before[0]) + 1  # type: ignore[arg-type]
    engine.close()


def test_opening_a_shard_removes_what_a_crashed_build_left(tmp_path: Path) -> None:
    engine = ShardEngine(tmp_path / "shard", SETTINGS)
    put(engine, "a", 1, ["replication"])
    want = state(engine)
    engine.close()
    (tmp_path / "shard" / "gen-3").mkdir()  # a copy whose build never finished
    (tmp_path / "shard" / "gen-3" / "segments").mkdir()
    reopened = ShardEngine(tmp_path / "shard", SETTINGS)
    assert not (tmp_path / "shard" / "gen-3").exists()
    assert state(reopened) == want
    reopened.close()


@pytest.mark.usefixtures("apart")
def test_a_snapshot_holds_the_current_generation_only(tmp_path: Path) -> None:
    engine = ShardEngine(tmp_path / "shard", SETTINGS)
    put(engine, "a", 1, ["replication"])
    engine.optimize()  # the files move to a generation
    (tmp_path / "shard" / "gen-9").mkdir()  # as a build under way would have it
    (tmp_path / "shard" / "gen-9" / "half-written").write_bytes(b"x")
    want = state(engine)
    blobs = LocalBlobStore(tmp_path / "blobs")
    snapshot = take_snapshot(engine, 0, 1, "node-a", blobs)
    engine.close()
    restore_snapshot(snapshot, blobs, tmp_path / "restored")
    assert not (tmp_path / "restored" / "gen-9").exists()
    restored = ShardEngine(tmp_path / "restored", SETTINGS)
    assert state(restored) == want
    restored.close()
