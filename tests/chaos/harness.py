"""The chaos suite: one fault at a time injected into a running cluster under load, and what a
user would check afterwards (docs/chaos.md).

A scenario runs a ``LoadGenerator`` (``tests/chaos/loadgen.py``) through three phases:
``baseline`` (no fault), ``fault`` (from the injection until the broken part is back:
restarted, resumed or cleared, and answering) and ``recovery``. Then every accepted write must
become live at its version within a bounded wait (the registry says so, and a session read
with its write token finds that very version in the index), no search may have returned
another tenant's hit, and each phase's availability is its successful searches / attempted
searches. Before a scenario starts, and after it, the cluster is settled: every process
running, every replica live and caught up, every tenant answering.

The faults (``SCENARIOS``), each on the part a user would least like to lose:

* ``node_kill``: SIGKILL the index node holding the most replicas, restart it;
* ``node_pause``: SIGSTOP it (a frozen process: its connections stay open), then SIGCONT;
* ``node_latency``: every search answer of it delayed (``faults.inject_delay``), then cleared;
* ``nats_kill``: SIGKILL the NATS server leading the log's stream, restart it;
* ``postgres_restart``: stop the cluster's own PostgreSQL (fast shutdown), start it again;
* ``redis_restart``: stop the cluster's own Redis (nothing persisted), start it again;
* ``tenant_promotion``: not a fault but the heaviest placement change, under the same load
  and checks: a tenant of a shared shard moved to a dedicated shard (copy, flip, drain,
  settle, ``cluster/placement.py``); "back" is the move settled;
* ``replica_move``: one replica of the busiest node moved to a node without it (add, catch
  up, remove).

The last two need a cluster started with ``own_postgres`` / ``own_redis``: restarting the
machine's shared servers would break everyone else's work.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import nats

from shardrag.cluster.faults import inject_delay
from shardrag.cluster.launcher import ClusterSpec, ClusterState
from shardrag.cluster.status import cluster_settings, read_status
from shardrag.config import Settings
from shardrag.errors import InvalidParameter, ShardragError, Unavailable
from tests.chaos.loadgen import (
    FAULT_PHASE,
    REQUEST_TIMEOUT_SECONDS,
    AcceptedWrite,
    LoadGenerator,
    LoadTenant,
    PhaseCounts,
    put_document,
)

#: The phases of a scenario, in order; availability is measured in each.
PHASES = ("baseline", FAULT_PHASE, "recovery")
#: What ``node_latency`` adds to each search answer of the node: above the router's replica
#: timeout (1 s), so a query sent there is answered by another replica.
INJECTED_LATENCY_SECONDS = 2.0
#: How long a restarted process may take to be back (a node: to beat again).
_BACK_TIMEOUT_SECONDS = 90.0
_POLL_SECONDS = 0.25

#: Undoes a fault, returning once the broken part is back.
Heal = Callable[[], None]


@dataclass(frozen=True)
class ChaosTimings:
    """How long each phase lasts, and how long settling may take."""

    baseline_seconds: float = 5.0
    #: How long the fault is held before it is undone (the fault phase also covers the undoing).
    fault_seconds: float = 6.0
    recovery_seconds: float = 5.0
    #: Bound on waiting for the cluster to be healthy, and for accepted writes to be live.
    settle_timeout_seconds: float = 120.0


@dataclass
class ChaosCluster:
    """A running cluster and the load's tenants on it."""

    state: ClusterState
    tenants: list[LoadTenant]

    @property
    def settings(self) -> Settings:
        """Settings that reach the cluster's NATS (fault injection, status)."""
        return cluster_settings(self.state.dir)

    def client(self) -> httpx.Client:
        """A keep-alive client of the api port."""
        return httpx.Client(
            base_url=self.state.api_url, timeout=REQUEST_TIMEOUT_SECONDS, trust_env=False
        )


@dataclass(frozen=True)
class Scenario:
    """A fault: ``inject`` breaks a part of the cluster and returns how to undo it."""

    name: str
    description: str
    inject: Callable[[ChaosCluster], tuple[str, Heal]]


@dataclass
class WriteCheck:
    """Whether the accepted writes all became live at their version."""

    accepted: int
    documents: int
    #: Documents whose newest accepted version is live, and found by a session read.
    live: int = 0
    #: Documents live at a later version than any accepted one: a write that got no answer
    #: (or an error) was carried out after all. Nothing accepted is missing.
    superseded: int = 0
    #: ``tenant/doc vN: why`` of each accepted write not live in time (or failed).
    lost: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "accepted": self.accepted,
            "documents": self.documents,
            "live": self.live,
            "superseded": self.superseded,
            "lost": list(self.lost),
            "seconds": round(self.seconds, 2),
        }


