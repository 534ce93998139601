"""The embedder protocol: what the pipeline and retrieval need from any embedding backend."""

from __future__ import annotations

from typing import Protocol

from shardrag.embed.tokenizer import ModelTokenizer


class Embedder(Protocol):
    """Turns texts into dense vectors of a fixed dimension.

    ``model_id`` names the model so cached vectors of one model are never served for another.
    ``tokenizer`` is the model's own tokenizer: the chunker sizes chunks with it so that no
    chunk is silently truncated at ``tokenizer.max_tokens``.
    """

    model_id: str
    tokenizer: ModelTokenizer

    @property
    def dimension(self) -> int:
        """Size of every vector this embedder returns."""
        ...

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages (batched internally); one unit-length vector per text."""
        ...

    def embed_query(self, text: str) -> list[float]:
        """Embed one search query."""
        ...
