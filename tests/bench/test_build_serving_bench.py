"""The build-while-serving benchmark at a tiny size: each window measured, searches answered
while the child process builds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    # pytest puts only this test's folder on sys.path, and bench/ sits at the repository root.
    sys.path.insert(0, str(REPO_ROOT))

from bench import build_serving as bench  # noqa: E402
from shardrag.engine import shard as engine_shard  # noqa: E402


def test_every_window_is_measured_and_the_child_build_serves(tmp_path: Path) -> None:
    out = tmp_path / "build_serving.json"
    threshold = engine_shard.BUILD_IN_PROCESS_UP_TO
    report = bench.main(
        [
            "--points=2000",
            "--extra=0.5",
            "--idle-seconds=1",
            f"--work-dir={tmp_path}",
            f"--out={out}",
        ]
    )
    assert threshold == engine_shard.BUILD_IN_PROCESS_UP_TO, "the bench must restore it"
    idle, in_process, apart = report["windows"]
    assert [w["name"] for w in report["windows"]] == [
        "idle (no build)",
        "build in-process",
        "build in a child process",
    ]
    assert idle["searches"] > 0 and idle["per_second"] > 0
    for window in (idle, in_process, apart):
        assert window["p50_ms"] <= window["p99_ms"] <= window["max_ms"]
    # The child's build takes at least a process start: searches go on meanwhile.
    assert apart["searches"] > 1
    assert set(report["build_seconds"]) == {"in_process", "child_process"}
    assert all(seconds > 0 for seconds in report["build_seconds"].values())
    assert json.loads(out.read_text()) == report
    # Nothing of the shard is left behind.
    assert not list(tmp_path.glob("build-serving-*"))
