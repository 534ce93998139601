"""Generation through an OpenAI-compatible chat endpoint, plain and streamed, and its failures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from tests.support import QuietHandler, http_server

from shardrag.context import Context, ContextAssembler, OpenAIChatGenerator, render_prompt
from shardrag.embed.tokenizer import bundled_tokenizer
from shardrag.errors import Unavailable
from shardrag.models import Hit

ANSWER_PIECES = ["Each shard has ", "three replicas ", "[2]."]


def delta(content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    piece = {} if content is None else {"content": content}
    return {"choices": [{"index": 0, "delta": piece, "finish_reason": finish}]}


class FakeChat(QuietHandler):
    """An OpenAI-compatible /chat/completions endpoint that answers ``ANSWER_PIECES``.

    ``mode``: "ok", "fail" (HTTP 500), "garbage" (not JSON), "cut" (a stream that stops
    mid-answer), "error-event" (a stream that reports an error).
    """

    requests: ClassVar[list[tuple[dict[str, Any], str | None]]] = []
    mode: ClassVar[str] = "ok"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeChat.requests.append((body, self.headers.get("Authorization")))
        if self.mode == "fail" or self.path != "/v1/chat/completions":
            self.send_error(500, "model crashed")
        elif self.mode == "garbage":
            self.reply("application/json", b"<html>proxy error</html>")
        elif body.get("stream"):
            self.reply("text/event-stream", self._events())
        else:
            answer = {
                "choices": [{"message": {"role": "assistant", "content": "".join(ANSWER_PIECES)}}]
            }
            self.reply("application/json", json.dumps(answer).encode())

    def _events(self) -> bytes:
        events: list[dict[str, Any] | str] = [
            {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
            *(delta(piece) for piece in ANSWER_PIECES),
            delta(finish="stop"),
            "[DONE]",
            delta("after the end"),
        ]
        if self.mode == "cut":
            events = events[:3]
        elif self.mode == "error-event":
            events = [events[1], {"error": {"message": "overloaded"}}]
        lines = [": keep-alive\n\n", "event: message\n"]
        lines += [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
        return "".join(lines).encode()


@pytest.fixture
def endpoint() -> Iterator[str]:
    FakeChat.requests, FakeChat.mode = [], "ok"
    with http_server(FakeChat) as url:
        yield f"{url}/v1/"


@pytest.fixture
def context() -> Context:
    hits = [
        Hit("cafeteria", 1, 0, "The cafeteria opens at noon.", score=2.0, metadata={}),
        Hit("replication", 1, 0, "Each shard has three replicas.", score=1.0, metadata={}),
    ]
    return ContextAssembler(bundled_tokenizer()).run("How many replicas?", hits, 1_000)


def test_the_answer_is_generated_from_the_prompt_and_cites_what_it_names(
    endpoint: str, context: Context
) -> None:
    generator = OpenAIChatGenerator(endpoint, "small-model", api_key="secret", timeout=5)
    answer = generator.run(context)
    assert answer.text == "Each shard has three replicas [2]."
    assert answer.citations == [context.passages[1]]
    assert answer.generated is True
    [(body, authorization)] = FakeChat.requests
    assert body == {"model": "small-model", "messages": render_prompt(context), "stream": False}
    assert authorization == "Bearer secret"


def test_a_streamed_answer_yields_the_deltas_until_done(endpoint: str, context: Context) -> None:
    pieces = list(OpenAIChatGenerator(endpoint, "small-model", timeout=5).stream(context))
    assert pieces == ANSWER_PIECES
    [(body, authorization)] = FakeChat.requests
    assert body["stream"] is True
    assert authorization is None


@pytest.mark.parametrize("mode", ["fail", "garbage"])
def test_a_failing_endpoint_is_unavailable(endpoint: str, context: Context, mode: str) -> None:
    FakeChat.mode = mode
    generator = OpenAIChatGenerator(endpoint, "small-model", timeout=5)
    with pytest.raises(Unavailable) as plain:
        generator.run(context)
    assert plain.value.details["url"] == f"{endpoint}chat/completions"
    with pytest.raises(Unavailable):
        list(generator.stream(context))


@pytest.mark.parametrize("mode", ["cut", "error-event"])
def test_a_stream_that_breaks_is_unavailable(endpoint: str, context: Context, mode: str) -> None:
    FakeChat.mode = mode
    with pytest.raises(Unavailable, match="chat endpoint"):
        list(OpenAIChatGenerator(endpoint, "small-model", timeout=5).stream(context))


def test_an_unreachable_endpoint_is_unavailable(context: Context) -> None:
    generator = OpenAIChatGenerator("http://127.0.0.1:9/v1", "small-model", timeout=2)
    with pytest.raises(Unavailable) as failure:
        generator.run(context)
    assert failure.value.details["url"] == "http://127.0.0.1:9/v1/chat/completions"
    with pytest.raises(Unavailable):
        next(generator.stream(context))
