"""An OpenAI-compatible embeddings endpoint (``POST {url}/embeddings``)."""

from __future__ import annotations

import math
from typing import Any

import httpx

from shardrag.embed.tokenizer import ModelTokenizer, bundled_tokenizer
from shardrag.errors import EmbedderUnavailable


class HttpEmbedder:
    """Embeds through any service speaking the OpenAI embeddings API.

    Chunks are sized with the bundled model's tokenizer (256 tokens): the remote model's own
    tokenizer is unknown here, and WordPiece counts are a conservative bound for most models.
    """

    def __init__(
        self,
        url: str,
        model: str,
        api_key: str | None = None,
        dimension: int | None = None,
        batch_size: int = 64,
        timeout: float = 30.0,
        tokenizer: ModelTokenizer | None = None,
    ) -> None:
        self.url = url.rstrip("/") + "/embeddings"
        self.model = model
        self.model_id = f"http:{model}"
        self.runtime = "http"
        self.batch_size = batch_size
        self.tokenizer = tokenizer or bundled_tokenizer()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self._dimension = dimension

    @property
    def dimension(self) -> int:
        """Vector size; asked of the endpoint once when not configured."""
        if self._dimension is None:
            self._dimension = len(self._post(["dimension probe"])[0])
        return self._dimension

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed in batches of ``batch_size``; vectors are normalised to unit length."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(self._post(texts[start : start + self.batch_size]))
        return vectors

    def embed_query(self, text: str) -> list[float]:
        """Embed one query."""
        return self._post([text])[0]

    def _post(self, texts: list[str]) -> list[list[float]]:
        try:
            response = self._client.post(self.url, json={"model": self.model, "input": texts})
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            items = sorted(body["data"], key=lambda item: item["index"])
            vectors = [[float(x) for x in item["embedding"]] for item in items]
        except httpx.HTTPError as exc:
            raise EmbedderUnavailable(
                f"embedding endpoint {self.url} failed: {exc}", url=self.url
            ) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbedderUnavailable(
                f"embedding endpoint {self.url} sent an unexpected answer: {exc}", url=self.url
            ) from exc
        if len(vectors) != len(texts):
            raise EmbedderUnavailable(
                f"embedding endpoint {self.url} returned {len(vectors)} vectors for "
                f"{len(texts)} inputs",
                url=self.url,
            )
        if self._dimension is not None and any(len(v) != self._dimension for v in vectors):
            raise EmbedderUnavailable(
                f"embedding endpoint {self.url} returned vectors not of size {self._dimension}"
            )
        return [_unit(v) for v in vectors]

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector
