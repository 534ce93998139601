"""What encryption at rest costs: ingest and search with a master key against without one.

    python -m bench.encryption [--copies 3] [--queries 400] [--rounds 2]
                               [--out bench/results/encryption.json]

The corpus: the SQuAD 2.0 paragraphs vendored in bench/datasets (173), ``--copies`` times
under distinct ids; the queries: its questions. Each variant runs in a process of its own,
one after the other, the baseline first, ``--rounds`` times (plain, sealed, plain, sealed...):

- **ingest**: every document through ``put_documents`` in batches (parse, chunk, embed, seal,
  index, commit), documents per second;
- **search**: one query at a time, result cache off (every search reaches the engine), in
  keyword mode (the engine and the decryption of the hits, no embedding), hybrid mode (what a
  user runs) and keyword with a metadata filter (tagged values); p50 and p99 ms.

"plain" is no master key; "sealed" is a master key: originals, shard payloads, log events,
registry columns and embedding-cache keys under the tenant's data key (docs/security.md).
Reported: the median of the rounds per variant, and sealed / plain.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.answer_quality import DATASET, load

MASTER = "5f4e3d2c1b0a99887766554433221100ffeeddccbbaa99887766554433221100"
TENANT = "bench"
BATCH = 64


def run_variant(variant: str, copies: int, queries: int) -> dict[str, Any]:
    """One variant's figures, measured in this process."""
    import dataclasses

    from shardrag import Shardrag

    documents, questions = load(DATASET)
    corpus = [
        dataclasses.replace(d, doc_id=f"{n}/{d.doc_id}", metadata={"copy": f"c{n}"})
        for n in range(copies)
        for d in documents
    ]
    asked = [q.text for q in questions][:queries]
    settings: dict[str, Any] = {"shards": 1, "result_cache_entries": 0}
    if variant == "sealed":
        settings["master_key"] = MASTER
    with (
        tempfile.TemporaryDirectory() as work,
        Shardrag.open(Path(work) / "data", **settings) as rag,
    ):
        rag.embedder.embed_query("warm the model up")
        started = time.perf_counter()
        for start in range(0, len(corpus), BATCH):
            for outcome in rag.put_documents(TENANT, corpus[start : start + BATCH]):
                if isinstance(outcome, Exception):
                    raise outcome
        ingest_seconds = time.perf_counter() - started
        rag.optimize()
        figures: dict[str, Any] = {
            "documents": len(corpus),
            "ingest_docs_per_s": round(len(corpus) / ingest_seconds, 1),
        }
        cases = {
            "keyword": {"mode": "keyword"},
            "hybrid": {"mode": "hybrid"},
            "keyword_filtered": {"mode": "keyword", "filters": {"copy": "c0"}},
        }
        for name, options in cases.items():
            times = []
            for question in asked:
                begun = time.perf_counter()
                hits = rag.search(TENANT, question, k=10, **options)
                times.append((time.perf_counter() - begun) * 1000)
                assert hits, question
            times.sort()
            figures[f"{name}_p50_ms"] = round(statistics.median(times), 3)
            figures[f"{name}_p99_ms"] = round(times[int(len(times) * 0.99) - 1], 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/encryption.json"))
    parser.add_argument("--variant", choices=["plain", "sealed"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.copies, args.queries)))
        return
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "sealed": []}
    for round_number in range(args.rounds):
        for variant in ("plain", "sealed"):
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.encryption",
                    "--variant",
                    variant,
                    "--copies",
                    str(args.copies),
                    "--queries",
                    str(args.queries),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            runs[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_number + 1} {variant}: {runs[variant][-1]}", file=sys.stderr)
    medians = {
        variant: {key: statistics.median(r[key] for r in found) for key in found[0]}
        for variant, found in runs.items()
    }
    print(f"{'figure':<26}{'plain':>12}{'sealed':>12}{'sealed/plain':>14}")
    for key in medians["plain"]:
        plain, sealed = medians["plain"][key], medians["sealed"][key]
        ratio = sealed / plain if plain else float("nan")
        print(f"{key:<26}{plain:>12.3f}{sealed:>12.3f}{ratio:>14.2f}")
    report = {
        "medians": medians,
        "runs": runs,
        "machine": platform.processor() or platform.machine(),
        "cpu": _cpu_model(),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
