"""``shardrag cluster up`` and ``down``: the distributed mode on one machine, on loopback.

``up`` starts, in order: a NATS JetStream cluster of three servers, the cluster's own Redis
and PostgreSQL servers when asked (``own_redis``, ``own_postgres``: a restart of them disturbs
no one else), the cluster's PostgreSQL database, the shard map's layout (``shardrag cluster
init``), the index nodes, the ingest and embed workers, and two api processes sharing one port
(SO_REUSEPORT). Each process is detached in a session of its own, logs to
``<dir>/logs/<name>.log`` and is recorded in ``<dir>/cluster.json`` with its pid and start
time. A pid is only signalled while its start time still matches, through a pidfd, so a pid
the kernel has since given to another program is never touched.

The package: ``state`` (spec and state file), ``processes`` (start, watch, stop), ``servers``
(NATS, PostgreSQL, Redis), and here ``up`` and ``down``.
"""

from __future__ import annotations

import secrets
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from shardrag.cluster.launcher.processes import (
    STOP_ORDER,
    ProcessRecord,
    Role,
    StopOutcome,
    _check_port_free,
    _fail_if_exited,
    free_ports,
    process_start_time,
    start_process,
    stop_in_order,
    stop_processes,
)
from shardrag.cluster.launcher.servers import (
    NATS_SERVERS,
    NatsCluster,
    NatsTls,
    database_url,
    drop_database,
    ensure_database,
    find_nats_server,
    find_postgres_bin,
    find_redis_server,
    nats_config,
    own_postgres_url,
    own_redis_url,
    purge_cache,
    start_nats_cluster,
    start_postgres,
    start_redis,
)
from shardrag.cluster.launcher.state import (
    API_PROCESSES,
    STATE_FILE,
    WORKER_STAGES,
    ClusterSpec,
    ClusterState,
    DownReport,
    TlsFiles,
)
from shardrag.errors import Conflict, NotFound, Unavailable
from shardrag.tls import CertificateAuthority, IssuedCertificate, tls_context


def _start_own_servers(
    spec: ClusterSpec,
    state: ClusterState,
    redis_port: int,
    postgres_port: int,
    step: Callable[[str], None],
) -> None:
    """The cluster's own Redis and PostgreSQL, as ``spec`` asks; saved as each one starts."""
    if spec.own_redis:
        step(f"starting the cluster's own Redis on port {redis_port}")
        state.processes.append(start_redis(state.dir, redis_port, spec.redis_server))
        state.save()
    if spec.own_postgres:
        step(f"starting the cluster's own PostgreSQL on port {postgres_port}")
        state.processes.append(start_postgres(state.dir, postgres_port, spec.postgres_bin))
        state.save()


@dataclass(frozen=True)
class ClusterCertificates:
    """The certificates of a ``--tls`` cluster, made once per directory by its CA."""

    ca: CertificateAuthority

    @property
    def nats(self) -> NatsTls:
        """The NATS servers' certificate (and the launcher's client one)."""
        server = self._issued("nats")
        return NatsTls(str(self.ca.cert_path), str(server.cert), str(server.key), self.context())

    @property
    def client(self) -> TlsFiles:
        """The certificate of tools and tests talking to the cluster (``ClusterState.tls``)."""
        issued = self._issued("client")
        return TlsFiles(str(self.ca.cert_path), str(issued.cert), str(issued.key))

    def context(self) -> ssl.SSLContext:
        """A client context of the cluster CA with the client certificate."""
        files = self.client
        return tls_context(files.ca, (files.cert, files.key))

    def env(self) -> dict[str, str]:
        """Every process's variables: the CA, and the client certificate by default."""
        files = self.client
        return {
            "SHARDRAG_NATS_TLS_CA": files.ca,
            "SHARDRAG_NATS_TLS_CERT": files.cert,
            "SHARDRAG_NATS_TLS_KEY": files.key,
        }

    def process_env(self, name: str) -> dict[str, str]:
        """One process's own certificate for NATS."""
        issued = self._issued(name)
        return {
            "SHARDRAG_NATS_TLS_CERT": str(issued.cert),
            "SHARDRAG_NATS_TLS_KEY": str(issued.key),
        }

    def api_env(self) -> dict[str, str]:
        """The api processes' HTTPS: one server certificate (they share a port), clients
        verified against the cluster CA."""
        issued = self._issued("api")
        return {
            "SHARDRAG_TLS_CERT": str(issued.cert),
            "SHARDRAG_TLS_KEY": str(issued.key),
            "SHARDRAG_TLS_CLIENT_CA": str(self.ca.cert_path),
        }

    def _issued(self, name: str) -> IssuedCertificate:
        cert = self.ca.directory / f"{name}.pem"
        key = self.ca.directory / f"{name}-key.pem"
        if cert.exists() and key.exists():
            return IssuedCertificate(cert, key)
        return self.ca.issue(name)


