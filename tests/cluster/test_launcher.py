"""``shardrag cluster up/down``: the NATS cluster, process identity, PostgreSQL and Redis.

These need no shardrag process: the full ``up`` is exercised by the cluster's end-to-end tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import psycopg
import pytest
import redis
from nats.aio.msg import Msg
from typer.testing import CliRunner

from shardrag.cluster.commands import cluster_app
from shardrag.cluster.launcher import (
    ClusterSpec,
    ClusterState,
    NatsCluster,
    ProcessRecord,
    down,
    ensure_database,
    find_nats_server,
    free_ports,
    own_postgres_url,
    own_redis_url,
    start_nats_cluster,
    start_postgres,
    start_process,
    start_redis,
    stop_processes,
    up,
)
from shardrag.errors import Conflict, InvalidParameter, NotFound, Unavailable
from shardrag.log.base import LogMessage
from shardrag.log.nats import READER_PROBE_SECONDS, NatsLog
from tests.support import (
    POSTGRES_URL,
    REDIS_URL,
    postgres_is_up,
    redis_is_up,
    require,
    require_own_servers,
)

pytestmark = pytest.mark.timeout(180)

SLEEPER = "import time; print('ready', flush=True); time.sleep(120)"
# A process that has to be killed: it ignores SIGTERM.
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(120)"
)


def cluster_state(dir: Path, processes: list[ProcessRecord], name: str = "t") -> ClusterState:
    """A cluster.json of ``processes`` alone, as ``up`` would have recorded them."""
    return ClusterState(
        dir=dir.resolve(),
        name=name,
        api_url="http://127.0.0.1:1",
        admin_key=secrets.token_urlsafe(32),
        nats_urls=[],
        registry_url=f"{POSTGRES_URL.rsplit('/', 1)[0]}/shardrag_{name}",
        postgres_url=POSTGRES_URL,
        redis_url=REDIS_URL,
        cache_prefix=name,
        blob_url=f"file://{dir}/blobs",
        shards=2,
        replicas=2,
        env_overrides={"SHARDRAG_CLUSTER": "true"},
        processes=processes,
    )


StartPython = Callable[[str, str], ProcessRecord]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def start_python(tmp_path: Path) -> Iterator[StartPython]:
    """Start ``python -c CODE`` as a cluster process (after it printed "ready"); kill it after."""
    started: list[ProcessRecord] = []

    def start(name: str, code: str) -> ProcessRecord:
        record = start_process(tmp_path, name, "node", [sys.executable, "-c", code], {})
        started.append(record)
        assert wait_until(lambda: "ready" in record.log.read_text())
        return record

    try:
        yield start
    finally:
        for record in started:
            # A copy that is "running": the test may have marked the original stopped.
            ProcessRecord(**{**record.__dict__, "running": True}).signal(signal.SIGKILL)


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nats-server processes as one JetStream cluster; stopped after the test."""
    require(find_nats_server() is not None, "nats-server (Debian package nats-server)")
    cluster = start_nats_cluster(tmp_path, f"t{secrets.token_hex(4)}")
    try:
        yield cluster
    finally:
        stop_processes(cluster.processes, grace_seconds=10.0)


# -- NATS -----------------------------------------------------------------------------------


