"""``shardrag cluster ...``: start and stop the distributed mode on one machine.

Errors print the stable error code and message (as ``{"error": {...}}`` with ``--json``) and
exit with 2 for bad input, 1 for anything else, as every shardrag command does.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from shardrag.clikit import JsonFlag, console, err_console, errors_reported, print_json
from shardrag.cluster.shardmap import Layout
from shardrag.config import Settings
from shardrag.errors import Unavailable

cluster_app = typer.Typer(
    name="cluster",
    help="Run the distributed mode (NATS, PostgreSQL, Redis, nodes, workers, api) on this machine.",
    no_args_is_help=True,
)

ClusterDir = Annotated[
    Path, typer.Option("--dir", help="The cluster's directory: logs, data, cluster.json.")
]
DEFAULT_DIR = Path("./shardrag-cluster")


@cluster_app.command()
def up(
    dir: ClusterDir = DEFAULT_DIR,
    name: Annotated[
        str, typer.Option(help="Letters, digits, _: NATS streams, database, Redis keys.")
    ] = "shardrag",
    shards: Annotated[int, typer.Option(help="Shards in the layout.")] = 2,
    replicas: Annotated[int, typer.Option(help="Replicas per shard.")] = 2,
    nodes: Annotated[int, typer.Option(help="Index nodes.")] = 3,
    port: Annotated[int, typer.Option(help="The api's port (0: a free one).")] = 8080,
    postgres_url: Annotated[
        str, typer.Option(help="PostgreSQL admin URL; the cluster's database is created there.")
    ] = "postgresql://127.0.0.1:5432/postgres",
    redis_url: Annotated[str, typer.Option(help="Redis for the cache.")] = (
        "redis://127.0.0.1:6379/0"
    ),
    blob_url: Annotated[
        str | None, typer.Option(help="Blob store (default: file://<dir>/blobs).")
    ] = None,
    own_redis: Annotated[
        bool, typer.Option(help="Start a Redis of the cluster's own instead of --redis-url.")
    ] = False,
    own_postgres: Annotated[
        bool,
        typer.Option(
            help="Start a PostgreSQL of the cluster's own (initdb into <dir>/postgres) "
            "instead of --postgres-url."
        ),
    ] = False,
    tls: Annotated[
        bool,
        typer.Option(
            help="Mutual TLS: a private CA in <dir>/pki, a certificate per process; NATS and "
            "the api (https) require client certificates (docs/security.md)."
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Start a cluster: 3 NATS servers, index nodes, workers and 2 api processes."""
    from shardrag.cluster.launcher import ClusterSpec
    from shardrag.cluster.launcher import up as start_cluster

    spec = ClusterSpec(
        dir=dir,
        name=name,
        shards=shards,
        replicas=replicas,
        nodes=nodes,
        api_port=port,
        postgres_url=postgres_url,
        redis_url=redis_url,
        blob_url=blob_url,
        own_redis=own_redis,
        own_postgres=own_postgres,
        tls=tls,
    )
    with errors_reported(as_json):
        if as_json:
            state = start_cluster(spec)
        else:
            with err_console.status("starting the cluster") as status:
                state = start_cluster(spec, on_step=status.update)
    if as_json:
        print_json(
            {
                "api_url": state.api_url,
                "admin_key": state.admin_key,
                "nats_urls": state.nats_urls,
                "registry_url": state.registry_url,
                "tls": None
                if state.tls is None
                else {"ca": state.tls.ca, "cert": state.tls.cert, "key": state.tls.key},
                "processes": [
                    {"name": p.name, "role": p.role, "pid": p.pid, "log": str(p.log)}
                    for p in state.processes
                ],
            }
        )
        return
    table = Table("role", "name", "pid", "log", title=f"cluster {state.name} in {state.dir}")
    for p in state.processes:
        table.add_row(p.role, p.name, str(p.pid), str(p.log))
    console.print(table)
    console.print(f"[bold]api[/]       {state.api_url}")
    console.print(f"[bold]admin key[/] {state.admin_key}", highlight=False)
    if state.tls is not None:
        console.print(
            f"[bold]tls[/]       SHARDRAG_CA_FILE={state.tls.ca} "
            f"SHARDRAG_CLIENT_CERT={state.tls.cert} SHARDRAG_CLIENT_KEY={state.tls.key}",
            highlight=False,
        )
    console.print(f"stop it with: shardrag cluster down --dir {state.dir}", highlight=False)


