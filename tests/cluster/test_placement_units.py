"""Placement without servers: the placement record, moves, size rules, rebalance plans, and
the engine keeping one tenant's documents of a restored snapshot."""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import pytest

from shardrag.cluster.placement import Mover, source_of, wanted_shards
from shardrag.cluster.shardmap import Layout, Move, NodeInfo, Placement, SqliteShardMap
from shardrag.engine import EngineSettings, ShardEngine
from shardrag.errors import InvalidParameter, ShardMapConflict
from shardrag.models import Chunk, EmbeddedChunk

LAYOUT = Layout(shards=2, replicas=2, model="m", dimension=4)


def test_a_placement_reads_back_and_a_bare_list_is_a_settled_one() -> None:
    moving = Placement((5, 6), source=(1,), flipped_at=12.5)
    again = Placement.from_json(moving.to_json(), 7)
    assert again == Placement((5, 6), source=(1,), flipped_at=12.5, revision=7)
    assert again.phase == "draining"
    assert Placement((1,), target=(5,)).phase == "copying"
    old = Placement.from_json(b"[1]", 3)
    assert (old.shards, old.phase, old.revision) == ((1,), "settled", 3)


def test_every_chunk_of_a_document_has_one_shard_and_a_split_spreads_documents() -> None:
    placement = Placement((4, 5, 6))
    docs = [f"doc-{i}" for i in range(300)]
    shards = [placement.shard_of(d) for d in docs]
    assert all(placement.shard_of(d) == s for d, s in zip(docs, shards, strict=True))
    counts = {s: shards.count(s) for s in (4, 5, 6)}
    assert min(counts.values()) > 60, counts  # crc32 spreads them
    # A new shard's move keeps exactly the documents the placement sends it.
    for bucket, shard in enumerate(placement.shards):
        move = Move(shard, "t", (1,), bucket, 3)
        kept = {d for d in docs if move.keeps("t", d)}
        assert kept == {d for d in docs if placement.shard_of(d) == shard}
        assert not move.keeps("other", docs[0])


def test_size_thresholds_promote_then_split() -> None:
    shared = Placement((1,))
    assert wanted_shards(99, shared, LAYOUT, promote_at=100, split_at=0) is None
    assert wanted_shards(100, shared, LAYOUT, promote_at=100, split_at=0) == 1
    assert wanted_shards(100, shared, LAYOUT, promote_at=0, split_at=0) is None
    assert wanted_shards(450, shared, LAYOUT, promote_at=100, split_at=200) == 3
    dedicated = Placement((2,))
    assert wanted_shards(450, dedicated, LAYOUT, promote_at=100, split_at=200) == 3
    assert wanted_shards(200, dedicated, LAYOUT, promote_at=100, split_at=200) is None
    assert wanted_shards(450, dedicated, LAYOUT, promote_at=100, split_at=0) is None
    # A dedicated tenant splits into a multiple of its shards, and is never merged back.
    two = Placement((3, 4))
    assert wanted_shards(450, two, LAYOUT, promote_at=100, split_at=200) == 4
    assert wanted_shards(900, two, LAYOUT, promote_at=100, split_at=200) == 6
    assert wanted_shards(10, two, LAYOUT, promote_at=100, split_at=200) is None
    moving = Placement((1,), target=(2,))
    assert wanted_shards(10_000, moving, LAYOUT, promote_at=100, split_at=200) is None


def test_each_shard_of_a_split_has_the_one_source_holding_all_its_documents() -> None:
    # A split of k shards into n (a multiple of k): every document of bucket b of the new
    # placement is on the one old shard ``source_of`` names, so a new replica can start from
    # that shard's snapshot alone.
    for old in [(1,), (5, 6), (7, 8, 9)]:
        for n in (len(old) * 2, len(old) * 3):
            new = Placement(tuple(range(100, 100 + n)))
            for i in range(2_000):
                doc = f"doc-{i}"
                bucket = new.shards.index(new.shard_of(doc))
                assert source_of(old, bucket) == (Placement(old).shard_of(doc),)
                move = Move(new.shards[bucket], "t", source_of(old, bucket), bucket, n)
                assert move.keeps("t", doc)