def _certificates(dir: Path) -> ClusterCertificates:
    """The certificates of the cluster in ``dir`` (``<dir>/pki``), made on first use."""
    return ClusterCertificates(CertificateAuthority(dir / "pki"))


def _shardrag(spec: ClusterSpec, *args: str) -> list[str]:
    return [spec.python, "-m", "shardrag", *args]


def _write_layout(spec: ClusterSpec, state: ClusterState, nodes: list[str]) -> None:
    """``shardrag cluster init``: the shard map's layout over ``nodes`` (idempotent)."""
    argv = _shardrag(spec, "cluster", "init", "--nodes", ",".join(nodes))
    log = state.dir / "logs" / "cluster-init.log"
    try:
        done = subprocess.run(
            argv, env=state.env(), cwd=state.dir, capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"shardrag cluster init: {exc}") from exc
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise Unavailable(
            f"shardrag cluster init exited with {done.returncode}: {done.stderr.strip()}",
            log=str(log),
        )


def _await_api(state: ClusterState, deadline: float) -> None:
    """Wait until /healthz has answered from every api process, then until /readyz is 200."""
    apis = [p for p in state.processes if p.role == "api"]
    logs = ", ".join(str(p.log) for p in apis)
    wanted = {p.pid for p in apis}
    seen: set[int] = set()
    verify = state.client_tls()
    while not wanted <= seen:
        if time.monotonic() > deadline:
            raise Unavailable(
                f"the api processes did not all answer at {state.api_url} in time "
                f"(answered: {sorted(seen) or 'none'} of {sorted(wanted)}); see {logs}"
            )
        _fail_if_exited(state.processes)
        # A fresh connection each time: the kernel spreads connections, not requests.
        body = _get_json(f"{state.api_url}/healthz", verify)
        if isinstance(body, dict) and isinstance(body.get("pid"), int):
            seen.add(body["pid"])
            time.sleep(0.05)
        else:
            time.sleep(0.25)
    while _get_json(f"{state.api_url}/readyz", verify) is None:
        if time.monotonic() > deadline:
            raise Unavailable(f"{state.api_url}/readyz did not answer 200 in time; see {logs}")
        _fail_if_exited(state.processes)
        time.sleep(0.25)


def _get_json(url: str, verify: ssl.SSLContext | bool = True) -> Any:
    """The JSON body of a 200 answer, else None."""
    try:
        response = httpx.get(url, timeout=2.0, trust_env=False, verify=verify)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _load_previous(dir: Path) -> ClusterState | None:
    try:
        return ClusterState.load(dir)
    except NotFound:
        return None


def up(spec: ClusterSpec, on_step: Callable[[str], None] | None = None) -> ClusterState:
    """Start a cluster as ``spec`` says and return it once the api answers.

    Refuses (Conflict) if cluster.json in the directory names a process still running. A
    directory stopped by ``down`` starts again with its data. On any failure every process
    started is stopped before the error is raised. ``on_step`` hears what is being done.
    """
    spec.validate()
    step = on_step or (lambda _: None)
    dir = spec.dir.resolve()
    previous = _load_previous(dir)
    if previous is not None:
        running = [p.name for p in previous.processes if p.alive()]
        if running:
            raise Conflict(
                f"a cluster is running in {dir} ({', '.join(running)}); "
                f"stop it first: shardrag cluster down --dir {dir}",
                running=running,
            )
    api_port = spec.api_port or free_ports(1)[0]
    _check_port_free(api_port)
    (dir / "logs").mkdir(parents=True, exist_ok=True)
    blob_url = spec.blob_url or f"file://{dir / 'blobs'}"
    if blob_url.startswith("file://"):
        Path(blob_url.removeprefix("file://")).mkdir(parents=True, exist_ok=True)

    pki = _certificates(dir) if spec.tls else None
    step("starting NATS (3 servers)" + (" with mutual TLS" if pki else ""))
    nats_cluster = start_nats_cluster(
        dir,
        spec.name,
        spec.nats_ports,
        spec.nats_route_ports,
        spec.nats_server,
        spec.nats_timeout_seconds,
        pki.nats if pki else None,
    )
    # Picked now (NATS listens already): the URLs go into every process's environment.
    redis_port, postgres_port = free_ports(2)
    postgres_url = own_postgres_url(postgres_port) if spec.own_postgres else spec.postgres_url
    state = ClusterState(
        dir=dir,
        name=spec.name,
        api_url=f"{'https' if pki else 'http'}://127.0.0.1:{api_port}",
        # The same key across restarts of one directory.
        admin_key=previous.admin_key if previous else secrets.token_urlsafe(32),
        nats_urls=nats_cluster.urls,
        registry_url=database_url(postgres_url, f"shardrag_{spec.name}"),
        postgres_url=postgres_url,
        redis_url=own_redis_url(redis_port) if spec.own_redis else spec.redis_url,
        cache_prefix=spec.name,
        blob_url=blob_url,
        shards=spec.shards,
        replicas=spec.replicas,
        env_overrides={},
        processes=list(nats_cluster.processes),
        tls=pki.client if pki else None,
    )
    state.env_overrides = {
        "SHARDRAG_CLUSTER": "true",
        "SHARDRAG_NATS_URL": ",".join(state.nats_urls),
        "SHARDRAG_LOG_PREFIX": spec.name,
        "SHARDRAG_LOG_REPLICAS": str(NATS_SERVERS),
        "SHARDRAG_REGISTRY_URL": state.registry_url,
        "SHARDRAG_REDIS_URL": state.redis_url,
        "SHARDRAG_CACHE_PREFIX": state.cache_prefix,
        "SHARDRAG_BLOB_URL": state.blob_url,
        "SHARDRAG_ADMIN_KEY": state.admin_key,
        "SHARDRAG_SHARDS": str(spec.shards),
        "SHARDRAG_REPLICAS": str(spec.replicas),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **(pki.env() if pki else {}),
        **spec.extra_env,
    }
    try:
        state.save()
        _start_own_servers(spec, state, redis_port, postgres_port, step)
        _start_shardrag(spec, state, api_port, step)
    except BaseException:
        stop_in_order(state.processes, grace_seconds=10.0)
        state.save()
        raise
    state.save()
    return state


