"""The write pipeline over the durable log: redelivery, poison documents, ordering.

Each test runs on the SQLite log and on the real NATS server (``log_settings``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shardrag import Shardrag, VersionState
from shardrag.errors import InternalError
from shardrag.pipeline import stages

FAST_RETRIES = {"max_attempts": 3, "retry_base_seconds": 0.05, "retry_max_seconds": 0.2}


@pytest.fixture
def rag(tmp_path: Path, log_settings: dict[str, Any]) -> Iterator[Shardrag]:
    with Shardrag.open(tmp_path / "data", shards=2, **log_settings, **FAST_RETRIES) as opened:
        yield opened


def snapshot(rag: Shardrag, tenant: str) -> dict[str, Any]:
    """Everything a reader or an operator can observe of a tenant."""
    engine = rag.shards.shard(rag.tenant(tenant).shard_id)
    docs = rag.list_documents(tenant, limit=1000)
    deleted = rag.list_documents(tenant, state="deleted", limit=1000)
    return {
        "documents": [
            (d.doc_id, d.state, d.version, d.chunk_count, d.latest.version, d.latest.state)
            for d in docs + deleted
        ],
        "points": [v for v in engine.stored_versions() if v.tenant == tenant],
        "total_points": engine.points_count(),
        "hits": [
            [(h.doc_id, h.version, h.chunk_index, h.text) for h in rag.search(tenant, q, k=10)]
            for q in ("otters", "replica failover", "tide tables")
        ],
    }


def wait_for(condition: Any, timeout: float = 60, what: str = "the pipeline") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_redelivering_every_event_changes_nothing(rag: Shardrag) -> None:
    rag.put_document("acme", "otters.txt", b"Otters hold hands while sleeping in kelp.")
    rag.put_document("acme", "replicas.md", b"# Replicas\n\nA replica takes over on failover.")
    rag.put_document("acme", "tides.txt", b"Tide tables for the northern harbour.")
    rag.put_document("acme", "otters.txt", b"Otters hold hands. Sea otters use tools too.")
    rag.put_document("acme", "gone.txt", b"A document that is deleted.")
    rag.delete_document("acme", "gone.txt")
    before = snapshot(rag, "acme")

    # Force a redelivery of every event of every stage: append each again under a fresh
    # message id, so the log's deduplication cannot hide it from the consumers.
    events = rag.log.read(">", after=0, limit=10_000, timeout=1)
    assert {e.subject.split(".")[0] for e in events} == {"doc", "chunk", "shard"}
    last: dict[str, int] = {}
    for event in events:
        sequence = rag.log.append(event.subject, event.data, message_id=f"again-{uuid.uuid4()}")
        last[event.subject] = sequence
    applier = rag.pipeline.applier
    assert applier is not None
    shard_seqs = {int(s.split(".")[1]): q for s, q in last.items() if s.startswith("shard.")}
    wait_for(lambda: all(applier.applied(s) >= q for s, q in shard_seqs.items()))
    wait_for(lambda: rag.pending_writes() == 0)
    time.sleep(0.5)  # let the ingest and embed consumers finish their redelivered events

    assert snapshot(rag, "acme") == before
    assert rag.dead_letters("acme") == []


def test_a_poison_document_stops_after_its_attempts_and_can_be_redriven(
    rag: Shardrag, monkeypatch: pytest.MonkeyPatch
) -> None:
    rag.put_document("acme", "notes.txt", b"Walruses sleep in the water.")
    real_parse = stages.parse
    calls: list[bytes] = []

    def parse(data: bytes, *args: Any) -> Any:
        if b"POISON" in data:
            calls.append(data)
            raise RuntimeError("the parser crashed")
        return real_parse(data, *args)

    monkeypatch.setattr(stages, "parse", parse)
    with pytest.raises(InternalError, match="dead-lettered after 3 attempts"):
        rag.put_document("acme", "notes.txt", b"POISON: walruses and a crash.")
    time.sleep(1.0)  # no further retry comes
    assert len(calls) == FAST_RETRIES["max_attempts"]

    info = rag.get_document("acme", "notes.txt")
    assert (info.state, info.version) == (VersionState.LIVE, 1)  # the previous version stays
    assert (info.latest.version, info.latest.state) == (2, VersionState.FAILED)
    assert "the parser crashed" in (info.latest.error or "")
    assert [h.version for h in rag.search("acme", "walruses", k=3)] == [1]
    (dead,) = rag.dead_letters("acme")
    assert (dead.stage, dead.doc_id, dead.version, dead.attempts) == ("ingest", "notes.txt", 2, 3)
    assert "RuntimeError: the parser crashed" in dead.error

    # Fix the cause, then re-drive: the version goes live.
    monkeypatch.setattr(stages, "parse", real_parse)
    rag.redrive("acme", dead.dead_letter_id)
    wait_for(lambda: rag.get_document("acme", "notes.txt").version == 2)
    assert rag.get_document("acme", "notes.txt").state is VersionState.LIVE
    assert rag.dead_letters("acme") == []
    assert [h.version for h in rag.search("acme", "walruses crash", k=3)] == [2]


def test_quick_updates_end_with_the_last_version_even_when_retries_reorder_them(
    rag: Shardrag, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every even version fails its first delivery, so later versions overtake it.
    real_run = stages.IngestStage.run
    failed_once: set[int] = set()

    def flaky(self: stages.IngestStage, event: Any) -> Any:
        version = event.ref.version
        if version % 2 == 0 and version not in failed_once:
            failed_once.add(version)
            raise RuntimeError("transient")
        return real_run(self, event)

    monkeypatch.setattr(stages.IngestStage, "run", flaky)
    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.extend(h.version for h in rag.search("acme", "counter", k=3, mode="keyword"))

    rag.put_document("acme", "counter.txt", b"The counter reads start.")
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        results = [
            rag.put_document("acme", "counter.txt", f"The counter reads {i}.".encode(), wait=False)
            for i in range(20)
        ]
        last = results[-1]
        hits = rag.search("acme", "counter", mode="keyword", read_concern="strong")
    finally:
        stop.set()
        thread.join()
    assert failed_once  # the reordering really happened
    assert [(h.version, h.text) for h in hits] == [(last.version, "The counter reads 19.")]
    info = rag.get_document("acme", "counter.txt")
    assert (info.state, info.version) == (VersionState.LIVE, last.version)
    engine = rag.shards.shard(rag.tenant("acme").shard_id)
    stored = [v for v in engine.stored_versions() if v.doc_id == "counter.txt"]
    assert [(v.version, v.live, v.pending) for v in stored] == [(last.version, 1, 0)]
    # Readers never went back to an older version once they had seen a newer one.
    assert seen == sorted(seen)
    states = {
        v: rag.registry.version("acme", "counter.txt", v).state  # type: ignore[union-attr]
        for v in range(2, last.version)
    }
    assert set(states.values()) <= {VersionState.SUPERSEDED}
