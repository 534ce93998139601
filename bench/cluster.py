"""Cluster benchmark: search through the router over NATS, and replication lag, vs. in-process.

    python -m bench.cluster [--docs 300] [--seconds 20] [--clients 4] [--warmup 3]
                            [--ingest-rate 5] [--ingest-seconds 30] [--sample-interval 0.5]
                            [--session-every 1] [--no-serve] [--logs-dir DIR] [--json]
                            [--postgres-url URL] [--redis-url URL]
                            [--out bench/results/cluster.json]

One run, four setups, one after the other, each over the first ``--docs`` CISI documents in
tenant ``bench`` and the CISI queries (all 112, cycled; every client starts at its own offset):

* ``in_process`` (the baseline): an embedded ``Shardrag`` (2 shards, SQLite log) in this
  process, ``Shardrag.search`` called from ``--clients`` threads;
* ``serve`` (baseline over HTTP, ``--no-serve`` skips it): ``shardrag serve`` over that same
  data dir, one process;
* ``cluster_1x1``: ``shardrag.cluster.launcher.up`` with 1 index node (1 shard x 1 replica);
* ``cluster_2x2``: 3 index nodes, 2 shards x 2 replicas.

Each cluster is the launcher's whole topology: 3 NATS servers, the nodes, the ingest and embed
workers and 2 api processes sharing one port (PostgreSQL and Redis of this machine), in a temp
dir under a unique name, and ``down(dir, purge=True)`` in a ``finally``. Every HTTP setup runs
with **the result cache off** (``SHARDRAG_RESULT_CACHE_ENTRIES=0``: every request embeds its
query and reaches the nodes, or the shard) and **the rate limit off**
(``SHARDRAG_RATE_LIMIT_PER_SECOND=0``); the in-process baseline with
``result_cache_entries=0``. A cluster's documents go in through the API (``PUT`` without
``wait`` from 4 threads, then strong reads until one answers: every write decided and applied),
and each is checked live before anything is timed.

**Search**: ``--clients`` threads, each with its own keep-alive ``httpx.Client`` (one
connection; ``/healthz`` tells which api process it landed on), first ``--warmup`` untimed
searches each (their latencies are reported: the first searches of a fresh cluster), then a
closed loop of ``POST /v1/tenants/bench/search {"query", "k": 10}`` for ``--seconds``.
p50/p99 of the successful requests, req/s = successes / wall time until the last one returned,
errors counted by status. A tenant lives on one shard (placed by hash), so on ``cluster_2x2``
its queries go to that shard's 2 replicas (the queue group picks one per query); the table
names the shard and its nodes.

**Replication lag** (both clusters; the 1-node one is the baseline) and **put → visible**
(also in-process): a writer puts ``--ingest-rate`` documents/s for ``--ingest-seconds`` into
tenant ``bench-writes`` without waiting (documents after the first ``--docs``, each with a
unique marker word), on a fixed schedule. Every ``--session-every``-th write is handed at once
to a pool of readers that run one keyword search for its marker with ``read_concern=session``
and the write's ``write_token``; put → visible runs from the start of the put to the end of
that read (which must return the document). Meanwhile, every ``--sample-interval`` s, the lag
of every replica is sampled two ways:

* ``ops``: the shard's log head (JetStream's last message on ``<name>.shard.<s>``), then the
  replica's applied offset asked of the node itself (a one-hit keyword search on
  ``<name>_rpc.search.<s>.<node>``, whose reply carries it), and the number of shard ops between
  the two, counted from an ordered consumer of ``<name>.shard.*`` (headers only) that this
  script keeps from the start;
* ``status``: what ``shardrag cluster status`` shows: that head minus the applied offset of
  the node's last heartbeat (every ``node_ttl/3`` = 2 s), in log sequence numbers. The log is
  one stream for every subject (doc.ingest, chunk.embed, shard.*), so a sequence distance is
  not a count of shard ops, and a heartbeat up to 2 s old makes it larger still.

The lag figures are over the replicas of the shard ``bench-writes`` lives on. The same
consumer notes when each write's events reach the log (by their ``Nats-Msg-Id``), which splits
put → visible into ``accept`` (put → ``doc.ingest``), ``ingest`` (→ ``chunk.embed``), ``embed``
(→ the commit op on ``shard.<s>``) and ``apply_and_read`` (→ the session read returned).
After the last put, sampling goes on until every replica has applied everything (the drain
time). Every written document is checked live at the end.

CPU: the machine has 2 cores shared by the load generator (this process), the service (every
cluster process, by role) and anything else; the cores each used are beside the figures.
Problems the service logged (warnings, errors, tracebacks) are counted per process and quoted
in the report; ``--logs-dir`` keeps a copy of every cluster's logs (the cluster dir is purged).
"""

from __future__ import annotations

import argparse
import bisect
import concurrent.futures
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO_ROOT = Path(__file__).resolve().parents[1]

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from nats.js.api import DeliverPolicy  # noqa: E402
from nats.js.errors import NotFoundError  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.http_search import (  # noqa: E402
    free_port,
    load_cisi,
    machine_busy_seconds,
    ready,
    shardrag_executable,
    stop,
)
from bench.pipeline import latency_summary  # noqa: E402
from shardrag import DocumentInput, Shardrag  # noqa: E402
from shardrag.cluster import open_shard_map  # noqa: E402
from shardrag.cluster.launcher import STATE_FILE, ClusterSpec, ClusterState, down, up  # noqa: E402
from shardrag.cluster.protocol import SearchCall, SearchReply, search_subject  # noqa: E402
from shardrag.config import Settings  # noqa: E402
from shardrag.models import SearchMode, ShardQuery, VersionState  # noqa: E402
from shardrag.natsconn import NatsConnection  # noqa: E402
from shardrag.pipeline import DOCUMENTS_PER_BATCH  # noqa: E402
from shardrag.pipeline.events import VersionRef  # noqa: E402

# Wide enough for the tables when the output is not a terminal (make, CI logs).
console = Console(width=None if sys.stdout.isatty() else 160)
progress_console = Console(stderr=True)

K = 10
TENANT = "bench"
WRITE_TENANT = "bench-writes"
#: The setups, baselines first.
SETUPS = ("in_process", "serve", "cluster_1x1", "cluster_2x2")
LABELS = {
    "in_process": "in-process (baseline)",
    "serve": "serve, 1 process (baseline)",
    "cluster_1x1": "cluster 1 node, 1x1",
    "cluster_2x2": "cluster 3 nodes, 2x2",
}
#: (shards, replicas, index nodes) of each cluster.
SHAPES = {"cluster_1x1": (1, 1, 1), "cluster_2x2": (2, 2, 3)}
#: What every HTTP setup runs with: each request reaches the shard, nothing is throttled.
SERVICE_ENV = {
    "SHARDRAG_RESULT_CACHE_ENTRIES": "0",
    "SHARDRAG_RATE_LIMIT_PER_SECOND": "0",
    "SHARDRAG_TENANT_MAX_CONCURRENT_QUERIES": "0",
}
EMBEDDED_SHARDS = 2
#: A client request taking longer than this counts as failed.
REQUEST_TIMEOUT = 60.0
#: Threads putting the documents of a cluster in before the search is timed.
INGEST_THREADS = 4
#: How long the documents may take to be decided and applied before the run fails.
INGEST_TIMEOUT = 900.0
#: How long replicas may take to apply everything after the last put.
DRAIN_TIMEOUT = 120.0
#: Log lines quoted per cluster in the report.
QUOTED_LOG_LINES = 20
DEFAULTS = {
    "docs": 300,
    "seconds": 20.0,
    "clients": 4,
    "warmup": 3,
    "ingest_rate": 5.0,
    "ingest_seconds": 30.0,
    "sample_interval": 0.5,
    "session_every": 1,
}


