"""Search and answers through the API: hits, citations, streaming, the result cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.api.conftest import ApiUnderTest, open_api
from tests.context.test_generation import ANSWER_PIECES, FakeChat
from tests.support import http_server

CORPUS = {
    "replication.md": b"# Replication\n\nEach shard has three replicas placed on distinct nodes. "
    b"A replica that falls behind catches up from the shard log.",
    "cafeteria.md": b"# Cafeteria\n\nThe cafeteria opens at noon and closes at three.",
}


@pytest.fixture(scope="module")
def keys(api: ApiUnderTest) -> dict[str, dict[str, str]]:
    made = api.tenant("answers")
    for name, body in CORPUS.items():
        put = api.client.put(
            f"/v1/tenants/answers/documents/{name}?wait=true", content=body, headers=made["writer"]
        )
        assert put.status_code == 200
    return made


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a text/event-stream body."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_search_returns_hits_with_their_sources(
    api: ApiUnderTest, keys: dict[str, dict[str, str]]
) -> None:
    answer = api.client.post(
        "/v1/tenants/answers/search",
        json={"query": "how many replicas does a shard have", "k": 2, "mode": "hybrid"},
        headers=keys["reader"],
    )
    hits = answer.json()["hits"]
    assert answer.status_code == 200 and len(hits) == 2
    assert hits[0]["doc_id"] == "replication.md" and hits[0]["score"] >= hits[1]["score"]
    keyword = api.client.post(
        "/v1/tenants/answers/search",
        json={"query": "cafeteria noon", "mode": "keyword"},
        headers=keys["reader"],
    ).json()["hits"]
    assert keyword[0]["doc_id"] == "cafeteria.md"


def test_answer_cites_the_passages_it_uses(
    api: ApiUnderTest, keys: dict[str, dict[str, str]]
) -> None:
    answer = api.client.post(
        "/v1/tenants/answers/answer",
        json={"question": "How many replicas does each shard have?"},
        headers=keys["reader"],
    )
    body = answer.json()
    assert answer.status_code == 200 and "three replicas" in body["answer"]
    cited = {c["number"]: c for c in body["citations"]}
    assert cited and all(f"[{n}]" in body["answer"] for n in cited)
    assert any(c["doc_id"] == "replication.md" for c in cited.values())
    assert body["generated"] is False and body["hits"]


def test_extractive_answer_streams_as_server_sent_events(
    api: ApiUnderTest, keys: dict[str, dict[str, str]]
) -> None:
    answer = api.client.post(
        "/v1/tenants/answers/answer",
        json={"question": "When does the cafeteria open?", "stream": True},
        headers=keys["reader"],
    )
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = sse_events(answer.text)
    names = [name for name, _ in events]
    assert names[0] == "context" and names[-1] == "done" and "delta" in names
    text = "".join(data["text"] for name, data in events if name == "delta")
    done = events[-1][1]
    assert done["answer"] == text.strip() and "noon" in text
    assert {c["doc_id"] for c in done["citations"]} == {"cafeteria.md"}


@pytest.fixture
def llm_api(tmp_path: Path) -> Iterator[ApiUnderTest]:
    FakeChat.requests, FakeChat.mode = [], "ok"
    with http_server(FakeChat) as url:
        under_test = open_api(tmp_path / "data", llm_url=f"{url}/v1/")
        try:
            yield under_test
        finally:
            under_test.rag.close()


def test_llm_answer_streams_the_models_pieces_with_citations(llm_api: ApiUnderTest) -> None:
    keys = llm_api.tenant("llm")
    llm_api.client.put(
        "/v1/tenants/llm/documents/replication.md?wait=true",
        content=CORPUS["replication.md"],
        headers=keys["writer"],
    )
    answer = llm_api.client.post(
        "/v1/tenants/llm/answer",
        json={"question": "How many replicas?", "stream": True},
        headers=keys["reader"],
    )
    events = sse_events(answer.text)
    assert [d["text"] for n, d in events if n == "delta"] == ANSWER_PIECES
    assert events[-1][0] == "done" and events[-1][1]["answer"] == "".join(ANSWER_PIECES).strip()
    FakeChat.mode = "cut"
    cut = llm_api.client.post(
        "/v1/tenants/llm/answer",
        json={"question": "How many replicas, again?", "stream": True},
        headers=keys["reader"],
    )
    last = sse_events(cut.text)[-1]
    assert last[0] == "error" and last[1]["error"]["code"] == "unavailable"


def test_a_repeated_answer_is_served_from_the_cache_until_the_documents_change(
    api: ApiUnderTest, keys: dict[str, dict[str, str]]
) -> None:
    def ask() -> dict[str, Any]:
        answer = api.client.post(
            "/v1/tenants/answers/answer",
            json={"question": "When does the cafeteria close?"},
            headers=keys["reader"],
        )
        body: dict[str, Any] = answer.json()
        return body

    stats = api.rag.result_cache.stats if api.rag.result_cache else None
    assert stats is not None
    first = ask()
    hits_before = stats().by_kind["answer"].hits
    assert ask() == first and stats().by_kind["answer"].hits == hits_before + 1
    api.client.put(
        "/v1/tenants/answers/documents/cafeteria.md?wait=true",
        content=b"# Cafeteria\n\nThe cafeteria opens at noon and closes at five.",
        headers=keys["writer"],
    )
    assert "five" in ask()["answer"]
