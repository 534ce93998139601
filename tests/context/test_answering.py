"""Answers with citations through the public API and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from tests.context.test_generation import ANSWER_PIECES, FakeChat
from tests.support import http_server
from typer.testing import CliRunner

from shardrag import Shardrag
from shardrag.cli import app
from shardrag.context import NO_ANSWER

REPLICATION = b"# Storage\n\nEach shard has three replicas on different nodes. They apply one log."
CAFETERIA = b"# Office\n\nThe cafeteria opens at noon and closes at three."


def test_an_extractive_answer_cites_the_passage_that_answers(rag: Shardrag) -> None:
    rag.put_document("acme", "storage.md", REPLICATION, filename="storage.md")
    rag.put_document("acme", "office.md", CAFETERIA, filename="office.md")
    result = rag.answer("acme", "how many replicas does a shard have?")
    assert not result.answer.generated
    assert "three replicas" in result.answer.text
    cited = {c.doc_id for c in result.answer.citations}
    assert cited == {"storage.md"}
    assert all(c.marker in result.answer.text for c in result.answer.citations)
    assert {h.doc_id for h in result.hits} == {"storage.md", "office.md"}


def test_no_supporting_passage_means_no_invented_answer(rag: Shardrag) -> None:
    rag.put_document("acme", "office.md", CAFETERIA, filename="office.md")
    result = rag.answer("acme", "what is the capital of Australia?")
    assert result.answer.text == NO_ANSWER and result.answer.citations == []


def test_answers_come_from_the_configured_language_model(tmp_path: Path) -> None:
    FakeChat.requests, FakeChat.mode = [], "ok"
    with http_server(FakeChat) as url, Shardrag.open(tmp_path / "d", llm_url=f"{url}/v1") as rag:
        rag.put_document("acme", "storage.md", REPLICATION, filename="storage.md")
        result = rag.answer("acme", "how many replicas does a shard have?")
    assert result.answer.generated and result.answer.text == "".join(ANSWER_PIECES)
    sent = FakeChat.requests[0][0]["messages"]
    assert "three replicas" in sent[-1]["content"]  # the passage went into the prompt


def test_a_streamed_answer_is_cached_for_answer_and_later_streams(tmp_path: Path) -> None:
    FakeChat.requests, FakeChat.mode = [], "ok"
    question = "how many replicas does a shard have?"
    with http_server(FakeChat) as url, Shardrag.open(tmp_path / "d", llm_url=f"{url}/v1") as rag:
        rag.put_document("acme", "storage.md", REPLICATION, filename="storage.md")
        first = rag.answer_stream("acme", question)
        assert first.generated
        streamed = "".join(first.pieces)
        asked = len(FakeChat.requests)
        whole = rag.answer("acme", question)
        again = rag.answer_stream("acme", question)
        assert list(again.pieces) == [whole.answer.text] and again.generated
        assert len(FakeChat.requests) == asked  # neither asked the model again
        assert rag.result_cache is not None
        assert rag.result_cache.stats().by_kind["answer"].hits == 2
    assert whole.answer.text == streamed.strip() and whole.answer.generated
    assert [h.doc_id for h in whole.hits] == [h.doc_id for h in first.hits]
    assert again.context.passages == first.context.passages


def test_ask_from_the_command_line(tmp_path: Path) -> None:
    with Shardrag.open(tmp_path / "d") as rag:
        rag.put_document("acme", "storage.md", REPLICATION, filename="storage.md")
    result = CliRunner().invoke(
        app,
        [
            "ask",
            "how many replicas per shard?",
            "--tenant",
            "acme",
            "--data-dir",
            str(tmp_path / "d"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert "three replicas" in body["answer"]
    assert body["citations"][0]["doc_id"] == "storage.md" and body["hits"]
