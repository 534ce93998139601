"""Crash safety: SIGKILL in the middle of 300 accepted writes loses none and doubles none.

``shardrag serve`` runs as a subprocess; documents are put without waiting (202 once the
version is durably in the log) while it works through them, and it is killed with SIGKILL
mid-stream. After a restart, every accepted document must be live exactly once: no lost
document, no duplicated chunk, nothing left pending — on the SQLite log and on NATS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shardrag import Shardrag, VersionState
from tests.api.conftest import ROOT_KEY, bearer
from tests.pipeline.conftest import Server

TENANT = "crash"
DOCS = 300
KILL_AFTER = 150  # accepted writes before the kill: most of them still in the pipeline


def text_of(i: int) -> bytes:
    # Several chunks per document, so a duplicated or missing chunk would show in the counts.
    body = " ".join(
        f"Paragraph {p} of record {i} describes marker zq{i}x in detail." for p in range(60)
    )
    return f"# Record {i}\n\n{body}\n".encode()


@pytest.mark.timeout(600)
def test_every_accepted_document_is_live_exactly_once_after_a_sigkill(
    tmp_path: Path, log_settings: dict[str, Any]
) -> None:
    data_dir = tmp_path / "data"
    # Deliveries the killed process held come back after ack_wait (NATS; SQLite at once).
    settings = {**log_settings, "ack_wait_seconds": 5, "read_concern_timeout_seconds": 300}
    server = Server(data_dir, settings)
    root = bearer(ROOT_KEY)
    assert server.client.post("/v1/tenants", json={"id": TENANT}, headers=root).status_code == 201
    made = server.client.post(f"/v1/tenants/{TENANT}/keys", json={"role": "admin"}, headers=root)
    key = bearer(made.json()["key"])

    accepted: dict[str, int] = {}
    for i in range(DOCS):
        doc_id = f"records/{i:03d}.md"
        answer = server.client.put(
            f"/v1/tenants/{TENANT}/documents/{doc_id}", content=text_of(i), headers=key
        )
        assert answer.status_code == 202, answer.text
        assert answer.json()["state"] == "pending"
        accepted[doc_id] = answer.json()["version"]
        if len(accepted) == KILL_AFTER:
            break
    pending_at_kill = server.client.get("/readyz").json()["pending_writes"]
    server.kill()
    assert pending_at_kill > 0, "the kill came after the pipeline had finished: not mid-stream"

    server = Server(data_dir, settings)
    # A strong read waits until every write accepted before it is decided.
    answer = server.client.post(
        f"/v1/tenants/{TENANT}/search",
        json={"query": "marker", "k": 5, "read_concern": "strong"},
        headers=key,
    )
    assert answer.status_code == 200, answer.text
    server.stop()

    with Shardrag.open(data_dir, **log_settings) as rag:
        engine = rag.shards.shard(rag.tenant(TENANT).shard_id)
        documents = {d.doc_id: d for d in rag.list_documents(TENANT, limit=1000)}
        assert set(documents) == set(accepted)
        for doc_id, version in accepted.items():
            info = documents[doc_id]
            assert (info.state, info.version) == (VersionState.LIVE, version), info
            assert info.chunk_count > 1
            count = engine.count(TENANT, doc_id)
            assert (count.live, count.pending) == (info.chunk_count, 0), (doc_id, count)
        total = sum(d.chunk_count for d in documents.values())
        assert engine.points_count() == total  # no stray point of any version
        assert rag.pending_writes() == 0
        for i in (0, KILL_AFTER // 2, KILL_AFTER - 1):
            hits = rag.search(TENANT, f"marker zq{i}x", k=3, mode="keyword")
            assert hits[0].doc_id == f"records/{i:03d}.md"
