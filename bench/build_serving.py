"""Searches during an index build: in-process (the baseline) vs in a child process (the engine).

    python -m bench.build_serving [--points 300000] [--extra 0.1] [--idle-seconds 10]
                                  [--out bench/results/build_serving.json]

qdrant-edge's ``optimize()`` holds the GIL for its whole run, so a process that builds a
shard's indexes in-process answers nothing until it is done. ``ShardEngine.optimize`` builds
beyond ``BUILD_IN_PROCESS_UP_TO`` points in a child process on a copy of the shard and swaps
the copy in (engine/build.py). This measures what a searcher sees, in one process, one shard:

1. ``--points`` points are written and indexed (one untimed build);
2. **idle**: a searcher thread runs hybrid searches (k = 10) back to back for
   ``--idle-seconds``: the latency with no build;
3. **in-process build** (the baseline, forced by raising ``BUILD_IN_PROCESS_UP_TO``):
   ``--extra`` x points more are written, then ``optimize()`` runs while the searcher goes on;
4. **build in a child process** (what the engine does): as many more points, ``optimize()``.

For each: searches answered during the build, per second, their latency p50 / p99 / max
(a search that waited for the whole build counts once, with that wait), and the build's
wall time. Points are random vectors around 2,000 centres (384-d) with texts of a 2,000-word
vocabulary: enough structure for HNSW, no model needed. Both builds run on the same shard,
the second with ``--extra`` more points than the first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from shardrag.engine import EngineSettings, ShardEngine
from shardrag.engine import shard as engine_shard
from shardrag.models import Chunk, EmbeddedChunk, SearchMode, ShardQuery

REPO_ROOT = Path(__file__).resolve().parent.parent
DIM = 384
CENTRES = 2000
VOCABULARY = 2000
PER_DOCUMENT = 100
console = Console()


class Corpus:
    """Random points around fixed centres, and texts, reproducible by seed."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        centres = self.rng.normal(size=(CENTRES, DIM)).astype(np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        self.words = [f"w{i}" for i in range(VOCABULARY)]

    def vectors(self, count: int) -> np.ndarray:
        picked = self.centres[self.rng.integers(0, CENTRES, count)]
        noisy = picked + 0.6 * self.rng.normal(size=(count, DIM)).astype(np.float32) / DIM**0.5
        unit: np.ndarray = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
        return unit

    def text(self) -> str:
        # Zipf-like: low word numbers are common.
        picks = np.minimum(self.rng.zipf(1.3, 12), VOCABULARY) - 1
        return " ".join(self.words[i] for i in picks)


def write(engine: ShardEngine, corpus: Corpus, first_doc: int, points: int, label: str) -> int:
    """Write ``points`` points in documents of ``PER_DOCUMENT``; the next document number."""
    documents = points // PER_DOCUMENT
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(label, total=documents)
        for d in range(first_doc, first_doc + documents):
            vectors = corpus.vectors(PER_DOCUMENT)
            chunks = [
                EmbeddedChunk(Chunk(i, corpus.text(), "", "h", 12), vectors[i].tolist())
                for i in range(PER_DOCUMENT)
            ]
            engine.upsert("acme", f"d{d}", 1, chunks, {}, None)
            engine.commit("acme", f"d{d}", 1)
            progress.advance(task)
    return first_doc + documents


@dataclass
class Window:
    """Searches answered in one window of time."""

    name: str
    seconds: float
    searches: int
    per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float


class Searcher:
    """A thread searching back to back, recording (start, latency) of each search."""

    def __init__(self, engine: ShardEngine, corpus: Corpus) -> None:
        self.engine = engine
        self.queries = [
            ShardQuery("acme", SearchMode.HYBRID, 10, corpus.text(), v.tolist())
            for v in corpus.vectors(500)
        ]
        self.done: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            start = time.perf_counter()
            self.engine.search(self.queries[i % len(self.queries)])
            self.done.append((start, time.perf_counter() - start))
            i += 1

    def __enter__(self) -> Searcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def window(self, name: str, start: float, end: float) -> Window:
        """The searches that started in [start, end) or were in flight at ``start``."""
        inside = [lat for s, lat in self.done if s < end and s + lat >= start]
        ms = sorted(x * 1000 for x in inside) or [0.0]
        return Window(
            name,
            round(end - start, 2),
            len(inside),
            round(len(inside) / (end - start), 1),
            round(statistics.median(ms), 2),
            round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2),
            round(ms[-1], 2),
        )


def timed_build(engine: ShardEngine, searcher: Searcher, name: str) -> tuple[Window, float]:
    start = time.perf_counter()
    engine.optimize()
    end = time.perf_counter()
    time.sleep(0.5)  # let a search held up to the end finish
    return searcher.window(name, start, end), end - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=300_000)
    parser.add_argument("--extra", type=float, default=0.1)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/build_serving.json")
    args = parser.parse_args(argv)
    corpus = Corpus(args.seed)
    work = Path(tempfile.mkdtemp(dir=args.work_dir, prefix="build-serving-"))
    in_process_up_to = engine_shard.BUILD_IN_PROCESS_UP_TO
    engine = ShardEngine(work / "shard", EngineSettings(dimension=DIM), optimize_threshold=2**62)
    try:
        next_doc = write(engine, corpus, 0, args.points, f"writing {args.points:,} points")
        console.print("first index build (untimed) ...")
        engine.optimize()
        extra = int(args.points * args.extra)
        with Searcher(engine, corpus) as searcher:
            start = time.perf_counter()
            time.sleep(args.idle_seconds)
            idle = searcher.window("idle (no build)", start, time.perf_counter())

            next_doc = write(engine, corpus, next_doc, extra, f"writing {extra:,} more")
            console.print("index build in-process (baseline) ...")
            engine_shard.BUILD_IN_PROCESS_UP_TO = 2**62
            in_process, in_process_s = timed_build(engine, searcher, "build in-process")

            next_doc = write(engine, corpus, next_doc, extra, f"writing {extra:,} more")
            console.print("index build in a child process ...")
            engine_shard.BUILD_IN_PROCESS_UP_TO = 0
            apart, apart_s = timed_build(engine, searcher, "build in a child process")
    finally:
        engine_shard.BUILD_IN_PROCESS_UP_TO = in_process_up_to
        engine.close()
        shutil.rmtree(work, ignore_errors=True)

    table = Table(
        title=f"hybrid searches (k=10, one thread, back to back) on a shard of "
        f"{args.points:,} points, +{extra:,} before each build"
    )
    for column in ("while", "build s", "searches", "per s", "p50 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column == "while" else "right")
    for window, seconds in ((idle, None), (in_process, in_process_s), (apart, apart_s)):
        table.add_row(
            window.name,
            "" if seconds is None else f"{seconds:,.1f}",
            str(window.searches),
            f"{window.per_second:,.1f}",
            f"{window.p50_ms:,.2f}",
            f"{window.p99_ms:,.2f}",
            f"{window.max_ms:,.1f}",
        )
    console.print(table)
    report = {
        "settings": vars(args) | {"work_dir": str(args.work_dir), "out": str(args.out)},
        "windows": [asdict(w) for w in (idle, in_process, apart)],
        "build_seconds": {"in_process": in_process_s, "child_process": apart_s},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