def _start_shardrag(
    spec: ClusterSpec, state: ClusterState, api_port: int, step: Callable[[str], None]
) -> None:
    """The database, the layout, then every shardrag process; saved as each one starts."""

    pki = _certificates(state.dir) if spec.tls else None

    def start(name: str, role: Role, args: list[str], **own: str) -> None:
        data_dir = state.dir / name
        # With TLS, each process presents a certificate of its own to NATS.
        mine = pki.process_env(name) if pki else {}
        env = {**state.env_overrides, "SHARDRAG_DATA_DIR": str(data_dir), **mine, **own}
        state.processes.append(
            start_process(state.dir, name, role, _shardrag(spec, *args), env, data_dir)
        )
        state.save()

    step(f"creating the database shardrag_{spec.name}")
    ensure_database(state.postgres_url, f"shardrag_{spec.name}")
    nodes = [f"node-{i}" for i in range(1, spec.nodes + 1)]
    step(f"writing the layout: {spec.shards} shards x {spec.replicas} replicas on {nodes}")
    _write_layout(spec, state, nodes)
    step("starting the index nodes and workers")
    for node in nodes:
        start(node, "node", ["node", "--id", node])
    for stage in WORKER_STAGES:
        start(f"worker-{stage}", "worker", ["worker", "--stage", stage])
    step(f"starting {API_PROCESSES} api processes on {state.api_url}")
    for i in range(1, API_PROCESSES + 1):
        start(
            f"api-{i}",
            "api",
            ["serve"],
            SHARDRAG_PORT=str(api_port),
            SHARDRAG_HOST="127.0.0.1",
            SHARDRAG_REUSE_PORT="true",
            SHARDRAG_STAGES="none",
            **(pki.api_env() if pki else {}),
        )
    step(f"waiting for the api at {state.api_url} (each process loads the embedding model)")
    _await_api(state, time.monotonic() + spec.api_timeout_seconds)


def down(dir: Path, purge: bool = False, grace_seconds: float = 20.0) -> DownReport:
    """Stop a cluster: api, then workers, nodes, NATS, its own Redis and PostgreSQL if it
    has them, each given ``grace_seconds``.

    Without ``purge`` cluster.json stays (every process marked stopped) and so does the data,
    for ``up`` to start again. With ``purge`` the database, the Redis keys under the cache
    prefix and the directory are removed too (the cluster's own servers go with the directory).
    """
    state = ClusterState.load(dir)
    outcomes = stop_in_order(state.processes, grace_seconds)
    state.save()
    if purge:
        if not state.owns("postgres"):
            drop_database(state.postgres_url, urlsplit(state.registry_url).path.lstrip("/"))
        if not state.owns("redis"):
            purge_cache(state.redis_url, state.cache_prefix)
        shutil.rmtree(state.dir)
    return DownReport(state.dir, outcomes, purge)


__all__ = [
    "API_PROCESSES",
    "NATS_SERVERS",
    "STATE_FILE",
    "STOP_ORDER",
    "WORKER_STAGES",
    "ClusterSpec",
    "ClusterState",
    "DownReport",
    "NatsCluster",
    "ProcessRecord",
    "Role",
    "StopOutcome",
    "database_url",
    "down",
    "drop_database",
    "ensure_database",
    "find_nats_server",
    "find_postgres_bin",
    "find_redis_server",
    "free_ports",
    "nats_config",
    "own_postgres_url",
    "own_redis_url",
    "process_start_time",
    "purge_cache",
    "start_nats_cluster",
    "start_postgres",
    "start_process",
    "start_redis",
    "stop_in_order",
    "stop_processes",
    "up",
]
