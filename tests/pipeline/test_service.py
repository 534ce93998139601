"""The pipeline through the API and the CLI: read-your-writes, dead letters, the reconciler."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shardrag import Shardrag, VersionState
from shardrag.cli import app as cli
from shardrag.clikit import console
from shardrag.pipeline import stages
from shardrag.registry import NewVersion
from tests.api.conftest import ApiUnderTest, open_api

runner = CliRunner()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ApiUnderTest]:
    api = open_api(tmp_path / "data", max_attempts=2, retry_base_seconds=0.05)
    try:
        yield api
    finally:
        api.rag.close()


def test_read_your_writes_holds_for_200_puts_each_followed_by_a_search(
    service: ApiUnderTest,
) -> None:
    keys = service.tenant("ryw")
    misses = []
    for i in range(200):
        doc_id = f"notes/{i % 3}.txt"  # updates as well as new documents
        put = service.client.put(
            f"/v1/tenants/ryw/documents/{doc_id}",
            content=f"Entry {i} records the marker ryw{i}q.".encode(),
            headers=keys["writer"],
        )
        assert put.status_code == 202, put.text
        written = put.json()
        found = service.client.post(
            "/v1/tenants/ryw/search",
            json={
                "query": f"ryw{i}q",
                "mode": "keyword",
                "k": 3,
                "read_concern": "session",
                "write_token": written["write_token"],
            },
            headers=keys["reader"],
        )
        assert found.status_code == 200, found.text
        hits = [(h["doc_id"], h["version"]) for h in found.json()["hits"]]
        if hits[:1] != [(doc_id, written["version"])]:
            misses.append((i, hits))
    assert misses == []


def test_dead_letters_are_listed_for_the_tenant_admin_and_redriven(
    service: ApiUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = service.tenant("dl")
    other = service.tenant("dl-other")
    real_parse = stages.parse

    def broken(data: bytes, *args: Any) -> Any:
        raise OSError("parser service down")

    monkeypatch.setattr(stages, "parse", broken)
    put = service.client.put(
        "/v1/tenants/dl/documents/a.txt",
        params={"wait": "true"},
        content=b"Kelp forests",
        headers=keys["writer"],
    )
    assert put.status_code == 500 and put.json()["error"]["code"] == "internal_error", put.text
    assert "dead-lettered after 2 attempts" in put.json()["error"]["message"]

    listed = service.client.get("/v1/tenants/dl/dead-letters", headers=keys["admin"])
    assert listed.status_code == 200, listed.text
    (dead,) = listed.json()["dead_letters"]
    assert (dead["stage"], dead["doc_id"], dead["version"], dead["attempts"]) == (
        "ingest",
        "a.txt",
        1,
        2,
    )
    assert "OSError: parser service down" in dead["error"]
    for role in ("reader", "writer"):
        refused = service.client.get("/v1/tenants/dl/dead-letters", headers=keys[role])
        assert refused.status_code == 403
    mine = service.client.get("/v1/tenants/dl-other/dead-letters", headers=other["admin"])
    assert mine.json()["dead_letters"] == []  # another tenant's dead letters are not its own
    wrong = service.client.post(
        f"/v1/tenants/dl-other/dead-letters/{dead['dead_letter_id']}/redrive",
        headers=other["admin"],
    )
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "dead_letter_not_found"

    monkeypatch.setattr(stages, "parse", real_parse)
    redriven = service.client.post(
        f"/v1/tenants/dl/dead-letters/{dead['dead_letter_id']}/redrive", headers=keys["admin"]
    )
    assert redriven.status_code == 200, redriven.text
    deadline = time.monotonic() + 60
    while service.rag.get_document("dl", "a.txt").state is not VersionState.LIVE:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    listed = service.client.get("/v1/tenants/dl/dead-letters", headers=keys["admin"])
    assert listed.json()["dead_letters"] == []
    audit = service.client.get("/v1/tenants/dl/audit", headers=keys["admin"]).json()
    assert any(e["action"] == "dead_letter.redrive" for e in audit["events"])


def drift(rag: Shardrag) -> dict[str, Any]:
    """Put documents, then break the registry and the shard apart in every known way."""
    rag.put_document("acme", "keep.txt", b"Lighthouses guide ships at night.")
    rag.put_document("acme", "deleted.txt", b"Harbour pilots board ships offshore.")
    rag.put_document("lost", "one.txt", b"Quasars outshine their galaxies.")
    rag.put_document("lost", "two.txt", b"Pulsars spin hundreds of times a second.")
    rag.put_document("ghost", "g.txt", b"Ghost tenant text about lanterns.")
    engine = rag.shards.shard(0)
    # Orphaned vectors: pending points of a version the registry says failed.
    version = rag.registry.begin_version("acme", "keep.txt", NewVersion("0" * 64, None, 10, {}))
    rag.registry.mark_failed("acme", "keep.txt", version, "internal_error", "crashed")
    points = engine.vectors("acme", "keep.txt", 1, [0])
    chunk = rag.search("acme", "lighthouses", k=1)[0]
    from shardrag.models import Chunk, EmbeddedChunk

    engine.upsert(
        "acme",
        "keep.txt",
        version,
        [EmbeddedChunk(Chunk(0, chunk.text, "", "h", 5), points[0])],
        {},
        None,
    )
    # Phantom documents: the shard lost a tenant's points.
    engine.drop_tenant("lost")
    # A lost tombstone: deleted in the registry, still live in the shard.
    tombstone = rag.registry.begin_tombstone("acme", "deleted.txt")
    rag.registry.mark_deleted("acme", "deleted.txt", tombstone)
    # A tenant the registry forgot, whose points stayed.
    rag.registry.delete_tenant("ghost")
    return {"failed_version": version}


def test_the_reconciler_finds_and_repairs_orphans_phantoms_and_lost_tombstones(
    tmp_path: Path,
) -> None:
    with Shardrag.open(tmp_path / "data", shards=1) as rag:
        drift(rag)
        engine = rag.shards.shard(0)
        assert rag.search("lost", "quasars", k=3) == []
        hits = rag.search("acme", "harbour pilots", k=3, mode="keyword")
        assert [h.doc_id for h in hits] == ["deleted.txt"]

        dry = rag.reconcile(dry_run=True)
        assert dry.counts == {
            "orphaned_vectors": 2,
            "phantom_document": 2,
            "lost_tombstone": 1,
        }, dry.repairs
        assert rag.search("lost", "quasars", k=3) == []  # a dry run repairs nothing

        report = rag.reconcile()
        assert report.counts == dry.counts
        kinds = {(r.kind, r.tenant, r.doc_id) for r in report.repairs}
        assert ("orphaned_vectors", "ghost", "*") in kinds
        assert ("orphaned_vectors", "acme", "keep.txt") in kinds
        assert ("phantom_document", "lost", "one.txt") in kinds
        assert ("lost_tombstone", "acme", "deleted.txt") in kinds

        deadline = time.monotonic() + 60
        while rag.reconcile(dry_run=True).counts:
            assert time.monotonic() < deadline, rag.reconcile(dry_run=True).repairs
            time.sleep(0.1)
        assert {h.doc_id for h in rag.search("lost", "quasars pulsars", k=5)} == {
            "one.txt",
            "two.txt",
        }
        assert rag.search("acme", "harbour pilots", k=3, mode="keyword") == []
        assert engine.count("ghost").live == 0
        stored = {(v.tenant, v.doc_id, v.version) for v in engine.stored_versions()}
        assert ("acme", "keep.txt", 2) not in stored
        assert [h.doc_id for h in rag.search("acme", "lighthouses", k=3)] == ["keep.txt"]


def test_reconcile_from_the_cli_and_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Shardrag.open(tmp_path / "data", shards=1) as rag:
        rag.put_document("lost", "one.txt", b"Quasars outshine their galaxies.")
        rag.shards.shard(0).drop_tenant("lost")
    result = runner.invoke(
        cli, ["reconcile", "--dry-run", "--json", "--data-dir", str(tmp_path / "data")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["counts"] == {"phantom_document": 1}
    # The console's width is read from COLUMNS once, when the CLI is first imported (by
    # whichever test came first): give it room for the table's columns here.
    monkeypatch.setattr(console, "width", 200)
    result = runner.invoke(cli, ["reconcile", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "repaired 1" in result.output and "phantom_document" in result.output

    api = open_api(tmp_path / "data", shards=1)
    try:
        keys = api.tenant("someone")
        answer = api.client.post(
            "/v1/admin/reconcile", params={"dry_run": "true"}, headers=api.root
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["dry_run"] is True and answer.json()["shards"] == [0]
        refused = api.client.post("/v1/admin/reconcile", headers=keys["admin"])
        assert refused.status_code == 403
    finally:
        api.rag.close()
