"""Generation through an OpenAI-compatible chat endpoint (``POST {url}/chat/completions``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from shardrag.context.assembly import Answer, Context, citations_in, render_prompt
from shardrag.errors import Unavailable


class OpenAIChatGenerator:
    """Answers a context with any model served behind the OpenAI chat completions API.

    Every failure of the endpoint (connection, timeout, HTTP error, an answer of unexpected
    shape, a stream cut short) is an ``Unavailable`` naming the url.
    """

    def __init__(
        self, url: str, model: str, api_key: str | None = None, timeout: float = 60.0
    ) -> None:
        self.url = url.rstrip("/") + "/chat/completions"
        self.model = model
        self.name = f"llm:{model}@{self.url}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)

    def run(self, context: Context) -> Answer:
        """The model's whole answer; its citations are the passages its ``[n]`` markers name."""
        with self._failures():
            response = self._client.post(self.url, json=self._request(context, stream=False))
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            text = body["choices"][0]["message"]["content"]
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"no answer text in {body!r:.200}")
        return Answer(text.strip(), citations=citations_in(text, context), generated=True)

    def stream(self, context: Context) -> Iterator[str]:
        """The answer's text as the model writes it, read from server-sent events.

        The joined pieces are the answer; ``citations_in`` gives its citations. An error may
        be raised after some pieces were yielded.
        """
        with (
            self._failures(),
            self._client.stream("POST", self.url, json=self._request(context, stream=True)) as r,
        ):
            r.raise_for_status()
            finished = False
            for line in r.iter_lines():
                # Other SSE fields (event:, id:, comments) carry nothing the answer needs.
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                event: dict[str, Any] = json.loads(data)
                if "error" in event:
                    raise ValueError(f"error event: {event['error']!r:.200}")
                choice = event["choices"][0] if event["choices"] else {}
                finished = finished or bool(choice.get("finish_reason"))
                piece = choice.get("delta", {}).get("content")
                if piece:
                    yield piece
            # Some servers end with a finish reason and close, without [DONE]; with neither,
            # the stream was cut and the answer is incomplete.
            if not finished:
                raise ValueError("the stream ended before the answer was finished")

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def _request(self, context: Context, *, stream: bool) -> dict[str, Any]:
        return {"model": self.model, "messages": render_prompt(context), "stream": stream}

    @contextmanager
    def _failures(self) -> Iterator[None]:
        """Turn what can go wrong talking to the endpoint into ``Unavailable``."""
        try:
            yield
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"chat endpoint {self.url} failed: {exc}", url=self.url, model=self.model
            ) from exc
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise Unavailable(
                f"chat endpoint {self.url} sent an unexpected answer: {exc}",
                url=self.url,
                model=self.model,
            ) from exc
