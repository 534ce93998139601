"""Asynchronous writes (``wait=False``) and the read concerns that see them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from shardrag import Shardrag, VersionState
from shardrag.errors import (
    EmptyDocument,
    InvalidParameter,
    ReadConcernTimeout,
    UnsupportedFormat,
)
from shardrag.models import WriteToken


def test_an_async_put_is_pending_and_a_session_read_with_its_token_sees_it(
    rag: Shardrag,
) -> None:
    result = rag.put_document("acme", "notes.txt", b"Otters hold hands while sleeping.", wait=False)
    assert result.state is VersionState.PENDING and result.write_token is not None
    hits = rag.search(
        "acme", "sleeping otters", read_concern="session", write_token=result.write_token
    )
    assert [(h.doc_id, h.version) for h in hits] == [("notes.txt", 1)]


def test_what_needs_no_parsing_is_refused_at_once_even_without_waiting(rag: Shardrag) -> None:
    with pytest.raises(EmptyDocument):
        rag.put_document("acme", "empty.txt", b"", wait=False)
    with pytest.raises(UnsupportedFormat):
        rag.put_document("acme", "tool.exe", b"MZ\x90", filename="tool.exe", wait=False)
    assert rag.pending_writes() == 0


def test_a_document_without_text_fails_its_version_in_the_background(rag: Shardrag) -> None:
    rag.put_document("acme", "notes.txt", b"Walruses sleep in the water.")
    pending = rag.put_document("acme", "notes.txt", b"   \n", wait=False)
    assert pending.state is VersionState.PENDING
    rag.search("acme", "walrus", read_concern="session", write_token=pending.write_token)
    info = rag.get_document("acme", "notes.txt")
    assert (info.latest.version, info.latest.state) == (2, VersionState.FAILED)
    assert info.latest.error_code == "empty_document"
    assert (info.state, info.version) == (VersionState.LIVE, 1)  # the previous version stays
    with pytest.raises(EmptyDocument):  # and waiting for it reports the reason
        rag.put_document("acme", "notes.txt", b"  \n\n ")


def test_quick_async_updates_end_with_the_last_version_live(rag: Shardrag) -> None:
    results = [
        rag.put_document("acme", "counter.txt", f"The counter reads {i}.".encode(), wait=False)
        for i in range(8)
    ]
    assert [r.version for r in results] == list(range(1, 9))
    hits = rag.search("acme", "what does the counter read", read_concern="strong")
    assert [(h.doc_id, h.version, h.text) for h in hits] == [
        ("counter.txt", 8, "The counter reads 7.")
    ]


def test_a_strong_read_waits_for_every_accepted_write_of_the_tenant(rag: Shardrag) -> None:
    for i in range(5):
        rag.put_document(
            "acme", f"fish/{i}.txt", f"Fish number {i} is a trout.".encode(), wait=False
        )
    hits = rag.search("acme", "trout", k=10, read_concern="strong")
    assert {h.doc_id for h in hits} == {f"fish/{i}.txt" for i in range(5)}


def test_a_token_of_another_tenant_or_no_token_is_refused(rag: Shardrag) -> None:
    token = rag.put_document("beta", "b.txt", b"beta text", wait=False).write_token
    rag.create_tenant("acme")
    with pytest.raises(InvalidParameter, match="another tenant"):
        rag.search("acme", "text", read_concern="session", write_token=token)
    with pytest.raises(InvalidParameter, match="write_token"):
        rag.search("acme", "text", read_concern="session")
    with pytest.raises(InvalidParameter):
        rag.search("acme", "text", read_concern="session", write_token="wt1.garbage!")
    forged = WriteToken("acme", "never-written", 99).encode()
    assert rag.search("acme", "text", read_concern="session", write_token=forged) == []


def test_a_session_read_gives_up_after_its_timeout(tmp_path: Path) -> None:
    release = threading.Event()
    with Shardrag.open(tmp_path / "data", read_concern_timeout_seconds=0.3) as slow:
        real_run = slow.pipeline.embed_stage.vectorizer.run

        def stalled(jobs: list) -> None:  # type: ignore[type-arg]
            release.wait(30)
            real_run(jobs)

        slow.pipeline.embed_stage.vectorizer.run = stalled  # type: ignore[method-assign]
        token = slow.put_document("acme", "late.txt", b"late text", wait=False).write_token
        started = time.monotonic()
        with pytest.raises(ReadConcernTimeout):
            slow.search("acme", "late", read_concern="session", write_token=token)
        assert time.monotonic() - started < 10
        release.set()


def test_accepted_writes_survive_a_close_and_finish_after_reopening(tmp_path: Path) -> None:
    with Shardrag.open(tmp_path / "data") as rag:
        for i in range(4):
            rag.put_document(
                "acme", f"d{i}.txt", f"document {i} about walruses".encode(), wait=False
            )
    with Shardrag.open(tmp_path / "data") as again:
        hits = again.search("acme", "walruses", k=10, read_concern="strong")
        assert {h.doc_id for h in hits} == {f"d{i}.txt" for i in range(4)}
        states = {d.doc_id: d.state for d in again.list_documents("acme")}
        assert states == {f"d{i}.txt": VersionState.LIVE for i in range(4)}