async def publish(js: nats.js.JetStreamContext, subject: str, data: bytes) -> None:
    """Publish, retrying while the stream elects a new leader or the client reconnects."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await js.publish(subject, data, timeout=2)
            return
        except (TimeoutError, nats.errors.Error):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)


async def read_all(js: nats.js.JetStreamContext, count: int) -> list[Msg]:
    """The first ``count`` messages of CHAOS, retrying while its new leader settles in."""
    deadline = time.monotonic() + 60
    while True:
        try:
            reader = await js.pull_subscribe("chaos.>", stream="CHAOS")
            messages: list[Msg] = []
            while len(messages) < count:
                messages += await reader.fetch(count - len(messages), timeout=10)
            return messages
        except (TimeoutError, nats.errors.Error):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def replicas_current(js: nats.js.JetStreamContext, stream: str, count: int) -> bool:
    """Whether the stream has a leader and ``count`` - 1 followers that are caught up."""
    try:
        info = await js.stream_info(stream)
    except (TimeoutError, nats.errors.Error):
        return False
    cluster = info.cluster
    if cluster is None or cluster.leader is None:
        return False
    followers = [p for p in cluster.replicas or [] if p.current and not p.offline]
    return len(followers) == count - 1


def test_a_replicated_stream_keeps_its_messages_when_a_server_is_killed(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    state = cluster_state(tmp_path, nats_cluster.processes)
    state.save()

    async def scenario() -> str:
        client = await nats.connect(servers=nats_cluster.urls, reconnect_time_wait=0.2)
        try:
            js = client.jetstream(timeout=5)
            info = await js.add_stream(name="CHAOS", subjects=["chaos.>"], num_replicas=3)
            assert info.config.num_replicas == 3
            await publish(js, "chaos.a", b"before")
            info = await js.stream_info("CHAOS")
            assert info.cluster is not None and info.cluster.leader is not None
            # The stream's leader: the server whose loss costs an election.
            victim = info.cluster.leader
            assert state.kill(victim, signal.SIGKILL)
            assert wait_until(lambda: not state.alive(victim))
            await publish(js, "chaos.b", b"after")
            messages = await read_all(js, 2)
            assert [m.data for m in messages] == [b"before", b"after"]

            restarted = state.restart(victim)
            assert state.alive(victim)
            assert ClusterState.load(tmp_path).process(victim).pid == restarted.pid
            deadline = time.monotonic() + 30
            while not await replicas_current(js, "CHAOS", 3):
                assert time.monotonic() < deadline, "the restarted server did not catch up"
                await asyncio.sleep(0.25)
            return victim
        finally:
            await client.close()

    victim = asyncio.run(scenario())
    assert (tmp_path / "logs" / f"{victim}.log").read_text().count("Starting nats-server") == 2


def reader_server(log: NatsLog, urls: list[str]) -> str:
    """The server holding the (one) ephemeral consumer of ``log``'s stream."""

    async def find() -> str:
        client = await nats.connect(servers=urls)
        try:
            consumers = await client.jetstream(timeout=5).consumers_info(log.stream)
            [consumer] = [c for c in consumers if c.config.durable_name is None]
            assert consumer.cluster is not None and consumer.cluster.leader is not None
            return consumer.cluster.leader
        finally:
            await client.close()

    return asyncio.run(find())


def test_a_log_reader_whose_server_is_killed_reads_on_from_another(
    nats_cluster: NatsCluster,
) -> None:
    # An index node reads its shard through an ephemeral consumer, which lives on one server.
    # Killing that server must not leave the reader waiting on a quiet subject for ever.
    log = NatsLog(",".join(nats_cluster.urls), prefix=f"r{secrets.token_hex(3)}", replicas=3)
    try:
        log.append("shard.0", b"before")
        first = log.read("shard.0", 0, timeout=2)
        assert [m.data for m in first] == [b"before"]
        server = reader_server(log, nats_cluster.urls)
        victim = next(p for p in nats_cluster.processes if p.name == server)
        victim.signal(signal.SIGKILL)
        assert wait_until(lambda: not victim.alive())
        deadline = time.monotonic() + 30
        while True:
            try:
                appended = log.append("shard.0", b"after")
                break
            except Unavailable:
                assert time.monotonic() < deadline, "the stream took no append"
                time.sleep(0.5)
        found: list[LogMessage] = []
        deadline = time.monotonic() + 4 * READER_PROBE_SECONDS + 10
        while not found:
            assert time.monotonic() < deadline, "the reader never read past its dead consumer"
            with contextlib.suppress(Unavailable):
                found = log.read("shard.0", first[-1].sequence, timeout=1)
        assert [(m.sequence, m.data) for m in found] == [(appended, b"after")]
    finally:
        log.close()


