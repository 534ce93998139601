"""The servers a local cluster runs on: three clustered NATS servers, its PostgreSQL database
(on the machine's server or its own), and its own Redis and PostgreSQL when asked.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import nats

from shardrag.errors import Unavailable
from shardrag.extras import require_extra

# The cluster's own PostgreSQL and Redis are driven with the distributed mode's clients.
require_extra("psycopg", "cluster", "the local cluster launcher (shardrag cluster ...)")
require_extra("redis", "cluster", "the local cluster launcher (shardrag cluster ...)")
import psycopg  # noqa: E402
import redis  # noqa: E402
from psycopg import sql  # noqa: E402

from shardrag.cluster.launcher.processes import (  # noqa: E402
    ProcessRecord,
    _fail_if_exited,
    free_ports,
    start_process,
    stop_processes,
)

NATS_SERVERS = 3


@dataclass(frozen=True)
class NatsCluster:
    """NATS servers forming one JetStream cluster, answering at ``urls``."""

    urls: list[str]
    processes: list[ProcessRecord]


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
    tls: NatsTls | None = None,
) -> str:
    """The configuration file of one server of a loopback JetStream cluster; with ``tls``,
    clients and the other servers must present a certificate of its CA (mutual TLS)."""
    routes = ", ".join(json.dumps(f"nats-route://127.0.0.1:{p}") for p in peer_route_ports)
    return (
        f"server_name: {json.dumps(server_name)}\n"
        f'listen: "127.0.0.1:{port}"\n'
        f"{_tls_block(tls, '')}"
        "jetstream {\n"
        f"  store_dir: {json.dumps(str(store_dir))}\n"
        "}\n"
        "cluster {\n"
        f"  name: {json.dumps(cluster_name)}\n"
        f'  listen: "127.0.0.1:{route_port}"\n'
        f"  routes: [{routes}]\n"
        f"{_tls_block(tls, '  ')}"
        "}\n"
    )


def _tls_block(tls: NatsTls | None, indent: str) -> str:
    """A ``tls`` block verifying the peer's certificate against the CA ("" without TLS)."""
    if tls is None:
        return ""
    lines = [
        "tls {",
        f"  cert_file: {json.dumps(tls.cert)}",
        f"  key_file: {json.dumps(tls.key)}",
        f"  ca_file: {json.dumps(tls.ca)}",
        "  verify: true",
        "  timeout: 5",
        "}",
    ]
    return "".join(f"{indent}{line}\n" for line in lines)


@dataclass(frozen=True)
class NatsTls:
    """The NATS servers' certificate and key, and the CA their peers' must come from."""

    ca: str
    cert: str
    key: str
    #: What the launcher itself connects with to wait for JetStream (a client certificate).
    client: ssl.SSLContext


def start_nats_cluster(
    dir: Path,
    name: str,
    client_ports: tuple[int, ...] | None = None,
    route_ports: tuple[int, ...] | None = None,
    nats_server: str | None = None,
    timeout_seconds: float = 30.0,
    tls: NatsTls | None = None,
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
                nats_config(server_name, name, ports[n - 1], routes[n - 1], peers, store, tls)
            )
            argv = [executable, "-c", str(conf)]
            processes.append(start_process(dir, server_name, "nats", argv, {}, store))
        scheme = "tls" if tls else "nats"
        urls = [f"{scheme}://127.0.0.1:{p}" for p in ports]
        client_tls = tls.client if tls else None
        deadline = time.monotonic() + timeout_seconds
        asyncio.run(_await_jetstream(urls, processes, deadline, client_tls))
    except BaseException:
        stop_processes(processes, grace_seconds=10.0)
        raise
    return NatsCluster(urls, processes)


async def _await_jetstream(
    urls: list[str],
    servers: list[ProcessRecord],
    deadline: float,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Return once JetStream answers (its meta leader is elected); raise at ``deadline``."""

    async def quiet(_: Exception) -> None:
        # The servers refuse connections until they listen; that is expected here.
        return None

    last_error = "no answer"
    while time.monotonic() < deadline:
        _fail_if_exited(servers)
        try:
            client = await nats.connect(
                servers=urls, connect_timeout=1, allow_reconnect=False, error_cb=quiet, tls=tls
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
