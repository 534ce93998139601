"""What tracing costs a search: ``shardrag serve`` without traces, then exporting every span
over OTLP/HTTP (``OTEL_EXPORTER_OTLP_ENDPOINT``) to a receiver in this process.

    python -m bench.tracing_cost [--docs 150] [--queries 300]
                                 [--out bench/results/tracing_cost.json]

One data dir, served twice one after the other, the baseline (no ``OTEL_*`` variable: tracing
off) first. 300 uncached searches (distinct texts) one at a time over one kept-alive
connection, then the same with a connection per search; p50/p99 wall ms. The receiver accepts
and drops the exports (it counts the spans), so the figure is the service's own cost of
making, batching and sending spans.
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

import httpx  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.http_search import load_cisi, stop  # noqa: E402
from bench.tls_cost import TENANT, measure, served, wait_ready  # noqa: E402
from shardrag import Shardrag  # noqa: E402

console = Console(stderr=True)


class SpanSink:
    """An OTLP/HTTP endpoint that accepts every export and counts the bytes received."""

    def __init__(self) -> None:
        self.exports = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                sink.exports += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=150)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    documents, questions = load_cisi(args.docs, 112)
    questions = [questions[i % len(questions)] for i in range(args.queries)]
    report: dict[str, Any] = {"docs": args.docs, "queries": args.queries, "cases": {}}
    sink = SpanSink()
    try:
        with tempfile.TemporaryDirectory(prefix="tracing-bench-") as tmp:
            data = Path(tmp) / "data"
            with Shardrag.open(data) as rag:
                rag.put_documents(TENANT, documents)
            admin_key = secrets.token_urlsafe(24)
            traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_TRACES_EXPORTER": "otlp"}
            for name, env in (("tracing_off", {}), ("tracing_otlp", traced)):
                process, port = served(data, admin_key, [], env)
                try:
                    url = f"http://127.0.0.1:{port}"
                    wait_ready(url, False, process)
                    made = httpx.post(
                        f"{url}/v1/tenants/{TENANT}/keys",
                        json={"role": "reader"},
                        headers={"Authorization": f"Bearer {admin_key}"},
                    )
                    key = made.raise_for_status().json()["key"]
                    console.print(f"measuring {name}")
                    report["cases"][name] = measure(url, False, key, questions, name)
                finally:
                    stop(process)
        report["exports_received"] = sink.exports
    finally:
        sink.close()
    show(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return report


def show(report: dict[str, Any]) -> None:
    table = Table(title=f"search with and without traces ({report['queries']} searches, ms)")
    for column in ("case", "connection", "p50", "p99", "p50 vs off"):
        table.add_column(column)
    base = report["cases"]["tracing_off"]
    for name, case in report["cases"].items():
        for connection, figures in case.items():
            ratio = figures["p50_ms"] / base[connection]["p50_ms"]
            table.add_row(
                name,
                connection,
                f"{figures['p50_ms']:.2f}",
                f"{figures['p99_ms']:.2f}",
                f"{ratio:.2f}x",
            )
    Console().print(table)
    console.print(f"OTLP exports received: {report['exports_received']}")


if __name__ == "__main__":
    main()
