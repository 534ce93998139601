"""Retrieval quality on CISI (real abstracts and human relevance judgements), via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench.cisi_to_beir import convert_cisi
from typer.testing import CliRunner

from shardrag.cli import app
from tests.support import CISI_DIR, require


@pytest.mark.slow
def test_hybrid_search_reaches_the_quality_bar_on_cisi(tmp_path: Path) -> None:
    require((CISI_DIR / "CISI.ALL").exists(), f"CISI collection missing at {CISI_DIR}")
    convert_cisi(CISI_DIR, tmp_path / "cisi")
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "cisi"), "--json"])
    assert result.exit_code == 0, result.stderr or result.stdout
    report = json.loads(result.stdout)
    print("CISI:", json.dumps(report["modes"]))
    assert report["documents"] == 1460 and report["queries"] == 76
    assert report["mode"] == "hybrid" and report["ndcg@10"] == report["modes"]["hybrid"]["ndcg@10"]
    assert report["ndcg@10"] >= 0.42
    # Fusion must not cost recall: hybrid finds at least what its better half finds.
    modes = report["modes"]
    assert modes["hybrid"]["recall@100"] >= max(m["recall@100"] for m in modes.values()) - 0.01
    assert modes["keyword"]["ndcg@10"] > 0.25 and modes["dense"]["ndcg@10"] > 0.35