@dataclass
class ScenarioReport:
    """What one scenario did and measured."""

    scenario: str
    #: The process or node the fault hit.
    target: str
    phases: dict[str, PhaseCounts]
    writes: WriteCheck
    #: From the injection until the broken part was back.
    fault_seconds: float
    #: After the recovery phase, until the cluster was healthy again.
    settle_seconds: float

    def availability(self, phase: str) -> float | None:
        """Successful / attempted searches in ``phase``."""
        return self.phases[phase].availability

    @property
    def cross_tenant(self) -> list[str]:
        """Every foreign hit any search returned, over all phases."""
        return [hit for counts in self.phases.values() for hit in counts.cross_tenant]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "scenario": self.scenario,
            "target": self.target,
            "phases": {name: counts.to_dict() for name, counts in self.phases.items()},
            "writes": self.writes.to_dict(),
            "fault_seconds": round(self.fault_seconds, 2),
            "settle_seconds": round(self.settle_seconds, 2),
        }


# -- setting up -------------------------------------------------------------------------------


def chaos_spec(dir: Path, name: str) -> ClusterSpec:
    """The cluster the chaos suite runs on: the launcher's topology (3 NATS servers, 3 index
    nodes, 2 shards x 2 replicas, the workers, 2 api processes) with its own Redis and
    PostgreSQL, fault injection on, and no rate limit (the load would meet 429s). The result
    cache stays on, as in production: Redis is on the path of every search.

    ``dir`` must be reachable by the ``postgres`` user when this runs as root (not pytest's
    private temp dir).
    """
    return ClusterSpec(
        dir=dir,
        name=name,
        shards=2,
        replicas=2,
        nodes=3,
        api_port=0,
        own_redis=True,
        own_postgres=True,
        extra_env={"SHARDRAG_RATE_LIMIT_PER_SECOND": "0", "SHARDRAG_FAULT_INJECTION": "true"},
    )


def provision(
    state: ClusterState, tenants: int = 3, documents: int = 8, timeout_seconds: float = 300.0
) -> ChaosCluster:
    """Create ``tenants`` tenants spread over the shards (by the default placement, crc32 of
    the id), a reader and a writer key each, and ``documents`` live documents each."""
    root = {"Authorization": f"Bearer {state.admin_key}"}
    made: list[LoadTenant] = []
    with httpx.Client(base_url=state.api_url, timeout=60, trust_env=False) as client:
        for n in range(tenants):
            tenant_id = _tenant_on(n % state.shards, state.shards)
            answer = client.post("/v1/tenants", json={"id": tenant_id}, headers=root)
            _expect(answer, 201, f"creating tenant {tenant_id}")
            keys = {}
            for role in ("reader", "writer"):
                path = f"/v1/tenants/{tenant_id}/keys"
                answer = client.post(path, json={"role": role}, headers=root)
                keys[role] = _expect(answer, 201, f"a {role} key of {tenant_id}")["key"]
            made.append(LoadTenant(tenant_id, keys["reader"], keys["writer"]))
        written = []
        for tenant in made:
            for i in range(documents):
                word = f"v{secrets.token_hex(5)}"
                answer = put_document(client, tenant, f"seed-{i}", word)
                body = _expect(answer, 202, f"seed document {i} of {tenant.id}")
                written.append(
                    AcceptedWrite(
                        tenant.id, f"seed-{i}", body["version"], body["write_token"], word, "seed"
                    )
                )
    cluster = ChaosCluster(state, made)
    check = verify_writes(cluster, written, timeout_seconds)
    if check.lost:
        raise Unavailable(f"seed documents did not become live: {check.lost[:5]}")
    return cluster


def _tenant_on(shard: int, shards: int) -> str:
    while True:
        tenant = f"chaos{secrets.token_hex(3)}"
        if zlib.crc32(tenant.encode()) % shards == shard:
            return tenant


def _expect(answer: httpx.Response, status: int, what: str) -> Any:
    if answer.status_code != status:
        raise Unavailable(f"{what}: {answer.status_code} {answer.text[:300]}")
    return answer.json()


# -- health -----------------------------------------------------------------------------------


