"""Write-pipeline benchmark: what the durable log costs in throughput and put→searchable latency.

    python -m bench.pipeline [--docs 1460] [--latency-docs 100] [--preload-docs 200]
                             [--open-loop-interval-ms 100] [--nats-url nats://127.0.0.1:4222]
                             [--quick] [--out bench/results/pipeline.json]

Three write paths, each in a fresh data dir, the model warmed up before anything is timed:

* ``direct`` (the baseline): ``write_path="direct"``, the same ingest → embed → index stages
  run in the caller's thread, without stage threads (``stages="none"``, see ``write_paths``);
* ``log_sqlite``: ``write_path="log"`` on the data dir's SQLite log, the stages on their
  background threads;
* ``log_nats``: the same on NATS JetStream (``--nats-url``), streams of a prefix of this run
  dropped at the end; reported as skipped when NATS is not reachable.

**Throughput**: the first ``--docs`` CISI documents handed to ``put_documents`` in batches of
``DOCUMENTS_PER_BATCH``, one batch after the other (each call returns once its documents are
decided): documents/s and chunks/s (sum of ``chunk_count``), and the ratio log / direct.
The direct baseline runs before and after the log paths and the mean time is used, so drift
of the machine during the run shows up in the table.

**Put → searchable latency**: a tenant holding ``--preload-docs`` documents, then
``--latency-docs`` new documents per measure, each carrying a unique marker word, put with
``wait=False`` (on the direct path the put itself runs the stages). Latency runs from the start
of the put call until a keyword search for the marker returns the document:

* ``closed/eventual``: put, then an eventual search every 5 ms until it returns the document,
  then the next put (the pipeline's latency without queueing);
* ``closed/session``: put, then one ``search(read_concern="session", write_token=...)``;
* ``open/eventual``: a put every ``--open-loop-interval-ms`` whatever happened to the previous
  ones, another thread polling every outstanding marker every 5 ms; latency runs from the
  moment the put was due (so a put that falls behind the schedule counts its delay). The
  direct path puts in the caller's thread: when a put takes longer than the interval it
  falls behind, and the queue it builds is what its row shows.

Each measure uses its own CISI documents (they wrap around when the corpus runs out; the
embedding cache then serves the chunks without the marker). Eventual reads go through the
result cache as a user's would: a result is cached under the tenant's generation, which the
registry bumps when the version goes live, so the document is seen once it is live.

CPU: the machine has 2 cores shared with whatever else runs. Beside each figure are the cores
this process used, those of the NATS server, and those of every other process.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO_ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.ingest import corpus  # noqa: E402
from bench.query import OtherProcessesCpu  # noqa: E402
from shardrag import DocumentInput, Shardrag  # noqa: E402
from shardrag.log.nats import NatsLog  # noqa: E402
from shardrag.models import SearchMode, VersionState, WriteResult  # noqa: E402
from shardrag.pipeline import DOCUMENTS_PER_BATCH  # noqa: E402

console = Console()

#: The write paths, measured side first; ``direct`` is the baseline.
SCENARIOS = ("log_sqlite", "log_nats", "direct")
LABELS = {
    "log_sqlite": "log, SQLite",
    "log_nats": "log, NATS",
    "direct": "direct (baseline)",
}
#: The latency measures of every write path: (loop, read concern).
MEASURES = ("closed_eventual", "closed_session", "open_eventual")
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
#: Who used the CPU during a measure (``CpuUse``).
CORES = ("shardrag_cores", "nats_server_cores", "other_processes_cores")
THROUGHPUT_TENANT = "bench"
LATENCY_TENANT = "latency"
#: How often an eventual read polls for a document.
POLL_SECONDS = 0.005
#: A document not searchable after this long fails the benchmark.
SEARCHABLE_TIMEOUT_SECONDS = 120.0
#: Sizes of ``--quick`` (the test's run).
QUICK = {"docs": 24, "latency_docs": 10, "preload_docs": 20}
DEFAULTS = {"docs": 1460, "latency_docs": 100, "preload_docs": 200}


# -- CPU --------------------------------------------------------------------------------------


def _nats_server_ticks() -> dict[int, int]:
    """CPU clock ticks (user + system) of each ``nats-server`` process on the machine, by pid."""
    ticks = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "nats-server":
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone, or not ours to read
        ticks[int(proc.name)] = int(fields[11]) + int(fields[12])
    return ticks


def _ticks_since(start: dict[int, int], now: dict[int, int]) -> int:
    """Ticks the NATS servers used between two readings: a server started meanwhile counts
    from 0, one that exited meanwhile is lost (other tests start and stop servers; a plain
    difference of sums went negative)."""
    return sum(ticks - start.get(pid, 0) for pid, ticks in now.items())


class CpuUse:
    """Cores used from now on by this process, by the NATS server, and by everything else."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._own = time.process_time()
        self._nats = _nats_server_ticks()
        self._others = OtherProcessesCpu()

    def cores(self) -> dict[str, float]:
        """Average cores busy since this object was made, by whom."""
        seconds = time.perf_counter() - self._start
        nats = _ticks_since(self._nats, _nats_server_ticks()) / os.sysconf("SC_CLK_TCK") / seconds
        return {
            "shardrag_cores": round((time.process_time() - self._own) / seconds, 2),
            "nats_server_cores": round(nats, 2),
            "other_processes_cores": round(max(0.0, self._others.cores() - nats), 2),
        }


