"""The shard scale benchmark at a tiny size: every figure present and sane, exact search beside."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    # pytest puts only this test's folder on sys.path, and bench/ sits at the repository root.
    sys.path.insert(0, str(REPO_ROOT))

from bench.cisi_to_beir import DEFAULT_SOURCE  # noqa: E402
from tests.support import nats_is_up, require  # noqa: E402

from bench import shard_scale as bench  # noqa: E402

POINTS = 2000
QUERIES = 20
FANOUT = (1, 2)
EFFORTS = (0, 16, 64)
LATENCY_FIGURES = ("p50_ms", "p99_ms", "mean_ms", "max_ms", "qps")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, Path]:
    """The whole benchmark at a size that runs in seconds (the router part if NATS is up)."""
    require((DEFAULT_SOURCE / "CISI.ALL").is_file(), f"CISI not found at {DEFAULT_SOURCE}")
    root = tmp_path_factory.mktemp("shard-scale-bench")
    out, cache = root / "results" / "shard_scale.json", root / "cache"
    report = bench.main(
        [
            f"--sizes={POINTS}",
            "--tenants=2",
            f"--queries={QUERIES}",
            "--warmup=2",
            "--centres=30",
            "--fanout",
            *map(str, FANOUT),
            "--embed-queries=5",
            "--efforts",
            *map(str, EFFORTS),
            "--keyword-idf",
            "--quantization",
            "none",
            "int8",
            f"--cache-dir={cache}",
            f"--work-dir={root}",
            f"--out={out}",
        ]
    )
    return report, out, cache


def assert_timing(timing: dict[str, Any], count: int) -> None:
    """Wall and CPU time per call, each with its percentiles in order."""
    for clock in ("wall", "cpu"):
        latency = timing[clock]
        assert latency["count"] == count
        assert len(latency["samples_ms"]) == count
        for figure in LATENCY_FIGURES:
            assert latency[figure] > 0, (clock, figure)
        assert latency["p50_ms"] <= timing[f"{clock}_p95_ms"] <= latency["p99_ms"]
        assert latency["p99_ms"] <= latency["max_ms"]
        assert latency["other_processes_cores"] >= 0


def test_every_scenario_reports_every_figure(run: tuple[dict[str, Any], Path, Path]) -> None:
    report, _, _ = run
    scenarios = report["scenarios"]
    assert [(s["points"], s["tenants"], s["quantization"]) for s in scenarios] == [
        (POINTS, 1, "none"),
        (POINTS, 1, "int8"),
        (POINTS, 2, "none"),
    ]
    for scenario in scenarios:
        assert scenario["tenant_points"] == POINTS // scenario["tenants"]
        assert scenario["documents"] == POINTS // bench.CHUNKS_PER_DOCUMENT
        assert set(scenario["modes"]) == {"dense", "hybrid"}
        for name, mode in scenario["modes"].items():
            assert_timing(mode["timing"], QUERIES)
            assert mode["foreign_hits"] == 0, "a tenant saw another tenant's points"
            if name == "dense":
                assert 0.0 <= mode["recall_at_10"] <= 1.0
                # The true top 10 hold the most similarity there is.
                assert 0.0 < mode["similarity_kept"] <= 1.0 + 1e-5
            else:
                assert mode["recall_at_10"] is None
                assert mode["similarity_kept"] is None
        # The baseline, exact search over the same vectors, is in every row.
        assert_timing(scenario["exact"], QUERIES)
        assert_split(scenario)
        for figure in ("load_seconds", "load_points_per_second", "optimize_seconds"):
            assert scenario[figure] > 0, figure
        assert scenario["segments"] >= 1
        memory = scenario["memory_mib"]
        assert memory["peak"] >= memory["rss_before"] > 0
        # The search-effort sweep: one tenant's shard only, dense, every effort asked.
        efforts = scenario["efforts"]
        assert list(map(int, efforts)) == (list(EFFORTS) if scenario["tenants"] == 1 else [])
        for mode in efforts.values():
            assert_timing(mode["timing"], QUERIES)
            assert 0.0 <= mode["recall_at_10"] <= 1.0 and mode["foreign_hits"] == 0
        # The keyword IDF probe: keyword and hybrid, IDF from the term counts and from the
        # engine (the baseline), timed on every query; one tenant's shard only.
        idf = scenario["keyword_idf"]
        one = scenario["tenants"] == 1
        assert set(idf) == (
            {f"{m}_{way}" for m in ("keyword", "hybrid") for way in ("engine_idf", "term_counts")}
            if one
            else set()
        )
        for timing in idf.values():
            assert_timing(timing, QUERIES)
        counting = scenario["term_counting"]
        assert set(counting) == ({"count_seconds", "count_rss_mib"} if one else set())
        assert counting.get("count_seconds", 1) > 0


def assert_split(scenario: dict[str, Any]) -> None:
    """A shared shard also reports its points as one tenant split over its tenants."""
    if scenario["tenants"] == 1:
        assert scenario["split"] == {} and scenario["split_exact"] is None
        return
    assert_timing(scenario["split_exact"], QUERIES)
    assert set(scenario["split"]) == {"dense", "hybrid"}
    for name, mode in scenario["split"].items():
        # One figure per query: its slowest part.
        assert_timing(mode["timing"], QUERIES)
        assert mode["foreign_hits"] == 0
        if name == "dense":
            assert 0.0 <= mode["recall_at_10"] <= 1.0
            assert 0.0 < mode["similarity_kept"] <= 1.0 + 1e-5


def test_slowest_part_is_taken_per_query() -> None:
    wall = bench.Latency.of([1_000_000, 3_000_000, 2_000_000, 1_000_000])
    cpu = bench.Latency.of([1_000_000, 2_000_000, 4_000_000, 1_000_000])
    timing = bench.Timing(wall, bench.p95(wall), cpu, bench.p95(cpu))
    slowest = bench.slowest_per_query(timing, parts=2)
    assert slowest.wall.samples_ms == [3.0, 2.0]
    assert slowest.cpu.samples_ms == [2.0, 4.0]


def test_disk_is_split_by_component(run: tuple[dict[str, Any], Path, Path]) -> None:
    report, _, _ = run
    for scenario in report["scenarios"]:
        disk, per_point = scenario["disk_mib"], scenario["disk_bytes_per_point"]
        parts = {kind: mib for kind, mib in disk.items() if kind != "total"}
        assert set(parts) == {
            "dense_vectors",
            "int8_vectors",
            "hnsw_links",
            "bm25",
            "payload",
            "payload_indexes",
            "wal",
            "other",
        }
        assert all(mib >= 0 for mib in parts.values())
        assert disk["total"] == pytest.approx(sum(parts.values()), abs=0.1)
        # float32 x 384 per point, plus the storage's own few bytes.
        assert 384 * 4 <= per_point["dense_vectors"] < 384 * 4 * 1.1
        assert per_point["payload"] > 0 and per_point["bm25"] > 0


def test_router_and_embedding_are_measured(run: tuple[dict[str, Any], Path, Path]) -> None:
    report, _, _ = run
    assert_timing(report["embed_query"], 5)
    if not nats_is_up():
        assert report["router"] == []
        return
    assert [r["fanout"] for r in report["router"]] == list(FANOUT)
    for row in report["router"]:
        assert_timing(row["router"], QUERIES)
        assert_timing(row["in_process"], QUERIES)


def test_synthetic_neighbourhoods_are_calibrated(run: tuple[dict[str, Any], Path, Path]) -> None:
    report, _, _ = run
    calibration = report["corpus"]["calibration"]
    assert calibration["spread"] == bench.SPREAD
    for figures in (calibration["real_p10_p50_p90"], calibration["synthetic_p10_p50_p90"]):
        assert -1.0 <= figures[0] <= figures[1] <= figures[2] <= 1.0
    assert 0.0 < calibration["synthetic_cosine_to_centre"] < 1.0


def test_json_file_is_the_returned_report(run: tuple[dict[str, Any], Path, Path]) -> None:
    report, out, _ = run
    assert json.loads(out.read_text()) == report


def test_centres_are_embedded_once(run: tuple[dict[str, Any], Path, Path]) -> None:
    _, _, cache = run
    (cached,) = cache.glob("shard-scale-centres-*.npz")
    written = cached.stat().st_mtime_ns
    centres = bench.load_centres(DEFAULT_SOURCE, 30, cache)
    assert cached.stat().st_mtime_ns == written, "the second load must read the cache"
    assert len(centres.texts) == len(centres.vectors) == 30
    assert np.array_equal(centres.vectors, np.load(cached)["vectors"])
    assert np.allclose(np.linalg.norm(centres.vectors, axis=1), 1.0, atol=1e-5)


def test_exact_top_k_is_the_brute_force_ranking() -> None:
    rng = np.random.default_rng(1)
    matrix = bench.unit_rows(rng.standard_normal((500, 16), dtype=np.float32))
    query = matrix[7]
    top = bench.exact_top_k(matrix, query, 10)
    assert top[0] == 7
    assert top.tolist() == np.argsort(-(matrix @ query), kind="stable")[:10].tolist()
    # Fewer rows than k: every row, still ranked.
    assert sorted(bench.exact_top_k(matrix[:3], query, 10).tolist()) == [0, 1, 2]


def test_recall_counts_the_true_neighbours_found() -> None:
    assert bench.recall_at_k([1, 2, 3, 4], [4, 3, 9, 8]) == 0.5
    assert bench.recall_at_k([], [1, 2]) == 0.0


def test_points_keep_their_centres_topic_and_words() -> None:
    rng = np.random.default_rng(2)
    centres = bench.unit_rows(rng.standard_normal((40, 32), dtype=np.float32))
    shape = bench.NoiseShape(centres)
    corpus = bench.synthesize(centres, shape, 3000, bench.SPREAD, rng)
    assert corpus.vectors.shape == (3000, 32)
    assert np.allclose(np.linalg.norm(corpus.vectors, axis=1), 1.0, atol=1e-5)
    # Closer to its own centre than to the average other one.
    own = (corpus.vectors * centres[corpus.centre]).sum(axis=1)
    assert own.mean() > (corpus.vectors @ centres.T).mean() + 0.2
    words = [[f"w{c}-{i}" for i in range(20)] for c in range(40)]
    for point in range(50):
        text = corpus.text(words, point).split()
        source = words[int(corpus.centre[point])]
        assert len(source) // 2 <= len(text) <= len(source)
        start = source.index(text[0])
        assert source[start : start + len(text)] == text


def test_noise_has_the_embeddings_covariance() -> None:
    rng = np.random.default_rng(3)
    embeddings = rng.standard_normal((2000, 8)).astype(np.float32) * np.arange(1, 9)
    noise = bench.NoiseShape(embeddings).sample(50_000, 0.5, rng)
    expected = 0.25 * np.cov(embeddings, rowvar=False)
    assert np.allclose(np.cov(noise, rowvar=False), expected, atol=0.05 * expected.max())


def test_tenants_own_whole_documents() -> None:
    scenario = bench.Scenario(points=1000, tenants=3)
    members = [scenario.members(t) for t in range(3)]
    assert sorted(np.concatenate(members).tolist()) == list(range(1000))
    for tenant, positions in enumerate(members):
        assert {scenario.tenant_of(int(p)) for p in positions} == {bench.tenant_name(tenant)}
        documents = set((positions // bench.CHUNKS_PER_DOCUMENT).tolist())
        assert all(d % 3 == tenant for d in documents)


def test_disk_components_add_up(tmp_path: Path) -> None:
    files = {
        "segments/s1/vector_storage-dense/matrix.dat": 8192,
        "segments/s1/vector_index-dense/links_compressed.bin": 4096,
        "segments/s1/vector_index-bm25/inverted_index.dat": 4096,
        "segments/s1/payload_storage/page_0.dat": 4096,
        "wal/open-1": 4096,
        "edge_config.json": 4096,
    }
    for name, size in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    sizes = bench.disk_by_component(tmp_path)
    assert sizes["dense_vectors"] > sizes["hnsw_links"] > 0
    assert sizes["bm25"] > 0 and sizes["payload"] > 0 and sizes["wal"] > 0
    assert sizes["other"] > 0 and sizes["payload_indexes"] == 0


def test_segments_are_counted_where_a_built_shard_keeps_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``BUILD_IN_PROCESS_UP_TO`` a build moves the shard's files to ``gen-N``: the
    bench counted ``segments`` under the shard's own directory and crashed after the build."""
    from shardrag.engine import EngineSettings, ShardEngine
    from shardrag.engine import shard as engine_shard
    from shardrag.models import Chunk, EmbeddedChunk

    monkeypatch.setattr(engine_shard, "BUILD_IN_PROCESS_UP_TO", 0)
    engine = ShardEngine(tmp_path / "shard", EngineSettings(dimension=4))
    try:
        points = [
            EmbeddedChunk(Chunk(i, f"text {i}", "", f"{i:064x}", 2), [1.0, float(i), 0.5, 0.0])
            for i in range(8)
        ]
        engine.upsert("t", "doc", 1, points, {}, "doc.txt")
        engine.commit("t", "doc", 1)
        engine.optimize()
        assert (tmp_path / "shard" / "CURRENT").exists()  # built apart: a generation
        assert bench.segment_count(tmp_path / "shard") >= 1
    finally:
        engine.close()
