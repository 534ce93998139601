"""The split-tenant scale benchmark at a tiny size: every figure present, exact search beside."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    # pytest puts only this test's folder on sys.path, and bench/ sits at the repository root.
    sys.path.insert(0, str(REPO_ROOT))

from bench.cisi_to_beir import DEFAULT_SOURCE  # noqa: E402
from tests.support import require  # noqa: E402

from bench import tenant_scale as bench  # noqa: E402

POINTS, SHARDS, QUERIES = 2000, 2, 10


def test_a_split_tenant_is_measured_through_the_router(tmp_path: Path) -> None:
    require((DEFAULT_SOURCE / "CISI.ALL").is_file(), f"CISI not found at {DEFAULT_SOURCE}")
    out = tmp_path / "tenant_scale.json"
    report = bench.main(
        [
            f"--points={POINTS}",
            f"--shards={SHARDS}",
            f"--queries={QUERIES}",
            "--warmup=2",
            "--centres=30",
            f"--cache-dir={tmp_path / 'cache'}",
            f"--work-dir={tmp_path}",
            f"--out={out}",
        ]
    )
    assert [s["points"] for s in report["shards"]] == [POINTS // SHARDS] * SHARDS
    assert all(s["load_seconds"] > 0 and s["build_seconds"] >= 0 for s in report["shards"])
    assert set(report["modes"]) == {"dense", "hybrid"}
    for name, mode in report["modes"].items():
        wall = mode["routed"]["wall"]
        assert wall["count"] == QUERIES and wall["p50_ms"] <= wall["p99_ms"]
        slowest = mode["slowest_shard_ms"]
        assert 0 < slowest["p50"] <= slowest["p95"] <= slowest["p99"]
        if name == "dense":
            # Through the router, over both shards, against exact search over every point.
            assert 0.5 <= mode["recall_at_10"] <= 1.0
        else:
            assert mode["recall_at_10"] is None
    assert report["exact"]["wall"]["count"] == QUERIES
    assert report["disk_mib"]["total"] > 0
    assert json.loads(out.read_text()) == report
    assert not list(tmp_path.glob("shardrag-bench-tenant-scale-*"))
