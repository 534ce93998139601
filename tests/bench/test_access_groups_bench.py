"""The access-groups benchmark at a tiny size: every case measured, baseline beside, and the
restricted dense search keeps its recall against exact search over what the key reads."""

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

from bench import access_groups as bench  # noqa: E402


def test_every_mode_is_measured_with_and_without_groups(tmp_path: Path) -> None:
    require((DEFAULT_SOURCE / "CISI.ALL").is_file(), f"CISI not found at {DEFAULT_SOURCE}")
    out = tmp_path / "access_groups.json"
    report = bench.main(
        [
            "--points=2000",
            "--queries=10",
            "--warmup=2",
            "--centres=30",
            f"--cache-dir={tmp_path / 'cache'}",
            f"--out={out}",
        ]
    )
    assert json.loads(out.read_text()) == report
    assert set(report["modes"]) == {"dense", "keyword", "hybrid"}
    for mode, per_case in report["modes"].items():
        extra = set() if mode == "dense" else {bench.ENGINE_IDF}
        assert set(per_case) == set(bench.cases(10)) | extra
        shares = [per_case[name]["readable_share"] for name in bench.cases(10)]
        assert shares[0] == 1.0 and 0 < shares[1] < shares[2] < 1
        assert all(c["wall_p50_ms"] > 0 for c in per_case.values())
    # 2,000 points: HNSW at this size finds the exact neighbours, restricted or not.
    assert all(c["recall_at_10"] >= 0.9 for c in report["modes"]["dense"].values())


def test_the_restricted_keyword_path_and_the_engine_idf_give_the_same_hits(
    tmp_path: Path,
) -> None:
    """The benchmark's two restricted keyword paths answer alike (what it compares is speed)."""
    require((DEFAULT_SOURCE / "CISI.ALL").is_file(), f"CISI not found at {DEFAULT_SOURCE}")
    from shardrag import acl
    from shardrag.engine import EngineSettings, ShardEngine
    from shardrag.models import Chunk, EmbeddedChunk, SearchMode, ShardQuery

    engine = ShardEngine(tmp_path / "s", EngineSettings(dimension=2))
    try:
        for d in range(20):
            text = f"kayak budget review {d} " + "paddle " * (d % 4)
            chunk = EmbeddedChunk(Chunk(0, text, "", str(d), 5), [1.0, 0.0])
            group = bench.group_of(d, 10)
            meta = acl.with_acl({}, (group,) if group else ())
            engine.upsert("t0", f"doc-{d}", 1, [chunk], meta, None)
            engine.commit("t0", f"doc-{d}", 1)
        query = ShardQuery(
            "t0", SearchMode.KEYWORD, 10, "kayak paddle", [1.0, 0.0], groups=("g1", "g2")
        )
        counted = [(h.doc_id, round(h.score, 5)) for h in engine.search(query)]
        engine._terms = None
        assert [(h.doc_id, round(h.score, 5)) for h in engine.search(query)] == counted
    finally:
        engine.close()
