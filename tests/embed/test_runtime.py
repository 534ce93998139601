"""The embedding runtimes: the ONNX graph against the PyTorch reference, the choice of runtime,
the graph cache, and a default install that never imports torch."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from bench.cisi_to_beir import convert_cisi
from tests.support import CISI_DIR, REPO_ROOT, require

from shardrag.embed.bundled import BundledEmbedder, bundled_model_dir, load_encoder
from shardrag.embed.encoders import OnnxEncoder, TorchEncoder
from shardrag.embed.runtime import choose_runtime, compiled_graph

PASSAGES = 300


@pytest.fixture(scope="module")
def passages() -> list[str]:
    """A few hundred real abstracts (CISI), long and short."""
    require((CISI_DIR / "CISI.ALL").exists(), f"CISI collection missing at {CISI_DIR}")
    with tempfile.TemporaryDirectory() as tmp:
        dataset = convert_cisi(CISI_DIR, Path(tmp))
    return [d.text for d in list(dataset.corpus.values())[:PASSAGES]]


@pytest.fixture(scope="module")
def reference(passages: list[str]) -> np.ndarray:
    """The fp32 PyTorch vectors of the passages (sentence-transformers, the reference)."""
    require(
        importlib.util.find_spec("sentence_transformers") is not None,
        "the reference runtime needs the extra shardrag[torch] (make test installs it)",
    )
    return _encode_all(TorchEncoder(bundled_model_dir()), passages)


def _encode_all(encoder: OnnxEncoder | TorchEncoder, texts: list[str]) -> np.ndarray:
    rows = [
        encoder.encode(texts[i : i + 16], single_thread=False) for i in range(0, len(texts), 16)
    ]
    return np.concatenate(rows)


def _neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean share of each passage's k nearest passages that both embeddings agree on."""
    overlaps = []
    for sims_a, sims_b in zip(a @ a.T, b @ b.T, strict=True):
        top_a = set(np.argsort(-sims_a)[1 : k + 1])
        top_b = set(np.argsort(-sims_b)[1 : k + 1])
        overlaps.append(len(top_a & top_b) / k)
    return float(np.mean(overlaps))


def test_the_fp32_graph_computes_what_the_torch_reference_computes(
    passages: list[str], reference: np.ndarray, tmp_path: Path
) -> None:
    vectors = _encode_all(OnnxEncoder(bundled_model_dir(), "fp32", tmp_path), passages)
    cosines = np.sum(vectors * reference, axis=1)
    assert vectors.shape == (PASSAGES, 384)
    assert cosines.min() >= 0.9999, cosines.min()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_the_int8_runtime_stays_in_the_reference_vector_space(
    passages: list[str], reference: np.ndarray
) -> None:
    vectors = _encode_all(load_encoder("onnx-int8"), passages)
    cosines = np.sum(vectors * reference, axis=1)
    overlap = _neighbour_overlap(vectors, reference)
    print(
        f"int8 vs fp32 reference on {PASSAGES} CISI passages: cosine mean {cosines.mean():.4f}"
        f" min {cosines.min():.4f}, top-10 neighbour overlap {overlap:.3f}"
    )
    assert cosines.mean() >= 0.99 and cosines.min() >= 0.97
    assert overlap >= 0.8


def test_a_query_embedded_alone_equals_the_same_text_in_a_batch() -> None:
    # Queries go through the one-thread session, documents through the batch session: the same
    # text must land on the same vector, or queries would drift from the documents they match.
    embedder = BundledEmbedder()
    texts = ["how do shards fail over?", "Replicas apply the log in order. " * 20]
    batch = embedder.embed_documents(texts)
    for text, in_batch in zip(texts, batch, strict=True):
        alone = np.asarray(embedder.embed_query(text))
        assert float(alone @ np.asarray(in_batch)) >= 0.9999


def test_auto_picks_int8_where_integer_dot_products_are_fast(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert choose_runtime("auto", frozenset({"sse4_2", "avx2"})) == "onnx-int8"
    assert choose_runtime("auto", frozenset({"avx512f", "avx512_vnni"})) == "onnx-int8"
    assert choose_runtime("auto", frozenset({"sse4_2", "avx"})) == "onnx-fp32"
    assert choose_runtime("onnx-fp32", frozenset({"avx2"})) == "onnx-fp32"
    assert choose_runtime("torch-fp32", frozenset()) == "torch-fp32"
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    assert choose_runtime("auto", frozenset({"asimd"})) == "onnx-int8"


def test_the_compiled_graph_is_built_once_and_reused(tmp_path: Path) -> None:
    first = compiled_graph(bundled_model_dir(), "int8", tmp_path)
    again = compiled_graph(bundled_model_dir(), "int8", tmp_path)
    assert first.built and not again.built and again.path == first.path
    # Nothing half-written is left beside it.
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]


def test_an_unknown_runtime_setting_is_refused() -> None:
    from shardrag.config import Settings
    from shardrag.errors import InvalidParameter

    with pytest.raises(InvalidParameter, match="embed_runtime"):
        Settings.load(embed_runtime="cuda")


_NO_TORCH = """
import importlib.abc, pkgutil, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "sentence_transformers", "transformers"):
            raise ImportError(f"{name} imported by a default code path")
        return None

sys.meta_path.insert(0, NoTorch())
import shardrag
for module in pkgutil.walk_packages(shardrag.__path__, "shardrag."):
    if module.name != "shardrag.__main__":  # that one runs the CLI
        importlib.import_module(module.name)
from shardrag.cli import main
sys.argv = ["shardrag", "demo", "--data-dir", sys.argv[1]]
main()
"""


def test_no_default_code_path_imports_torch(tmp_path: Path) -> None:
    # Every module of the package is imported and the demo ingests and answers, with torch,
    # sentence-transformers and transformers made unimportable.
    done = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Sources:" in done.stdout


@pytest.mark.slow
def test_a_fresh_install_resolves_no_cuda_package(tmp_path: Path) -> None:
    # What pip would install from PyPI alone, ignoring this environment and its local files.
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--quiet",
            "--ignore-installed", "--report", str(report), str(REPO_ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "shardrag" in names and "onnxruntime" in names
    heavy = {n for n in names if n.startswith(("nvidia-", "cuda-", "triton", "torch"))}
    assert not heavy, heavy
