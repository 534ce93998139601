"""The write-pipeline benchmark at its --quick size: every write path, every measure, all live."""

from __future__ import annotations

import json
import re
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

from bench import pipeline as bench  # noqa: E402
from shardrag import DocumentInput  # noqa: E402

QUICK = bench.QUICK
CORES = bench.CORES


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The whole benchmark with --quick (tens of seconds)."""
    require((DEFAULT_SOURCE / "CISI.ALL").is_file(), f"CISI not found at {DEFAULT_SOURCE}")
    out = tmp_path_factory.mktemp("pipeline-bench") / "results" / "pipeline.json"
    return bench.main(["--quick", f"--out={out}"]), out


def ran(report: dict[str, Any], part: str) -> dict[str, Any]:
    """The scenarios of ``part`` that were not skipped."""
    scenarios: dict[str, Any] = report[part]["scenarios"]
    return {name: s for name, s in scenarios.items() if "skipped" not in s}


def test_every_scenario_is_reported(run: tuple[dict[str, Any], Path]) -> None:
    report, _ = run
    for part in ("throughput", "latency"):
        assert set(report[part]["scenarios"]) == set(bench.SCENARIOS)
        # Only NATS may be missing, and then for the reason the report gives.
        assert {"direct", "log_sqlite"} <= set(ran(report, part))
        if not report["nats"]["ran"]:
            assert report[part]["scenarios"]["log_nats"] == {"skipped": report["nats"]["skipped"]}


def test_nats_scenario_ran(run: tuple[dict[str, Any], Path]) -> None:
    report, _ = run
    require(report["nats"]["ran"], f"NATS JetStream at {report['nats']['url']}")
    assert "log_nats" in ran(report, "throughput")
    assert "log_nats" in ran(report, "latency")


def test_throughput_ingested_every_document(run: tuple[dict[str, Any], Path]) -> None:
    report, _ = run
    scenarios = ran(report, "throughput")
    for row in scenarios.values():
        assert row["documents"] == row["live_documents"] == QUICK["docs"]
        assert row["chunks"] >= row["documents"]
        assert row["seconds"] > 0
        assert row["documents_per_second"] > 0 and row["chunks_per_second"] > 0
        assert row["shardrag_cores"] > 0
        assert all(row[c] >= 0 for c in CORES)
    # The baseline ran before and after the log paths; its figures are of the mean time.
    direct = scenarios["direct"]
    assert len(direct["runs"]) == 2
    for before_or_after in direct["runs"]:
        assert before_or_after["documents"] == before_or_after["live_documents"] == QUICK["docs"]
        assert before_or_after["chunks"] == direct["chunks"]
    runs_seconds = [r["seconds"] for r in direct["runs"]]
    assert direct["seconds"] == pytest.approx(sum(runs_seconds) / 2, abs=1e-3)
    # Same documents, same chunker: every write path made the same chunks.
    assert len({row["chunks"] for row in scenarios.values()}) == 1
    ratios = report["throughput"]["log_over_direct"]
    assert set(ratios) == set(scenarios) - {"direct"}
    assert all(ratio > 0 for ratio in ratios.values())


def test_latency_measured_every_document_until_searchable(
    run: tuple[dict[str, Any], Path],
) -> None:
    report, _ = run
    part = report["latency"]
    assert part["documents_per_measure"] == QUICK["latency_docs"]
    assert part["preload_documents"] == QUICK["preload_docs"]
    for name, rows in ran(report, "latency").items():
        assert rows["preloaded_live_documents"] == QUICK["preload_docs"], name
        assert set(rows) == {*bench.MEASURES, "preloaded_live_documents"}
        for measure in bench.MEASURES:
            row = rows[measure]
            for figures in (row, row["put_call"]):
                assert figures["count"] == len(figures["samples_ms"]) == QUICK["latency_docs"]
                assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
            assert row["live_documents"] == QUICK["latency_docs"], (name, measure)
            assert all(row[c] >= 0 for c in CORES)
            # The put call is part of what is timed.
            assert row["max_ms"] >= row["put_call"]["max_ms"]
        assert rows["open_eventual"]["max_behind_schedule_ms"] >= 0


def test_json_file_is_the_returned_report(run: tuple[dict[str, Any], Path]) -> None:
    report, out = run
    assert json.loads(out.read_text()) == report


def test_markers_are_distinct_words_each_in_its_own_document() -> None:
    source = [DocumentInput(f"d{n}", f"text {n}".encode(), filename="d.txt") for n in range(8)]
    documents = bench.latency_documents(source, preload=2, per_measure=5)
    assert set(documents) == set(bench.MEASURES)
    pairs = [pair for measure in bench.MEASURES for pair in documents[measure]]
    words = [word for _, word in pairs]
    assert len(set(words)) == len(words) == 3 * 5
    assert all(re.fullmatch("[a-z]+", word) for word in words)
    assert len({document.doc_id for document, _ in pairs}) == len(pairs)
    for document, word in pairs:
        assert document.data.decode().split()[-1] == f"{word}."
        # Never one of the preloaded documents (d0, d1) under a new id.
        assert not document.data.startswith((b"text 0", b"text 1"))


def test_summary_percentiles() -> None:
    figures = bench.summary([ms / 1000 for ms in range(1, 101)])
    assert figures["count"] == 100
    assert figures["p50_ms"] == pytest.approx(50.5)
    assert figures["p99_ms"] == pytest.approx(99.01)
    assert figures["max_ms"] == pytest.approx(100.0)
    assert figures["mean_ms"] == pytest.approx(50.5)


def test_unreachable_nats_is_skipped_with_its_reason(run: tuple[dict[str, Any], Path]) -> None:
    paths, skipped = bench.write_paths("nats://127.0.0.1:1")
    assert set(paths) == {"direct", "log_sqlite"}
    assert skipped == "NATS not reachable at nats://127.0.0.1:1"
    # The tables print a skipped write path as such.
    report = json.loads(json.dumps(run[0]))
    report["nats"].update(ran=False, skipped=skipped)
    for part in ("throughput", "latency"):
        report[part]["scenarios"]["log_nats"] = {"skipped": skipped}
    report["throughput"]["log_over_direct"].pop("log_nats", None)
    with bench.console.capture() as captured:
        bench.print_report(report)
    printed = captured.get()
    assert printed.count("skipped") == 3
    assert f"log, NATS: skipped, {skipped}" in printed


def test_nats_cpu_never_goes_negative_when_servers_come_and_go() -> None:
    # pid 2 exited between the readings (its ticks are lost), pid 3 started (counted from 0).
    assert bench._ticks_since({1: 10, 2: 500}, {1: 15, 3: 4}) == 9
