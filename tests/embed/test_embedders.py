"""Embedders and the embedding cache."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import pytest
from tests.support import QuietHandler, http_server

from shardrag import Shardrag
from shardrag.embed.bundled import BundledEmbedder
from shardrag.embed.cache import EmbeddingCache
from shardrag.embed.http import HttpEmbedder
from shardrag.embed.tokenizer import bundled_tokenizer
from shardrag.errors import EmbedderUnavailable


def test_bundled_model_gives_unit_vectors_that_rank_meaning() -> None:
    embedder = BundledEmbedder()
    query = embedder.embed_query("how are shards replicated?")
    docs = embedder.embed_documents(
        ["Each shard has three replicas on different nodes.", "The cafeteria opens at noon."]
    )
    assert len(query) == embedder.dimension == 384
    assert math.isclose(sum(x * x for x in query), 1.0, rel_tol=1e-4)
    similarity = [sum(a * b for a, b in zip(query, d, strict=True)) for d in docs]
    assert similarity[0] > similarity[1] + 0.2


def test_concurrent_queries_share_a_forward_pass_and_get_their_own_vectors() -> None:
    embedder = BundledEmbedder()
    questions = [f"question number {i} about shard replicas and failover" for i in range(12)]
    alone = [embedder.embed_query(q) for q in questions]
    passes: list[int] = []
    real = embedder._encode_locked

    def counted(model: object, texts: list[str], single_thread: bool) -> list[list[float]]:
        passes.append(len(texts))
        time.sleep(0.05)  # a slow pass, so that the others arrive while it runs
        return real(model, texts, single_thread)

    embedder._encode_locked = counted  # type: ignore[method-assign]
    with ThreadPoolExecutor(len(questions)) as pool:
        together = list(pool.map(embedder.embed_query, questions))
    assert sum(passes) == len(questions) and len(passes) < len(questions)
    for mine, reference in zip(together, alone, strict=True):
        assert max(abs(a - b) for a, b in zip(mine, reference, strict=True)) < 1e-5


def test_tokenizer_counts_and_splits_without_losing_text() -> None:
    tokenizer = bundled_tokenizer()
    assert tokenizer.content_budget == 254
    text = "\u200bleading zero-width " + "replica " * 300
    pieces = tokenizer.split(text, 100)
    assert all(tokenizer.count(p) <= 100 for p in pieces)
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "").strip()


def test_cache_is_scoped_by_tenant_and_model_and_bounded(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c.sqlite3", max_entries=50)
    cache.put_many("a", "m1", {"h": [0.5, 0.25]})
    assert cache.get_many("a", "m1", ["h", "other"]) == {"h": [0.5, 0.25]}
    assert cache.get_many("b", "m1", ["h"]) == {}
    assert cache.get_many("a", "m2", ["h"]) == {}
    for i in range(200):
        cache.put_many("a", "m1", {f"k{i}": [float(i)]})
    assert len(cache) <= 60
    assert cache.get_many("a", "m1", ["k199"]) == {"k199": [199.0]}


class FakeOpenAI(QuietHandler):
    """An OpenAI-compatible /embeddings endpoint with deterministic vectors."""

    calls: ClassVar[list[list[str]]] = []
    fail = False

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.fail or self.path != "/v1/embeddings":
            self.send_response(503)
            self.end_headers()
            return
        FakeOpenAI.calls.append(body["input"])
        data = [
            {"index": i, "embedding": [b / 255 for b in hashlib.sha256(t.encode()).digest()[:16]]}
            for i, t in enumerate(body["input"])
        ]
        payload = json.dumps({"data": list(reversed(data)), "model": body["model"]}).encode()
        self.reply("application/json", payload)


@pytest.fixture
def endpoint() -> Iterator[str]:
    FakeOpenAI.calls, FakeOpenAI.fail = [], False
    with http_server(FakeOpenAI) as url:
        yield f"{url}/v1"


def test_http_embedder_batches_orders_and_normalises(endpoint: str) -> None:
    embedder = HttpEmbedder(endpoint, "test-model", batch_size=2)
    vectors = embedder.embed_documents(["a", "b", "c"])
    assert [len(c) for c in FakeOpenAI.calls] == [2, 1]
    assert embedder.dimension == 16
    assert all(math.isclose(sum(x * x for x in v), 1.0) for v in vectors)
    assert vectors[0] != vectors[1]  # reordered by "index", not by arrival


def test_http_embedder_failure_is_unavailable_not_a_crash(endpoint: str) -> None:
    FakeOpenAI.fail = True
    with pytest.raises(EmbedderUnavailable):
        HttpEmbedder(endpoint, "m").embed_query("x")
    with pytest.raises(EmbedderUnavailable):
        HttpEmbedder("http://127.0.0.1:9/v1", "m", timeout=2).embed_query("x")


def test_shardrag_over_an_http_embedder(tmp_path: Path, endpoint: str) -> None:
    with Shardrag.open(tmp_path / "d", embedder="http", embed_url=endpoint, embed_model="t") as rag:
        rag.put_document("acme", "doc", b"Replicas apply the log in order.")
        assert rag.search("acme", "replicas", k=1)[0].doc_id == "doc"
        FakeOpenAI.fail = True
        with pytest.raises(EmbedderUnavailable):
            rag.put_document("acme", "doc", b"A new version while the endpoint is down.")
        assert rag.get_document("acme", "doc").version == 1
        assert rag.search("acme", "replicas", k=1, mode="keyword")[0].version == 1
    # A data dir keeps the model it was built with.
    with pytest.raises(Exception, match="holds vectors of"):
        Shardrag.open(tmp_path / "d")


def test_a_dropped_tenants_vectors_leave_the_embedding_cache(tmp_path: Path) -> None:
    from shardrag.pipeline.vectors import reuse_scope, tenant_scopes

    cache = EmbeddingCache(tmp_path / "cache.sqlite3", max_entries=100)
    try:
        gone = reuse_scope("acme", "1.0", {"@acl": ["hr"]})
        kept = reuse_scope("acme-2", "1.0", {})
        cache.put_many(gone, "m", {"h": [1.0]})
        cache.put_many(reuse_scope("acme", "2.0", {}), "m", {"h": [2.0]})
        cache.put_many(kept, "m", {"h": [3.0]})
        assert cache.forget(tenant_scopes("acme")) == 2
        assert cache.get_many(gone, "m", ["h"]) == {}
        assert cache.get_many(kept, "m", ["h"]) == {"h": [3.0]}
    finally:
        cache.close()
