"""The tracing cost benchmark at a tiny size: both cases measured, spans really exported."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    # pytest puts only this test's folder on sys.path, and bench/ sits at the repository root.
    sys.path.insert(0, str(REPO_ROOT))

from bench.cisi_to_beir import DEFAULT_SOURCE  # noqa: E402
from tests.support import require  # noqa: E402

from bench import tracing_cost as bench  # noqa: E402


def test_search_is_measured_with_and_without_traces(tmp_path: Path) -> None:
    require((DEFAULT_SOURCE / "CISI.ALL").is_file(), f"CISI not found at {DEFAULT_SOURCE}")
    report = bench.main(["--docs=5", "--queries=12", f"--out={tmp_path / 'out.json'}"])
    assert set(report["cases"]) == {"tracing_off", "tracing_otlp"}
    for case in report["cases"].values():
        assert all(f["count"] == 7 and f["p50_ms"] > 0 for f in case.values())
    assert report["exports_received"] >= 1