def health_problems(cluster: ChaosCluster) -> list[str]:
    """What keeps the cluster from being healthy now (nothing: healthy): a process not
    running, a replica not live or behind its log, a tenant whose search fails."""
    state = cluster.state
    problems = [f"{p.name} is not running" for p in state.processes if not p.alive()]
    try:
        status = read_status(state.dir)
    except ShardragError as exc:
        problems.append(f"cluster status: {exc.message}")
    else:
        live = {node.node_id: node for node in status.nodes}
        for shard, nodes in sorted(status.replicas.items()):
            for node_id in nodes:
                node = live.get(node_id)
                if node is None:
                    problems.append(f"{node_id} (a replica of shard {shard}) is not live")
                elif node.lag(shard):
                    problems.append(f"{node_id} is {node.lag(shard)} behind on shard {shard}")
    with cluster.client() as client:
        for tenant in cluster.tenants:
            try:
                answer = client.post(
                    f"/v1/tenants/{tenant.id}/search",
                    json={"query": "library index", "k": 1},
                    headers={"Authorization": f"Bearer {tenant.reader_key}"},
                )
                if answer.status_code != 200:
                    problems.append(f"a search of {tenant.id}: {answer.status_code}")
            except httpx.HTTPError as exc:
                problems.append(f"a search of {tenant.id}: {type(exc).__name__}")
    return problems


def settle(cluster: ChaosCluster, timeout_seconds: float) -> float:
    """Wait until the cluster is healthy; the seconds it took (``Unavailable`` at the timeout,
    naming what was still wrong)."""
    started = time.monotonic()
    while problems := health_problems(cluster):
        if time.monotonic() - started > timeout_seconds:
            raise Unavailable(
                f"the cluster was not healthy within {timeout_seconds:g} s: {problems}"
            )
        time.sleep(_POLL_SECONDS)
    return time.monotonic() - started


# -- checking the writes ----------------------------------------------------------------------


def verify_writes(
    cluster: ChaosCluster, accepted: list[AcceptedWrite], timeout_seconds: float
) -> WriteCheck:
    """Wait (up to ``timeout_seconds``) until the newest accepted version of every written
    document is live, then find each such version with a session read of its write token.

    A version that failed, or is not live in time, or is live but not found, is lost.
    """
    started = time.monotonic()
    newest: dict[tuple[str, str], AcceptedWrite] = {}
    for write in accepted:
        key = (write.tenant, write.doc_id)
        if key not in newest or write.version > newest[key].version:
            newest[key] = write
    check = WriteCheck(len(accepted), len(newest))
    tenants = {t.id: t for t in cluster.tenants}
    pending = dict(newest)
    live: list[AcceptedWrite] = []
    deadline = started + timeout_seconds
    with cluster.client() as client:
        while pending:
            for key, write in list(pending.items()):
                outcome = _version_outcome(client, tenants[write.tenant], write)
                if outcome is None:
                    continue
                del pending[key]
                if outcome == "live":
                    live.append(write)
                elif outcome == "superseded":
                    check.superseded += 1
                else:
                    check.lost.append(_named(write, outcome))
            if pending and time.monotonic() > deadline:
                check.lost += [_named(w, "not live in time") for w in pending.values()]
                break
            if pending:
                time.sleep(_POLL_SECONDS)
        for write in live:
            if _found_by_session_read(client, tenants[write.tenant], write):
                check.live += 1
            else:
                check.lost.append(_named(write, "live, but a session read does not find it"))
    check.seconds = time.monotonic() - started
    return check


def _named(write: AcceptedWrite, why: str) -> str:
    return f"{write.tenant}/{write.doc_id} v{write.version} ({write.phase}): {why}"


def _version_outcome(client: httpx.Client, tenant: LoadTenant, write: AcceptedWrite) -> str | None:
    """``live``, ``superseded``, the reason it failed, or None (not decided yet)."""
    try:
        answer = client.get(
            f"/v1/tenants/{tenant.id}/documents/{write.doc_id}",
            headers={"Authorization": f"Bearer {tenant.reader_key}"},
        )
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    body = answer.json()
    if body["state"] == "live" and body["version"] >= write.version:
        return "live" if body["version"] == write.version else "superseded"
    if body["latest_version"] == write.version and body["latest_state"] == "failed":
        return f"failed: {body.get('error')}"
    return None


def _found_by_session_read(client: httpx.Client, tenant: LoadTenant, write: AcceptedWrite) -> bool:
    """Whether a keyword search for the version's own word, reading its write, finds it."""
    try:
        answer = client.post(
            f"/v1/tenants/{tenant.id}/search",
            json={
                "query": write.unique_word,
                "k": 3,
                "mode": "keyword",
                "read_concern": "session",
                "write_token": write.write_token,
            },
            headers={"Authorization": f"Bearer {tenant.reader_key}"},
        )
    except httpx.HTTPError:
        return False
    if answer.status_code != 200:
        return False
    return any(
        hit["doc_id"] == write.doc_id and hit["version"] == write.version
        for hit in answer.json()["hits"]
    )