def progress(message: str) -> None:
    """A step of the run, on stderr (stdout holds the tables, or the JSON with --json)."""
    progress_console.print(f"[dim]{time.strftime('%H:%M:%S')} {message}[/dim]")


# -- figures ------------------------------------------------------------------------------------


def count_summary(values: list[int]) -> dict[str, Any]:
    """p50/p99/max of a lag in ops or sequence numbers."""
    if not values:
        return {"samples": 0}
    array = np.asarray(values, dtype=np.float64)
    return {
        "samples": len(values),
        "p50": round(float(np.percentile(array, 50)), 2),
        "p99": round(float(np.percentile(array, 99)), 2),
        "max": int(array.max()),
        "nonzero_samples": int((array > 0).sum()),
    }


# -- CPU ----------------------------------------------------------------------------------------


def pid_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all threads), None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Cores used from now on by this process, by groups of service processes, by the rest."""

    def __init__(self, groups: dict[str, list[int]] | None = None) -> None:
        self.groups = groups or {}
        self._start = time.perf_counter()
        self._own = time.process_time()
        self._busy = machine_busy_seconds()
        self._pids = {pid: pid_cpu_seconds(pid) for pids in self.groups.values() for pid in pids}

    def cores(self) -> dict[str, float]:
        """``bench`` (this process), each group, ``other``: average cores since made."""
        wall = time.perf_counter() - self._start
        own = time.process_time() - self._own
        busy = machine_busy_seconds() - self._busy
        used: dict[str, float] = {}
        for group, pids in self.groups.items():
            seconds = 0.0
            for pid in pids:
                before, after = self._pids.get(pid), pid_cpu_seconds(pid)
                if before is not None and after is not None:
                    seconds += after - before
            used[group] = seconds
        other = max(0.0, busy - own - sum(used.values()))
        return {
            "bench": round(own / wall, 2),
            **{group: round(seconds / wall, 2) for group, seconds in used.items()},
            "other": round(other / wall, 2),
        }


def cluster_pids(state: ClusterState) -> dict[str, list[int]]:
    """The cluster's running processes by role (api, node, worker, nats)."""
    groups: dict[str, list[int]] = {}
    for record in state.processes:
        if record.alive():
            groups.setdefault(record.role, []).append(record.pid)
    return groups


# -- search load --------------------------------------------------------------------------------


class Searcher(Protocol):
    """One client of the load: searches one query at a time."""

    served_by: int | None

    def search(self, query: str) -> int:
        """Run one search; the number of hits (raises on any failure)."""
        ...

    def close(self) -> None:
        """Release the client."""
        ...


class RequestFailed(Exception):
    """An HTTP request answered with another status than expected."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


def http_client(url: str, key: str | None) -> httpx.Client:
    """A keep-alive client of the API (one connection when used from one thread)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=REQUEST_TIMEOUT, trust_env=False)


def checked(response: httpx.Response, *statuses: int) -> Any:
    """The JSON body of ``response``; RequestFailed unless its status is one of ``statuses``."""
    if response.status_code not in statuses:
        raise RequestFailed(response.status_code, response.text)
    return response.json()


def error_code(response: httpx.Response) -> str | None:
    """The ``error.code`` of an API error answer (None if it is not one)."""
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


class HttpSearcher:
    """Searches of ``tenant`` through the API, on one keep-alive connection."""

    def __init__(self, url: str, tenant: str, key: str) -> None:
        self.http = http_client(url, key)
        self.path = f"/v1/tenants/{tenant}/search"
        # The first request opens the connection; every later one reuses it, so the api
        # process that answered /healthz is the one serving this client.
        health = checked(self.http.get("/healthz"), 200)
        self.served_by = health.get("pid") if isinstance(health, dict) else None

    def search(self, query: str) -> int:
        body = checked(self.http.post(self.path, json={"query": query, "k": K}), 200)
        return len(body["hits"])

    def close(self) -> None:
        self.http.close()


class InProcessSearcher:
    """``Shardrag.search`` on the embedded instance."""

    served_by = None

    def __init__(self, rag: Shardrag) -> None:
        self.rag = rag

    def search(self, query: str) -> int:
        return len(self.rag.search(TENANT, query, k=K))

    def close(self) -> None:
        pass


def error_name(exc: BaseException) -> str:
    """How a failed request is counted: ``HTTP 503``, ``ReadTimeout``, ..."""
    return f"HTTP {exc.status}" if isinstance(exc, RequestFailed) else type(exc).__name__


@dataclass
class ClientRun:
    """What one client thread did."""

    served_by: int | None = None
    warmup_seconds: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    empty: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    failure: BaseException | None = None