def test_the_sqlite_map_allocates_shards_once_and_compares_and_sets_placements(
    tmp_path: Path,
) -> None:
    shard_map = SqliteShardMap(tmp_path / "map.sqlite3")
    shard_map.init_layout(LAYOUT)
    assert shard_map.shard_ids() == [0, 1]
    assert shard_map.add_shards(2) == [2, 3]
    assert shard_map.add_shards(1) == [4]
    assert shard_map.shard_ids() == [0, 1, 2, 3, 4]
    shard_map.place_tenant("a", [1])
    placement = shard_map.placement("a")
    assert placement is not None and placement.shards == (1,)
    moved = shard_map.set_placement("a", Placement((1,), target=(2,)), placement.revision)
    with pytest.raises(ShardMapConflict):
        shard_map.set_placement("a", Placement((1,), target=(3,)), placement.revision)
    assert shard_map.placement("a") == moved
    assert shard_map.tenant_shards("a") == [1]
    assert set(shard_map.placements()) == {"a"}
    shard_map.set_move(Move(2, "a", (1,)))
    shard_map.set_move(Move(2, "a", (1,), done=True, done_at=1.0))
    found = shard_map.move(2)
    assert found is not None and found.done
    shard_map.clear_move(2)
    assert shard_map.move(2) is None
    shard_map.close()


def _beat(shard_map: SqliteShardMap, node_id: str, shards: list[int]) -> None:
    shard_map.heartbeat(
        NodeInfo(node_id, 1, "h", dict.fromkeys(shards, 0), heartbeat_at=time.time())
    )


def test_a_dedicated_tenant_is_split_into_a_multiple_of_its_shards_each_with_one_source(
    tmp_path: Path,
) -> None:
    shard_map = SqliteShardMap(tmp_path / "map.sqlite3")
    shard_map.init_layout(LAYOUT)
    for node in ("node-1", "node-2", "node-3"):
        _beat(shard_map, node, [])
    shard_map.add_shards(2)  # the tenant's dedicated shards 2 and 3
    shard_map.place_tenant("t", [2, 3])
    mover = Mover(shard_map, log=None, registry=None)  # type: ignore[arg-type]
    for refused in (1, 3, 5):  # a merge, or not a multiple of 2
        with pytest.raises(InvalidParameter):
            mover.promote("t", refused)
    placement = shard_map.placement("t")
    assert placement is not None and placement.shards == (2, 3) and placement.phase == "settled"
    claimed = mover._claim("t", placement, 4, LAYOUT)
    mover._fill("t", claimed, LAYOUT)
    assert claimed.target == (4, 5, 6, 7)
    moves = [shard_map.move(s) for s in claimed.target]
    assert [(m.sources, m.bucket, m.buckets) for m in moves if m] == [
        ((2,), 0, 4),
        ((3,), 1, 4),
        ((2,), 2, 4),
        ((3,), 3, 4),
    ]
    assert all(len(shard_map.replicas(s).nodes) == 2 for s in claimed.target)
    shard_map.close()


def test_a_rebalance_plan_evens_replicas_without_putting_two_on_one_node(
    tmp_path: Path,
) -> None:
    shard_map = SqliteShardMap(tmp_path / "map.sqlite3")
    shard_map.init_layout(Layout(shards=4, replicas=2, model="m", dimension=4))
    for shard in range(4):
        shard_map.set_replicas(shard, ["node-1", "node-2"], 0)
    for node in ("node-1", "node-2", "node-3", "node-4"):
        _beat(shard_map, node, [])
    mover = Mover(shard_map, log=None, registry=None)  # type: ignore[arg-type]
    plan = mover.plan_rebalance()
    holders = {s: ["node-1", "node-2"] for s in range(4)}
    for move in plan:
        assert move.to_node not in holders[move.shard_id]
        holders[move.shard_id] = [
            move.to_node if n == move.from_node else n for n in holders[move.shard_id]
        ]
    load = {
        n: sum(n in h for h in holders.values()) for n in ("node-1", "node-2", "node-3", "node-4")
    }
    assert load == {"node-1": 2, "node-2": 2, "node-3": 2, "node-4": 2}, plan
    assert all(len(set(h)) == 2 for h in holders.values())
    shard_map.close()


def test_a_restored_shard_keeps_only_the_moving_tenants_documents_of_its_bucket(
    tmp_path: Path,
) -> None:
    engine = ShardEngine(tmp_path / "shard", EngineSettings(dimension=4))
    docs = [f"d{i}" for i in range(12)]
    for tenant in ("moving", "other"):
        for i, doc_id in enumerate(docs):
            text = f"{tenant} {doc_id} text"
            chunk = EmbeddedChunk(Chunk(0, text, "", f"h{i}", 3), [1.0, float(i), 0.5, 0.1])
            engine.upsert(tenant, doc_id, 1, [chunk], {}, None)
            engine.commit(tenant, doc_id, 1)
    move = Move(9, "moving", (1,), bucket=1, buckets=2)
    dropped = engine.retain("moving", lambda d: move.keeps("moving", d))
    kept = {v.doc_id for v in engine.stored_versions()}
    assert {v.tenant for v in engine.stored_versions()} == {"moving"}
    assert kept == {d for d in docs if zlib.crc32(d.encode()) % 2 == 1}
    assert 0 < len(kept) < len(docs)
    assert dropped == len(docs) + (len(docs) - len(kept))  # one point per live version
    engine.close()
