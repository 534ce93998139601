"""The hot tier in front of search: served from cache, never stale, never shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardrag import Shardrag
from shardrag.engine import ShardEngine

DOC_V1 = b"The replication factor of every shard is three."
DOC_V2 = b"The replication factor of every shard is five since the migration."


def engine_calls(rag: Shardrag, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = ShardEngine.search

    def counting(self: ShardEngine, tenant: str, *args: object, **kwargs: object) -> object:
        calls.append(tenant)
        return original(self, tenant, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ShardEngine, "search", counting)
    return calls


def test_a_repeated_query_is_served_without_touching_the_shard(
    rag: Shardrag, monkeypatch: pytest.MonkeyPatch
) -> None:
    rag.put_document("acme", "doc", DOC_V1)
    calls = engine_calls(rag, monkeypatch)
    first = rag.search("acme", "Replication factor?", k=3)
    again = rag.search("acme", "  replication   FACTOR? ", k=3)
    assert again == first and len(calls) == 1
    rag.search("acme", "replication factor?", k=4)  # other parameters: another entry
    assert len(calls) == 2
    stats = rag.result_cache.stats()  # type: ignore[union-attr]
    assert stats.by_kind["search"].hits == 1
    assert stats.by_kind["query_embedding"].hits >= 1  # k=4 reused the query vector


def test_an_update_makes_the_next_identical_query_return_the_new_content(rag: Shardrag) -> None:
    rag.put_document("acme", "doc", DOC_V1)
    assert "three" in rag.search("acme", "replication factor", k=1)[0].text
    rag.put_document("acme", "doc", DOC_V2)
    hit = rag.search("acme", "replication factor", k=1)[0]
    assert "five" in hit.text and hit.version == 2
    rag.delete_document("acme", "doc")
    assert rag.search("acme", "replication factor", k=1) == []


def test_tenants_never_share_cached_results(rag: Shardrag) -> None:
    rag.put_document("alpha", "doc", DOC_V1, metadata={"owner": "alpha"})
    rag.put_document("beta", "doc", DOC_V1, metadata={"owner": "beta"})
    for _ in range(2):
        for tenant in ("alpha", "beta"):
            hits = rag.search(tenant, "replication factor", k=5)
            assert {h.metadata["owner"] for h in hits} == {tenant}


def test_a_dropped_and_recreated_tenant_sees_none_of_the_old_results(rag: Shardrag) -> None:
    rag.put_document("acme", "doc", DOC_V1)
    assert rag.search("acme", "replication factor", k=1)
    rag.drop_tenant("acme")
    rag.put_document("acme", "other", b"Nothing about that topic here, only lunch menus.")
    assert {h.doc_id for h in rag.search("acme", "replication factor", k=5)} == {"other"}


def test_callers_cannot_corrupt_cached_hits(rag: Shardrag) -> None:
    rag.put_document("acme", "doc", DOC_V1, metadata={"team": "ops"})
    rag.search("acme", "replication", k=1)[0].metadata["team"] = "changed"
    assert rag.search("acme", "replication", k=1)[0].metadata == {"team": "ops"}


def test_the_cache_can_be_turned_off(tmp_path: Path) -> None:
    with Shardrag.open(tmp_path / "d", result_cache_entries=0) as rag:
        rag.put_document("acme", "doc", DOC_V1)
        assert rag.result_cache is None
        assert rag.search("acme", "replication", k=1)[0].doc_id == "doc"
