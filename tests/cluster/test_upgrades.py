"""A rolling upgrade: an index node older than the api refuses a query with fields it does not
know (never ignores them: a field may restrict what may be read), and the router asks a
replica that knows them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from shardrag.cluster.breaker import BreakerState
from shardrag.cluster.protocol import SearchCall, SearchReply, UnknownQueryFields
from shardrag.cluster.router import Router
from shardrag.errors import ShardUnavailable
from shardrag.models import Fusion, SearchMode, ShardQuery
from tests.cluster.test_breaker import FakeMap, FakeTransport

CALL = SearchCall(
    ShardQuery("acme", SearchMode.KEYWORD, 3, "query", fusion=Fusion.RRF, groups=("hr",)), 0
)


def from_a_newer_api(call: SearchCall, **fields: object) -> bytes:
    """``call``'s body with query fields a later version added."""
    body = json.loads(call.encode())
    body["query"].update(fields)
    return json.dumps(body).encode()


def test_a_query_field_this_version_does_not_know_is_refused_not_ignored() -> None:
    assert SearchCall.decode(CALL.encode()) == CALL
    with pytest.raises(UnknownQueryFields) as refused:
        SearchCall.decode(from_a_newer_api(CALL, clearance="secret", region="eu"))
    assert refused.value.names == ["clearance", "region"]
    assert "upgrade the index nodes before the api" in str(refused.value)


@dataclass
class MixedVersions(FakeTransport):
    """Replicas of which ``old`` ones decode the call as a node of the previous version."""

    old: set[str] = field(default_factory=set)

    async def request(self, call: SearchCall, node_id: str | None, timeout: float) -> SearchReply:
        node = node_id or "queue-group"
        if node not in self.old:
            return await super().request(call, node_id, timeout)
        self.asked.append(node)
        try:
            SearchCall.decode(from_a_newer_api(call, clearance="secret"))
        except UnknownQueryFields as exc:
            return SearchReply(node, 7, None, "unsupported_query", str(exc))
        raise AssertionError("an old node decoded a field it does not know")


@pytest.fixture
def mixed() -> Iterator[MixedVersions]:
    transport = MixedVersions()
    yield transport
    transport.close()


def router_over(transport: MixedVersions, nodes: list[str]) -> Router:
    return Router(transport, FakeMap(nodes), "test", search_timeout=2.0, replica_timeout=0.5)


def test_the_router_asks_an_upgraded_replica_when_an_old_one_refuses(
    mixed: MixedVersions,
) -> None:
    mixed.old = {"old"}
    router = router_over(mixed, ["old", "new"])
    for _ in range(10):
        assert router.search([CALL], 3).hits[0].doc_id == "new"
    assert "old" in mixed.asked  # asked, refused, and the search went on
    # Being older is no fault of the node: its breaker stays closed.
    assert router.breaker_states().get("old") in (None, BreakerState.CLOSED)


def test_with_no_upgraded_replica_the_search_fails_saying_what_to_upgrade(
    mixed: MixedVersions,
) -> None:
    mixed.old = {"a", "b"}
    router = router_over(mixed, ["a", "b"])
    with pytest.raises(ShardUnavailable, match="upgrade the index nodes before the api"):
        router.search([CALL], 3)
