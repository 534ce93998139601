"""What TLS costs a search: ``shardrag serve`` plain, then with HTTPS and mutual TLS; and
optionally a whole cluster, plain, then ``up --tls``.

    python -m bench.tls_cost [--docs 300] [--queries 300] [--cluster]
                             [--out bench/results/tls_cost.json]

One data dir (the first ``--docs`` CISI documents, ingested in-process), served twice, one
server after the other (the baseline first): plain HTTP, then HTTPS requiring client
certificates (``--tls-cert/--tls-key/--tls-client-ca``, certificates from
``shardrag.tls.CertificateAuthority``, EC P-256). Against each, one client at a time:

- **keep-alive**: one connection for every search (what a backend with a connection pool
  pays): the cost of encrypting requests and answers;
- **new connection**: a connection per search (the TLS handshake each time, both sides
  verifying a certificate).

Each search is a distinct query (a CISI question with a unique tag), so none is a cache hit.
Reported: p50/p99 wall ms per case, and the ratio to plain HTTP.

With ``--cluster``, the same two measures against a cluster of ``shardrag.cluster.launcher.up``
(3 NATS servers, 3 index nodes, 2 shards x 2 replicas, workers, 2 api processes; this machine's
PostgreSQL and Redis), the baseline plain first, then with ``tls=True``: HTTPS with client
certificates at the api and mutual TLS on every NATS connection (router → nodes, log, shard
map). The documents go in through the API; every search crosses api → NATS → a node.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

import httpx  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.http_search import (  # noqa: E402
    distinct_query,
    free_port,
    load_cisi,
    shardrag_executable,
    stop,
)
from bench.ingest import percentiles  # noqa: E402
from shardrag import Shardrag  # noqa: E402
from shardrag.tls import CertificateAuthority, tls_context  # noqa: E402

console = Console(stderr=True)
TENANT = "bench"


def served(
    data_dir: Path, admin_key: str, tls: list[str], extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """``shardrag serve`` over ``data_dir`` with the TLS arguments ``tls`` and ``extra_env``;
    (process, port)."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        **(extra_env or {}),
        "SHARDRAG_DATA_DIR": str(data_dir),
        "SHARDRAG_ADMIN_KEY": admin_key,
        "SHARDRAG_RATE_LIMIT_PER_SECOND": "0",
        "SHARDRAG_ACCESS_LOG": "false",
        "HF_HUB_OFFLINE": "1",
    }
    command = [shardrag_executable(), "serve", "--host", "127.0.0.1", "--port", str(port), *tls]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return process, port