def search_load(
    open_searcher: Callable[[], Searcher],
    queries: list[str],
    clients: int,
    seconds: float,
    warmup: int,
    cpu_groups: Callable[[], dict[str, list[int]]] = dict,
) -> dict[str, Any]:
    """``clients`` threads searching in a closed loop for ``seconds`` after ``warmup`` each."""
    runs = [ClientRun() for _ in range(clients)]
    started = threading.Barrier(clients + 1)
    stopping = threading.Event()

    def client(n: int) -> None:
        run = runs[n]
        searcher: Searcher | None = None
        try:
            searcher = open_searcher()
            run.served_by = searcher.served_by
            offset = n * len(queries) // clients
            for i in range(warmup):
                begin = time.perf_counter()
                searcher.search(queries[(offset + i) % len(queries)])
                run.warmup_seconds.append(time.perf_counter() - begin)
        except BaseException as exc:
            run.failure = exc
            started.abort()
            return
        try:
            started.wait()
            i = warmup
            while not stopping.is_set():
                query = queries[(offset + i) % len(queries)]
                i += 1
                begin = time.perf_counter()
                try:
                    hits = searcher.search(query)
                except Exception as exc:
                    run.errors[error_name(exc)] += 1
                    if len(run.error_samples) < 3:
                        run.error_samples.append(str(exc)[:300])
                    continue
                run.seconds.append(time.perf_counter() - begin)
                run.empty += hits == 0
        except threading.BrokenBarrierError:
            pass
        finally:
            searcher.close()

    threads = [
        threading.Thread(target=client, args=(n,), name=f"bench-client-{n}") for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        started.wait()
    except threading.BrokenBarrierError:
        for thread in threads:
            thread.join()
        failure = next(r.failure for r in runs if r.failure is not None)
        raise RuntimeError(f"a search client failed during its warm-up: {failure}") from failure
    meter = CpuMeter(cpu_groups())
    begin = time.perf_counter()
    time.sleep(seconds)
    stopping.set()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - begin
    cores = meter.cores()
    latencies = [s for run in runs for s in run.seconds]
    errors: Counter[str] = Counter()
    for run in runs:
        errors.update(run.errors)
    warm = [run.warmup_seconds for run in runs]
    return {
        "clients": clients,
        "seconds": round(wall, 2),
        "requests": len(latencies),
        "req_per_s": round(len(latencies) / wall, 2),
        **latency_summary(latencies),
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
        "error_samples": [s for run in runs for s in run.error_samples][:5],
        "empty_results": sum(run.empty for run in runs),
        "warmup": {
            "per_client": warmup,
            "first_request_ms": round(max(w[0] for w in warm) * 1000, 2) if warmup else None,
            "ms": [[round(s * 1000, 2) for s in w] for w in warm],
        },
        "served_by": [run.served_by for run in runs],
        "cores": cores,
    }


# -- steady ingest: put → visible, replication lag ------------------------------------------------


def marker(n: int) -> str:
    """A made-up word found in one written document only (letters only: BM25 keeps it)."""
    letters = ""
    for _ in range(5):
        n, digit = divmod(n, 26)
        letters += chr(ord("a") + digit)
    return f"qzl{letters}vq"


def write_documents(source: list[DocumentInput], count: int) -> list[tuple[DocumentInput, str]]:
    """``count`` documents for the writer (cycling ``source``), each with its marker word."""
    out = []
    for n in range(count):
        original = source[n % len(source)]
        word = marker(n)
        data = original.data + f"\n\nReference marker {word}.".encode()
        out.append((replace(original, doc_id=f"w{n:05d}-{original.doc_id}", data=data), word))
    return out


#: ``put(document) -> (write_token, version)`` and ``visible(doc_id, word, token) -> bool``.
Put = Callable[[DocumentInput], tuple[str, int]]
Visible = Callable[[str, str, str], bool]


def steady_ingest(
    put: Put,
    visible: Visible,
    documents: list[tuple[DocumentInput, str]],
    rate: float,
    session_every: int,
) -> dict[str, Any]:
    """Put ``documents`` at ``rate``/s on a schedule; session-read every ``session_every``-th.

    Returns the put calls, put → visible, how late the readers started and the failures;
    ``writes`` holds each write's version and times (``perf_counter``) for ``stage_split``.
    """
    puts: list[float] = []
    writes: list[dict[str, Any]] = []
    visible_seconds: list[float] = []
    reader_delays: list[float] = []
    failures: Counter[str] = Counter()
    samples: list[str] = []
    lock = threading.Lock()
    behind = 0.0

    def failed(kind: str, detail: str) -> None:
        with lock:
            failures[kind] += 1
            if len(samples) < 5:
                samples.append(f"{kind}: {detail[:300]}")

    def read(write: dict[str, Any], word: str, token: str) -> None:
        doc_id, began, returned = write["doc_id"], write["began"], write["returned"]
        start = time.perf_counter()
        try:
            found = visible(doc_id, word, token)
        except Exception as exc:
            failed(f"session read {error_name(exc)}", str(exc))
            return
        end = time.perf_counter()
        if not found:
            failed("session read missed the document", doc_id)
            return
        with lock:
            write["visible"] = end
            visible_seconds.append(end - began)
            reader_delays.append(start - returned)

    # A thread per read, started as the put returns: a read waits for its write, and a pool
    # of readers all waiting would delay the next read (and count the delay as latency).
    readers: list[threading.Thread] = []
    start = time.perf_counter()
    try:
        for n, (document, word) in enumerate(documents):
            due = start + n / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            began = time.perf_counter()
            behind = max(behind, began - due)
            try:
                token, version = put(document)
            except Exception as exc:
                failed(f"put {error_name(exc)}", str(exc))
                continue
            returned = time.perf_counter()
            puts.append(returned - began)
            write = {
                "doc_id": document.doc_id,
                "version": version,
                "began": began,
                "returned": returned,
                "visible": None,
            }
            writes.append(write)
            if n % session_every == 0:
                reader = threading.Thread(
                    target=read,
                    args=(write, word, token),
                    name=f"bench-session-{n}",
                )
                reader.start()
                readers.append(reader)
        put_seconds = time.perf_counter() - start
    finally:
        for reader in readers:
            reader.join()
    return {
        "documents": len(documents),
        "rate_per_s": rate,
        "put_seconds": round(put_seconds, 2),
        "max_behind_schedule_ms": round(behind * 1000, 2),
        "put_call": latency_summary(puts),
        "session_reads": len(range(0, len(documents), session_every)),
        "put_to_visible": latency_summary(visible_seconds),
        "reader_start_delay": latency_summary(reader_delays),
        "failures": sum(failures.values()),
        "failures_by_kind": dict(failures),
        "failure_samples": samples,
        "writes": writes,
    }


#: The stages of a write between the put and a session read that shows it, as the log sees
#: them: (name, the event that ends it).
STAGES = (
    ("accept", "ingest"),  # the put until its doc.ingest event is in the log
    ("ingest", "embed"),  # the ingest worker: until its chunk.embed event is in the log
    ("embed", "commit"),  # the embed worker: until the version's commit op is in the log
    ("apply_and_read", None),  # a replica applies it, marks it live; the session read returns
)


def stage_split(
    tenant: str, writes: list[dict[str, Any]], seen: dict[str, float], epoch: str = ""
) -> dict:
    """Put → visible of every write seen through, split where its events reached the log.

    ``seen`` maps a log message's ``Nats-Msg-Id`` to when this process received it (the
    ordered consumer of ``LagProbe``, milliseconds after the append).
    """
    split: dict[str, list[float]] = {name: [] for name, _ in STAGES}
    for write in writes:
        if write["visible"] is None:
            continue
        ref = VersionRef(tenant, write["doc_id"], write["version"], 0, epoch=epoch)
        times = [write["began"]]
        for _, event in STAGES:
            times.append(write["visible"] if event is None else seen.get(ref.message_id(event), -1))
        if min(times) < 0:
            continue  # an event not seen (an id this script does not know how to make)
        for (name, _), begin, end in zip(STAGES, times, times[1:], strict=False):
            split[name].append(max(0.0, end - begin))
    return {name: latency_summary(values) for name, values in split.items()}


def compact_writes(writes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The writes of ``steady_ingest`` for the report: put call and put → visible in ms."""
    return [
        {
            "doc_id": w["doc_id"],
            "version": w["version"],
            "put_ms": round((w["returned"] - w["began"]) * 1000, 2),
            "visible_ms": None
            if w["visible"] is None
            else round((w["visible"] - w["began"]) * 1000, 2),
        }
        for w in writes
    ]


class LagProbe:
    """Samples every replica's lag behind its shard's log head (see the module docstring)."""

    def __init__(self, state: ClusterState, data_dir: Path) -> None:
        self.prefix = state.name
        self.stream = state.name.upper()
        url = ",".join(state.nats_urls)
        settings = Settings.load(
            cluster=True, nats_url=url, log_prefix=state.name, data_dir=data_dir
        )
        self.shard_map = open_shard_map(settings)
        self.conn = NatsConnection(url, name="bench-lag")
        layout = self.shard_map.layout()
        assert layout is not None, "the launcher writes the layout"
        self.replicas = {s: list(self.shard_map.replicas(s).nodes) for s in range(layout.shards)}
        self._sequences: dict[int, list[int]] = {s: [] for s in self.replicas}
        #: ``Nats-Msg-Id`` of every message of the log → when it reached this process.
        self.arrived: dict[str, float] = {}
        self._seen = threading.Condition()
        self.probe_failures = 0
        self._subscription = self.conn.run(self._follow())

    async def _follow(self) -> Any:
        """An ordered consumer of the whole log from its start, headers only."""
        shard_subject = f"{self.prefix}.shard."

        async def on_message(msg: Any) -> None:
            now = time.perf_counter()
            message_id = (msg.headers or {}).get("Nats-Msg-Id")
            with self._seen:
                if message_id:
                    self.arrived.setdefault(message_id, now)
                if msg.subject.startswith(shard_subject):
                    shard = int(msg.subject.removeprefix(shard_subject))
                    self._sequences[shard].append(int(msg.metadata.sequence.stream))
                    self._seen.notify_all()

        return await self.conn.js.subscribe(
            f"{self.prefix}.>",
            cb=on_message,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            headers_only=True,
        )

    def head(self, shard: int) -> int:
        """The sequence of the newest op of ``shard`` in the log (0 if none)."""

        async def last() -> int:
            try:
                found = await self.conn.js.get_last_msg(self.stream, f"{self.prefix}.shard.{shard}")
            except NotFoundError:
                return 0
            return int(found.seq or 0)

        return self.conn.run(last())

    def applied(self, shard: int, node: str) -> int | None:
        """The replica's applied offset, as the node answers now (None: no answer)."""
        call = SearchCall(ShardQuery(WRITE_TENANT, SearchMode.KEYWORD, 1, "lag"), shard)

        # A node applying a burst of writes on a busy machine may take a while to answer: a
        # generous timeout, so that a failure means no answer, not a slow one.
        async def ask() -> bytes:
            subject = search_subject(self.prefix, shard, node)
            msg = await self.conn.client.request(subject, call.encode(), timeout=5.0)
            return bytes(msg.data)

        try:
            return SearchReply.decode(self.conn.run(ask(), timeout=5.0)).applied
        except Exception:
            self.probe_failures += 1
            return None

    def wait_until_answering(self, timeout: float = 60.0) -> None:
        """Until every replica answers a probe (a node subscribes to its own subject a moment
        after the cluster is up); the probes that failed meanwhile are not counted."""
        deadline = time.monotonic() + timeout
        for shard, nodes in self.replicas.items():
            for node in nodes:
                while self.applied(shard, node) is None:
                    assert time.monotonic() < deadline, f"{node} never answered for {shard}"
                    time.sleep(0.2)
        self.probe_failures = 0

    def ops_between(self, shard: int, after: int, upto: int) -> int:
        """Ops of ``shard`` with a sequence in (``after``, ``upto``], waiting (briefly) until
        the consumer has seen ``upto``."""
        with self._seen:
            self._seen.wait_for(
                lambda: not upto or (self._sequences[shard] or [0])[-1] >= upto, timeout=2.0
            )
            sequences = self._sequences[shard]
            return bisect.bisect_right(sequences, upto) - bisect.bisect_right(sequences, after)

    def sample(self) -> list[dict[str, Any]]:
        """One row per replica: its lag in ops, and as ``cluster status`` computes it."""
        beats = {node.node_id: node for node in self.shard_map.nodes()}
        rows = []
        for shard, nodes in self.replicas.items():
            head = self.head(shard)
            for node in nodes:
                applied = self.applied(shard, node)
                beat = beats.get(node)
                rows.append(
                    {
                        "shard": shard,
                        "node": node,
                        "head": head,
                        "applied": applied,
                        "ops": None if applied is None else self.ops_between(shard, applied, head),
                        "status_seq": (
                            None if beat is None else max(0, head - beat.applied.get(shard, 0))
                        ),
                    }
                )
        return rows

    def close(self) -> None:
        """Stop the consumer and close the connections."""
        with contextlib.suppress(Exception):
            self.conn.run(self._subscription.unsubscribe())
        self.conn.close()
        self.shard_map.close()


def lag_during(
    probe: LagProbe,
    shards: list[int],
    interval: float,
    work: Callable[[], dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``work`` while sampling lag every ``interval`` s, then until the replicas drain.

    Returns what ``work`` returned and the lag report of the replicas of ``shards``.
    """
    rows: list[dict[str, Any]] = []
    stopping = threading.Event()
    failure: list[BaseException] = []
    begin = time.perf_counter()

    def sampler() -> None:
        try:
            while not stopping.is_set():
                at = time.perf_counter() - begin
                rows.extend({"t": round(at, 2), **row} for row in probe.sample())
                stopping.wait(max(0.0, interval - (time.perf_counter() - begin - at)))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=sampler, name="bench-lag-sampler")
    thread.start()
    try:
        result = work()
    finally:
        stopping.set()
        thread.join()
    if failure:
        raise RuntimeError(f"sampling the lag failed: {failure[0]!r}") from failure[0]
    written_until = time.perf_counter()
    drained = None
    while time.perf_counter() - written_until < DRAIN_TIMEOUT:
        final = [r for r in probe.sample() if r["shard"] in shards]
        if all(r["ops"] == 0 for r in final):
            drained = time.perf_counter() - written_until
            break
        time.sleep(0.1)
    mine = [r for r in rows if r["shard"] in shards]
    per_replica = {}
    for shard in shards:
        for node in probe.replicas[shard]:
            own = [r for r in mine if r["node"] == node and r["shard"] == shard]
            per_replica[f"shard {shard} on {node}"] = {
                "ops": count_summary([r["ops"] for r in own if r["ops"] is not None]),
                "status_seq": count_summary(
                    [r["status_seq"] for r in own if r["status_seq"] is not None]
                ),
            }
    report = {
        "shards": shards,
        "replicas": {s: probe.replicas[s] for s in shards},
        "interval_s": interval,
        "ops": count_summary([r["ops"] for r in mine if r["ops"] is not None]),
        "status_seq": count_summary([r["status_seq"] for r in mine if r["status_seq"] is not None]),
        "per_replica": per_replica,
        "drain_seconds": None if drained is None else round(drained, 2),
        "probe_failures": probe.probe_failures,
        "shard_ops_in_log": {s: len(probe._sequences[s]) for s in probe.replicas},
        "samples": rows,
    }
    return result, report


# -- the in-process baseline --------------------------------------------------------------------


def embedded_ingest(rag: Shardrag, tenant: str, documents: list[DocumentInput]) -> dict[str, Any]:
    """Put ``documents`` into ``tenant`` in batches, each call returning once they are live."""
    rag.create_tenant(tenant)
    begin = time.perf_counter()
    chunks = 0
    for i in range(0, len(documents), DOCUMENTS_PER_BATCH):
        for result in rag.put_documents(tenant, documents[i : i + DOCUMENTS_PER_BATCH]):
            if isinstance(result, Exception):
                raise result
            chunks += result.chunk_count
    seconds = time.perf_counter() - begin
    live = sum(rag.get_document(tenant, d.doc_id).state is VersionState.LIVE for d in documents)
    return {
        "documents": len(documents),
        "chunks": chunks,
        "live": live,
        "seconds": round(seconds, 2),
        "documents_per_second": round(len(documents) / seconds, 2),
    }


def in_process_setup(
    data_dir: Path,
    documents: list[DocumentInput],
    queries: list[str],
    writes: list[tuple[DocumentInput, str]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The embedded baseline: ingest, the search load, put → visible."""
    settings = {
        "shards": EMBEDDED_SHARDS,
        "result_cache_entries": 0,
        "nats_url": "",
        "cluster": False,
    }
    with Shardrag.open(data_dir, **settings) as rag:
        assert rag.result_cache is None
        progress(f"in-process: ingesting {len(documents)} documents")
        ingest = embedded_ingest(rag, TENANT, documents)
        progress(f"in-process: {args.clients} threads searching for {args.seconds:g} s")
        search = search_load(
            lambda: InProcessSearcher(rag), queries, args.clients, args.seconds, args.warmup
        )
        rag.create_tenant(WRITE_TENANT)

        def put(document: DocumentInput) -> tuple[str, int]:
            result = rag.put_document(
                WRITE_TENANT,
                document.doc_id,
                document.data,
                filename=document.filename,
                title=document.title,
                wait=False,
            )
            assert result.write_token is not None
            return result.write_token, result.version

        def visible(doc_id: str, word: str, token: str) -> bool:
            hits = rag.search(
                WRITE_TENANT,
                word,
                k=K,
                mode=SearchMode.KEYWORD,
                read_concern="session",
                write_token=token,
            )
            return any(h.doc_id == doc_id for h in hits)

        progress(f"in-process: writing {len(writes)} documents at {args.ingest_rate:g}/s")
        meter = CpuMeter()
        writing = steady_ingest(put, visible, writes, args.ingest_rate, args.session_every)
        writing["cores"] = meter.cores()
        writing["writes"] = compact_writes(writing["writes"])
        writing["live"] = sum(
            rag.get_document(WRITE_TENANT, d.doc_id).state is VersionState.LIVE for d, _ in writes
        )
    return {
        "settings": settings,
        "ingest": ingest,
        "search": search,
        "writes": writing,
    }


def serve_setup(data_dir: Path, queries: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """``shardrag serve`` over the embedded data dir (result cache and rate limit off)."""
    port = free_port()
    admin_key = secrets.token_urlsafe(24)
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        **SERVICE_ENV,
        "SHARDRAG_DATA_DIR": str(data_dir),
        "SHARDRAG_ADMIN_KEY": admin_key,
        "SHARDRAG_SHARDS": str(EMBEDDED_SHARDS),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for variable in ("SHARDRAG_CLUSTER", "SHARDRAG_NATS_URL", "SHARDRAG_REGISTRY_URL"):
        env.pop(variable, None)
    log = data_dir.parent / "serve.log"
    command = [shardrag_executable(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    progress("serve: starting shardrag serve")
    begin = time.perf_counter()
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    exit_code = None
    try:
        deadline = time.monotonic() + 180
        while not ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"shardrag serve did not start:\n{tail(log)}")
            time.sleep(0.1)
        started = time.perf_counter() - begin
        with http_client(url, admin_key) as root:
            reader = checked(root.post(f"/v1/tenants/{TENANT}/keys", json={"role": "reader"}), 201)[
                "key"
            ]
        progress(f"serve: {args.clients} clients searching for {args.seconds:g} s")
        search = search_load(
            lambda: HttpSearcher(url, TENANT, reader),
            queries,
            args.clients,
            args.seconds,
            args.warmup,
            lambda: {"service": [process.pid]},
        )
    finally:
        exit_code = stop(process)
    return {
        "start_seconds": round(started, 2),
        "search": search,
        "exit_code": exit_code,
        "log_problems": log_problems({"serve": log}),
    }


def tail(path: Path, lines: int = 30) -> str:
    """The end of a log, for error messages."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


# -- the clusters -------------------------------------------------------------------------------


_PROBLEM = re.compile(
    r'"level": "(warning|error|critical)"|\[(WRN|ERR|FTL)\]|^(ERROR|WARNING|CRITICAL)[: ]'
    r"|^Traceback"
)


#: What three NATS servers started at once log until their routes are up: counted apart.
_NATS_STARTUP = re.compile(
    r"Error trying to connect to route \(attempt \d+\)|Waiting for routing to be established"
)


def log_problems(logs: dict[str, Path]) -> dict[str, Any]:
    """Warnings, errors and tracebacks in the logs: a count per log and the first lines.

    The NATS servers' start-up route retries are counted apart (``nats_startup``).
    """
    counts: dict[str, int] = {}
    quoted: list[str] = []
    startup = 0
    for name, path in sorted(logs.items()):
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        found = [line for line in lines if _PROBLEM.search(line)]
        noise = [line for line in found if _NATS_STARTUP.search(line)]
        startup += len(noise)
        found = [line for line in found if not _NATS_STARTUP.search(line)]
        if found:
            counts[name] = len(found)
            quoted += [f"{name}: {line[:400]}" for line in found[:5]]
    return {
        "lines": sum(counts.values()),
        "by_log": counts,
        "first": quoted[:QUOTED_LOG_LINES],
        "nats_startup": startup,
    }


def make_tenant(root: httpx.Client, tenant: str) -> dict[str, str]:
    """Create ``tenant`` (root key); a writer and a reader key of it, and its ``epoch`` (the
    incarnation its event ids carry, see ``VersionRef.epoch``)."""
    created = checked(root.post("/v1/tenants", json={"id": tenant}), 201)
    keys = {
        role: checked(root.post(f"/v1/tenants/{tenant}/keys", json={"role": role}), 201)["key"]
        for role in ("writer", "reader")
    }
    return {**keys, "epoch": f"{created['created_at']:.6f}"}


def http_put(client: httpx.Client, tenant: str, document: DocumentInput) -> dict[str, Any]:
    """``PUT`` a document without waiting (multipart ``file=``); the write's JSON."""
    response = client.put(
        f"/v1/tenants/{tenant}/documents/{document.doc_id}",
        params={"wait": "false", **({"title": document.title} if document.title else {})},
        files={"file": (document.filename or "document.txt", document.data, "text/plain")},
    )
    result: dict[str, Any] = checked(response, 200, 202)
    return result


def http_ingest(url: str, keys: dict[str, str], documents: list[DocumentInput]) -> dict[str, Any]:
    """Put ``documents`` into ``bench`` without waiting, then strong reads until one answers
    (every write decided and applied); then check each document live."""
    local = threading.local()
    opened: list[httpx.Client] = []

    def put(document: DocumentInput) -> None:
        if not hasattr(local, "client"):
            local.client = http_client(url, keys["writer"])
            opened.append(local.client)
        http_put(local.client, TENANT, document)

    begin = time.perf_counter()
    try:
        with concurrent.futures.ThreadPoolExecutor(INGEST_THREADS, "bench-ingest") as pool:
            list(pool.map(put, documents))
    finally:
        for client in opened:
            client.close()
    accepted = time.perf_counter() - begin
    strong_reads = 0
    with http_client(url, keys["reader"]) as reader:
        body = {"query": "information retrieval", "k": 1, "read_concern": "strong"}
        while True:
            strong_reads += 1
            response = reader.post(f"/v1/tenants/{TENANT}/search", json=body)
            if response.status_code == 200:
                break
            # A strong read waits read_concern_timeout_seconds (30 s) for the writes, then
            # answers read_concern_timeout: ask again until INGEST_TIMEOUT.
            if (
                error_code(response) != "read_concern_timeout"
                or time.perf_counter() - begin > INGEST_TIMEOUT
            ):
                raise RequestFailed(response.status_code, response.text)
        seconds = time.perf_counter() - begin
        chunks = live = 0
        for document in documents:
            got = checked(reader.get(f"/v1/tenants/{TENANT}/documents/{document.doc_id}"), 200)
            live += got["state"] == VersionState.LIVE.value
            chunks += got["chunk_count"]
    return {
        "documents": len(documents),
        "chunks": chunks,
        "live": live,
        "accepted_seconds": round(accepted, 2),
        "seconds": round(seconds, 2),
        "documents_per_second": round(len(documents) / seconds, 2),
        "strong_reads": strong_reads,
    }


def cluster_writes(
    state: ClusterState,
    keys: dict[str, str],
    writes: list[tuple[DocumentInput, str]],
    args: argparse.Namespace,
    probe_dir: Path,
) -> dict[str, Any]:
    """The steady ingest into ``bench-writes`` through the API, with the lag sampled."""
    url = state.api_url
    writer = http_client(url, keys["writer"])
    readers = threading.local()

    def put(document: DocumentInput) -> tuple[str, int]:
        written = http_put(writer, WRITE_TENANT, document)
        return written["write_token"], written["version"]

    def visible(doc_id: str, word: str, token: str) -> bool:
        if not hasattr(readers, "client"):
            readers.client = http_client(url, keys["reader"])
        body = {
            "query": word,
            "k": K,
            "mode": "keyword",
            "read_concern": "session",
            "write_token": token,
        }
        hits = checked(readers.client.post(f"/v1/tenants/{WRITE_TENANT}/search", json=body), 200)
        return any(h["doc_id"] == doc_id for h in hits["hits"])

    probe = LagProbe(state, probe_dir)
    try:
        placed = probe.shard_map.tenant_shards(WRITE_TENANT)
        assert placed, f"{WRITE_TENANT} is placed on creation"
        probe.wait_until_answering()
        meter = CpuMeter(cluster_pids(state))
        writing, lag = lag_during(
            probe,
            placed,
            args.sample_interval,
            lambda: steady_ingest(put, visible, writes, args.ingest_rate, args.session_every),
        )
        writing["cores"] = meter.cores()
        writing["stages"] = stage_split(
            WRITE_TENANT, writing["writes"], dict(probe.arrived), keys["epoch"]
        )
        writing["writes"] = compact_writes(writing["writes"])
    finally:
        probe.close()
        writer.close()
    with http_client(url, keys["reader"]) as reader:
        writing["live"] = sum(
            checked(reader.get(f"/v1/tenants/{WRITE_TENANT}/documents/{d.doc_id}"), 200)["state"]
            == VersionState.LIVE.value
            for d, _ in writes
        )
    writing["lag"] = lag
    return writing


def cluster_setup(
    name: str,
    workdir: Path,
    documents: list[DocumentInput],
    queries: list[str],
    writes: list[tuple[DocumentInput, str]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Start a cluster of shape ``SHAPES[name]``, measure it, always purge it."""
    shards, replicas, nodes = SHAPES[name]
    spec = ClusterSpec(
        dir=workdir / name,
        name=f"bench_{name.removeprefix('cluster_')}_{secrets.token_hex(4)}",
        shards=shards,
        replicas=replicas,
        nodes=nodes,
        api_port=0,
        postgres_url=args.postgres_url,
        redis_url=args.redis_url,
        extra_env=dict(SERVICE_ENV),
        python=sys.executable,
    )
    report: dict[str, Any] = {
        "cluster_name": spec.name,
        "shards": shards,
        "replicas": replicas,
        "nodes": nodes,
    }
    begin = time.perf_counter()
    state: ClusterState | None = None
    try:
        progress(f"{name}: starting {nodes} node(s), {shards} shard(s) x {replicas} replica(s)")
        state = up(spec, on_step=lambda step: progress(f"{name}: {step}"))
        report["up_seconds"] = round(time.perf_counter() - begin, 2)
        report["api_pids"] = [p.pid for p in state.processes if p.role == "api"]
        with http_client(state.api_url, state.admin_key) as root:
            keys = make_tenant(root, TENANT)
            write_keys = make_tenant(root, WRITE_TENANT)
        progress(f"{name}: ingesting {len(documents)} documents through the API")
        report["ingest"] = http_ingest(state.api_url, keys, documents)
        report["search_tenant_shards"] = tenant_placement(state, workdir / f"{name}-probe")
        progress(f"{name}: {args.clients} clients searching for {args.seconds:g} s")
        running = state
        report["search"] = search_load(
            lambda: HttpSearcher(running.api_url, TENANT, keys["reader"]),
            queries,
            args.clients,
            args.seconds,
            args.warmup,
            lambda: cluster_pids(running),
        )
        progress(f"{name}: writing {len(writes)} documents at {args.ingest_rate:g}/s")
        report["writes"] = cluster_writes(
            state, write_keys, writes, args, workdir / f"{name}-probe"
        )
        report["processes_alive"] = {p.name: p.alive() for p in state.processes}
    except Exception as exc:
        # Reported with what was measured before and what the cluster logged.
        progress(f"[red]{name} failed: {exc!r}[/red]")
        report["failed"] = repr(exc)
        report["traceback"] = traceback.format_exc()
    finally:
        logs = sorted((spec.dir / "logs").glob("*.log"))
        report["log_problems"] = log_problems({p.stem: p for p in logs})
        if args.logs_dir is not None and logs:
            kept = args.logs_dir / name
            kept.mkdir(parents=True, exist_ok=True)
            for path in logs:
                shutil.copy2(path, kept / path.name)
            report["logs_kept_in"] = str(kept)
        if (spec.dir / STATE_FILE).exists():
            progress(f"{name}: stopping and purging the cluster")
            outcome = down(spec.dir, purge=True)
            report["down"] = {p.name: p.outcome for p in outcome.processes}
    report["wall_seconds"] = round(time.perf_counter() - begin, 2)
    return report


def tenant_placement(state: ClusterState, data_dir: Path) -> dict[str, Any]:
    """The shards of the search tenant and the nodes holding them, from the shard map."""
    settings = Settings.load(
        cluster=True, nats_url=",".join(state.nats_urls), log_prefix=state.name, data_dir=data_dir
    )
    shard_map = open_shard_map(settings)
    try:
        shards = shard_map.tenant_shards(TENANT) or []
        return {str(s): list(shard_map.replicas(s).nodes) for s in shards}
    finally:
        shard_map.close()


# -- the run ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every setup in turn; the report (without printing)."""
    writes_count = max(1, round(args.ingest_rate * args.ingest_seconds))
    documents, queries = load_cisi(10**6, 10**6)
    searched = documents[: args.docs]
    writes = write_documents(documents[args.docs :] or documents, writes_count)
    report: dict[str, Any] = {
        "benchmark": "cluster",
        "settings": {
            **{
                k: str(v) if isinstance(v, Path) else v
                for k, v in vars(args).items()
                if k not in ("postgres_url", "redis_url")  # may hold a password
            },
            "k": K,
            "service_env": SERVICE_ENV,
            "result_cache": "off",
            "rate_limit": "off",
        },
        "corpus": {
            "documents": len(searched),
            "queries": len(queries),
            "written_documents": len(writes),
        },
        "machine": {"cpus": os.cpu_count(), "load_generator": "this process, loopback"},
        "setups": {},
    }
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="shardrag-bench-cluster-"))
    setups = report["setups"]
    try:
        data_dir = workdir / "embedded" / "data"
        # A setup that fails is reported as such and the others still run.
        setups["in_process"] = attempt(
            "in_process", lambda: in_process_setup(data_dir, searched, queries, writes, args)
        )
        if args.no_serve:
            setups["serve"] = {"skipped": "--no-serve"}
        elif "failed" in setups["in_process"]:
            setups["serve"] = {"skipped": "the in-process setup (its data dir) failed"}
        else:
            setups["serve"] = attempt("serve", lambda: serve_setup(data_dir, queries, args))
        for name in ("cluster_1x1", "cluster_2x2"):
            setups[name] = attempt(
                name, partial(cluster_setup, name, workdir, searched, queries, writes, args)
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["figures"] = figures(report)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return report


def attempt(name: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``measure()``, or ``{"failed": ...}`` with the error and its traceback."""
    try:
        return measure()
    except Exception as exc:
        progress(f"[red]{name} failed: {exc!r}[/red]")
        return {"failed": repr(exc), "traceback": traceback.format_exc()}


def figures(report: dict[str, Any]) -> dict[str, float | None]:
    """The headline figures, flat: what the tables print and the tests check."""
    out: dict[str, float | None] = {}
    for name in SETUPS:
        setup = report["setups"].get(name, {})
        if not setup or "skipped" in setup or "failed" in setup:
            continue
        search = setup["search"]
        out[f"{name}.search.p50_ms"] = search.get("p50_ms")
        out[f"{name}.search.p99_ms"] = search.get("p99_ms")
        out[f"{name}.search.req_per_s"] = search["req_per_s"]
        writes = setup.get("writes")
        if writes is None:
            continue
        out[f"{name}.put_to_visible.p50_ms"] = writes["put_to_visible"].get("p50_ms")
        out[f"{name}.put_to_visible.p99_ms"] = writes["put_to_visible"].get("p99_ms")
        lag = writes.get("lag")
        if lag is not None:
            for kind in ("ops", "status_seq"):
                for stat in ("p50", "p99", "max"):
                    out[f"{name}.lag.{kind}.{stat}"] = lag[kind].get(stat)
    return out


# -- printing -----------------------------------------------------------------------------------


def _ms(figures: dict[str, Any]) -> str:
    if not figures.get("count"):
        return "—"
    return f"{figures['p50_ms']:.1f} / {figures['p99_ms']:.1f}"


def _cores(cores: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in cores.items())


def _ratio(value: float | None, base: float | None) -> str:
    if not value or not base:
        return "—"
    return f"{value / base:.2f}x"


def search_table(report: dict[str, Any]) -> Table:
    """Search: every setup beside the in-process baseline of the same run."""
    settings = report["settings"]
    table = Table(
        title=f"search: {settings['clients']} concurrent clients x {settings['seconds']:g} s per "
        f"setup, tenant of {report['corpus']['documents']} CISI documents, "
        f"{report['corpus']['queries']} CISI queries cycled, k={K}",
        caption="RESULT CACHE OFF (SHARDRAG_RESULT_CACHE_ENTRIES=0 / result_cache_entries=0): "
        "every request embeds its query and reaches the index nodes (the shard in-process); "
        "rate limit off. Cluster NxM = shards x replicas. Cores: this process (the clients), "
        "the service's processes by role, everything else.",
    )
    for column in (
        "setup",
        "requests",
        "req/s",
        "vs in-process",
        "p50 / p99 ms",
        "p50 vs in-process",
        "errors",
        "first / warm-up max ms",
        "cores used",
    ):
        table.add_column(column, justify="right")
    base = report["setups"]["in_process"].get("search", {})
    for name in SETUPS:
        setup = report["setups"].get(name)
        if setup is None:
            continue
        if "skipped" in setup:
            table.add_row(LABELS[name], f"skipped ({setup['skipped']})", *[""] * 7)
            continue
        if "failed" in setup:
            table.add_row(LABELS[name], "FAILED", *[""] * 7)
            continue
        search = setup["search"]
        warm = search["warmup"]
        first = "—"
        if warm["per_client"]:
            flat = [ms for client in warm["ms"] for ms in client]
            first = f"{warm['first_request_ms']:.0f} / {max(flat):.0f}"
        table.add_row(
            LABELS[name],
            f"{search['requests']}",
            f"{search['req_per_s']:.1f}",
            _ratio(search["req_per_s"], base["req_per_s"]),
            _ms(search),
            _ratio(search.get("p50_ms"), base.get("p50_ms")),
            f"{search['errors']}" + (f" {search['errors_by_kind']}" if search["errors"] else ""),
            first,
            _cores(search["cores"]),
        )
    return table


def writes_table(report: dict[str, Any]) -> Table:
    """Replication lag and put → visible: the 3-node cluster beside its baselines."""
    settings = report["settings"]
    setups = report["setups"]
    columns = [n for n in ("cluster_2x2", "cluster_1x1", "in_process") if "writes" in setups[n]]
    table = Table(
        title=f"steady ingest into {WRITE_TENANT}: {settings['ingest_rate']:g} documents/s for "
        f"{settings['ingest_seconds']:g} s (PUT without wait), lag sampled every "
        f"{settings['sample_interval']:g} s on the replicas of the written shard, a session "
        f"read for every {settings['session_every']}. write"
    )
    table.add_column("figure", justify="left")
    for name in columns:
        label = LABELS[name].replace(" (baseline)", "")
        table.add_column(label if name == columns[0] else f"{label} (baseline)", justify="right")

    def lag(name: str, kind: str) -> str:
        part = setups[name]["writes"].get("lag")
        if part is None:
            return "—"
        figures = part[kind]
        if not figures.get("samples"):
            return "no samples"
        return (
            f"{figures['p50']:g} / {figures['p99']:g} / {figures['max']} "
            f"({figures['nonzero_samples']}/{figures['samples']} > 0)"
        )

    def split(name: str, stat: str) -> str:
        stages = setups[name]["writes"].get("stages")
        if stages is None:
            return "—"
        return " / ".join(f"{stages[s].get(stat, float('nan')):.0f}" for s, _ in STAGES)

    def replicas(name: str) -> str:
        part = setups[name]["writes"].get("lag")
        if part is None:
            return "— (one process)"
        return "; ".join(f"shard {s}: {', '.join(n)}" for s, n in part["replicas"].items())

    rows: list[tuple[str, Callable[[str], str]]] = [
        ("written shard: replicas", replicas),
        ("replica lag, ops p50 / p99 / max", lambda n: lag(n, "ops")),
        (
            "lag as `cluster status` shows it, log seq p50 / p99 / max",
            lambda n: lag(n, "status_seq"),
        ),
        (
            "drain after the last put, s",
            lambda n: (
                "—"
                if setups[n]["writes"].get("lag") is None
                else f"{setups[n]['writes']['lag']['drain_seconds']}"
            ),
        ),
        (
            "put → visible (session read) p50 / p99 ms",
            lambda n: _ms(setups[n]["writes"]["put_to_visible"]),
        ),
        (
            "put → visible max ms",
            lambda n: f"{setups[n]['writes']['put_to_visible'].get('max_ms', 0):.1f}",
        ),
        (
            "  split: " + " / ".join(name for name, _ in STAGES) + ", p50 ms",
            lambda n: split(n, "p50_ms"),
        ),
        ("  same, p99 ms", lambda n: split(n, "p99_ms")),
        ("put call p50 / p99 ms", lambda n: _ms(setups[n]["writes"]["put_call"])),
        (
            "session reads started late, p99 ms",
            lambda n: f"{setups[n]['writes']['reader_start_delay'].get('p99_ms', 0):.1f}",
        ),
        (
            "failed puts / session reads",
            lambda n: (
                f"{setups[n]['writes']['failures']}"
                + (
                    f" {setups[n]['writes']['failures_by_kind']}"
                    if setups[n]["writes"]["failures"]
                    else ""
                )
            ),
        ),
        (
            "written documents live at the end",
            lambda n: f"{setups[n]['writes']['live']}/{setups[n]['writes']['documents']}",
        ),
        ("cores used", lambda n: _cores(setups[n]["writes"]["cores"])),
    ]
    for label, cell in rows:
        table.add_row(label, *[cell(n) for n in columns])
    return table


def print_report(report: dict[str, Any]) -> None:
    """The two tables, then what the clusters logged and how they were started."""
    console.print(search_table(report))
    console.print(writes_table(report))
    for name in ("cluster_1x1", "cluster_2x2"):
        setup = report["setups"].get(name)
        if not setup:
            continue
        ingest = setup.get("ingest", {})
        placement = setup.get("search_tenant_shards", {})
        console.print(
            f"[bold]{LABELS[name]}[/bold]: up in {setup.get('up_seconds', '?')} s; ingest "
            f"{ingest.get('live', '?')}/{ingest.get('documents', '?')} live in "
            f"{ingest.get('seconds', '?')} s ({ingest.get('documents_per_second', '?')} docs/s); "
            f"{TENANT} on "
            + ", ".join(f"shard {s} ({', '.join(n)})" for s, n in placement.items())
            + f"; clients on api pids {setup.get('search', {}).get('served_by')}"
        )
        if "failed" in setup:
            console.print(f"  FAILED: {setup['failed']}", markup=False, highlight=False)
        problems = setup.get("log_problems", {"lines": 0, "nats_startup": 0})
        if problems["lines"]:
            console.print(f"  logged problems: {problems['by_log']}")
            for line in problems["first"]:
                console.print(f"    {line}", markup=False, highlight=False)
        else:
            console.print("  logged problems: none")
        if problems["nats_startup"]:
            console.print(
                f"  (and {problems['nats_startup']} NATS start-up lines: route connection "
                "retries while the three servers come up)"
            )
        if "logs_kept_in" in setup:
            console.print(f"  logs kept in {setup['logs_kept_in']}")
    serve = report["setups"].get("serve", {})
    if serve.get("log_problems", {}).get("lines"):
        console.print(f"shardrag serve logged problems: {serve['log_problems']['first']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the tables (or the JSON); write the JSON report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=DEFAULTS["docs"], help="documents searched")
    parser.add_argument(
        "--seconds", type=float, default=DEFAULTS["seconds"], help="search load per setup"
    )
    parser.add_argument("--clients", type=int, default=DEFAULTS["clients"])
    parser.add_argument(
        "--warmup", type=int, default=DEFAULTS["warmup"], help="untimed searches per client"
    )
    parser.add_argument("--ingest-rate", type=float, default=DEFAULTS["ingest_rate"])
    parser.add_argument("--ingest-seconds", type=float, default=DEFAULTS["ingest_seconds"])
    parser.add_argument("--sample-interval", type=float, default=DEFAULTS["sample_interval"])
    parser.add_argument("--session-every", type=int, default=DEFAULTS["session_every"])
    parser.add_argument("--no-serve", action="store_true", help="skip the shardrag serve row")
    parser.add_argument("--postgres-url", default=ClusterSpec.postgres_url, help="admin URL")
    parser.add_argument("--redis-url", default=ClusterSpec.redis_url)
    parser.add_argument(
        "--logs-dir", type=Path, default=None, help="keep a copy of every cluster's logs here"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/cluster.json")
    args = parser.parse_args(argv)
    if args.docs < 1 or args.clients < 1 or args.seconds <= 0 or args.ingest_rate <= 0:
        parser.error("--docs, --clients, --seconds and --ingest-rate must be positive")
    if args.session_every < 1 or args.sample_interval <= 0:
        parser.error("--session-every and --sample-interval must be positive")

    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        print_report(report)
        console.print(f"wall time {report['wall_seconds']:,.0f} s; written to {args.out}")
    return report


if __name__ == "__main__":
    # SIGTERM (a CI timeout, ``kill``) runs the finally blocks: the clusters are purged.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    measured = main()
    sys.exit(1 if any("failed" in s for s in measured["setups"].values()) else 0)
