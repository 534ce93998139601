"""The embedding model's own tokenizer, used to size chunks in model tokens."""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer


class ModelTokenizer:
    """Counts and splits text in the model's tokens (special tokens excluded).

    ``max_tokens`` is the model's sequence limit *including* its special tokens ([CLS], [SEP]);
    ``content_budget`` is what is left for text.
    """

    def __init__(self, tokenizer_file: Path, max_tokens: int, special_tokens: int = 2) -> None:
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        # The Rust tokenizer is not documented as safe for concurrent calls with shared state.
        self._lock = threading.Lock()
        self.max_tokens = max_tokens
        self.special_tokens = special_tokens

    @property
    def content_budget(self) -> int:
        """Tokens of text that fit in one model input."""
        return self.max_tokens - self.special_tokens

    def count(self, text: str) -> int:
        """Number of model tokens in ``text``, without special tokens."""
        with self._lock:
            return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def count_batch(self, texts: list[str]) -> list[int]:
        """``count`` for many texts in one call (the Rust tokenizer batches in parallel)."""
        with self._lock:
            encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def split(self, text: str, max_tokens: int) -> list[str]:
        """Cut ``text`` into consecutive pieces of at most ``max_tokens`` tokens each.

        Cuts fall on token boundaries (character offsets of the original text), so nothing is
        lost or rewritten; used only for runs of text with no sentence boundary to cut at.
        """
        with self._lock:
            offsets = self._tokenizer.encode(text, add_special_tokens=False).offsets
        pieces: list[str] = []
        for start in range(0, len(offsets), max_tokens):
            # The first piece starts at 0 so nothing before the first token is dropped.
            begin = offsets[start][0] if start else 0
            end = offsets[start + max_tokens][0] if start + max_tokens < len(offsets) else len(text)
            piece = text[begin:end].strip()
            if piece:
                pieces.append(piece)
        return pieces


@lru_cache(maxsize=4)
def bundled_tokenizer() -> ModelTokenizer:
    """The tokenizer of the bundled all-MiniLM-L6-v2 (max 256 tokens), loaded once."""
    from shardrag.embed.bundled import bundled_model_dir

    return ModelTokenizer(bundled_model_dir() / "tokenizer.json", max_tokens=256)