# -- write paths --------------------------------------------------------------------------------


def nats_reachable(url: str) -> bool:
    """Whether something accepts TCP connections at the NATS URL's host and port."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), 1):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class WritePath:
    """How a scenario opens its data dir: the settings of ``Shardrag.open``."""

    name: str
    settings: dict[str, Any]

    @contextmanager
    def open(self, data_dir: Path) -> Iterator[Shardrag]:
        """A ``Shardrag`` over a fresh ``data_dir``, the model warmed up; its NATS streams
        (if any) are dropped when it closes."""
        prefix = self.settings.get("log_prefix")
        try:
            with Shardrag.open(data_dir, **self.settings) as rag:
                rag.embedder.embed_documents(["warm up"] * rag.settings.embed_batch_size)
                yield rag
        finally:
            if self.settings.get("nats_url"):
                log = NatsLog(self.settings["nats_url"], prefix=prefix or "shardrag")
                try:
                    log.drop()
                finally:
                    log.close()

    def for_part(self, part: str) -> WritePath:
        """The same write path; on NATS, on streams of their own for ``part``."""
        if not self.settings.get("nats_url"):
            return self
        return replace(
            self, settings={**self.settings, "log_prefix": f"{self.settings['log_prefix']}-{part}"}
        )


def write_paths(nats_url: str) -> tuple[dict[str, WritePath], str | None]:
    """The scenarios that can run here, and why NATS is skipped (None when it runs).

    ``nats_url=""`` on the SQLite scenarios keeps a ``SHARDRAG_NATS_URL`` of the environment
    from turning them into NATS runs. The direct path runs its stages in the caller's thread
    and needs no stage threads: ``stages="none"`` keeps idle background workers out of its
    measurement (before a fix, the default stages also consumed ``doc.ingest`` events that the
    direct path's accept used to append, and ingested and embedded every document twice).
    """
    direct = {"write_path": "direct", "nats_url": "", "stages": "none"}
    paths = {
        "log_sqlite": WritePath("log_sqlite", {"write_path": "log", "nats_url": ""}),
        "direct": WritePath("direct", direct),
    }
    if not nats_reachable(nats_url):
        return paths, f"NATS not reachable at {nats_url}"
    prefix = f"bench-pipeline-{secrets.token_hex(4)}"
    settings = {"write_path": "log", "nats_url": nats_url, "log_prefix": prefix}
    paths["log_nats"] = WritePath("log_nats", settings)
    return paths, None


# -- throughput ---------------------------------------------------------------------------------


def throughput(path: WritePath, data_dir: Path, documents: list[DocumentInput]) -> dict[str, Any]:
    """Ingest ``documents`` into a fresh data dir in batches; documents/s and chunks/s."""
    with path.open(data_dir) as rag:
        cpu = CpuUse()
        start = time.perf_counter()
        chunks = 0
        for i in range(0, len(documents), DOCUMENTS_PER_BATCH):
            batch = documents[i : i + DOCUMENTS_PER_BATCH]
            for result in rag.put_documents(THROUGHPUT_TENANT, batch):
                if isinstance(result, Exception):
                    raise result
                chunks += result.chunk_count
        seconds = time.perf_counter() - start
        used = cpu.cores()
        live = live_documents(rag, THROUGHPUT_TENANT, [d.doc_id for d in documents])
    return {
        "documents": len(documents),
        "chunks": chunks,
        "live_documents": live,
        "seconds": round(seconds, 3),
        "documents_per_second": round(len(documents) / seconds, 2),
        "chunks_per_second": round(chunks / seconds, 2),
        **used,
    }


def live_documents(rag: Shardrag, tenant: str, doc_ids: list[str]) -> int:
    """How many of ``doc_ids`` are live in ``tenant``."""
    return sum(rag.get_document(tenant, d).state is VersionState.LIVE for d in doc_ids)


# -- latency ------------------------------------------------------------------------------------


def marker(measure: str, n: int) -> str:
    """A made-up word found in one document only: letters only, so BM25 keeps it whole."""
    letters = ""
    value = MEASURES.index(measure) * 100_000 + n
    for _ in range(5):
        value, digit = divmod(value, 26)
        letters += chr(ord("a") + digit)
    return f"qzx{letters}vq"


def marked(document: DocumentInput, doc_id: str, word: str) -> DocumentInput:
    """``document`` under ``doc_id``, with a closing sentence holding ``word``."""
    data = document.data + f"\n\nReference marker {word}.".encode()
    return replace(document, doc_id=doc_id, data=data)


def latency_documents(
    source: list[DocumentInput], preload: int, per_measure: int
) -> dict[str, list[tuple[DocumentInput, str]]]:
    """For each measure, its own marked documents (after the preloaded ones) and markers."""
    pool = source[preload:] or source
    out: dict[str, list[tuple[DocumentInput, str]]] = {}
    for m, measure in enumerate(MEASURES):
        docs = []
        for n in range(per_measure):
            word = marker(measure, n)
            original = pool[(m * per_measure + n) % len(pool)]
            docs.append((marked(original, f"{measure}-{n}", word), word))
        out[measure] = docs
    return out


def shows(rag: Shardrag, doc_id: str, word: str, **concern: Any) -> bool:
    """Whether a keyword search for ``word`` returns ``doc_id``."""
    hits = rag.search(LATENCY_TENANT, word, k=10, mode=SearchMode.KEYWORD, **concern)
    return any(h.doc_id == doc_id for h in hits)


def put(rag: Shardrag, document: DocumentInput) -> WriteResult:
    """``put_document`` without waiting (the direct path runs the stages in it anyway)."""
    return rag.put_document(
        LATENCY_TENANT,
        document.doc_id,
        document.data,
        filename=document.filename,
        title=document.title,
        wait=False,
    )


def latency_summary(seconds: list[float]) -> dict[str, Any]:
    """Count, p50/p99 (linear interpolation), max and mean of latencies, in milliseconds."""
    if not seconds:
        return {"count": 0}
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    return {
        "count": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def summary(seconds: list[float]) -> dict[str, Any]:
    """``latency_summary`` with every sample (milliseconds)."""
    return {**latency_summary(seconds), "samples_ms": [round(x * 1000, 2) for x in seconds]}


def wait_searchable(rag: Shardrag, doc_id: str, word: str, since: float) -> float:
    """Poll an eventual keyword search every 5 ms until it shows ``doc_id``; when it did."""
    while not shows(rag, doc_id, word):
        if time.perf_counter() - since > SEARCHABLE_TIMEOUT_SECONDS:
            raise TimeoutError(f"{doc_id} not searchable after {SEARCHABLE_TIMEOUT_SECONDS} s")
        time.sleep(POLL_SECONDS)
    return time.perf_counter()


def closed_loop(
    rag: Shardrag, documents: list[tuple[DocumentInput, str]], session: bool
) -> tuple[list[float], list[float]]:
    """Put → searchable of each document in turn; (latencies, put-call durations)."""
    latencies, calls = [], []
    for document, word in documents:
        start = time.perf_counter()
        result = put(rag, document)
        calls.append(time.perf_counter() - start)
        if session:
            concern = {"read_concern": "session", "write_token": result.write_token}
            if not shows(rag, document.doc_id, word, **concern):
                raise AssertionError(f"a session read after {document.doc_id} missed it")
            end = time.perf_counter()
        else:
            end = wait_searchable(rag, document.doc_id, word, start)
        latencies.append(end - start)
    return latencies, calls


def open_loop(
    rag: Shardrag, documents: list[tuple[DocumentInput, str]], interval: float
) -> tuple[list[float], list[float], float]:
    """A put every ``interval`` s, another thread polling what is outstanding every 5 ms.

    Returns the latencies (from when each put was due), the put-call durations, and how far
    the puts fell behind their schedule at most (seconds).
    """
    due: dict[str, float] = {}
    found: dict[str, float] = {}
    outstanding: dict[str, str] = {}
    lock = threading.Lock()
    putting_done = threading.Event()
    failure: list[BaseException] = []

    def poll() -> None:
        try:
            while True:
                with lock:
                    waiting = list(outstanding.items())
                if not waiting and putting_done.is_set():
                    return
                for doc_id, word in waiting:
                    if shows(rag, doc_id, word):
                        now = time.perf_counter()
                        with lock:
                            found[doc_id] = now
                            del outstanding[doc_id]
                    elif time.perf_counter() - due[doc_id] > SEARCHABLE_TIMEOUT_SECONDS:
                        raise TimeoutError(f"{doc_id} not searchable in time")
                time.sleep(POLL_SECONDS)
        except BaseException as exc:
            failure.append(exc)

    poller = threading.Thread(target=poll, name="bench-poller")
    poller.start()
    calls, behind = [], 0.0
    start = time.perf_counter()
    try:
        for n, (document, word) in enumerate(documents):
            when = start + n * interval
            time.sleep(max(0.0, when - time.perf_counter()))
            began = time.perf_counter()
            behind = max(behind, began - when)
            with lock:
                due[document.doc_id] = when
            put(rag, document)
            calls.append(time.perf_counter() - began)
            with lock:
                outstanding[document.doc_id] = word
            if failure:
                break
    finally:
        putting_done.set()
        poller.join()
    if failure:
        raise failure[0]
    latencies = [found[d.doc_id] - due[d.doc_id] for d, _ in documents]
    return latencies, calls, behind


def latency(
    path: WritePath,
    data_dir: Path,
    preload: list[DocumentInput],
    documents: dict[str, list[tuple[DocumentInput, str]]],
    interval: float,
) -> dict[str, Any]:
    """Every latency measure on one write path, over a tenant preloaded with ``preload``."""
    with path.open(data_dir) as rag:
        for i in range(0, len(preload), DOCUMENTS_PER_BATCH):
            rag.put_documents(LATENCY_TENANT, preload[i : i + DOCUMENTS_PER_BATCH])
        report: dict[str, Any] = {}
        for measure in MEASURES:
            cpu = CpuUse()
            behind = None
            if measure == "open_eventual":
                latencies, calls, behind = open_loop(rag, documents[measure], interval)
            else:
                session = measure == "closed_session"
                latencies, calls = closed_loop(rag, documents[measure], session)
            doc_ids = [d.doc_id for d, _ in documents[measure]]
            report[measure] = {
                **summary(latencies),
                "put_call": summary(calls),
                "live_documents": live_documents(rag, LATENCY_TENANT, doc_ids),
                **cpu.cores(),
            }
            if behind is not None:
                report[measure]["max_behind_schedule_ms"] = round(behind * 1000, 2)
        report["preloaded_live_documents"] = live_documents(
            rag, LATENCY_TENANT, [d.doc_id for d in preload]
        )
    return report


# -- the run ------------------------------------------------------------------------------------


def run(
    docs: int,
    latency_docs: int,
    preload_docs: int,
    open_loop_interval: float,
    nats_url: str,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Both parts on every write path that can run here; the report (without printing)."""
    source = corpus(max(docs, preload_docs + len(MEASURES) * latency_docs))
    documents = source[:docs]
    preload = source[:preload_docs]
    marked_docs = latency_documents(source, preload_docs, latency_docs)
    paths, nats_skipped = write_paths(nats_url)
    report: dict[str, Any] = {
        "cores": os.cpu_count(),
        "documents_per_batch": DOCUMENTS_PER_BATCH,
        "nats": {"url": nats_url, "ran": nats_skipped is None, "skipped": nats_skipped},
        "throughput": {"scenarios": {}},
        "latency": {
            "preload_documents": len(preload),
            "documents_per_measure": latency_docs,
            "poll_ms": POLL_SECONDS * 1000,
            "open_loop_interval_ms": round(open_loop_interval * 1000, 3),
            "scenarios": {},
        },
    }
    workdir = Path(tempfile.mkdtemp(prefix="shardrag-bench-pipeline-"))
    throughputs = report["throughput"]["scenarios"]
    try:
        # The baseline before and after the log paths: drift of the machine shows up.
        direct_runs: list[dict[str, Any]] = []
        for name in ("direct", "log_sqlite", "log_nats", "direct"):
            if name not in paths:
                throughputs[name] = {"skipped": nats_skipped}
                continue
            progress(f"throughput: {LABELS[name]}")
            data_dir = workdir / f"{name}-throughput-{len(direct_runs)}"
            result = throughput(paths[name].for_part("throughput"), data_dir, documents)
            if name == "direct":
                direct_runs.append(result)
            else:
                throughputs[name] = result
        throughputs["direct"] = mean_of_runs(direct_runs)
        for name in SCENARIOS:
            if name not in paths:
                report["latency"]["scenarios"][name] = {"skipped": nats_skipped}
                continue
            progress(f"latency: {LABELS[name]}")
            report["latency"]["scenarios"][name] = latency(
                paths[name].for_part("latency"),
                workdir / f"{name}-latency",
                preload,
                marked_docs,
                open_loop_interval,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    direct = throughputs["direct"]["documents_per_second"]
    report["throughput"]["log_over_direct"] = {
        name: round(throughputs[name]["documents_per_second"] / direct, 3)
        for name in ("log_sqlite", "log_nats")
        if "skipped" not in throughputs[name]
    }
    report["throughput"]["scenarios"] = {name: throughputs[name] for name in SCENARIOS}
    return report


def mean_of_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The direct baseline over its runs (before and after the log paths): the rates of the
    mean time, the fewest documents found live, every run as it was."""
    seconds = sum(r["seconds"] for r in runs) / len(runs)
    first = runs[0]
    return {
        "documents": first["documents"],
        "chunks": first["chunks"],
        "live_documents": min(r["live_documents"] for r in runs),
        "seconds": round(seconds, 3),
        "documents_per_second": round(first["documents"] / seconds, 2),
        "chunks_per_second": round(first["chunks"] / seconds, 2),
        **{c: round(sum(r[c] for r in runs) / len(runs), 2) for c in CORES},
        "runs": runs,
    }


def print_report(report: dict[str, Any]) -> None:
    """The two tables: each write path beside the direct baseline of the same run."""
    part = report["throughput"]
    scenarios = part["scenarios"]
    direct = scenarios["direct"]
    table = Table(
        title=f"write throughput: {direct['documents']} CISI documents, {direct['chunks']} "
        f"chunks, put_documents batches of {report['documents_per_batch']}"
    )
    for column in (
        "write path",
        "docs/s",
        "chunks/s",
        "seconds (direct: before / after)",
        "vs direct",
        "live",
        "cores: shardrag / nats / other",
    ):
        table.add_column(column, justify="right")
    for name in SCENARIOS:
        row = scenarios[name]
        if "skipped" in row:
            table.add_row(LABELS[name], "skipped", *[""] * 5)
            continue
        ratio = part["log_over_direct"].get(name, 1.0)
        table.add_row(
            LABELS[name],
            f"{row['documents_per_second']:.1f}",
            f"{row['chunks_per_second']:.1f}",
            " / ".join(f"{r['seconds']:.2f}" for r in row.get("runs", [row])),
            f"{ratio:.2f}x",
            f"{row['live_documents']}/{row['documents']}",
            f"{row['shardrag_cores']:.2f} / {row['nats_server_cores']:.2f} / "
            f"{row['other_processes_cores']:.2f}",
        )
    console.print(table)

    part = report["latency"]
    table = Table(
        title=f"put → searchable: {part['documents_per_measure']} documents per row, tenant of "
        f"{part['preload_documents']} documents, poll {part['poll_ms']:g} ms, open loop one "
        f"put every {part['open_loop_interval_ms']:g} ms"
    )
    for column in (
        "write path",
        "loop / read",
        "p50 ms",
        "p99 ms",
        "max ms",
        "put call p50 / p99 ms",
        "live",
        "cores: shardrag / nats / other",
    ):
        table.add_column(column, justify="right")
    for name in SCENARIOS:
        rows = part["scenarios"][name]
        if "skipped" in rows:
            table.add_row(LABELS[name], "skipped", *[""] * 6)
            continue
        for measure in MEASURES:
            row = rows[measure]
            loop = measure.replace("_", " / ")
            if "max_behind_schedule_ms" in row:
                loop += f" (≤{row['max_behind_schedule_ms']:.0f} ms late)"
            table.add_row(
                LABELS[name] if measure == MEASURES[0] else "",
                loop,
                f"{row['p50_ms']:.1f}",
                f"{row['p99_ms']:.1f}",
                f"{row['max_ms']:.1f}",
                f"{row['put_call']['p50_ms']:.1f} / {row['put_call']['p99_ms']:.1f}",
                f"{row['live_documents']}/{row['count']}",
                f"{row['shardrag_cores']:.2f} / {row['nats_server_cores']:.2f} / "
                f"{row['other_processes_cores']:.2f}",
            )
    console.print(table)
    if report["nats"]["skipped"]:
        console.print(f"{LABELS['log_nats']}: skipped, {report['nats']['skipped']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the tables, write the JSON report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, help="throughput documents (default 1460)")
    parser.add_argument("--latency-docs", type=int, help="documents per latency row (100)")
    parser.add_argument("--preload-docs", type=int, help="documents in the tenant first (200)")
    parser.add_argument("--open-loop-interval-ms", type=float, default=100.0)
    parser.add_argument("--nats-url", default=DEFAULT_NATS_URL)
    parser.add_argument("--quick", action="store_true", help=f"small sizes: {QUICK}")
    parser.add_argument("--out", type=Path, default=Path("bench/results/pipeline.json"))
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULTS
    docs = args.docs or sizes["docs"]
    latency_docs = args.latency_docs or sizes["latency_docs"]
    preload_docs = args.preload_docs if args.preload_docs is not None else sizes["preload_docs"]

    report = run(
        docs,
        latency_docs,
        preload_docs,
        args.open_loop_interval_ms / 1000,
        args.nats_url,
        progress=lambda step: console.print(f"[dim]{step}[/dim]"),
    )
    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"written to {args.out}")
    return report


if __name__ == "__main__":
    main()
