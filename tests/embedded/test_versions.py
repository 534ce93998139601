"""Versioned updates through the public API: live, failed, deleted, reused, concurrent."""

from __future__ import annotations

import random
import sys
import threading

import pytest

from shardrag import DocumentInput, Shardrag, VersionState
from shardrag.errors import DocumentNotFound, UnparseableDocument

HANDBOOK_V1 = b"""# Handbook

## Replication

Every shard is replicated to three nodes. Each replica applies the shard log in order.

## Failover

When a node stops answering, the router sends the query to another replica.
"""


def test_put_returns_once_live_and_search_finds_it(rag: Shardrag) -> None:
    result = rag.put_document(
        "acme", "handbook", HANDBOOK_V1, filename="handbook.md", metadata={"team": "ops"}
    )
    assert (result.version, result.state) == (1, VersionState.LIVE)
    info = rag.get_document("acme", "handbook")
    assert (info.version, info.state, info.chunk_count) == (1, VersionState.LIVE, 2)
    assert info.metadata == {"team": "ops"}
    hits = rag.search("acme", "how are shards replicated?", k=1)
    assert hits[0].doc_id == "handbook"
    assert "replicated to three nodes" in hits[0].text
    assert hits[0].context == "Handbook > Replication"
    assert hits[0].metadata == {"team": "ops"}


def test_every_mode_and_filter_works(rag: Shardrag) -> None:
    rag.put_document("acme", "ops", HANDBOOK_V1, filename="ops.md", metadata={"team": "ops"})
    rag.put_document(
        "acme",
        "dev",
        b"Design notes: the router caches replies.",
        filename="dev.txt",
        metadata={"team": "dev"},
    )
    for mode in ("hybrid", "dense", "keyword"):
        hits = rag.search("acme", "router replica", k=5, mode=mode)
        assert {h.doc_id for h in hits} == {"ops", "dev"}, mode
    hits = rag.search("acme", "router replica", k=5, filters={"team": "dev"})
    assert {h.doc_id for h in hits} == {"dev"}


def test_reputting_the_same_bytes_is_a_no_op(rag: Shardrag) -> None:
    first = rag.put_document("acme", "handbook", HANDBOOK_V1, filename="handbook.md")
    again = rag.put_document("acme", "handbook", HANDBOOK_V1, filename="handbook.md")
    assert again.unchanged and again.version == first.version
    changed_meta = rag.put_document(
        "acme", "handbook", HANDBOOK_V1, filename="handbook.md", metadata={"team": "ops"}
    )
    assert not changed_meta.unchanged and changed_meta.version == 2


def test_an_edit_reembeds_only_the_changed_chunk(rag: Shardrag) -> None:
    rag.put_document("acme", "handbook", HANDBOOK_V1, filename="handbook.md")
    edited = HANDBOOK_V1.replace(b"sends the query", b"retries the query")
    result = rag.put_document("acme", "handbook", edited, filename="handbook.md")
    assert (result.embedded_chunks, result.reused_vectors) == (1, 1)
    hits = rag.search("acme", "router retries", k=5)
    assert {h.version for h in hits} == {2}
    assert any("retries the query" in h.text for h in hits)


def test_a_failed_version_leaves_the_previous_one_live(rag: Shardrag) -> None:
    rag.put_document("acme", "handbook", HANDBOOK_V1, filename="handbook.md")
    with pytest.raises(UnparseableDocument):
        rag.put_document("acme", "handbook", b"%PDF-1.4 this is not a pdf", filename="handbook.pdf")
    info = rag.get_document("acme", "handbook")
    assert info.state is VersionState.LIVE and info.version == 1
    assert info.latest.version == 2 and info.latest.state is VersionState.FAILED
    assert info.latest.error_code == "unparseable_document" and info.latest.error
    hits = rag.search("acme", "replicated", k=5)
    assert hits and {h.version for h in hits} == {1}
    assert rag.shards.shard(rag.tenant("acme").shard_id).count("acme", "handbook", 2).pending == 0


def test_delete_removes_every_chunk(rag: Shardrag) -> None:
    long_doc = "\n\n".join(
        f"Paragraph {i} about shard replication and logs." * 8 for i in range(30)
    )
    result = rag.put_document("acme", "long", long_doc.encode(), filename="long.txt")
    assert result.chunk_count > 5
    rag.delete_document("acme", "long")
    engine = rag.shards.shard(rag.tenant("acme").shard_id)
    count = engine.count("acme", "long")
    assert (count.live, count.pending) == (0, 0)
    assert rag.search("acme", "shard replication", k=50) == []
    assert rag.get_document("acme", "long").state is VersionState.DELETED
    assert rag.list_documents("acme") == []
    assert [d.doc_id for d in rag.list_documents("acme", state="deleted")] == ["long"]
    with pytest.raises(DocumentNotFound):
        rag.delete_document("acme", "long")