# -- the faults -------------------------------------------------------------------------------


def busiest_node(cluster: ChaosCluster) -> str:
    """The index node holding the most replicas (its loss hurts the most shards)."""
    replicas = read_status(cluster.state.dir).replicas
    held: dict[str, int] = {}
    for nodes in replicas.values():
        for node_id in nodes:
            held[node_id] = held.get(node_id, 0) + 1
    if not held:
        raise Unavailable("the shard map assigns no replica to any node")
    return min(held, key=lambda node_id: (-held[node_id], node_id))


def log_leader(cluster: ChaosCluster) -> str:
    """The NATS server (``nats-<n>``) leading the stream of the cluster's log."""
    state = cluster.state
    subject = f"{state.name}.>"

    async def leader() -> str | None:
        client = await nats.connect(state.nats_urls, connect_timeout=5)
        try:
            for info in await client.jetstream(timeout=5).streams_info():
                if subject in (info.config.subjects or []) and info.cluster is not None:
                    return info.cluster.leader
            return None
        finally:
            await client.close()

    found = asyncio.run(leader())
    if found is None:
        raise Unavailable(f"no stream of {subject} with a leader")
    return found


def _await(condition: Callable[[], bool], timeout_seconds: float, what: str) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise Unavailable(f"timed out after {timeout_seconds:g} s waiting for {what}")
        time.sleep(_POLL_SECONDS)


def _node_live(cluster: ChaosCluster, node_id: str) -> bool:
    try:
        return any(n.node_id == node_id for n in read_status(cluster.state.dir).nodes)
    except ShardragError:
        return False


def _killed(cluster: ChaosCluster, name: str) -> None:
    state = cluster.state
    if not state.kill(name, signal.SIGKILL):
        raise Unavailable(f"{name} was not running")
    _await(lambda: not state.alive(name), 30, f"{name} to die")


def node_kill(cluster: ChaosCluster) -> tuple[str, Heal]:
    """SIGKILL the busiest index node; undone by restarting it (it catches up from its saved
    offsets)."""
    node_id = busiest_node(cluster)
    _killed(cluster, node_id)

    def heal() -> None:
        cluster.state.restart(node_id)
        _await(lambda: _node_live(cluster, node_id), _BACK_TIMEOUT_SECONDS, f"{node_id} to beat")

    return node_id, heal


def node_pause(cluster: ChaosCluster) -> tuple[str, Heal]:
    """SIGSTOP the busiest index node: its connection stays open, requests go to it and are
    not answered. Undone by SIGCONT."""
    node_id = busiest_node(cluster)
    if not cluster.state.kill(node_id, signal.SIGSTOP):
        raise Unavailable(f"{node_id} was not running")

    def heal() -> None:
        cluster.state.kill(node_id, signal.SIGCONT)
        _await(lambda: _node_live(cluster, node_id), _BACK_TIMEOUT_SECONDS, f"{node_id} to beat")

    return node_id, heal


def node_latency(cluster: ChaosCluster) -> tuple[str, Heal]:
    """Delay every search answer of the busiest node by ``INJECTED_LATENCY_SECONDS`` (its
    nodes run with ``fault_injection``); undone by a delay of 0."""
    node_id = busiest_node(cluster)
    settings = cluster.settings
    inject_delay(settings, node_id, INJECTED_LATENCY_SECONDS)

    def heal() -> None:
        inject_delay(settings, node_id, 0.0)

    return node_id, heal


def nats_kill(cluster: ChaosCluster) -> tuple[str, Heal]:
    """SIGKILL the NATS server leading the log's stream (one of three: the stream elects
    another leader); undone by restarting it."""
    name = log_leader(cluster)
    _killed(cluster, name)

    def heal() -> None:
        cluster.state.restart(name)
        cluster.state.await_server(name, _BACK_TIMEOUT_SECONDS)

    return name, heal


def _server_restart(
    role: Literal["postgres", "redis"],
) -> Callable[[ChaosCluster], tuple[str, Heal]]:
    """Stop the cluster's own server of ``role`` (the process is called so too); undone by
    starting it again on the same port, with the same data."""

    def inject(cluster: ChaosCluster) -> tuple[str, Heal]:
        state = cluster.state
        if not state.owns(role):
            raise InvalidParameter(
                f"a {role} restart needs the cluster's own {role} (ClusterSpec.own_{role})"
            )
        state.stop(role, grace_seconds=30.0)

        def heal() -> None:
            state.restart(role)
            state.await_server(role, _BACK_TIMEOUT_SECONDS)

        return role, heal

    return inject