@cluster_app.command()
def down(
    dir: ClusterDir = DEFAULT_DIR,
    purge: Annotated[
        bool, typer.Option("--purge", help="Also drop the database, Redis keys and the dir.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Stop a cluster (api, workers, nodes, then NATS); its data stays unless --purge."""
    from shardrag.cluster.launcher import down as stop_cluster

    with errors_reported(as_json):
        if as_json:
            report = stop_cluster(dir, purge=purge)
        else:
            with err_console.status(f"stopping the cluster in {dir}"):
                report = stop_cluster(dir, purge=purge)
    if as_json:
        print_json(
            {
                "dir": str(report.dir),
                "purged": report.purged,
                "processes": [
                    {"name": p.name, "role": p.role, "pid": p.pid, "outcome": p.outcome}
                    for p in report.processes
                ],
            }
        )
        return
    table = Table("role", "name", "pid", "outcome")
    for p in report.processes:
        style = {"killed": "yellow", "not running": "dim"}.get(p.outcome, "green")
        table.add_row(p.role, p.name, str(p.pid), f"[{style}]{p.outcome}[/]")
    console.print(table)
    if report.purged:
        console.print(f"purged: the database, the Redis keys and {report.dir}", highlight=False)


@cluster_app.command()
def init(
    nodes: Annotated[
        str, typer.Option("--nodes", help="Comma-separated node ids to spread replicas over.")
    ],
) -> None:
    """Write the cluster's layout (SHARDRAG_SHARDS, SHARDRAG_REPLICAS, the embedding model)
    and each shard's replicas into the shard map. Idempotent: what is there stays."""
    from shardrag.embed import open_embedder

    with errors_reported(False):
        settings = Settings.load(cluster=True)
        node_ids = [n.strip() for n in nodes.split(",") if n.strip()]
        embedder = open_embedder(settings)
        wanted = Layout(settings.shards, settings.replicas, embedder.model_id, embedder.dimension)
        deadline = time.monotonic() + 60
        while True:
            try:
                layout = _write_layout(settings, wanted, node_ids)
                break
            except Unavailable:
                # Right after the servers (re)start, a replicated bucket has no leader yet.
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    console.print(f"layout: {layout.shards} shards x {layout.replicas} replicas", highlight=False)


def _write_layout(settings: Settings, wanted: Layout, node_ids: list[str]) -> Layout:
    from shardrag.cluster import initial_replicas, open_shard_map

    shard_map = open_shard_map(settings)
    try:
        layout = shard_map.init_layout(wanted)
        for shard_id, replicas in initial_replicas(
            layout.shards, layout.replicas, node_ids
        ).items():
            if not shard_map.replicas(shard_id).nodes:
                shard_map.set_replicas(shard_id, replicas, 0)
        return layout
    finally:
        shard_map.close()


@cluster_app.command()
def status(
    dir: ClusterDir = DEFAULT_DIR,
    api: Annotated[
        str | None,
        typer.Option("--api", help="The api whose circuit breakers to show (default: --dir's)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Shards, replicas, applied offsets, replication lag and node health of a cluster.

    Reads the shard map of the cluster started in --dir (or, without a cluster.json there,
    of the one SHARDRAG_NATS_URL and SHARDRAG_LOG_PREFIX name). The circuit breakers are
    those of the api process that answers GET /v1/admin/cluster (each has its own).
    """
    from shardrag.cluster.status import api_breakers, read_status

    with errors_reported(as_json):
        found = read_status(dir)
    breakers = api_breakers(dir, api)
    if as_json:
        print_json({**found.to_dict(), "breakers": breakers})
        return
    report = found.to_dict()
    layout = report["layout"]
    console.print(
        f"[bold]{layout['shards']} shards x {layout['replicas']} replicas[/], "
        f"model {layout['model']}",
        highlight=False,
    )
    shards = Table("shard", "replicas", "log head", title="shards")
    for shard in report["shards"]:
        shards.add_row(str(shard["shard"]), ", ".join(shard["replicas"]), str(shard["log_head"]))
    console.print(shards)
    nodes = Table("node", "pid", "address", "health", "shard: applied (lag)", title="nodes")
    live = {n["id"] for n in report["nodes"]}
    for node in report["nodes"]:
        placed = ", ".join(f"{s['shard']}: {s['applied']} ({s['lag']})" for s in node["shards"])
        nodes.add_row(node["id"], str(node["pid"]), node["address"], "[green]up[/]", placed or "-")
    for missing in sorted({n for s in report["shards"] for n in s["replicas"]} - live):
        nodes.add_row(missing, "-", "-", "[red]down[/]", "-")
    console.print(nodes)
    if breakers is not None:
        _print_breakers(breakers)


@cluster_app.command("add-replica")
def add_replica(
    shard: Annotated[int, typer.Option("--shard", help="The shard to replicate.")],
    node: Annotated[str, typer.Option("--node", help="The node to hold the new replica.")],
    dir: ClusterDir = DEFAULT_DIR,
    as_json: JsonFlag = False,
) -> None:
    """Give a node a replica of a shard: it starts from the newest snapshot in the blob store
    and catches up from the snapshot's log offset (watch it with `cluster status`)."""
    from shardrag.cluster.status import add_replica as assign

    with errors_reported(as_json):
        replicas = assign(dir, shard, node)
    if as_json:
        print_json({"shard": shard, "replicas": list(replicas.nodes)})
        return
    console.print(f"shard {shard}: replicas {', '.join(replicas.nodes)}", highlight=False)


@cluster_app.command("promote-tenant")
def promote_tenant(
    tenant: Annotated[str, typer.Argument(help="The tenant to move to dedicated shards.")],
    shards: Annotated[
        int, typer.Option("--shards", min=1, help="Dedicated shards (>1 splits by doc id).")
    ] = 1,
    dir: ClusterDir = DEFAULT_DIR,
    as_json: JsonFlag = False,
) -> None:
    """Move a tenant from its shared shard to shards of its own while it serves reads and
    writes: copy (snapshot + the old shard's log), flip, drain, settle. Run it again to
    resume a move that stopped."""
    from shardrag.cluster.status import opened_mover

    with (
        errors_reported(as_json),
        _phases(not as_json) as progress,
        opened_mover(dir, progress) as mover,
    ):
        placement = mover.promote(tenant, shards)
    if as_json:
        print_json({"tenant": tenant, "shards": list(placement.shards), "phase": placement.phase})
        return
    console.print(f"tenant {tenant}: shards {list(placement.shards)}", highlight=False)


@cluster_app.command()
def rebalance(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only, move nothing.")] = False,
    dir: ClusterDir = DEFAULT_DIR,
    as_json: JsonFlag = False,
) -> None:
    """Move replicas until no live node holds more than one more than another; each move
    adds the new replica, waits until it caught up, then removes the old one."""
    from shardrag.cluster.status import opened_mover

    with (
        errors_reported(as_json),
        _phases(not as_json) as progress,
        opened_mover(dir, progress) as mover,
    ):
        moves = mover.rebalance(dry_run)
    found = [{"shard": m.shard_id, "from": m.from_node, "to": m.to_node} for m in moves]
    if as_json:
        print_json({"dry_run": dry_run, "moves": found})
        return
    if not moves:
        console.print("balanced: nothing to move")
    for m in moves:
        verb = "would move" if dry_run else "moved"
        console.print(f"shard {m.shard_id}: {verb} {m.from_node} → {m.to_node}", highlight=False)


@cluster_app.command("move-replica")
def move_replica(
    shard: Annotated[int, typer.Option("--shard", help="The shard whose replica moves.")],
    from_node: Annotated[str, typer.Option("--from", help="The node that gives it up.")],
    to_node: Annotated[str, typer.Option("--to", help="The node that takes it.")],
    dir: ClusterDir = DEFAULT_DIR,
    as_json: JsonFlag = False,
) -> None:
    """Move one replica of a shard between nodes (snapshot, catch up, then the map flips)."""
    from shardrag.cluster.status import opened_mover

    with (
        errors_reported(as_json),
        _phases(not as_json) as progress,
        opened_mover(dir, progress) as mover,
    ):
        replicas = mover.move_replica(shard, from_node, to_node)
    if as_json:
        print_json({"shard": shard, "replicas": list(replicas.nodes)})
        return
    console.print(f"shard {shard}: replicas {', '.join(replicas.nodes)}", highlight=False)


@contextlib.contextmanager
def _phases(show: bool) -> Iterator[Callable[[str], None]]:
    """A progress display of a long placement change: a spinner on the current step, each
    step printed as it is reached (nothing with ``--json``)."""
    if not show:
        yield lambda message: None
        return
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("starting", total=None)

        def step(message: str) -> None:
            bar.console.print(message, highlight=False)
            bar.update(task, description=message)

        yield step


def _print_breakers(found: dict[str, Any]) -> None:
    if "error" in found:
        console.print(f"breakers: {found['api_url']} did not say ({found['error']})")
        return
    table = Table("node", "breaker", title="breakers")
    style = {"closed": "green", "half_open": "yellow", "open": "red"}
    for node, state in sorted(found["nodes"].items()):
        table.add_row(node, f"[{style.get(state, 'white')}]{state}[/]")
    console.print(table)
    console.print(
        f"circuit breakers of the api process {found['api_pid']} at {found['api_url']} "
        "(each api process has its own)",
        highlight=False,
    )


@cluster_app.command()
def fault(
    node: Annotated[str, typer.Option("--node", help="The index node to slow down.")],
    delay: Annotated[
        float, typer.Option("--delay", help="Seconds each search answer waits first (0 clears).")
    ],
    dir: ClusterDir = DEFAULT_DIR,
    as_json: JsonFlag = False,
) -> None:
    """Inject a fault into an index node started with SHARDRAG_FAULT_INJECTION=true: every
    search answer of the node waits --delay seconds first (tests and chaos drills only)."""
    from shardrag.cluster.faults import inject_delay
    from shardrag.cluster.status import cluster_settings

    with errors_reported(as_json):
        inject_delay(cluster_settings(dir), node, delay)
    if as_json:
        print_json({"node_id": node, "delay_seconds": delay})
        return
    console.print(f"node {node}: search answers delayed {delay:g} s", highlight=False)
