"""OpenTelemetry traces: a real ``shardrag serve`` exporting over OTLP/HTTP to a receiver
started here; a caller's ``traceparent`` is continued through the api, the search, the query's
embedding and the shard's engine."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tests.support import free_port

ROOT_KEY = "root-key-of-the-tracing-suite-0123456789"


@dataclass(frozen=True)
class ReceivedSpan:
    """A span as the receiver got it."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str


class OtlpReceiver:
    """An OTLP/HTTP trace receiver (``POST /v1/traces``, protobuf) on a loopback port."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                found = []
                for resource_spans in request.resource_spans:
                    attributes = {
                        a.key: a.value.string_value for a in resource_spans.resource.attributes
                    }
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            found.append(
                                ReceivedSpan(
                                    attributes.get("service.name", ""),
                                    span.name,
                                    span.trace_id.hex(),
                                    span.span_id.hex(),
                                    span.parent_span_id.hex(),
                                )
                            )
                with receiver._lock:
                    receiver.spans += found
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trace(
        self, trace_id: str, wanted: set[str], root: str, timeout: float = 30.0
    ) -> list[ReceivedSpan]:
        """The spans of ``trace_id`` once every name of ``wanted`` arrived and every span's
        parent is ``root`` (the caller's span) or a span received: spans come in batches, a
        parent may arrive after its children (past ``timeout``, what came)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                spans = [s for s in self.spans if s.trace_id == trace_id]
            ids = {s.span_id for s in spans} | {root}
            whole = all(s.parent_id in ids for s in spans)
            if (wanted <= {s.name for s in spans} and whole) or time.monotonic() > deadline:
                return spans
            time.sleep(0.2)

    def env(self) -> dict[str, str]:
        """The standard variables pointing a process's traces here, exported quickly."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.url,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    found = OtlpReceiver()
    yield found
    found.close()


@pytest.fixture(scope="module")
def traced_server(
    receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        **receiver.env(),
        "SHARDRAG_ADMIN_KEY": ROOT_KEY,
        "SHARDRAG_RATE_LIMIT_PER_SECOND": "0",
        "SHARDRAG_DATA_DIR": str(tmp_path_factory.mktemp("traced") / "data"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "shardrag", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_search_is_one_trace_continuing_the_callers(
    traced_server: str, receiver: OtlpReceiver
) -> None:
    root = {"Authorization": f"Bearer {ROOT_KEY}"}
    with httpx.Client(base_url=traced_server, timeout=60) as client:
        assert client.post("/v1/tenants", json={"id": "traced"}, headers=root).status_code == 201
        key = client.post("/v1/tenants/traced/keys", json={"role": "writer"}, headers=root)
        writer = {"Authorization": f"Bearer {key.json()['key']}"}
        write_trace, write_parent = secrets.token_hex(16), secrets.token_hex(8)
        put = client.put(
            "/v1/tenants/traced/documents/otters.txt",
            content=b"Sea otters hold hands while they sleep.",
            params={"wait": "true"},
            headers={**writer, "traceparent": f"00-{write_trace}-{write_parent}-01"},
        )
        assert put.status_code == 200, put.text
        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        found = client.post(
            "/v1/tenants/traced/search",
            json={"query": "do otters sleep holding hands?"},
            headers={**writer, "traceparent": f"00-{trace_id}-{parent}-01"},
        )
        assert found.status_code == 200 and found.json()["hits"]
    wanted = {"POST /v1/tenants/{t}/search", "search", "embed query", "engine search"}
    spans = receiver.trace(trace_id, wanted, parent)
    by_name = {s.name: s for s in spans}
    assert wanted <= set(by_name), [s.name for s in spans]
    server = by_name["POST /v1/tenants/{t}/search"]
    assert server.parent_id == parent and server.service == "shardrag-api"
    ids = {s.span_id for s in spans}
    # One tree: every span's parent is the caller's span or another span of the trace.
    assert all(s.parent_id == parent or s.parent_id in ids for s in spans)
    # The write's trace went through the log: ingest, embed and the shard's ops.
    stages = {"PUT /v1/tenants/{t}/documents/{doc_id}", "ingest", "embed", "apply commit"}
    written = receiver.trace(write_trace, stages, write_parent)
    assert stages <= {s.name for s in written}, [s.name for s in written]
    by_stage = {s.name: s for s in written}
    assert by_stage["ingest"].span_id in _ancestors(by_stage["embed"], written)
    assert by_stage["embed"].span_id in _ancestors(by_stage["apply commit"], written)
    # The route's work descends from the caller's span (through FastAPI's own request spans,
    # which FastAPI opens beside the api's when OpenTelemetry is installed).
    assert _root_of(by_name["search"], spans) == parent
    assert by_name["search"].span_id in _ancestors(by_name["embed query"], spans)
    assert by_name["search"].span_id in _ancestors(by_name["engine search"], spans)


def _root_of(span: ReceivedSpan, spans: list[ReceivedSpan]) -> str:
    """The parent id the chain of ``span``'s ancestors ends at (outside the trace's spans)."""
    by_id = {s.span_id: s for s in spans}
    seen: set[str] = set()
    while span.parent_id in by_id and span.parent_id not in seen:
        seen.add(span.parent_id)
        span = by_id[span.parent_id]
    return span.parent_id


def _ancestors(span: ReceivedSpan, spans: list[ReceivedSpan]) -> set[str]:
    by_id = {s.span_id: s for s in spans}
    found: set[str] = set()
    while span.parent_id in by_id and span.parent_id not in found:
        found.add(span.parent_id)
        span = by_id[span.parent_id]
    return found


def test_tracing_is_off_without_the_environment(tmp_path: Path) -> None:
    """No OTEL_* variable: nothing is installed and every helper is a no-op."""
    code = (
        "from shardrag.observability import tracing\n"
        "assert tracing.configure_tracing('x') is False\n"
        "with tracing.span('s') as current:\n"
        "    assert current is None and tracing.inject() == {}\n"
        "print('off')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "off", done.stderr
