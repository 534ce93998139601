"""The TLS cost benchmark at a tiny size: plain HTTP (the baseline) and HTTPS with mutual TLS
both answer every search, kept-alive and on a new connection each."""

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

from bench import tls_cost as bench  # noqa: E402


def test_search_is_measured_over_http_and_mutual_tls(tmp_path: Path) -> None:
    require((DEFAULT_SOURCE / "CISI.ALL").is_file(), f"CISI not found at {DEFAULT_SOURCE}")
    out = tmp_path / "tls_cost.json"
    report = bench.main(["--docs=5", "--queries=12", f"--out={out}"])
    assert json.loads(out.read_text()) == report
    assert set(report["cases"]) == {"http", "https_mutual_tls"}
    for case in report["cases"].values():
        assert set(case) == {"keep_alive", "new_connection"}
        assert all(figures["count"] == 7 and figures["p50_ms"] > 0 for figures in case.values())