def test_nats_servers_get_one_config_and_store_each(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    assert len(nats_cluster.urls) == 3
    for n in (1, 2, 3):
        conf = (tmp_path / "nats" / f"{n}.conf").read_text()
        assert f'server_name: "nats-{n}"' in conf
        assert f'store_dir: "{tmp_path / "nats" / str(n)}"' in conf
        assert conf.count("nats-route://127.0.0.1:") == 2
    assert [p.name for p in nats_cluster.processes] == ["nats-1", "nats-2", "nats-3"]
    assert all(p.alive() and p.role == "nats" for p in nats_cluster.processes)


def test_start_nats_cluster_stops_its_servers_when_one_cannot_start(tmp_path: Path) -> None:
    require(find_nats_server() is not None, "nats-server (Debian package nats-server)")
    ports = free_ports(6)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[1]))
        taken.listen()
        with pytest.raises(Unavailable, match="nats-2 exited during start-up") as raised:
            start_nats_cluster(
                tmp_path, "t", client_ports=tuple(ports[:3]), route_ports=tuple(ports[3:])
            )
    assert "nats-2.log" in raised.value.message
    for port in (ports[0], ports[2]):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


# -- process identity -----------------------------------------------------------------------


def test_down_never_signals_a_pid_whose_start_time_differs(
    tmp_path: Path, start_python: StartPython
) -> None:
    record: ProcessRecord = start_python("node-1", SLEEPER)
    # As if the recorded process had exited and the kernel had given its pid to this one.
    impostor = ProcessRecord(**{**record.__dict__, "start_time": record.start_time - 1})
    cluster_state(tmp_path, [impostor]).save()

    report = down(tmp_path, grace_seconds=1.0)

    assert [(p.name, p.outcome) for p in report.processes] == [("node-1", "not running")]
    assert record.alive()
    assert not ClusterState.load(tmp_path).process("node-1").running


def test_down_stops_in_order_and_keeps_cluster_json_with_processes_stopped(
    tmp_path: Path, start_python: StartPython
) -> None:
    node = start_python("node-1", SLEEPER)
    api = start_python("api-1", STUBBORN)
    api.role = "api"
    cluster_state(tmp_path, [node, api]).save()

    report = down(tmp_path, grace_seconds=0.5)

    assert [(p.name, p.outcome) for p in report.processes] == [
        ("api-1", "killed"),
        ("node-1", "stopped"),
    ]
    assert not node.alive() and not api.alive()
    assert not report.purged
    saved = ClusterState.load(tmp_path)
    assert [p.running for p in saved.processes] == [False, False]
    assert stat.S_IMODE(os.stat(tmp_path / "cluster.json").st_mode) == 0o600


def test_up_refuses_while_the_dir_has_a_running_cluster(
    tmp_path: Path, start_python: StartPython
) -> None:
    cluster_state(tmp_path, [start_python("node-1", SLEEPER)]).save()
    with pytest.raises(Conflict, match="node-1"):
        up(ClusterSpec(dir=tmp_path, api_port=0))
    assert not (tmp_path / "nats").exists()


def test_down_without_cluster_json_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"cluster\.json"):
        down(tmp_path)


@pytest.mark.parametrize(
    "spec",
    [
        ClusterSpec(name="has-dash"),
        ClusterSpec(replicas=4, nodes=3),
        ClusterSpec(shards=0),
        ClusterSpec(nats_ports=(4223, 4224)),
        ClusterSpec(postgres_url="mysql://127.0.0.1/x"),
    ],
)
def test_up_rejects_a_spec_it_cannot_start(spec: ClusterSpec) -> None:
    with pytest.raises(InvalidParameter):
        up(spec)


# -- PostgreSQL and Redis -------------------------------------------------------------------


