"""Chaos benchmark: availability and latency of searches during each fault, beside no fault.

    python -m bench.chaos [--scenarios node_kill node_pause ...] [--baseline-seconds 15]
                          [--fault-seconds 10] [--recovery-seconds 10] [--searchers 3]
                          [--logs-dir DIR] [--json] [--out bench/results/chaos.json]

One run, one cluster (``tests.chaos.harness.chaos_spec``: 3 NATS servers, 3 index nodes,
2 shards x 2 replicas, the workers, 2 api processes, its own Redis and PostgreSQL, fault
injection on, rate limit off, result cache on), three tenants with 8 documents each, then every
scenario of ``tests.chaos.harness.SCENARIOS`` in turn, as the chaos suite runs them
(tests/chaos) but with longer phases. Each scenario runs the load generator
(``--searchers`` clients searching round the tenants, each query with a word of its own so that
it reaches the index nodes; one writer putting a document every 0.1 s) through ``baseline``
(no fault), ``fault`` (from the injection until the broken part is back) and ``recovery``.

Per scenario: **availability** = successful searches / attempted searches of each phase, and
p50/p99 of the successful searches' latency in the fault phase beside the baseline phase of
the same scenario (the no-fault figures of the same run, taken seconds before the fault);
writes accepted / not accepted (an error answer: nothing was promised) / lost (accepted but not
live at their version after a bounded wait: must be 0); hits of another tenant (must be 0). A
search counts in the fault phase if any part of it ran during the fault. The last row pools
every scenario's baseline: the run's no-fault figure.

CPU: the machine has 2 cores, shared with whatever else runs; the cores busy during the run
are reported beside the figures. The cluster dir is purged at the end (``--logs-dir`` keeps a
copy of its logs).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO_ROOT = Path(__file__).resolve().parents[1]

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from tests.chaos.harness import (  # noqa: E402
    PHASES,
    SCENARIOS,
    ChaosCluster,
    ChaosTimings,
    chaos_spec,
    provision,
    run_scenario,
)

from bench.http_search import machine_busy_seconds  # noqa: E402
from bench.pipeline import latency_summary  # noqa: E402
from shardrag.cluster.launcher import STATE_FILE, down, up  # noqa: E402

# Wide enough for the table when the output is not a terminal (make, CI logs).
console = Console(width=None if sys.stdout.isatty() else 180)
progress_console = Console(stderr=True)
DEFAULTS = {"baseline_seconds": 15.0, "fault_seconds": 10.0, "recovery_seconds": 10.0}


def progress(message: str) -> None:
    """A step of the run, on stderr (stdout holds the table, or the JSON with --json)."""
    progress_console.print(f"[dim]{time.strftime('%H:%M:%S')} {message}[/dim]")


def phase_figures(phase: dict[str, Any]) -> dict[str, Any]:
    """A phase of a scenario report: counts, availability, latency summary and samples (ms)."""
    return {
        "searches": phase["searches"],
        "succeeded": phase["succeeded"],
        "availability": phase["availability"],
        "search_failures": phase["search_failures"],
        "latency": latency_summary([ms / 1000 for ms in phase["latencies_ms"]]),
        "latencies_ms": phase["latencies_ms"],
        "writes": phase["writes"],
        "accepted_writes": phase["accepted_writes"],
        "write_failures": phase["write_failures"],
        "seconds": phase["seconds"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the cluster, run every scenario asked for, purge the cluster; the report."""
    timings = ChaosTimings(args.baseline_seconds, args.fault_seconds, args.recovery_seconds)
    report: dict[str, Any] = {
        "benchmark": "chaos",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "load_generator": "this process, loopback"},
        "scenarios": {},
    }
    started = time.perf_counter()
    busy = machine_busy_seconds()
    # Not a private (0700) temp dir: run as root, the cluster's PostgreSQL runs as `postgres`.
    directory = Path(tempfile.mkdtemp(prefix="shardrag-bench-chaos-"))
    directory.chmod(0o711)
    try:
        progress("starting the cluster (with its own Redis and PostgreSQL)")
        state = up(chaos_spec(directory, f"bchaos{secrets.token_hex(3)}"), on_step=progress)
        report["up_seconds"] = round(time.perf_counter() - started, 1)
        progress("creating the tenants and their documents")
        cluster = provision(state)
        for name in args.scenarios:
            report["scenarios"][name] = scenario_figures(cluster, name, timings, args.searchers)
    finally:
        if args.logs_dir is not None and (directory / "logs").is_dir():
            shutil.copytree(directory / "logs", args.logs_dir, dirs_exist_ok=True)
        if (directory / STATE_FILE).exists():
            down(directory, purge=True)
        shutil.rmtree(directory, ignore_errors=True)
    wall = time.perf_counter() - started
    report["wall_seconds"] = round(wall, 1)
    report["machine"]["cores_busy"] = round((machine_busy_seconds() - busy) / wall, 2)
    report["no_fault"] = no_fault(report)
    return report


def scenario_figures(
    cluster: ChaosCluster, name: str, timings: ChaosTimings, searchers: int
) -> dict[str, Any]:
    """Run one scenario; its figures, or ``{"failed": ...}`` (the next one settles first)."""
    progress(f"{name}: {SCENARIOS[name].description}")
    try:
        measured = run_scenario(cluster, SCENARIOS[name], timings, searchers)
    except Exception as exc:
        progress(f"[red]{name} failed: {exc!r}[/red]")
        return {"failed": repr(exc), "traceback": traceback.format_exc()}
    raw = measured.to_dict()
    return {
        "description": SCENARIOS[name].description,
        "target": raw["target"],
        "fault_seconds": raw["fault_seconds"],
        "settle_seconds": raw["settle_seconds"],
        "writes": raw["writes"],
        "cross_tenant": measured.cross_tenant,
        "phases": {phase: phase_figures(raw["phases"][phase]) for phase in PHASES},
    }


