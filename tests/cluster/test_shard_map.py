"""The shard map's contract, on SQLite (embedded) and on NATS JetStream key-value (cluster)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardrag.cluster import Layout, NodeInfo, ShardMap, SnapshotRef, SqliteShardMap
from shardrag.cluster.kvmap import NatsShardMap
from shardrag.cluster.shardmap import initial_replicas
from shardrag.errors import InvalidParameter, ShardMapConflict
from tests.support import NATS_URL, nats_is_up, require

TTL = 1.0
LAYOUT = Layout(shards=2, replicas=2, model="m", dimension=384)


@pytest.fixture(params=["sqlite", "nats"])
def shard_map(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ShardMap]:
    """A fresh, empty map of each backend."""
    if request.param == "sqlite":
        store: ShardMap = SqliteShardMap(tmp_path / "map.sqlite3", TTL)
        yield store
        store.close()
        return
    require(nats_is_up(), "NATS with JetStream on 127.0.0.1:4222")
    nats = NatsShardMap(NATS_URL, f"maptest-{secrets.token_hex(4)}", TTL)
    try:
        yield nats
    finally:
        nats.drop()
        nats.close()


def node(node_id: str, **applied: int) -> NodeInfo:
    """A heartbeat of ``node_id`` now."""
    shards = {int(k.removeprefix("s")): v for k, v in applied.items()}
    return NodeInfo(node_id, 1234, "host", shards, time.time(), time.time(), shards)


def test_the_layout_is_written_once_and_checked_after(shard_map: ShardMap) -> None:
    assert shard_map.layout() is None
    stored = shard_map.init_layout(LAYOUT)
    assert (stored.shards, stored.model, stored.dimension) == (2, "m", 384)
    assert stored.revision > 0
    assert shard_map.init_layout(LAYOUT) == stored
    with pytest.raises(InvalidParameter, match="shards"):
        shard_map.init_layout(Layout(4, 2, "m", 384))
    with pytest.raises(InvalidParameter, match="model"):
        shard_map.init_layout(Layout(2, 2, "other", 384))


def test_replicas_change_only_by_compare_and_set(shard_map: ShardMap) -> None:
    assert shard_map.replicas(0).nodes == ()
    first = shard_map.set_replicas(0, ["a", "b"], 0)
    assert shard_map.replicas(0) == first
    with pytest.raises(ShardMapConflict):
        shard_map.set_replicas(0, ["c"], 0)  # created by someone else meanwhile
    second = shard_map.set_replicas(0, ["a", "b", "c"], first.revision)
    assert second.revision > first.revision
    with pytest.raises(ShardMapConflict):
        shard_map.set_replicas(0, ["a"], first.revision)  # a stale read
    assert shard_map.replicas(0).nodes == ("a", "b", "c")


def test_two_writers_racing_on_one_entry_never_both_win(shard_map: ShardMap) -> None:
    base = shard_map.set_replicas(1, ["a"], 0)
    outcomes: list[str] = []

    def add(node_id: str) -> None:
        try:
            shard_map.set_replicas(1, ["a", node_id], base.revision)
            outcomes.append("won")
        except ShardMapConflict:
            outcomes.append("lost")

    threads = [threading.Thread(target=add, args=(f"n{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost"] * 5 + ["won"]
    assert len(shard_map.replicas(1).nodes) == 2


def test_a_tenant_is_placed_once_and_forgotten_on_drop(shard_map: ShardMap) -> None:
    assert shard_map.tenant_shards("acme") is None
    assert shard_map.place_tenant("acme", [1]) == [1]
    assert shard_map.place_tenant("acme", [0]) == [1]  # the first placement stands
    assert shard_map.tenant_shards("acme") == [1]
    shard_map.forget_tenant("acme")
    assert shard_map.tenant_shards("acme") is None
    assert shard_map.place_tenant("acme", [0]) == [0]


def test_a_node_without_heartbeat_drops_out_after_the_ttl(shard_map: ShardMap) -> None:
    shard_map.heartbeat(node("n1", s0=5))
    shard_map.heartbeat(node("n2", s0=3, s1=7))
    live = {n.node_id: n for n in shard_map.nodes()}
    assert set(live) == {"n1", "n2"}
    assert live["n2"].applied == {0: 3, 1: 7}
    shard_map.leave("n1")
    assert [n.node_id for n in shard_map.nodes()] == ["n2"]
    time.sleep(TTL + 0.5)
    assert shard_map.nodes() == []


def test_a_new_reader_of_the_map_sees_every_live_node_from_its_first_call() -> None:
    # A new process (``cluster status``, a restarted router) watches the heartbeats; while the
    # watch is still delivering what was stored before it began it knows only some nodes.
    require(nats_is_up(), "NATS with JetStream on 127.0.0.1:4222")
    name = f"maptest-{secrets.token_hex(4)}"
    writer = NatsShardMap(NATS_URL, name, 30.0)
    try:
        expected = [f"n{i:03d}" for i in range(300)]
        for node_id in expected:
            writer.heartbeat(node(node_id, s0=1))
        for _ in range(3):
            reader = NatsShardMap(NATS_URL, name, 30.0)
            try:
                seen = [[n.node_id for n in reader.nodes()] for _ in range(200)]
            finally:
                reader.close()
            assert [len(s) for s in seen if s != expected] == []
    finally:
        writer.drop()
        writer.close()


def test_only_a_newer_snapshot_replaces_the_recorded_one(shard_map: ShardMap) -> None:
    assert shard_map.snapshot(0) is None
    newer = SnapshotRef(0, "d2", 20, "n1", time.time(), 10)
    shard_map.record_snapshot(newer)
    shard_map.record_snapshot(SnapshotRef(0, "d1", 10, "n2", time.time(), 10))
    assert shard_map.snapshot(0) == newer
    assert shard_map.snapshot(1) is None


def test_initial_replicas_spread_copies_over_distinct_nodes() -> None:
    placed = initial_replicas(2, 2, ["n1", "n2", "n3"])
    assert placed == {0: ["n1", "n2"], 1: ["n2", "n3"]}
    assert all(len(set(nodes)) == 2 for nodes in placed.values())
    with pytest.raises(InvalidParameter):
        initial_replicas(2, 3, ["n1", "n2"])
