"""What ``up`` is asked for (``ClusterSpec``) and what it started (``ClusterState``, kept in
``<dir>/cluster.json``), with the operations on one recorded process (stop, restart, await).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from shardrag.cluster.launcher.processes import (
    ProcessRecord,
    Role,
    StopOutcome,
    _spawn,
    stop_processes,
)
from shardrag.cluster.launcher.servers import (
    NATS_SERVERS,
    _await_jetstream,
    _await_postgres,
    _await_redis,
)
from shardrag.errors import Conflict, InvalidParameter, NotFound
from shardrag.tls import tls_context

STATE_FILE = "cluster.json"


API_PROCESSES = 2


WORKER_STAGES = ("ingest", "embed")


_NAME = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class ClusterSpec:
    """What ``up`` starts; the defaults are those of ``shardrag cluster up``.

    ``nats_ports``/``nats_route_ports`` (three each) and ``api_port`` 0 mean free ports picked
    at start. ``extra_env`` is given to every shardrag process over the cluster's own
    variables (a process's own data dir, port and the like still win).
    """

    dir: Path = Path("./shardrag-cluster")
    name: str = "shardrag"
    shards: int = 2
    replicas: int = 2
    nodes: int = 3
    api_port: int = 8080
    nats_ports: tuple[int, ...] | None = None
    nats_route_ports: tuple[int, ...] | None = None
    postgres_url: str = "postgresql://127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Unset: ``file://<dir>/blobs``, a directory every process shares.
    blob_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable
    #: Unset: ``nats-server`` on PATH, else /usr/sbin/nats-server.
    nats_server: str | None = None
    nats_timeout_seconds: float = 30.0
    #: Start a Redis of the cluster's own (``redis-server`` on a free loopback port, nothing
    #: persisted) instead of using ``redis_url``.
    own_redis: bool = False
    #: Start a PostgreSQL of the cluster's own (initdb into ``<dir>/postgres``, a free loopback
    #: port, trust auth; run as the ``postgres`` user when started as root) instead of using
    #: ``postgres_url``.
    own_postgres: bool = False
    #: Unset: ``redis-server`` on PATH.
    redis_server: str | None = None
    #: The directory of ``initdb`` and ``postgres``. Unset: the newest
    #: /usr/lib/postgresql/<version>/bin, else the directory of ``initdb`` on PATH.
    postgres_bin: str | None = None
    #: Each api process loads an embedding model before it answers.
    api_timeout_seconds: float = 120.0
    #: Mutual TLS everywhere it is started here: a private CA in ``<dir>/pki``, a certificate
    #: per process; NATS (clients and routes) and the api require client certificates.
    tls: bool = False

    def validate(self) -> None:
        """Reject values ``up`` cannot start a cluster with, naming the option."""
        if not _NAME.fullmatch(self.name):
            raise InvalidParameter(
                f"cluster name {self.name!r} must be letters, digits or _ (it names the NATS "
                "streams, the database and the Redis keys)"
            )
        if self.shards < 1 or self.replicas < 1 or self.nodes < 1:
            raise InvalidParameter("shards, replicas and nodes must each be at least 1")
        if self.replicas > self.nodes:
            raise InvalidParameter(
                f"{self.replicas} replicas per shard need at least as many nodes ({self.nodes})"
            )
        if not 0 <= self.api_port <= 65535:
            raise InvalidParameter(f"api port {self.api_port} is out of range")
        for ports in (self.nats_ports, self.nats_route_ports):
            if ports is not None and len(ports) != NATS_SERVERS:
                raise InvalidParameter(f"NATS needs {NATS_SERVERS} ports, got {list(ports)}")
        if urlsplit(self.postgres_url).scheme not in ("postgresql", "postgres"):
            raise InvalidParameter(f"{self.postgres_url!r} is not a postgresql:// URL")


@dataclass
class ClusterState:
    """A cluster started by ``up``: its endpoints, its secrets and its processes.

    ``ClusterState.load(dir)`` reads ``<dir>/cluster.json``; ``save()`` writes it (mode 0600:
    it holds the admin key).
    """

    dir: Path
    name: str
    api_url: str
    admin_key: str
    nats_urls: list[str]
    registry_url: str
    #: The server's admin database URL, from which ``down --purge`` drops the registry's.
    postgres_url: str
    redis_url: str
    cache_prefix: str
    blob_url: str
    shards: int
    replicas: int
    #: The variables every shardrag process of the cluster gets over ``os.environ``.
    env_overrides: dict[str, str]
    processes: list[ProcessRecord] = field(default_factory=list)
    #: With ``--tls``: the CA and a client certificate for tests and tools (``client_tls``).
    tls: TlsFiles | None = None

    @property
    def path(self) -> Path:
        """``<dir>/cluster.json``."""
        return self.dir / STATE_FILE

    @classmethod
    def load(cls, dir: Path) -> ClusterState:
        """Read ``<dir>/cluster.json``; NotFound if there is none."""
        dir = dir.resolve()
        path = dir / STATE_FILE
        try:
            value = json.loads(path.read_text())
            return cls(
                dir=dir,
                processes=[ProcessRecord.from_dict(p) for p in value.pop("processes")],
                tls=TlsFiles(**value["tls"]) if value.get("tls") else None,
                **{k: value[k] for k in _STATE_FIELDS},
            )
        except FileNotFoundError:
            raise NotFound(f"no cluster in {dir}: {path} does not exist", dir=str(dir)) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidParameter(f"{path} is not a cluster file: {exc!r}") from exc

    def save(self) -> None:
        """Write cluster.json atomically, readable by its owner only."""
        self.dir.mkdir(parents=True, exist_ok=True)
        value = {k: getattr(self, k) for k in _STATE_FIELDS}
        value["processes"] = [p.to_dict() for p in self.processes]
        value["tls"] = asdict(self.tls) if self.tls else None
        temporary = self.path.with_suffix(".json.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, indent=2)
            f.write("\n")
        os.replace(temporary, self.path)

    def client_tls(self) -> ssl.SSLContext | bool:
        """What an HTTP or NATS client of the cluster verifies and presents: the cluster CA
        and its client certificate with ``--tls``, else the defaults (True)."""
        if self.tls is None:
            return True
        return tls_context(self.tls.ca, (self.tls.cert, self.tls.key))

    def env(self) -> dict[str, str]:
        """The environment of a ``python -m shardrag ...`` command against this cluster."""
        return {**os.environ, **self.env_overrides}

    def process(self, name: str) -> ProcessRecord:
        """The process called ``name`` (``nats-1``, ``node-2``, ``worker-embed``, ``api-1``)."""
        for record in self.processes:
            if record.name == name:
                return record
        raise NotFound(f"cluster {self.name} has no process {name!r}", process=name)

    def alive(self, name: str) -> bool:
        """Whether the process is running and its pid still names it."""
        return self.process(name).alive()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> bool:
        """Signal the process if it is still the one recorded; whether it was signalled."""
        return self.process(name).signal(sig)

    def stop(self, name: str, grace_seconds: float = 20.0) -> StopOutcome:
        """SIGTERM the process, SIGKILL it after ``grace_seconds``; record it stopped."""
        outcome = stop_processes([self.process(name)], grace_seconds)[0]
        self.save()
        return outcome

    def restart(self, name: str) -> ProcessRecord:
        """Start a process that is not running again (same argv and env, same log)."""
        record = self.process(name)
        if record.alive():
            raise Conflict(f"{name} is still running (pid {record.pid})", process=name)
        record.pid, record.start_time = _spawn(
            record.argv, record.env_overrides, record.log, self.dir
        )
        record.running = True
        self.save()
        return record

    def await_server(self, name: str, timeout_seconds: float = 30.0) -> None:
        """Return once the server ``name`` (``nats-<n>``, ``redis``, ``postgres``) answers
        again, as after ``restart``; ``Unavailable`` at the timeout or if it exits."""
        record = self.process(name)
        deadline = time.monotonic() + timeout_seconds
        if record.role == "nats":
            url = self.nats_urls[int(name.rsplit("-", 1)[1]) - 1]
            tls = self.client_tls()
            context = tls if isinstance(tls, ssl.SSLContext) else None
            asyncio.run(_await_jetstream([url], [record], deadline, context))
        elif record.role == "redis":
            _await_redis(self.redis_url, record, deadline)
        elif record.role == "postgres":
            _await_postgres(self.postgres_url, record, deadline)
        else:
            raise InvalidParameter(f"{name} is not a server of the cluster", process=name)

    def owns(self, role: Role) -> bool:
        """Whether the cluster runs a server of ``role`` itself (its own Redis, PostgreSQL)."""
        return any(p.role == role for p in self.processes)


_STATE_FIELDS = (
    "name",
    "api_url",
    "admin_key",
    "nats_urls",
    "registry_url",
    "postgres_url",
    "redis_url",
    "cache_prefix",
    "blob_url",
    "shards",
    "replicas",
    "env_overrides",
)


@dataclass(frozen=True)
class TlsFiles:
    """The cluster CA and one client certificate with its key (PEM paths)."""

    ca: str
    cert: str
    key: str


@dataclass(frozen=True)
class DownReport:
    """What ``down`` did."""

    dir: Path
    processes: list[StopOutcome]
    purged: bool
