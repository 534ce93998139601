"""Sentence encoders of the bundled model: ONNX Runtime (the default) and PyTorch (reference).

An encoder turns a batch of texts into unit-length float32 vectors and knows nothing of
queueing or batching policy, which the embedder above it owns (embed/bundled.py).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from shardrag.embed.runtime import BUNDLED_DIMENSION, compiled_graph
from shardrag.errors import EmbedderUnavailable

Vectors = npt.NDArray[np.float32]


class SentenceEncoder(Protocol):
    """Texts in, unit-length vectors out (one row per text)."""

    runtime: str
    load_seconds: float

    def encode(self, texts: list[str], single_thread: bool) -> Vectors:
        """Encode ``texts`` in one pass; on one thread when ``single_thread``."""
        ...


def batch_threads() -> int:
    """Threads a batch may use: ``OMP_NUM_THREADS`` when set (a container's CPU limit, which
    the process cannot see), else the CPUs this process may run on."""
    configured = os.environ.get("OMP_NUM_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class OnnxEncoder:
    """The bundled model's ONNX graph on ONNX Runtime's CPU provider.

    One session, each run on one thread. A batch spreads its texts over one Python thread per
    core, each running the session on its own text (runs release the GIL): 25 % more
    passages/s than one text at a time on a two-thread session, where the threads of each
    small matrix product wait for each other (docs/embedding.md). A single query runs on the
    caller's thread. Worker threads sleep instead of spinning between calls: a spinning pool
    steals the cores from the rest of the process (the engine, the HTTP server).
    """

    def __init__(self, model_dir: Path, precision: str, cache_dir: Path) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        started = time.perf_counter()
        self.runtime = f"onnx-{precision}"
        self.dimension = BUNDLED_DIMENSION
        self.graph = compiled_graph(model_dir, precision, cache_dir)
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # The model's sequence limit, special tokens included (sentence_bert_config.json).
        self._tokenizer.enable_truncation(max_length=256)
        self._tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(self.graph.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # a corrupt cache file, an unsupported CPU
            raise EmbedderUnavailable(
                f"ONNX Runtime could not load {self.graph.path}: {exc}",
                path=str(self.graph.path),
            ) from exc
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.load_seconds = time.perf_counter() - started

    def encode(self, texts: list[str], single_thread: bool) -> Vectors:
        """Each text in a pass of its own, at its own length (no padding).

        One text per pass is what makes a vector a function of its text alone: the int8 graph
        quantizes activations with one scale per pass, so a text batched with others would
        come out slightly different from the same text alone (the same passage embedded
        twice must give the same vector; a query must match its text embedded at ingest).
        It is also the fastest way on a CPU: no compute spent on padding (docs/embedding.md).
        """
        encodings = self._tokenizer.encode_batch(texts)
        if single_thread or len(texts) == 1:
            rows = [self._run(e.ids) for e in encodings]
        else:
            rows = list(self._workers().map(self._run, [e.ids for e in encodings]))
        return np.stack(rows) if rows else np.empty((0, self.dimension), dtype=np.float32)

    def _run(self, token_ids: list[int]) -> Vectors:
        ids = np.asarray([token_ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        vector: Vectors = self._session.run(None, feed)[0][0]
        return vector

    def _workers(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(batch_threads(), thread_name_prefix="embed")
            return self._pool


class TorchEncoder:
    """sentence-transformers on PyTorch, fp32: the reference (extra ``shardrag[torch]``)."""

    runtime = "torch-fp32"

    def __init__(self, model_dir: Path) -> None:
        started = time.perf_counter()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import torch
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging
        except ImportError as exc:
            raise EmbedderUnavailable(
                "the torch-fp32 runtime needs the optional extra: pip install 'shardrag[torch]'"
            ) from exc
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        self._torch = torch
        self._threads = torch.get_num_threads()
        self._model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        self.load_seconds = time.perf_counter() - started

    def encode(self, texts: list[str], single_thread: bool) -> Vectors:
        """``SentenceTransformer.encode`` of the texts as one batch."""
        threads = 1 if single_thread else self._threads
        if self._torch.get_num_threads() != threads:
            self._torch.set_num_threads(threads)
        vectors: Vectors = self._model.encode(
            texts,
            batch_size=len(texts),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors
