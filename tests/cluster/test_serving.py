"""The replica side of a search (``cluster/serving.py``), the same for nodes and the embedded
process: what a replica checks before it searches, and the read-concern wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shardrag import Shardrag
from shardrag.cluster.protocol import SearchCall
from shardrag.cluster.serving import SearchServer
from shardrag.models import Hit, SearchMode, ShardQuery

QUERY = ShardQuery("acme", SearchMode.KEYWORD, 3, "replicas")
HIT = Hit("handbook", 1, 0, "three replicas", 1.0, {})


class FakeEngine:
    def __init__(self) -> None:
        self.asked: list[ShardQuery] = []

    def search(self, query: ShardQuery) -> list[Hit]:
        self.asked.append(query)
        return [HIT]


@dataclass
class FakeReplica:
    engine: FakeEngine
    offset: int = 0
    ready_at: int = 0
    sources: dict[int, int] = field(default_factory=dict)

    def applied(self) -> int:
        return self.offset

    def followed(self, min_source: Mapping[int, int]) -> bool:
        return all(self.sources.get(s, 0) >= o for s, o in min_source.items())


def server_of(replica: FakeReplica) -> tuple[SearchServer, threading.Condition]:
    changed = threading.Condition()
    hosted = {0: replica}
    return SearchServer("node-1", hosted.get, changed), changed  # type: ignore[arg-type]


def test_a_hosted_replica_answers_with_its_engines_hits_and_counts_the_search() -> None:
    replica = FakeReplica(FakeEngine(), offset=5)
    server, _ = server_of(replica)
    reply = server.answer(SearchCall(QUERY, 0))
    assert (reply.hits, reply.applied, reply.error_code) == ([HIT], 5, None)
    assert replica.engine.asked == [QUERY]  # the query as sent, unchanged
    assert server.searches[0] == 1


def test_a_shard_not_hosted_here_is_refused_for_another_replica() -> None:
    server, _ = server_of(FakeReplica(FakeEngine()))
    reply = server.answer(SearchCall(QUERY, 7))
    assert (reply.hits, reply.error_code) == (None, "shard_unavailable")


def test_a_new_replica_answers_nothing_until_it_caught_up_to_where_it_was_placed() -> None:
    replica = FakeReplica(FakeEngine(), offset=3, ready_at=10)
    server, _ = server_of(replica)
    assert server.answer(SearchCall(QUERY, 0)).error_code == "replica_behind"
    assert replica.engine.asked == []
    replica.offset = 10
    assert server.answer(SearchCall(QUERY, 0)).hits == [HIT]


def test_a_replica_behind_the_read_waits_for_its_applier_within_the_calls_wait() -> None:
    replica = FakeReplica(FakeEngine(), offset=4)
    server, changed = server_of(replica)

    def apply_later() -> None:
        time.sleep(0.2)
        with changed:
            replica.offset = 9
            changed.notify_all()

    threading.Thread(target=apply_later).start()
    reply = server.answer(SearchCall(QUERY, 0, min_applied=9, wait_seconds=5.0))
    assert (reply.hits, reply.applied) == ([HIT], 9)


def test_a_replica_still_behind_when_the_wait_ends_refuses() -> None:
    replica = FakeReplica(FakeEngine(), offset=4)
    server, _ = server_of(replica)
    started = time.monotonic()
    reply = server.answer(SearchCall(QUERY, 0, min_applied=9, wait_seconds=0.2))
    assert time.monotonic() - started >= 0.2
    assert (reply.hits, reply.applied, reply.error_code) == (None, 4, "replica_behind")
    assert replica.engine.asked == []


def test_a_move_target_must_have_followed_its_sources_too() -> None:
    replica = FakeReplica(FakeEngine(), offset=9, sources={1: 2})
    server, _ = server_of(replica)
    call = SearchCall(QUERY, 0, min_applied=9, min_source={1: 5})
    assert server.answer(call).error_code == "replica_behind"
    replica.sources[1] = 5
    assert server.answer(call).hits == [HIT]


def test_the_embedded_process_answers_through_the_same_router(tmp_path: Path) -> None:
    with Shardrag.open(tmp_path / "data", shards=2) as rag:
        rag.put_document("acme", "handbook", b"every shard has three replicas")
        assert [h.doc_id for h in rag.search("acme", "replicas")] == ["handbook"]
        assert set(rag.router.breaker_states()) == {"local"}  # the breaker of this process
        status = rag.cluster_status()
        assert [n.node_id for n in status.nodes] == ["local"]
        assert sum(status.nodes[0].searches.values()) == 1
