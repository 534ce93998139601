"""The embedding benchmark at a tiny size: every candidate measured, each in its own process,
on the same texts, and the product paths measured on the runtime this CPU picks."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    # pytest puts only this test's folder on sys.path, and bench/ sits at the repository root.
    sys.path.insert(0, str(REPO_ROOT))

from bench.cisi_to_beir import DEFAULT_SOURCE  # noqa: E402
from tests.support import require  # noqa: E402

from bench import embed as bench  # noqa: E402
from shardrag.embed.runtime import choose_runtime  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The benchmark over a handful of documents and questions."""
    require((DEFAULT_SOURCE / "CISI.ALL").is_file(), f"CISI not found at {DEFAULT_SOURCE}")
    out = tmp_path_factory.mktemp("embed-bench") / "embed.json"
    report = bench.main(["--docs=12", "--queries=4", f"--out={out}"])
    return report, out


def test_every_candidate_is_measured_on_the_same_work(run: tuple[dict[str, Any], Path]) -> None:
    report, out = run
    assert json.loads(out.read_text()) == report
    assert set(report["results"]) == set(bench.CANDIDATES)
    assert report["default_runtime"] == choose_runtime("auto")
    assert report["documents"] == 12 and report["chunks"] >= 12
    for name, result in report["results"].items():
        assert result["batch_chunks_per_second"] > 0, name
        assert result["load_seconds"] > 0, name
        for kind in ("query_short", "query_long"):
            assert result[kind]["count"] == 4, (name, kind)
            assert 0 < result[kind]["p50_ms"] <= result[kind]["p99_ms"], (name, kind)


def test_the_product_paths_run_only_on_the_default_runtime(
    run: tuple[dict[str, Any], Path],
) -> None:
    report, _ = run
    for name, result in report["results"].items():
        measured = "put_chunks_per_second" in result
        assert measured == (name == report["default_runtime"]), name
    product = report["results"][report["default_runtime"]]
    assert product["put_chunks_per_second"] > 0 and product["put_documents_per_second"] > 0
    for kind in ("search_short", "search_long"):
        assert product[kind]["count"] == 4