def test_down_purge_drops_the_database_the_cache_keys_and_the_dir(
    tmp_path: Path, start_python: StartPython
) -> None:
    require(postgres_is_up(), f"PostgreSQL at {POSTGRES_URL}")
    require(redis_is_up(), f"Redis at {REDIS_URL}")
    name = f"t{secrets.token_hex(5)}"
    database = f"shardrag_{name}"
    registry_url = ensure_database(POSTGRES_URL, database)
    assert ensure_database(POSTGRES_URL, database) == registry_url  # idempotent
    with psycopg.connect(registry_url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (database,)
    cache = redis.Redis.from_url(REDIS_URL)
    try:
        cache.set(f"{name}:search:1", b"x")
        cache.set(f"{name}:embedding:2", b"y")
        cache.set(f"{name}x:other", b"kept")
        dir = tmp_path / "cluster"
        state = cluster_state(dir, [start_python("node-1", SLEEPER)], name=name)
        state.registry_url = registry_url
        state.save()

        report = down(dir, purge=True, grace_seconds=5.0)

        assert report.purged
        assert [p.outcome for p in report.processes] == ["stopped"]
        assert not dir.exists()
        assert cache.keys(f"{name}:*") == []
        assert cache.get(f"{name}x:other") == b"kept"
        with psycopg.connect(POSTGRES_URL) as admin:
            found = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
        assert found is None
    finally:
        cache.delete(f"{name}x:other", f"{name}:search:1", f"{name}:embedding:2")
        cache.close()


def test_own_redis_and_postgres_restart_on_their_ports_and_go_with_down_purge() -> None:
    require_own_servers()
    # Not pytest's private (0700) temp dir: as root, PostgreSQL runs as the postgres user.
    dir = Path(tempfile.mkdtemp(prefix="shardrag-own-servers-"))
    dir.chmod(0o711)
    try:
        redis_port, postgres_port = free_ports(2)
        servers = [start_redis(dir, redis_port), start_postgres(dir, postgres_port)]
        state = cluster_state(dir, servers)
        state.redis_url = own_redis_url(redis_port)
        state.postgres_url = own_postgres_url(postgres_port)
        state.save()
        assert state.owns("redis") and state.owns("postgres") and not state.owns("nats")
        with psycopg.connect(state.postgres_url, autocommit=True) as session:
            session.execute("CREATE TABLE kept (x integer)")
            session.execute("INSERT INTO kept VALUES (1)")
            # A fast shutdown does not wait for the open session (a smart one would).
            assert state.stop("postgres", grace_seconds=10).outcome == "stopped"
        state.restart("postgres")
        state.await_server("postgres")
        with psycopg.connect(state.postgres_url) as conn:
            assert conn.execute("SELECT x FROM kept").fetchall() == [(1,)]
        cache = redis.Redis.from_url(state.redis_url)
        try:
            cache.set("k", b"v")
            assert state.stop("redis", grace_seconds=10).outcome == "stopped"
            state.restart("redis")
            state.await_server("redis")
            assert cache.get("k") is None  # nothing persisted: a cache may start empty
        finally:
            cache.close()

        report = down(dir, purge=True, grace_seconds=10)

        assert [(p.name, p.outcome) for p in report.processes] == [
            ("redis", "stopped"),
            ("postgres", "stopped"),
        ]
        assert not dir.exists()
    finally:
        if (dir / "cluster.json").exists():
            down(dir, grace_seconds=5)
        shutil.rmtree(dir, ignore_errors=True)


# -- the commands ---------------------------------------------------------------------------


def test_cluster_down_without_a_cluster_exits_1_with_the_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cluster_app, ["down", "--dir", str(tmp_path), "--json"])
    assert result.exit_code == 1
    assert '"code": "not_found"' in result.stdout


def test_cluster_up_with_a_bad_name_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(cluster_app, ["up", "--dir", str(tmp_path), "--name", "a-b"])
    assert result.exit_code == 2
    assert "invalid_parameter" in result.output


def test_cluster_down_lists_what_it_stopped(tmp_path: Path, start_python: StartPython) -> None:
    cluster_state(tmp_path, [start_python("node-1", SLEEPER)]).save()
    result = CliRunner().invoke(cluster_app, ["down", "--dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert '"outcome": "stopped"' in result.stdout
