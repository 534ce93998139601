"""Shards made with int8 dense vectors: quantized in the index, rescored on the originals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shardrag.config import Settings
from shardrag.engine import EngineSettings, ShardEngine
from shardrag.errors import InvalidParameter
from shardrag.models import Chunk, EmbeddedChunk, SearchMode, ShardQuery

DIM = 384
# Enough 384-d points for the engine to index (and so quantize) the segment.
POINTS = 8000
PER_DOCUMENT = 1000


def corpus(seed: int = 5) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(POINTS, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def build(path: Path, vectors: np.ndarray, quantization: str) -> ShardEngine:
    engine = ShardEngine(
        path, EngineSettings(dimension=DIM, quantization=quantization), optimize_threshold=10**9
    )
    for start in range(0, POINTS, PER_DOCUMENT):
        doc = f"d{start // PER_DOCUMENT}"
        chunks = [
            EmbeddedChunk(Chunk(i, f"chunk {start + i}", "", "h", 2), vectors[start + i].tolist())
            for i in range(PER_DOCUMENT)
        ]
        engine.upsert("acme", doc, 1, chunks, {}, None)
        engine.commit("acme", doc, 1)
    engine.optimize()
    return engine


def recall(engine: ShardEngine, vectors: np.ndarray, exact_scores: bool) -> float:
    """Dense recall@10 against exact search over 20 random queries; with ``exact_scores``,
    also hold every hit's score to its exact cosine."""
    queries = np.random.default_rng(9).normal(size=(20, DIM)).astype(np.float32)
    found = 0
    for query in queries / np.linalg.norm(queries, axis=1, keepdims=True):
        cosines = vectors @ query
        truth = set(np.argsort(-cosines)[:10].tolist())
        hits = engine.search(ShardQuery("acme", SearchMode.DENSE, 10, dense=query.tolist()))
        points = [int(h.doc_id[1:]) * PER_DOCUMENT + h.chunk_index for h in hits]
        if exact_scores:
            for hit, point in zip(hits, points, strict=True):
                assert hit.score == pytest.approx(float(cosines[point]), abs=1e-5)
        found += len(truth & set(points))
    return found / (10 * len(queries))


def test_an_int8_shard_quantizes_and_rescores_on_the_originals(tmp_path: Path) -> None:
    vectors = corpus()
    engine = build(tmp_path / "int8", vectors, "int8")
    quantized = list((tmp_path / "int8").rglob("vector_storage-dense/quantized.data"))
    assert quantized, "the engine built no int8 copy of the dense vectors"
    # Rescored on the originals: every score is the exact cosine.
    found = recall(engine, vectors, exact_scores=True)
    engine.close()

    # Beside the same points in float32 (random 384-d points: HNSW's hardest case).
    plain = build(tmp_path / "float", vectors, "none")
    assert not list((tmp_path / "float").rglob("quantized.data"))
    assert found >= recall(plain, vectors, exact_scores=True) - 0.05
    plain.close()

    # Reopened under another setting, the shard keeps the quantization it was made with.
    reopened = ShardEngine(tmp_path / "int8", EngineSettings(dimension=DIM))
    assert reopened.settings.quantization == "int8"
    reopened.close()


def test_an_unknown_quantization_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameter, match="quantization"):
        ShardEngine(tmp_path / "shard", EngineSettings(dimension=DIM, quantization="fp4"))
    with pytest.raises(InvalidParameter, match="quantization"):
        Settings(quantization="fp4").validate()
