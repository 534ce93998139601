"""The SQLite registry: version numbering, state transitions, manifests, listings."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardrag.errors import DocumentNotFound
from shardrag.models import VersionState
from shardrag.registry import ManifestEntry, NewVersion, PendingVersion
from shardrag.registry.sqlite import SqliteRegistry


@pytest.fixture
def registry(tmp_path: Path) -> SqliteRegistry:
    r = SqliteRegistry(tmp_path / "registry.sqlite3")
    r.ensure_tenant("acme", 0)
    return r


def new(digest: str = "h1", **meta: object) -> NewVersion:
    return NewVersion(digest, "doc.md", 10, dict(meta))


def test_tenant_placement_is_recorded_once(registry: SqliteRegistry) -> None:
    assert registry.ensure_tenant("acme", 5).shard_id == 0  # the first placement sticks
    assert [t.tenant for t in registry.list_tenants()] == ["acme"]
    assert registry.get_tenant("nobody") is None


def test_versions_count_up_and_live_supersedes(registry: SqliteRegistry) -> None:
    assert registry.begin_version("acme", "doc", new("h1")) == 1
    registry.mark_live("acme", "doc", 1)
    assert registry.begin_version("acme", "doc", new("h2")) == 2
    info = registry.document("acme", "doc")
    assert info is not None
    assert info.live is not None and info.live.version == 1
    assert info.latest.state is VersionState.PENDING
    generation = registry.get_tenant("acme").generation  # type: ignore[union-attr]
    registry.mark_live("acme", "doc", 2)
    info = registry.document("acme", "doc")
    assert info is not None and info.version == 2 and info.state is VersionState.LIVE
    assert registry.get_tenant("acme").generation == generation + 1  # type: ignore[union-attr]


def test_an_overtaken_version_never_becomes_live(registry: SqliteRegistry) -> None:
    registry.begin_version("acme", "doc", new("h1"))
    registry.begin_version("acme", "doc", new("h2"))
    registry.mark_live("acme", "doc", 2)
    registry.mark_live("acme", "doc", 1)  # late
    info = registry.document("acme", "doc")
    assert info is not None and info.version == 2


def test_failed_version_keeps_the_live_one_and_its_reason(registry: SqliteRegistry) -> None:
    registry.begin_version("acme", "doc", new("h1"))
    registry.mark_live("acme", "doc", 1)
    registry.begin_version("acme", "doc", new("h2"))
    registry.mark_failed("acme", "doc", 2, "unparseable_document", "bad xref table")
    info = registry.document("acme", "doc")
    assert info is not None and info.state is VersionState.LIVE and info.version == 1
    assert (info.latest.error_code, info.latest.error) == ("unparseable_document", "bad xref table")


def test_tombstones_and_listing_by_state(registry: SqliteRegistry) -> None:
    for doc in ("a", "b", "c"):
        registry.begin_version("acme", doc, new(doc))
        registry.mark_live("acme", doc, 1)
    registry.begin_tombstone("acme", "b")
    (pending,) = registry.pending_versions()
    assert pending == PendingVersion("acme", "b", 2, tombstone=True, created_at=pending.created_at)
    assert pending.created_at > 0
    registry.mark_deleted("acme", "b", 2)
    assert [d.doc_id for d in registry.documents("acme")] == ["a", "c"]
    assert [d.doc_id for d in registry.documents("acme", VersionState.DELETED)] == ["b"]
    assert [d.doc_id for d in registry.documents("acme", limit=1, after="a")] == ["c"]
    with pytest.raises(DocumentNotFound):
        registry.begin_tombstone("acme", "never")


def test_manifests_round_trip(registry: SqliteRegistry) -> None:
    registry.begin_version("acme", "doc", new())
    entries = [ManifestEntry(0, "x", 12), ManifestEntry(1, "y", 30)]
    registry.record_manifest("acme", "doc", 1, entries)
    assert registry.manifest("acme", "doc", 1) == entries
    info = registry.document("acme", "doc")
    assert info is not None and info.latest.chunk_count == 2


def test_deleting_a_tenant_forgets_its_documents(registry: SqliteRegistry) -> None:
    registry.begin_version("acme", "doc", new())
    registry.delete_tenant("acme")
    assert registry.get_tenant("acme") is None
    assert registry.document("acme", "doc") is None


def test_state_survives_reopening(tmp_path: Path) -> None:
    first = SqliteRegistry(tmp_path / "r.sqlite3")
    first.ensure_tenant("acme", 1)
    first.begin_version("acme", "doc", new(team="ops"))
    first.mark_live("acme", "doc", 1)
    first.close()
    again = SqliteRegistry(tmp_path / "r.sqlite3")
    info = again.document("acme", "doc")
    assert info is not None and info.metadata == {"team": "ops"} and info.version == 1