def test_a_deleted_document_can_come_back(rag: Shardrag) -> None:
    rag.put_document("acme", "handbook", HANDBOOK_V1, filename="handbook.md")
    rag.delete_document("acme", "handbook")
    result = rag.put_document("acme", "handbook", HANDBOOK_V1, filename="handbook.md")
    assert result.version == 3 and result.embedded_chunks == 0  # vectors from the cache
    assert rag.search("acme", "replicated", k=1)[0].version == 3


def test_batch_outcomes_are_per_document(rag: Shardrag) -> None:
    outcomes = rag.put_documents(
        "acme",
        [
            DocumentInput("good.md", HANDBOOK_V1, filename="good.md"),
            DocumentInput("bad.pdf", b"not a pdf", filename="bad.pdf"),
            DocumentInput("empty.txt", b"", filename="empty.txt"),
        ],
    )
    assert outcomes[0].state is VersionState.LIVE  # type: ignore[union-attr]
    assert getattr(outcomes[1], "code", None) == "unparseable_document"
    assert getattr(outcomes[2], "code", None) == "empty_document"
    assert {h.doc_id for h in rag.search("acme", "replica", k=10)} == {"good.md"}


def test_updates_under_concurrent_search_never_hide_or_double_a_document(rag: Shardrag) -> None:
    # Each version has a different number of chunks and names itself in every chunk.
    def body(version: int) -> bytes:
        parts = [
            f"Section {i}. The zebra protocol, revision {version}, part {i}." * 12
            for i in range(1 + version % 3)
        ]
        return "\n\n".join(parts).encode()

    rag.put_document("acme", "zebra", body(1), filename="zebra.txt")
    rag.put_document("acme", "other", b"Unrelated text about lions.", filename="other.txt")
    stop = threading.Event()
    problems: list[str] = []
    searches = 0

    def search() -> None:
        nonlocal searches
        while not stop.is_set():
            for mode in ("hybrid", "keyword", "dense"):
                hits = [
                    h
                    for h in rag.search("acme", "zebra protocol", k=20, mode=mode)
                    if h.doc_id == "zebra"
                ]
                versions = {h.version for h in hits}
                if len(versions) != 1:
                    problems.append(f"{mode}: versions {versions}")
                searches += 1

    def update(worker: int) -> None:
        rng = random.Random(worker)
        for _ in range(6):
            rag.put_document("acme", "zebra", body(rng.randint(2, 1000)), filename="zebra.txt")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    readers = [threading.Thread(target=search) for _ in range(3)]
    writers = [threading.Thread(target=update, args=(w,)) for w in range(2)]
    try:
        for t in readers + writers:
            t.start()
        for t in writers:
            t.join()
    finally:
        stop.set()
        for t in readers:
            t.join()
        sys.setswitchinterval(interval)
    assert problems == []
    assert searches > 20
    info = rag.get_document("acme", "zebra")
    assert info.version == info.latest.version == 13  # 1 + 2 writers x 6 updates
    final = {h.version for h in rag.search("acme", "zebra protocol", k=20) if h.doc_id == "zebra"}
    assert final == {13}


def test_content_shared_by_documents_of_one_batch_is_embedded_once(rag: Shardrag) -> None:
    outcomes = rag.put_documents(
        "acme",
        [
            DocumentInput("a.txt", b"Identical text about replicas.", filename="a.txt"),
            DocumentInput("b.txt", b"Identical text about replicas.", filename="b.txt"),
        ],
    )
    embedded = [getattr(o, "embedded_chunks", None) for o in outcomes]
    reused = [getattr(o, "reused_vectors", None) for o in outcomes]
    # The model embeds the text once; the second document gets its vector from the first
    # (in one batch) or from the embedding cache (in the next one).
    assert embedded == [1, 0] and reused[0] == 0
    assert {h.doc_id for h in rag.search("acme", "replicas", k=5)} == {"a.txt", "b.txt"}


def test_a_tenant_created_again_writes_its_documents_afresh(rag: Shardrag) -> None:
    # Its versions count from 1 again: their events must not be dropped as repeats of the
    # first incarnation's (they carry the tenant's creation time in their ids).
    rag.put_document("again", "doc", b"the first incarnation wrote about zebras", filename="a.txt")
    rag.drop_tenant("again")
    written = rag.put_document(
        "again", "doc", b"the second incarnation writes about lighthouses", filename="a.txt"
    )
    assert (written.version, written.state) == (1, VersionState.LIVE)
    hits = rag.search("again", "lighthouses", k=3, mode="keyword")
    assert [h.doc_id for h in hits] == ["doc"]
    assert rag.search("again", "zebras", k=3, mode="keyword") == []