def tenant_promotion(cluster: ChaosCluster) -> tuple[str, Heal]:
    """Promote the first load tenant that is on a shared shard (``POST .../promote``, the
    move runs in an api process); undone by nothing: "back" is the move settled."""
    root = {"Authorization": f"Bearer {cluster.state.admin_key}"}
    status = read_status(cluster.state.dir)
    moved = set(status.placements)
    tenant = next((t.id for t in cluster.tenants if t.id not in moved), None)
    if tenant is None:
        raise InvalidParameter("every load tenant has dedicated shards already")
    with cluster.client() as client:
        answer = client.post(
            f"/v1/admin/tenants/{tenant}/promote", json={"shards": 1}, headers=root
        )
        _expect(answer, 202, f"promoting {tenant}")

    def settled() -> bool:
        placement = read_status(cluster.state.dir).placements.get(tenant)
        return placement is not None and placement.phase == "settled"

    def heal() -> None:
        _await(settled, _BACK_TIMEOUT_SECONDS * 3, f"tenant {tenant} to settle")

    return tenant, heal


def replica_move(cluster: ChaosCluster) -> tuple[str, Heal]:
    """Move a replica of the busiest node to a live node without one (``Mover.move_replica``
    on a thread, as ``shardrag cluster move-replica`` does); "back" is the move done."""
    from shardrag.cluster.status import opened_mover

    source = busiest_node(cluster)
    replicas = read_status(cluster.state.dir).replicas
    live = {node.node_id for node in read_status(cluster.state.dir).nodes}
    shard, target = next(
        (s, n)
        for s, nodes in sorted(replicas.items())
        if source in nodes
        for n in sorted(live)
        if n not in nodes
    )
    errors: list[BaseException] = []

    def move() -> None:
        try:
            with opened_mover(cluster.state.dir) as mover:
                mover.move_replica(shard, source, target)
        except BaseException as exc:  # reported by heal
            errors.append(exc)

    thread = threading.Thread(target=move, name="replica-move", daemon=True)
    thread.start()

    def heal() -> None:
        thread.join(_BACK_TIMEOUT_SECONDS * 3)
        if thread.is_alive() or errors:
            raise Unavailable(f"moving shard {shard} to {target} failed: {errors or 'timeout'}")

    return f"shard {shard}: {source} → {target}", heal


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario("node_kill", "SIGKILL the index node with the most replicas, restart", node_kill),
        Scenario("node_pause", "SIGSTOP that index node, SIGCONT", node_pause),
        Scenario(
            "node_latency",
            f"+{INJECTED_LATENCY_SECONDS:g} s on every search answer of that node, cleared",
            node_latency,
        ),
        Scenario("nats_kill", "SIGKILL the NATS server leading the log, restart", nats_kill),
        Scenario(
            "postgres_restart",
            "PostgreSQL (the registry) fast shutdown, start",
            _server_restart("postgres"),
        ),
        Scenario("redis_restart", "Redis (the cache) shutdown, start", _server_restart("redis")),
        Scenario(
            "tenant_promotion",
            "a tenant of a shared shard promoted to a dedicated shard (placement change)",
            tenant_promotion,
        ),
        Scenario(
            "replica_move",
            "a replica of that node moved to another node (placement change)",
            replica_move,
        ),
    )
}


# -- running a scenario -----------------------------------------------------------------------


def run_scenario(
    cluster: ChaosCluster,
    scenario: Scenario,
    timings: ChaosTimings | None = None,
    searchers: int = 3,
) -> ScenarioReport:
    """Settle, run the load through baseline, fault and recovery, undo the fault (also when
    interrupted), check the writes, settle again; what was measured."""
    timings = timings or ChaosTimings()
    settle(cluster, timings.settle_timeout_seconds)
    load = LoadGenerator(cluster.state.api_url, cluster.tenants, searchers)
    heal: Heal | None = None
    target = ""
    baseline, fault, recovery = PHASES
    load.start(baseline)
    try:
        time.sleep(timings.baseline_seconds)
        load.phase(fault)
        injected = time.monotonic()
        target, heal = scenario.inject(cluster)
        time.sleep(timings.fault_seconds)
        undo, heal = heal, None
        undo()
        fault_seconds = time.monotonic() - injected
        load.phase(recovery)
        time.sleep(timings.recovery_seconds)
    finally:
        phases = load.stop()
        if heal is not None:
            heal()
    writes = verify_writes(cluster, load.accepted, timings.settle_timeout_seconds)
    settled = settle(cluster, timings.settle_timeout_seconds)
    return ScenarioReport(scenario.name, target, phases, writes, fault_seconds, settled)
