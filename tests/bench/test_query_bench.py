"""The query benchmark at a tiny size: every figure present, the baseline is the same query."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.progress import Progress

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    # pytest puts only this test's folder on sys.path, and bench/ sits at the repository root.
    sys.path.insert(0, str(REPO_ROOT))

from bench.cisi_to_beir import DEFAULT_SOURCE  # noqa: E402
from tests.support import require  # noqa: E402

from bench import query as bench  # noqa: E402
from shardrag.engine.ids import point_id  # noqa: E402
from shardrag.models import SearchMode  # noqa: E402

MEASURES = ("search", "engine_search", "bare_query")
LATENCY_FIGURES = ("p50_ms", "p99_ms", "mean_ms", "max_ms", "qps")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The whole benchmark, both parts, at a size that runs in seconds."""
    require((DEFAULT_SOURCE / "CISI.ALL").is_file(), f"CISI not found at {DEFAULT_SOURCE}")
    out = tmp_path_factory.mktemp("query-bench") / "results" / "query.json"
    report = bench.main(
        [
            "--chunks=2000",
            "--other-tenant-chunks=200",
            "--unique-chunks=20",
            "--synthetic-points=2000",
            "--queries=10",
            "--warmup=1",
            f"--out={out}",
        ]
    )
    return report, out


def assert_latency(latency: dict[str, Any], queries: int) -> None:
    assert latency["count"] == queries
    assert len(latency["samples_ms"]) == queries
    for figure in LATENCY_FIGURES:
        assert latency[figure] > 0, figure
    assert latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert latency["other_processes_cores"] >= 0


def test_report_has_every_figure_of_both_parts(run: tuple[dict[str, Any], Path]) -> None:
    report, _ = run
    assert set(report["parts"]) == {"real_text", "synthetic"}
    for part in report["parts"].values():
        assert_latency(part["embed_query"], 10)
        assert set(part["modes"]) == {m.value for m in SearchMode}
        for mode in part["modes"].values():
            for measure in MEASURES:
                assert_latency(mode[measure], 10)
            assert mode["hits_agree"] == 1.0
        for figure, value in {**part["build"], **part["memory_mib"]}.items():
            assert value > 0, figure
        assert part["other_processes_cores"] >= 0
        memory = part["memory_mib"]
        assert memory["peak"] >= memory["rss_after_optimize"]
        assert memory["disk"] > memory["raw_dense_vectors"]


def test_tenants_hold_what_was_asked(run: tuple[dict[str, Any], Path]) -> None:
    report, _ = run
    real, synthetic = report["parts"]["real_text"]["corpus"], report["parts"]["synthetic"]["corpus"]
    assert real["tenant_chunks"] == 2000
    assert real["tenant_documents"] == 200
    assert real["other_tenant_chunks"] == 200
    assert real["shard_points"] == 2200
    assert real["unique_embedded_chunks"] == 20
    assert synthetic["shard_points"] == synthetic["tenant_chunks"] == 2000
    assert synthetic["tenant_documents"] == 2


def test_json_file_is_the_returned_report(run: tuple[dict[str, Any], Path]) -> None:
    report, out = run
    assert json.loads(out.read_text()) == report


def test_bare_query_returns_the_hits_of_engine_search(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vocabulary = bench.Vocabulary.made_up(500, rng)
    rag = bench.open_bench_rag(tmp_path / "data")
    try:
        engine = rag.shards.shard(rag.create_tenant(bench.TENANT).shard_id)
        assert rag.shards.shard(rag.create_tenant("other").shard_id) is engine
        with Progress(disable=True) as progress:
            for tenant, points in ((bench.TENANT, 1500), ("other", 500)):
                documents = bench.synthetic_documents(points, 384, vocabulary, rng)
                bench.load(engine, tenant, documents, progress, tenant, points)
        rag.optimize()
        # Documents of 1000 chunks: synthetic-0 holds chunks 0-999, synthetic-1 chunks 0-499.
        ours = {point_id(bench.TENANT, f"synthetic-{n // 1000}", 1, n % 1000) for n in range(1500)}
        vectors = bench.random_unit_vectors(10, 384, rng).tolist()
        texts = vocabulary.texts(10, bench.WORDS_PER_QUERY, rng)
        for text, vector in zip(texts, vectors, strict=True):
            query = bench.Query(text, vector)
            for mode in SearchMode:
                request = bench.bare_request(rag, engine, bench.TENANT, mode, query)
                bare = bench.bare_query_ranking(engine, request)
                searched = bench.engine_search_ranking(rag, engine, bench.TENANT, mode, query)
                assert len(bare) == bench.K
                assert {p for p, _ in bare} <= ours, "the bare query must filter by tenant"
                assert bench.same_ranking(bare, searched), mode
                if mode is SearchMode.DENSE:
                    # Random vectors never tie: the very same points in the very same order.
                    assert [p for p, _ in bare] == [p for p, _ in searched]
    finally:
        rag.close()


def test_same_ranking_ignores_order_within_ties_only() -> None:
    ranking = [("a", 3.0), ("b", 2.0), ("c", 2.0), ("d", 1.0)]
    assert bench.same_ranking(ranking, [("a", 3.0), ("c", 2.0), ("b", 2.0), ("d", 1.0)])
    # Which member of a tie at the k-th place makes the cut is not fixed either.
    assert bench.same_ranking(ranking, [("a", 3.0), ("b", 2.0), ("c", 2.0), ("e", 1.0)])
    assert not bench.same_ranking(ranking, [("b", 3.0), ("a", 2.0), ("c", 2.0), ("d", 1.0)])
    assert not bench.same_ranking(ranking, [("a", 3.0), ("b", 2.0), ("c", 1.5), ("d", 1.0)])
    assert not bench.same_ranking(ranking, ranking[:3])


def test_latency_percentiles_and_throughput() -> None:
    latency = bench.Latency.of([ms * 1_000_000 for ms in range(1, 101)])
    assert latency.p50_ms == pytest.approx(50.5)
    assert latency.p99_ms == pytest.approx(99.01)
    assert latency.mean_ms == pytest.approx(50.5)
    assert latency.max_ms == pytest.approx(100.0)
    assert latency.qps == pytest.approx(100 / 5.05)
