"""The cluster benchmark at a tiny size, as a subprocess: every setup measured, clusters purged."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    # pytest puts only this test's folder on sys.path, and bench/ sits at the repository root.
    sys.path.insert(0, str(REPO_ROOT))

from bench.cisi_to_beir import DEFAULT_SOURCE  # noqa: E402
from tests.support import (  # noqa: E402
    POSTGRES_URL,
    REDIS_URL,
    postgres_is_up,
    redis_is_up,
    require,
)

from bench import cluster as bench  # noqa: E402
from shardrag.cluster.launcher import find_nats_server  # noqa: E402

DOCS = 20
CLIENTS = 2
INGEST_RATE = 5
INGEST_SECONDS = 3
WRITES = INGEST_RATE * INGEST_SECONDS


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """``bench/cluster.py --json`` at tiny sizes (about two minutes: two clusters start)."""
    require((DEFAULT_SOURCE / "CISI.ALL").is_file(), f"CISI not found at {DEFAULT_SOURCE}")
    require(postgres_is_up(), f"PostgreSQL at {POSTGRES_URL}")
    require(redis_is_up(), f"Redis at {REDIS_URL}")
    require(find_nats_server() is not None, "nats-server (Debian package nats-server)")
    out = tmp_path_factory.mktemp("cluster-bench") / "results" / "cluster.json"
    command = [
        sys.executable,
        "-m",
        "bench.cluster",
        f"--docs={DOCS}",
        "--seconds=2",
        f"--clients={CLIENTS}",
        "--warmup=2",
        f"--ingest-rate={INGEST_RATE}",
        f"--ingest-seconds={INGEST_SECONDS}",
        f"--postgres-url={POSTGRES_URL}",
        f"--redis-url={REDIS_URL}",
        "--json",
        f"--out={out}",
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-5000:]}"
    report: dict[str, Any] = json.loads(done.stdout)
    return report, out


def test_every_figure_is_a_positive_number(run: tuple[dict[str, Any], Path]) -> None:
    report, _ = run
    figures = report["figures"]
    expected = {
        f"{setup}.search.{stat}"
        for setup in bench.SETUPS
        for stat in ("p50_ms", "p99_ms", "req_per_s")
    }
    expected |= {
        f"{setup}.put_to_visible.{stat}"
        for setup in ("in_process", "cluster_1x1", "cluster_2x2")
        for stat in ("p50_ms", "p99_ms")
    }
    lag = {
        f"{setup}.lag.{kind}.{stat}"
        for setup in ("cluster_1x1", "cluster_2x2")
        for kind in ("ops", "status_seq")
        for stat in ("p50", "p99", "max")
    }
    assert set(figures) == expected | lag
    for name, value in figures.items():
        assert isinstance(value, int | float) and math.isfinite(value), (name, value)
        if name in lag:
            # A replica that keeps up shows no lag at the instants sampled: 0 is a measurement.
            assert value >= 0, (name, value)
        else:
            assert value > 0, (name, value)


def test_search_ran_without_errors_on_every_setup(run: tuple[dict[str, Any], Path]) -> None:
    report, _ = run
    assert set(report["setups"]) == set(bench.SETUPS)
    for name in bench.SETUPS:
        search = report["setups"][name]["search"]
        assert search["clients"] == CLIENTS
        assert search["errors"] == 0, search["error_samples"]
        assert search["empty_results"] == 0
        assert search["requests"] == search["count"] > 0
        assert 0 < search["p50_ms"] <= search["p99_ms"] <= search["max_ms"]
        assert search["req_per_s"] == pytest.approx(search["requests"] / search["seconds"], 0.01)
        assert [len(w) for w in search["warmup"]["ms"]] == [2] * CLIENTS
        assert all(cores >= 0 for cores in search["cores"].values())
    assert report["settings"]["result_cache"] == "off"
    assert report["settings"]["service_env"]["SHARDRAG_RESULT_CACHE_ENTRIES"] == "0"


def test_clusters_had_their_shape_and_every_document(run: tuple[dict[str, Any], Path]) -> None:
    report, _ = run
    assert report["setups"]["in_process"]["ingest"]["live"] == DOCS
    for name, (shards, replicas, nodes) in bench.SHAPES.items():
        setup = report["setups"][name]
        assert (setup["shards"], setup["replicas"], setup["nodes"]) == (shards, replicas, nodes)
        assert setup["ingest"]["live"] == setup["ingest"]["documents"] == DOCS
        # The search tenant lives on one shard, held by `replicas` nodes.
        (held_by,) = setup["search_tenant_shards"].values()
        assert len(held_by) == replicas
        # Every client's connection landed on one of the cluster's api processes.
        assert set(setup["search"]["served_by"]) <= set(setup["api_pids"])
        assert all(setup["processes_alive"].values()), setup["processes_alive"]
        # The cluster service used the CPU, role by role.
        assert setup["search"]["cores"]["api"] > 0
        assert set(setup["search"]["cores"]) == {"bench", "nats", "node", "worker", "api", "other"}


def test_steady_ingest_made_every_write_visible(run: tuple[dict[str, Any], Path]) -> None:
    report, _ = run
    for name in ("in_process", "cluster_1x1", "cluster_2x2"):
        writes = report["setups"][name]["writes"]
        assert writes["failures"] == 0, writes["failure_samples"]
        assert writes["documents"] == writes["live"] == WRITES
        assert writes["put_call"]["count"] == WRITES
        # One session read per write (--session-every 1), each found its document.
        assert writes["session_reads"] == writes["put_to_visible"]["count"] == WRITES
        # A put is part of put → visible.
        assert writes["put_to_visible"]["max_ms"] >= writes["put_call"]["max_ms"]
        assert [w["visible_ms"] >= w["put_ms"] > 0 for w in writes["writes"]] == [True] * WRITES
    for name in bench.SHAPES:
        # Every write's events were seen in the log: put → visible split at each of them.
        stages = report["setups"][name]["writes"]["stages"]
        assert list(stages) == [stage for stage, _ in bench.STAGES]
        assert all(stage["count"] == WRITES for stage in stages.values()), stages


def test_lag_was_sampled_on_every_replica_of_the_written_shard(
    run: tuple[dict[str, Any], Path],
) -> None:
    report, _ = run
    for name, (_, replicas, _) in bench.SHAPES.items():
        lag = report["setups"][name]["writes"]["lag"]
        (shard,) = lag["shards"]
        assert len(lag["replicas"][str(shard)]) == replicas
        assert len(lag["per_replica"]) == replicas
        assert lag["probe_failures"] == 0
        for kind in ("ops", "status_seq"):
            assert lag[kind]["samples"] >= replicas * INGEST_SECONDS
            assert 0 <= lag[kind]["p50"] <= lag[kind]["p99"] <= lag[kind]["max"]
        # Every replica applied everything once the writes stopped.
        assert lag["drain_seconds"] is not None and lag["drain_seconds"] >= 0
        # Two ops per document (upsert, commit), on the shard the tenants were placed on.
        assert lag["shard_ops_in_log"][str(shard)] >= 2 * WRITES


def test_clusters_were_purged(run: tuple[dict[str, Any], Path]) -> None:
    report, _ = run
    cache = redis.Redis.from_url(REDIS_URL)
    try:
        with psycopg.connect(POSTGRES_URL) as admin:
            for name in bench.SHAPES:
                setup = report["setups"][name]
                assert set(setup["down"].values()) <= {"stopped", "killed"}, setup["down"]
                cluster = setup["cluster_name"]
                found = admin.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (f"shardrag_{cluster}",)
                ).fetchone()
                assert found is None, f"database of {cluster} left behind"
                assert cache.keys(f"{cluster}:*") == []
    finally:
        cache.close()


def test_json_file_is_the_printed_report(run: tuple[dict[str, Any], Path]) -> None:
    report, out = run
    assert json.loads(out.read_text()) == report


def test_markers_are_distinct_words() -> None:
    words = [bench.marker(n) for n in range(2000)]
    assert len(set(words)) == len(words)
    assert all(re.fullmatch("[a-z]+", word) for word in words)


def test_log_problems_counts_warnings_and_errors_but_not_nats_startup(tmp_path: Path) -> None:
    api = tmp_path / "api-1.log"
    api.write_text(
        '{"time": "t", "level": "info", "message": "fine"}\n'
        '{"time": "t", "level": "error", "message": "unhandled TypeError"}\n'
        "ERROR:    Exception in ASGI application\n"
        "Traceback (most recent call last):\n"
    )
    nats = tmp_path / "nats-1.log"
    nats.write_text(
        "[1] 2026/01/01 00:00:00.0 [INF] Starting nats-server\n"
        "[1] 2026/01/01 00:00:00.0 [ERR] Error trying to connect to route (attempt 1): refused\n"
        "[1] 2026/01/01 00:00:00.0 [WRN] Waiting for routing to be established...\n"
        "[1] 2026/01/01 00:00:01.0 [WRN] JetStream request queue has high pending count\n"
    )
    problems = bench.log_problems({"api-1": api, "nats-1": nats})
    assert problems["by_log"] == {"api-1": 3, "nats-1": 1}
    assert problems["lines"] == 4
    assert problems["nats_startup"] == 2
    assert any("unhandled TypeError" in line for line in problems["first"])


def test_a_failed_setup_is_printed_as_such(run: tuple[dict[str, Any], Path]) -> None:
    report = json.loads(json.dumps(run[0]))
    report["setups"]["cluster_2x2"] = {"failed": "RuntimeError('boom')", "traceback": "..."}
    report["figures"] = bench.figures(report)
    assert not any(name.startswith("cluster_2x2.") for name in report["figures"])
    with bench.console.capture() as captured:
        bench.print_report(report)
    printed = captured.get()
    assert "FAILED: RuntimeError('boom')" in printed  # under the tables
    assert printed.count("FAILED") == 2  # and as its row of the search table