def no_fault(report: dict[str, Any]) -> dict[str, Any]:
    """Every scenario's baseline phase pooled: the run's figures without a fault."""
    searches = succeeded = 0
    samples_ms: list[float] = []
    for scenario in report["scenarios"].values():
        if "failed" in scenario:
            continue
        baseline = scenario["phases"]["baseline"]
        searches += baseline["searches"]
        succeeded += baseline["succeeded"]
        samples_ms += baseline["latencies_ms"]
    return {
        "searches": searches,
        "succeeded": succeeded,
        "availability": succeeded / searches if searches else None,
        "latency": latency_summary([ms / 1000 for ms in samples_ms]),
    }


# -- printing -----------------------------------------------------------------------------------


def _availability(phase: dict[str, Any]) -> str:
    value = phase.get("availability")
    if value is None:
        return "—"
    failed = phase["searches"] - phase["succeeded"]
    return f"{value:.4f} ({phase['succeeded']}/{phase['searches']})" + (
        f" {_kinds(phase['search_failures'])}" if failed else ""
    )


def _kinds(failures: dict[str, int]) -> str:
    """``{"503 unavailable": 2}`` as ``2x 503 unavailable``."""
    return ", ".join(f"{count}x {kind}" for kind, count in failures.items())


def _latency(phase: dict[str, Any]) -> str:
    latency = phase["latency"]
    if not latency.get("count"):
        return "—"
    return f"{latency['p50_ms']:.0f} / {latency['p99_ms']:.0f}"


def _writes(phase: dict[str, Any]) -> str:
    """Accepted / attempted writes, and what the others met."""
    failures = phase["write_failures"]
    return f"{phase['accepted_writes']}/{phase['writes']}" + (
        f" ({_kinds(failures)})" if failures else ""
    )


def _ratio(value: float | None, base: float | None) -> str:
    if not value or not base:
        return "—"
    return f"{value / base:.1f}x"


def results_table(report: dict[str, Any]) -> Table:
    """One row per scenario: the fault phase beside the same scenario's baseline."""
    settings = report["settings"]
    table = Table(
        title=f"chaos: {settings['searchers']} searching clients + 1 writer (a PUT every 0.1 s) "
        f"over 3 tenants; phases of {settings['baseline_seconds']:g} s baseline, the fault held "
        f"{settings['fault_seconds']:g} s (then undone), {settings['recovery_seconds']:g} s "
        "recovery",
        caption="availability = successful / attempted searches (a search counts in the fault "
        "phase if any part of it ran during the fault); latency of the successful ones. Writes: "
        "accepted (202 with a write token) / attempted; a write not accepted (an error "
        "answer) promised nothing; lost = accepted but not live at its version in the end. "
        "Cluster: 3 NATS, 3 index nodes, 2 shards x 2 replicas, 2 api processes, result "
        f"cache on; {report['machine']['cpus']} cores shared with everything else "
        f"({report['machine']['cores_busy']:.2f} busy on average).",
    )
    for column in (
        "scenario (target)",
        "fault lasted s",
        "availability: no fault",
        "during the fault",
        "after",
        "p50 / p99 ms: no fault",
        "during the fault",
        "p99 fault / no fault",
        "writes accepted during the fault",
        "accepted writes lost",
        "other tenant's hits",
    ):
        table.add_column(column, justify="right")
    for name, scenario in report["scenarios"].items():
        if "failed" in scenario:
            table.add_row(name, "FAILED", scenario["failed"][:60], *[""] * 8)
            continue
        phases = scenario["phases"]
        baseline, fault, recovery = (phases[p] for p in PHASES)
        table.add_row(
            f"{name} ({scenario['target']})",
            f"{scenario['fault_seconds']:.1f}",
            _availability(baseline),
            _availability(fault),
            _availability(recovery),
            _latency(baseline),
            _latency(fault),
            _ratio(fault["latency"].get("p99_ms"), baseline["latency"].get("p99_ms")),
            _writes(fault),
            f"{len(scenario['writes']['lost'])} of {scenario['writes']['accepted']}",
            f"{len(scenario['cross_tenant'])}",
        )
    pooled = report["no_fault"]
    table.add_row(
        "no fault (every baseline)",
        "",
        _availability({**pooled, "search_failures": {}}),
        "",
        "",
        _latency(pooled),
        *[""] * 5,
    )
    return table


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the table (or the JSON); write the JSON report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    for name, default in DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=default)
    parser.add_argument("--searchers", type=int, default=3, help="searching clients")
    parser.add_argument("--logs-dir", type=Path, default=None, help="keep the cluster's logs")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/chaos.json")
    args = parser.parse_args(argv)
    if args.searchers < 1 or min(getattr(args, name) for name in DEFAULTS) <= 0:
        parser.error("--searchers and the phase lengths must be positive")

    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        console.print(results_table(report))
        console.print(f"wall time {report['wall_seconds']:,.0f} s; written to {args.out}")
    return report


if __name__ == "__main__":
    # SIGTERM (a CI timeout, ``kill``) runs the finally blocks: the cluster is purged.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    measured = main()
    # A scenario that failed, lost a write or showed another tenant's hit fails the run.
    broken = [
        name
        for name, s in measured["scenarios"].items()
        if "failed" in s or s["writes"]["lost"] or s["cross_tenant"]
    ]
    sys.exit(1 if broken else 0)
