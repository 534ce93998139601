"""The HTTP search benchmark at a tiny size: wrk really hits the server, the server stops."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    # pytest puts only this test's folder on sys.path, and bench/ sits at the repository root.
    sys.path.insert(0, str(REPO_ROOT))

from bench.cisi_to_beir import DEFAULT_SOURCE  # noqa: E402
from tests.support import QuietHandler, http_server, require  # noqa: E402

from bench import http_search as bench  # noqa: E402

WRK = shutil.which("wrk")


def require_wrk() -> str:
    require(WRK is not None, "wrk is not installed (apt-get install wrk)")
    assert WRK is not None
    return WRK


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The whole benchmark: 20 documents, 1 connection, 1 s per wrk run."""
    require_wrk()
    require((DEFAULT_SOURCE / "CISI.ALL").is_file(), f"CISI not found at {DEFAULT_SOURCE}")
    out = tmp_path_factory.mktemp("http-bench") / "results" / "http_search.json"
    report = bench.main(
        [
            "--docs=20",
            "--queries=5",
            "--duration=1",
            "--connections=1",
            "--rounds=2",
            "--uncached-queries=5",
            f"--out={out}",
        ]
    )
    return report, out


def test_both_scenarios_ran_without_errors(run: tuple[dict[str, Any], Path]) -> None:
    report, _ = run
    rows = {row["scenario"]: row for row in report["http"]}
    assert set(rows) == {"cached", "uncached"}
    for row in rows.values():
        assert row["connections"] == row["wrk_threads"] == 1
        assert row["requests"] > 0
        assert row["errors"] == 0, row["error_counts"]
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["req_per_s"] > 0
        assert row["server_cores"] > 0
    # The server counted what each scenario is meant to be; requests wrk left in flight at
    # the end of a run reach the server without being counted by wrk.
    cached, uncached = rows["cached"], rows["uncached"]
    assert cached["cache_misses"] == 0
    assert cached["requests"] <= cached["cache_hits"] <= cached["sent"]
    assert uncached["cache_hits"] == 0
    assert uncached["requests"] <= uncached["cache_misses"] <= uncached["sent"]


def test_in_process_baseline_is_the_same_two_kinds_of_query(
    run: tuple[dict[str, Any], Path],
) -> None:
    report, _ = run
    cached, uncached = report["in_process"]["cached"], report["in_process"]["uncached"]
    assert cached["count"] == cached["cache_hits"] == 5 * 2
    assert uncached["count"] == uncached["cache_misses"] == 5
    for figures in (cached, uncached):
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert report["corpus"]["documents"] == 20
    assert report["corpus"]["chunks"] >= 20


def test_server_was_stopped_by_sigterm(run: tuple[dict[str, Any], Path]) -> None:
    report, _ = run
    # serve returns after a graceful shutdown (and closes the data dir): exit 0.
    assert report["server"]["exit_code"] == 0
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", report["server"]["port"])) != 0


def test_json_file_is_the_returned_report(run: tuple[dict[str, Any], Path]) -> None:
    report, out = run
    assert json.loads(out.read_text()) == report


def test_wrk_script_posts_the_queries_as_json(tmp_path: Path) -> None:
    wrk = require_wrk()
    received: list[tuple[str, str, bytes]] = []

    class Recorder(QuietHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the server under test

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Authorization"], body))
            self.reply("application/json", b'{"hits": []}')

    queries = ['say "hi" \\ back', "café naïve", "two\nlines"]
    script = tmp_path / "search.lua"
    script.write_text(bench.wrk_script(queries, "/v1/tenants/t/search", "secret-key"))
    with http_server(Recorder) as url:
        cached = bench.run_wrk(wrk, script, url, "cached", "x", 2, 2, 1)
        cached_bodies = [json.loads(body) for _, _, body in received]
        received.clear()
        uncached = bench.run_wrk(wrk, script, url, "uncached", "run7", 2, 2, 1)
        uncached_bodies = [json.loads(body) for _, _, body in received]
    for run_, bodies in ((cached, cached_bodies), (uncached, uncached_bodies)):
        assert run_.threads == 2
        assert run_.result["requests"] > 0
        assert run_.result["requests"] <= len(bodies) <= run_.result["sent"]
        assert {body["k"] for body in bodies} == {bench.K}
    assert {(path, auth) for path, auth, _ in received} == {
        ("/v1/tenants/t/search", "Bearer secret-key")
    }
    assert {body["query"] for body in cached_bodies} == set(queries)
    texts = [body["query"] for body in uncached_bodies]
    assert len(set(texts)) == len(texts), "every uncached request is a distinct text"
    for text in texts:
        query, _, tag = text.rpartition(" #run7-")
        assert query in queries
        thread, n = tag.split("-")
        assert text == bench.distinct_query(query, f"run7-{thread}", int(n))


def test_server_is_stopped_when_the_benchmark_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for `shardrag serve` that answers /healthz and ignores SIGTERM, so that the
    # SIGKILL fallback is exercised too.
    fake = tmp_path / "shardrag"
    fake.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            """\
            import signal, sys
            from http.server import BaseHTTPRequestHandler, HTTPServer
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            class Health(BaseHTTPRequestHandler):
                def do_GET(self):
                    self.send_response(200)
                    self.end_headers()
                def log_message(self, *args):
                    pass
            port = int(sys.argv[sys.argv.index("--port") + 1])
            HTTPServer(("127.0.0.1", port), Health).serve_forever()
            """
        )
    )
    fake.chmod(0o755)
    monkeypatch.setattr(bench, "shardrag_executable", lambda: str(fake))
    stop = bench.stop
    monkeypatch.setattr(bench, "stop", lambda process: stop(process, grace_seconds=0.5))
    processes: list[subprocess.Popen[bytes]] = []
    with (
        pytest.raises(RuntimeError, match="benchmark failed"),
        bench.serve(tmp_path / "data", tmp_path / "server.log") as server,
    ):
        processes.append(server.process)
        assert bench.ready(server.url)
        raise RuntimeError("benchmark failed")
    (process,) = processes
    assert process.poll() == -signal.SIGKILL
    assert server.exit_code == -signal.SIGKILL
    assert not bench.ready(server.url)


def test_stop_ends_a_process_with_sigterm() -> None:
    process = subprocess.Popen(["sleep", "60"])
    assert bench.stop(process) == -signal.SIGTERM
    assert process.returncode == -signal.SIGTERM
