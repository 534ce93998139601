"""``shardrag cluster up`` and ``down``: the distributed mode on one machine, on loopback.

``up`` starts, in order: a NATS JetStream cluster of three servers, the cluster's own Redis
and PostgreSQL servers when asked (``own_redis``, ``own_postgres``: a restart of them disturbs
no one else), the cluster's PostgreSQL database, the shard map's layout (``shardrag cluster
init``), the index nodes, the ingest and embed workers, and two api processes sharing one port
(SO_REUSEPORT). Each process is detached in a session of its own, logs to
``<dir>/logs/<name>.log`` and is recorded in ``<dir>/cluster.json`` with its pid and start
time. A pid is only signalled while its start time still matches, through a pidfd, so a pid
the kernel has since given to another program is never touched.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit, urlunsplit

import httpx
import nats

from shardrag.errors import Conflict, InvalidParameter, NotFound, Unavailable
from shardrag.extras import require_extra

# The cluster's own PostgreSQL and Redis are driven with the distributed mode's clients.
require_extra("psycopg", "cluster", "the local cluster launcher (shardrag cluster ...)")
require_extra("redis", "cluster", "the local cluster launcher (shardrag cluster ...)")
import psycopg  # noqa: E402
import redis  # noqa: E402
from psycopg import sql  # noqa: E402

Role = Literal["nats", "node", "worker", "api", "redis", "postgres"]
#: ``down`` stops the roles in this order: nothing is left writing to a server already gone.
STOP_ORDER: tuple[Role, ...] = ("api", "worker", "node", "nats", "redis", "postgres")
# The signal that stops a role cleanly when it is not SIGTERM. PostgreSQL takes SIGTERM as a
# "smart" shutdown, which waits for every client to disconnect (the pools never do); SIGINT is
# its "fast" shutdown: sessions end, a checkpoint is written, nothing committed is lost.
_STOP_SIGNAL: dict[Role, int] = {"postgres": signal.SIGINT}
STATE_FILE = "cluster.json"
NATS_SERVERS = 3
API_PROCESSES = 2
WORKER_STAGES = ("ingest", "embed")
_NAME = re.compile(r"[A-Za-z0-9_]+")
# Seconds a process may take to go after SIGKILL before it counts as unkillable.
_KILL_WAIT = 5.0
# Lines of a log quoted in the error when its process died during start-up.
_LOG_TAIL_LINES = 5

# Children spawned by this process, kept so that their exit status can be collected: a child
# that exited stays a zombie (its /proc entry and start time intact) until it is reaped.
_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}


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
class ProcessRecord:
    """One process of a cluster as cluster.json records it."""

    name: str
    role: Role
    pid: int
    #: Field 22 of /proc/<pid>/stat: with the pid, names one process for good.
    start_time: int
    argv: list[str]
    #: The variables it gets over the environment of whoever (re)starts it.
    env_overrides: dict[str, str]
    log: Path
    data_dir: Path | None
    #: False once ``down`` stopped it (or ``up`` gave up).
    running: bool = True

    def alive(self) -> bool:
        """Recorded as running, and its pid is still this very process (not a reused pid)."""
        return self.running and process_start_time(self.pid) == self.start_time

    def signal(self, sig: int) -> bool:
        """Send ``sig`` if the process is still the one recorded; whether it was sent."""
        try:
            # The pidfd pins the process: if the start time matches after it is opened, the
            # signal cannot reach another process that got the pid in between.
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return False
        try:
            if not self.alive():
                return False
            signal.pidfd_send_signal(pidfd, sig)
            return True
        except ProcessLookupError:
            return False
        finally:
            os.close(pidfd)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object cluster.json holds."""
        return {
            "name": self.name,
            "role": self.role,
            "pid": self.pid,
            "start_time": self.start_time,
            "argv": self.argv,
            "env_overrides": self.env_overrides,
            "log": str(self.log),
            "data_dir": None if self.data_dir is None else str(self.data_dir),
            "running": self.running,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> ProcessRecord:
        """The inverse of ``to_dict``."""
        return cls(
            name=value["name"],
            role=value["role"],
            pid=int(value["pid"]),
            start_time=int(value["start_time"]),
            argv=list(value["argv"]),
            env_overrides=dict(value["env_overrides"]),
            log=Path(value["log"]),
            data_dir=None if value["data_dir"] is None else Path(value["data_dir"]),
            running=bool(value["running"]),
        )


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
        temporary = self.path.with_suffix(".json.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, indent=2)
            f.write("\n")
        os.replace(temporary, self.path)

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
            asyncio.run(_await_jetstream([url], [record], deadline))
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
class StopOutcome:
    """What stopping one process took: ``stopped`` (SIGTERM), ``killed`` (SIGKILL), or
    ``not running`` (it had exited, or its pid now names another process: left alone)."""

    name: str
    role: Role
    pid: int
    outcome: Literal["stopped", "killed", "not running"]


@dataclass(frozen=True)
class DownReport:
    """What ``down`` did."""

    dir: Path
    processes: list[StopOutcome]
    purged: bool


@dataclass(frozen=True)
class NatsCluster:
    """NATS servers forming one JetStream cluster, answering at ``urls``."""

    urls: list[str]
    processes: list[ProcessRecord]


# -- processes ------------------------------------------------------------------------------


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat, or None if no live process has that pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; the fields after it do not.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        child = _SPAWNED.pop(pid, None)
        if child is not None:
            child.poll()
        return None
    return int(fields[19])


def _spawn(
    argv: list[str], env_overrides: Mapping[str, str], log: Path, cwd: Path
) -> tuple[int, int]:
    """Start ``argv`` detached with its output appended to ``log``; its pid and start time."""
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log.open("ab") as out:
            child = subprocess.Popen(
                argv,
                env={**os.environ, **env_overrides},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd,
            )
    except OSError as exc:
        raise Unavailable(f"cannot start {argv[0]}: {exc}") from exc
    _SPAWNED[child.pid] = child
    start_time = process_start_time(child.pid)
    if start_time is None:
        raise Unavailable(f"{' '.join(argv)} exited at once; see {log}", log=str(log))
    return child.pid, start_time


def start_process(
    dir: Path,
    name: str,
    role: Role,
    argv: list[str],
    env_overrides: Mapping[str, str],
    data_dir: Path | None = None,
) -> ProcessRecord:
    """Start one process of the cluster in ``dir``, logging to ``<dir>/logs/<name>.log``."""
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    log = dir / "logs" / f"{name}.log"
    pid, start_time = _spawn(argv, env_overrides, log, dir)
    return ProcessRecord(name, role, pid, start_time, argv, dict(env_overrides), log, data_dir)


def stop_processes(records: Iterable[ProcessRecord], grace_seconds: float) -> list[StopOutcome]:
    """SIGTERM the processes still running (PostgreSQL: SIGINT, its fast shutdown), SIGKILL
    those left after ``grace_seconds``.

    Only a process whose pid still has its recorded start time is signalled. Every record is
    marked not running afterwards.
    """
    records = list(records)
    signalled = [r for r in records if r.signal(_STOP_SIGNAL.get(r.role, signal.SIGTERM))]
    _wait_gone(signalled, grace_seconds)
    killed = [r for r in signalled if r.signal(signal.SIGKILL)]
    _wait_gone(killed, _KILL_WAIT)
    outcomes = []
    for record in records:
        if record in killed:
            outcome: Literal["stopped", "killed", "not running"] = "killed"
        elif record in signalled:
            outcome = "stopped"
        else:
            outcome = "not running"
        outcomes.append(StopOutcome(record.name, record.role, record.pid, outcome))
        record.running = False
    return outcomes


def stop_in_order(processes: list[ProcessRecord], grace_seconds: float) -> list[StopOutcome]:
    """Stop the api processes, then the workers, the nodes, NATS, Redis and PostgreSQL
    (``STOP_ORDER``)."""
    outcomes: list[StopOutcome] = []
    for role in STOP_ORDER:
        outcomes += stop_processes([p for p in processes if p.role == role], grace_seconds)
    return outcomes


def _wait_gone(records: list[ProcessRecord], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(r.alive() for r in records) and time.monotonic() < deadline:
        time.sleep(0.1)


def _fail_if_exited(records: Iterable[ProcessRecord]) -> None:
    """Raise, quoting its log, if a process that should be running has exited."""
    for record in records:
        if not record.alive():
            raise Unavailable(
                f"{record.name} exited during start-up; see {record.log}:\n{_tail(record.log)}",
                process=record.name,
                log=str(record.log),
            )


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-_LOG_TAIL_LINES:])


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            sockets.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _check_port_free(port: int) -> None:
    with socket.socket() as s:
        # As a server binds: SO_REUSEADDR ignores old connections, not a listener.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise Conflict(f"port {port} is in use ({exc.strerror})", port=port) from exc


# -- NATS -----------------------------------------------------------------------------------


def find_nats_server() -> str | None:
    """The nats-server executable: on PATH, else Debian's /usr/sbin/nats-server, else None."""
    found = shutil.which("nats-server")
    if found:
        return found
    return "/usr/sbin/nats-server" if os.access("/usr/sbin/nats-server", os.X_OK) else None


def nats_config(
    server_name: str,
    cluster_name: str,
    port: int,
    route_port: int,
    peer_route_ports: list[int],
    store_dir: Path,
) -> str:
    """The configuration file of one server of a loopback JetStream cluster."""
    routes = ", ".join(json.dumps(f"nats-route://127.0.0.1:{p}") for p in peer_route_ports)
    return (
        f"server_name: {json.dumps(server_name)}\n"
        f'listen: "127.0.0.1:{port}"\n'
        "jetstream {\n"
        f"  store_dir: {json.dumps(str(store_dir))}\n"
        "}\n"
        "cluster {\n"
        f"  name: {json.dumps(cluster_name)}\n"
        f'  listen: "127.0.0.1:{route_port}"\n'
        f"  routes: [{routes}]\n"
        "}\n"
    )


def start_nats_cluster(
    dir: Path,
    name: str,
    client_ports: tuple[int, ...] | None = None,
    route_ports: tuple[int, ...] | None = None,
    nats_server: str | None = None,
    timeout_seconds: float = 30.0,
) -> NatsCluster:
    """Start three nats-server processes as one JetStream cluster and wait for its meta leader.

    Configurations go to ``<dir>/nats/<n>.conf``, stores to ``<dir>/nats/<n>``. On failure the
    servers started are stopped before the error is raised.
    """
    dir = dir.resolve()
    executable = nats_server or find_nats_server()
    if executable is None:
        raise Unavailable("nats-server is not installed (Debian package nats-server)")
    picked = iter(free_ports(2 * NATS_SERVERS))
    ports = list(client_ports or [next(picked) for _ in range(NATS_SERVERS)])
    routes = list(route_ports or [next(picked) for _ in range(NATS_SERVERS)])
    (dir / "nats").mkdir(parents=True, exist_ok=True)
    processes: list[ProcessRecord] = []
    try:
        for n in range(1, NATS_SERVERS + 1):
            server_name = f"nats-{n}"
            peers = [p for i, p in enumerate(routes, 1) if i != n]
            store = dir / "nats" / str(n)
            conf = dir / "nats" / f"{n}.conf"
            conf.write_text(
                nats_config(server_name, name, ports[n - 1], routes[n - 1], peers, store)
            )
            argv = [executable, "-c", str(conf)]
            processes.append(start_process(dir, server_name, "nats", argv, {}, store))
        urls = [f"nats://127.0.0.1:{p}" for p in ports]
        asyncio.run(_await_jetstream(urls, processes, time.monotonic() + timeout_seconds))
    except BaseException:
        stop_processes(processes, grace_seconds=10.0)
        raise
    return NatsCluster(urls, processes)


async def _await_jetstream(urls: list[str], servers: list[ProcessRecord], deadline: float) -> None:
    """Return once JetStream answers (its meta leader is elected); raise at ``deadline``."""

    async def quiet(_: Exception) -> None:
        # The servers refuse connections until they listen; that is expected here.
        return None

    last_error = "no answer"
    while time.monotonic() < deadline:
        _fail_if_exited(servers)
        try:
            client = await nats.connect(
                servers=urls, connect_timeout=1, allow_reconnect=False, error_cb=quiet
            )
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        else:
            try:
                await client.jetstream(timeout=2).account_info()
                return
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            finally:
                await client.close()
        await asyncio.sleep(0.25)
    logs = ", ".join(str(s.log) for s in servers)
    raise Unavailable(f"NATS JetStream did not answer in time ({last_error}); see {logs}")


# -- PostgreSQL and Redis -------------------------------------------------------------------


def database_url(admin_url: str, database: str) -> str:
    """The admin URL with its database replaced by ``database``."""
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{database}"))


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def ensure_database(admin_url: str, database: str) -> str:
    """Create ``database`` on the server of ``admin_url`` if it is missing; its URL."""
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if found is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    except psycopg.Error as exc:
        raise Unavailable(f"PostgreSQL at {_redacted(admin_url)}: {exc}") from exc
    return database_url(admin_url, database)


def drop_database(admin_url: str, database: str) -> None:
    """Drop ``database`` (closing its connections) if it exists."""
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
    except psycopg.Error as exc:
        raise Unavailable(f"PostgreSQL at {_redacted(admin_url)}: {exc}") from exc


def purge_cache(redis_url: str, prefix: str) -> int:
    """Delete every Redis key under ``<prefix>:``; how many there were."""
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + ":*"
    client = redis.Redis.from_url(redis_url)
    removed = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += cast(int, client.unlink(*batch))
                batch = []
        if batch:
            removed += cast(int, client.unlink(*batch))
    except redis.RedisError as exc:
        raise Unavailable(f"Redis at {_redacted(redis_url)}: {exc}") from exc
    finally:
        client.close()
    return removed


# -- the cluster's own Redis and PostgreSQL ------------------------------------------------


def find_redis_server() -> str | None:
    """The redis-server executable on PATH, else None."""
    return shutil.which("redis-server")


def find_postgres_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin (Debian), else the directory of ``initdb``
    on PATH, else None."""
    versions = [
        path.parent
        for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if path.parent.parent.name.isdigit()
    ]
    if versions:
        return max(versions, key=lambda bin_dir: int(bin_dir.parent.name))
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def own_redis_url(port: int) -> str:
    """The URL of a cluster's own Redis on ``port``."""
    return f"redis://127.0.0.1:{port}/0"


def own_postgres_url(port: int) -> str:
    """The admin URL of a cluster's own PostgreSQL on ``port`` (superuser, trust auth)."""
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def start_redis(
    dir: Path, port: int, executable: str | None = None, timeout_seconds: float = 30.0
) -> ProcessRecord:
    """Start the cluster's own Redis on 127.0.0.1:``port`` and return once it answers PING.

    It persists nothing (no RDB snapshot, no AOF): SIGTERM shuts it down as ``SHUTDOWN
    NOSAVE`` does, and a restart starts it empty, which a cache may be.
    """
    dir = dir.resolve()
    executable = executable or find_redis_server()
    if executable is None:
        raise Unavailable("redis-server is not installed (Debian package redis-server)")
    store = dir / "redis"
    argv = [executable, "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(store)]
    record = start_process(dir, "redis", "redis", argv, {}, store)
    try:
        _await_redis(own_redis_url(port), record, time.monotonic() + timeout_seconds)
    except BaseException:
        stop_processes([record], grace_seconds=10.0)
        raise
    return record


def start_postgres(
    dir: Path, port: int, bin_dir: str | None = None, timeout_seconds: float = 60.0
) -> ProcessRecord:
    """Start the cluster's own PostgreSQL on 127.0.0.1:``port`` and return once it accepts
    connections.

    Its data is ``<dir>/postgres/data``, made by initdb on the first start (superuser
    ``postgres``, trust auth: it listens on loopback only), its unix socket is in
    ``<dir>/postgres``. Started as root, it runs as the ``postgres`` user (the server refuses
    root), which must be able to reach ``dir``.
    """
    dir = dir.resolve()
    found = Path(bin_dir) if bin_dir else find_postgres_bin()
    if found is None:
        raise Unavailable("PostgreSQL's initdb is not installed (Debian package postgresql)")
    home = dir / "postgres"
    home.mkdir(parents=True, exist_ok=True)
    as_owner = _as_postgres_user(home)
    data = home / "data"
    if not (data / "PG_VERSION").exists():
        _initdb(found, data, as_owner, dir / "logs" / "postgres-initdb.log")
    argv = [*as_owner, str(found / "postgres"), "-D", str(data), "-p", str(port)]
    argv += ["-k", str(home), "-c", "listen_addresses=127.0.0.1"]
    # A test server: fsync only matters to a machine crash, never to a server restart.
    argv += ["-c", "fsync=off"]
    record = start_process(dir, "postgres", "postgres", argv, {}, home)
    try:
        _await_postgres(own_postgres_url(port), record, time.monotonic() + timeout_seconds)
    except BaseException:
        stop_processes([record], grace_seconds=10.0)
        raise
    return record


def _as_postgres_user(home: Path) -> list[str]:
    """The prefix that runs a command as the ``postgres`` user, ``home`` handed to it, when
    this process is root; nothing otherwise."""
    if os.geteuid() != 0:
        return []
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable("started as root, PostgreSQL needs a 'postgres' user to run as") from None
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise Unavailable("setpriv is not installed (Debian package util-linux)")
    os.chown(home, owner.pw_uid, owner.pw_gid)
    # setpriv execs the server (runuser would stay as its parent and turn the fast-shutdown
    # SIGINT into SIGTERM, then SIGKILL two seconds later).
    return [setpriv, "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


def _initdb(bin_dir: Path, data: Path, as_owner: list[str], log: Path) -> None:
    argv = [*as_owner, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres"]
    argv += ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]
    try:
        done = subprocess.run(
            argv, cwd=data.parent, capture_output=True, text=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"initdb: {exc}") from exc
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        hint = ""
        if "ermission denied" in done.stderr:
            hint = f" (the postgres user must be able to reach {data.parent})"
        raise Unavailable(
            f"initdb exited with {done.returncode}{hint}: {done.stderr.strip()[-300:]}",
            log=str(log),
        )


def _await_redis(url: str, record: ProcessRecord, deadline: float) -> None:
    """Return once Redis at ``url`` answers PING; raise at ``deadline`` or if it exited."""
    last_error = "no answer"
    while time.monotonic() < deadline:
        _fail_if_exited([record])
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            if client.ping():
                return
        except redis.RedisError as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()
        time.sleep(0.1)
    raise Unavailable(f"Redis at {url} did not answer in time ({last_error}); see {record.log}")


def _await_postgres(url: str, record: ProcessRecord, deadline: float) -> None:
    """Return once PostgreSQL at ``url`` runs a query; raise at ``deadline`` or if it exited."""
    last_error = "no answer"
    while time.monotonic() < deadline:
        _fail_if_exited([record])
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.Error as exc:
            last_error = " ".join(str(exc).split())
        time.sleep(0.1)
    raise Unavailable(
        f"PostgreSQL at {_redacted(url)} did not answer in time ({last_error}); see {record.log}"
    )


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


# -- the shardrag processes -----------------------------------------------------------------


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
    while not wanted <= seen:
        if time.monotonic() > deadline:
            raise Unavailable(
                f"the api processes did not all answer at {state.api_url} in time "
                f"(answered: {sorted(seen) or 'none'} of {sorted(wanted)}); see {logs}"
            )
        _fail_if_exited(state.processes)
        # A fresh connection each time: the kernel spreads connections, not requests.
        body = _get_json(f"{state.api_url}/healthz")
        if isinstance(body, dict) and isinstance(body.get("pid"), int):
            seen.add(body["pid"])
            time.sleep(0.05)
        else:
            time.sleep(0.25)
    while _get_json(f"{state.api_url}/readyz") is None:
        if time.monotonic() > deadline:
            raise Unavailable(f"{state.api_url}/readyz did not answer 200 in time; see {logs}")
        _fail_if_exited(state.processes)
        time.sleep(0.25)


def _get_json(url: str) -> Any:
    """The JSON body of a 200 answer, else None."""
    try:
        response = httpx.get(url, timeout=2.0, trust_env=False)
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

    step("starting NATS (3 servers)")
    nats_cluster = start_nats_cluster(
        dir,
        spec.name,
        spec.nats_ports,
        spec.nats_route_ports,
        spec.nats_server,
        spec.nats_timeout_seconds,
    )
    # Picked now (NATS listens already): the URLs go into every process's environment.
    redis_port, postgres_port = free_ports(2)
    postgres_url = own_postgres_url(postgres_port) if spec.own_postgres else spec.postgres_url
    state = ClusterState(
        dir=dir,
        name=spec.name,
        api_url=f"http://127.0.0.1:{api_port}",
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

    def start(name: str, role: Role, args: list[str], **own: str) -> None:
        data_dir = state.dir / name
        env = {**state.env_overrides, "SHARDRAG_DATA_DIR": str(data_dir), **own}
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