def wait_ready(url: str, verify: Any, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/healthz", verify=verify, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.2)


def measure(url: str, verify: Any, key: str, questions: list[str], label: str) -> dict[str, Any]:
    """p50/p99 of searches over one kept-alive connection and over a connection each."""
    headers = {"Authorization": f"Bearer {key}"}
    path = f"/v1/tenants/{TENANT}/search"
    report: dict[str, Any] = {}
    with httpx.Client(base_url=url, verify=verify, headers=headers, timeout=60) as client:
        samples = []
        for n, question in enumerate(questions):
            start = time.perf_counter()
            body = {"query": distinct_query(question, label, n), "k": 10}
            client.post(path, json=body).raise_for_status()
            samples.append(time.perf_counter() - start)
    report["keep_alive"] = percentiles(samples[5:])
    samples = []
    for n, question in enumerate(questions):
        start = time.perf_counter()
        with httpx.Client(base_url=url, verify=verify, headers=headers, timeout=60) as fresh:
            body = {"query": distinct_query(question, f"{label}-new", n), "k": 10}
            fresh.post(path, json=body).raise_for_status()
        samples.append(time.perf_counter() - start)
    report["new_connection"] = percentiles(samples[5:])
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--cluster", action="store_true", help="also measure a cluster")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    documents, questions = load_cisi(args.docs, 112)
    questions = [questions[i % len(questions)] for i in range(args.queries)]
    report: dict[str, Any] = {"docs": args.docs, "queries": args.queries, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        work = Path(tmp)
        data = work / "data"
        with Shardrag.open(data) as rag:
            rag.put_documents(TENANT, documents)
        ca = CertificateAuthority(work / "pki")
        server, client = ca.issue("server"), ca.issue("client")
        admin_key = secrets.token_urlsafe(24)
        tls_args = [
            "--tls-cert", str(server.cert), "--tls-key", str(server.key),
            "--tls-client-ca", str(ca.cert_path),
        ]  # fmt: skip
        mutual = tls_context(str(ca.cert_path), (str(client.cert), str(client.key)))
        for name, scheme, extra, verify in (
            # verify=False for plain HTTP: nothing to verify, and httpx would otherwise load
            # the system's CA bundle for every new client, which the TLS case does not.
            ("http", "http", [], False),
            ("https_mutual_tls", "https", tls_args, mutual),
        ):
            process, port = served(data, admin_key, extra)
            try:
                url = f"{scheme}://127.0.0.1:{port}"
                wait_ready(url, verify, process)
                root = {"Authorization": f"Bearer {admin_key}"}
                made = httpx.post(
                    f"{url}/v1/tenants/{TENANT}/keys",
                    json={"role": "reader"},
                    headers=root,
                    verify=verify,
                )
                made.raise_for_status()
                console.print(f"measuring {name}")
                report["cases"][name] = measure(url, verify, made.json()["key"], questions, name)
            finally:
                stop(process)
        if args.cluster:
            for tls in (False, True):
                name = "cluster_mutual_tls" if tls else "cluster_plain"
                report["cases"][name] = measure_cluster(
                    work / name, tls, documents, questions, name
                )
    show(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return report


def measure_cluster(
    directory: Path, tls: bool, documents: list[Any], questions: list[str], label: str
) -> dict[str, Any]:
    """A cluster started with or without TLS, the documents put through its API, measured."""
    from shardrag.cluster.launcher import ClusterSpec, down, up

    spec = ClusterSpec(
        dir=directory,
        name=f"tlsbench_{secrets.token_hex(3)}",
        shards=2,
        replicas=2,
        nodes=3,
        api_port=0,
        extra_env={
            "SHARDRAG_RESULT_CACHE_ENTRIES": "0",
            "SHARDRAG_RATE_LIMIT_PER_SECOND": "0",
            "SHARDRAG_ACCESS_LOG": "false",
        },
        tls=tls,
    )
    console.print(f"starting {label}")
    state = up(spec)
    try:
        verify = state.client_tls()
        root = {"Authorization": f"Bearer {state.admin_key}"}
        with httpx.Client(base_url=state.api_url, verify=verify, timeout=120) as client:
            client.post("/v1/tenants", json={"id": TENANT}, headers=root).raise_for_status()
            keys = {}
            for role in ("writer", "reader"):
                made = client.post(f"/v1/tenants/{TENANT}/keys", json={"role": role}, headers=root)
                keys[role] = made.raise_for_status().json()["key"]
            writer = {"Authorization": f"Bearer {keys['writer']}"}
            for document in documents:
                client.put(
                    f"/v1/tenants/{TENANT}/documents/{document.doc_id}",
                    content=document.data,
                    params={"wait": "true"},
                    headers={**writer, "Content-Type": "text/plain"},
                ).raise_for_status()
        console.print(f"measuring {label}")
        return measure(state.api_url, verify, keys["reader"], questions, label)
    finally:
        down(directory, purge=True)


def show(report: dict[str, Any]) -> None:
    table = Table(title=f"HTTP search with and without TLS ({report['queries']} searches, ms)")
    for column in ("case", "connection", "p50", "p99", "p50 vs http"):
        table.add_column(column)
    for name, case in report["cases"].items():
        base = report["cases"]["cluster_plain" if name.startswith("cluster") else "http"]
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


if __name__ == "__main__":
    main()
