"""The distributed mode under failure, against real servers: a cluster started by ``up``.

3 NATS servers, 3 index nodes, 2 shards x 2 replicas, the workers and 2 api processes behind
one port, all with mutual TLS (``up --tls``: every process, NATS and the api require client
certificates). Each test runs a load generator while it breaks something and asserts what a
user sees: no failed search, no lost write, replicas caught up again.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field

import httpx
import nats
import pytest

from shardrag.cluster.launcher import API_PROCESSES, ClusterSpec, ClusterState, down, up
from shardrag.cluster.protocol import SearchCall, SearchReply, search_subject
from shardrag.models import Fusion, Hit, SearchMode, ShardQuery
from shardrag.tls import tls_context
from tests.chaos.loadgen import VOCABULARY
from tests.observability.test_tracing import OtlpReceiver
from tests.support import postgres_is_up, redis_is_up, require

pytestmark = pytest.mark.timeout(600)

#: The load's words (shared with the chaos suite's load generator).
WORDS = list(VOCABULARY)


def bearer(key: str) -> dict[str, str]:
    """The Authorization header of ``key``."""
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Cluster:
    """The running cluster and a tenant on each shard with its keys."""

    state: ClusterState
    root: dict[str, str]
    tenants: dict[int, str] = field(default_factory=dict)  # shard -> tenant
    writers: dict[str, dict[str, str]] = field(default_factory=dict)
    readers: dict[str, dict[str, str]] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        """A new keep-alive client of the api port (one connection: one api process)."""
        return httpx.Client(base_url=self.state.api_url, timeout=60, verify=self.state.client_tls())

    def status(self) -> dict[str, object]:
        """``shardrag cluster status --json``."""
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "shardrag",
                "cluster",
                "status",
                "--dir",
                str(self.state.dir),
                "--json",
            ],
            capture_output=True,
            text=True,
            env=self.state.env(),
            timeout=60,
            check=True,
        )
        status: dict[str, object] = json.loads(done.stdout)
        return status


def tenant_on(shard: int, shards: int = 2) -> str:
    """A fresh tenant id the default placement puts on ``shard``."""
    while True:
        tenant = f"t{secrets.token_hex(3)}"
        if zlib.crc32(tenant.encode()) % shards == shard:
            return tenant


@contextmanager
def running_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    prefix: str,
    env: dict[str, str],
    seeds: int,
    tls: bool = False,
) -> Iterator[Cluster]:
    """A cluster started by ``up``: 3 nodes, 2 shards x 2 replicas, caching and the rate limit
    off (every search reaches a node), ``env`` on top; a tenant on each shard with a writer and
    a reader key and ``seeds`` documents live. Its logs outlive it, for a failure's post-mortem.
    """
    require(postgres_is_up(), "PostgreSQL on 127.0.0.1:5432")
    require(redis_is_up(), "Redis on 127.0.0.1:6379")
    directory = tmp_path_factory.mktemp("cluster")
    spec = ClusterSpec(
        dir=directory,
        name=f"{prefix}{secrets.token_hex(3)}",
        shards=2,
        replicas=2,
        nodes=3,
        api_port=0,
        extra_env={
            "SHARDRAG_RESULT_CACHE_ENTRIES": "0",
            "SHARDRAG_RATE_LIMIT_PER_SECOND": "0",
            **env,
        },
        tls=tls,
    )
    state = up(spec)
    try:
        found = Cluster(state, bearer(state.admin_key))
        with found.client() as client:
            for shard in (0, 1):
                tenant = tenant_on(shard)
                made = client.post("/v1/tenants", json={"id": tenant}, headers=found.root)
                assert made.status_code == 201, made.text
                found.tenants[shard] = tenant
                for role, keys in (("writer", found.writers), ("reader", found.readers)):
                    key = client.post(
                        f"/v1/tenants/{tenant}/keys", json={"role": role}, headers=found.root
                    )
                    keys[tenant] = bearer(key.json()["key"])
                for i in range(seeds):
                    put(client, found, tenant, f"seed-{i}", wait=True)
        yield found
    finally:
        shutil.copytree(
            directory / "logs", tmp_path_factory.mktemp("cluster-logs"), dirs_exist_ok=True
        )
        down(directory, purge=True)


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """Where the cluster's processes export their traces (OTLP/HTTP)."""
    found = OtlpReceiver()
    yield found
    found.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver) -> Iterator[Cluster]:
    """A cluster with short timers, mutual TLS, and traces exported to ``receiver``."""
    env = {
        "SHARDRAG_SNAPSHOT_INTERVAL_SECONDS": "2",
        "SHARDRAG_REPLICA_TIMEOUT_SECONDS": "1",
        **receiver.env(),
    }
    with running_cluster(tmp_path_factory, "fo", env, seeds=12, tls=True) as found:
        yield found


def test_a_search_is_one_trace_from_the_api_to_a_node(
    cluster: Cluster, receiver: OtlpReceiver
) -> None:
    """The caller's ``traceparent`` is continued by the api; the router's call to the shard
    carries it in the NATS message's headers to the node that answers."""
    tenant = cluster.tenants[0]
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    with cluster.client() as client:
        found = client.post(
            f"/v1/tenants/{tenant}/search",
            json={"query": "seed marker"},
            headers={**cluster.readers[tenant], "traceparent": f"00-{trace_id}-{parent}-01"},
        )
    assert found.status_code == 200, found.text
    wanted = {"POST /v1/tenants/{t}/search", "search", "shard search", "engine search"}
    spans = receiver.trace(trace_id, wanted, parent)
    assert wanted <= {s.name for s in spans}, [(s.service, s.name) for s in spans]
    assert {s.service for s in spans} >= {"shardrag-api", "shardrag-node"}
    sent = [s for s in spans if s.name == "shard search" and s.service == "shardrag-api"]
    served = [s for s in spans if s.name == "shard search" and s.service == "shardrag-node"]
    assert sent and served
    # The node's span is a child of the api's call span: one trace across the processes.
    assert {s.parent_id for s in served} <= {s.span_id for s in sent}


def text_of(doc_id: str) -> bytes:
    """A small document whose words are its id's (so a query finds it)."""
    rng = zlib.crc32(doc_id.encode())
    words = [WORDS[(rng >> i) % len(WORDS)] for i in range(0, 24, 2)]
    marker = f"marker{zlib.crc32(doc_id.encode())}"
    return f"{doc_id.replace('-', ' ')} {marker} {' '.join(words)}\n".encode()


def put(
    client: httpx.Client, cluster: Cluster, tenant: str, doc_id: str, wait: bool = False
) -> httpx.Response:
    """PUT a document (waiting until live, or not)."""
    return client.put(
        f"/v1/tenants/{tenant}/documents/{doc_id}",
        params={"wait": str(wait).lower()},
        files={"file": (f"{doc_id}.txt", text_of(doc_id))},
        headers=cluster.writers[tenant],
    )


@dataclass
class Load:
    """Searches (and optionally writes) from a few threads until stopped; what happened."""

    searches: int = 0
    seconds: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)


def spread_clients(cluster: Cluster, count: int) -> list[httpx.Client]:
    """``count`` keep-alive clients spread evenly over the api processes.

    The kernel picks an api process per connection (SO_REUSEPORT hashes the source port): left
    to chance, 3 connections all land on one of 2 processes a quarter of the time, and the
    other process sees no search at all. A connection to a process that already has its share
    is closed and made again.
    """
    share = math.ceil(count / API_PROCESSES)
    per_process: Counter[int] = Counter()
    clients: list[httpx.Client] = []
    for _ in range(40 * count):
        if len(clients) == count:
            return clients
        client = cluster.client()
        pid = client.get("/healthz").json()["pid"]
        if per_process[pid] < share:
            per_process[pid] += 1
            clients.append(client)
        else:
            client.close()
    for client in clients:
        client.close()
    pytest.fail(f"could not spread {count} connections over the api processes: {per_process}")


def start_load(cluster: Cluster, clients: int = 3, writes: bool = False) -> Load:
    """Start the load generator: ``clients`` searchers spread over the api processes."""
    load = Load()
    lock = threading.Lock()
    connections = spread_clients(cluster, clients)

    def searcher(n: int) -> None:
        with closing(connections[n]) as client:
            i = 0
            while not load.stop.is_set():
                i += 1
                tenant = cluster.tenants[i % 2]
                query = f"{WORDS[(n + i) % len(WORDS)]} {WORDS[(n * 7 + i) % len(WORDS)]}"
                started = time.monotonic()
                try:
                    answer = client.post(
                        f"/v1/tenants/{tenant}/search",
                        json={"query": query, "k": 5},
                        headers=cluster.readers[tenant],
                    )
                    ok = answer.status_code == 200 and answer.json()["hits"]
                    outcome = None if ok else f"{answer.status_code} {answer.text[:200]}"
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                with lock:
                    load.searches += 1
                    load.seconds.append(time.monotonic() - started)
                    if outcome:
                        load.failed.append(outcome)

    def writer() -> None:
        with cluster.client() as client:
            i = 0
            while not load.stop.is_set():
                i += 1
                tenant = cluster.tenants[i % 2]
                doc_id = f"w-{secrets.token_hex(4)}"
                try:
                    if put(client, cluster, tenant, doc_id).status_code == 202:
                        load.accepted.append(f"{tenant}/{doc_id}")
                except httpx.HTTPError:
                    pass  # not accepted: nothing was promised
                time.sleep(0.1)

    targets: list[Callable[[], None]] = [
        (lambda n=n: searcher(n))
        for n in range(clients)  # type: ignore[misc]
    ]
    if writes:
        targets.append(writer)
    for target in targets:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        load.threads.append(thread)
    return load


def stop_load(load: Load) -> None:
    """Stop the load generator and wait for its threads."""
    load.stop.set()
    for thread in load.threads:
        thread.join(timeout=120)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.25)


def lag_of(cluster: Cluster, node_id: str) -> int | None:
    """A node's total replication lag from ``cluster status`` (None while it is not live)."""
    nodes = cluster.status()["nodes"]
    assert isinstance(nodes, list)
    for node in nodes:
        if node["id"] == node_id:
            return int(node["lag"])
    return None


def not_live(cluster: Cluster, accepted: list[str]) -> list[str]:
    """The accepted writes that are not live now, each with the state it is in."""
    waiting = []
    with cluster.client() as client:
        for item in accepted:
            tenant, doc_id = item.split("/", 1)
            info = client.get(
                f"/v1/tenants/{tenant}/documents/{doc_id}", headers=cluster.readers[tenant]
            )
            state = info.json().get("state") if info.status_code == 200 else info.status_code
            if state != "live":
                waiting.append(f"{item}: {state}")
    return waiting


def await_all_live(cluster: Cluster, accepted: list[str], timeout: float = 120) -> None:
    """Wait until every accepted write is live; fail naming those that are not."""
    deadline = time.monotonic() + timeout
    while waiting := not_live(cluster, accepted):
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:g} s, {len(waiting)} accepted writes not live: {waiting}")
        time.sleep(0.25)


def test_the_cluster_refuses_clients_without_a_certificate(cluster: Cluster) -> None:
    """With ``--tls``, NATS and the api refuse a client that presents no certificate; with the
    cluster's client certificate both answer."""
    state = cluster.state
    assert state.tls is not None and state.api_url.startswith("https://")
    anonymous = tls_context(state.tls.ca)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{state.api_url}/healthz", verify=anonymous, timeout=10)
    with cluster.client() as client:
        assert client.get("/healthz").status_code == 200

    async def connect(context: ssl.SSLContext) -> bool:
        client = await nats.connect(
            state.nats_urls, tls=context, connect_timeout=3, allow_reconnect=False
        )
        try:
            return bool(client.is_connected)
        finally:
            await client.close()

    with pytest.raises(Exception):  # noqa: B017 (nats-py raises several kinds)
        asyncio.run(connect(anonymous))
    assert asyncio.run(connect(nats_tls_of(state)))  # type: ignore[arg-type]


def test_a_write_through_one_api_process_is_read_your_writes_through_the_other(
    cluster: Cluster,
) -> None:
    first = cluster.client()
    first_pid = first.get("/healthz").json()["pid"]
    second = cluster.client()
    for _ in range(50):  # the kernel spreads new connections over the two processes
        if second.get("/healthz").json()["pid"] != first_pid:
            break
        second.close()
        second = cluster.client()
    assert second.get("/healthz").json()["pid"] != first_pid, "one api process only"
    tenant = cluster.tenants[1]
    misses = []
    try:
        for i in range(20):
            doc_id = f"ryw-{i}"
            written = put(first, cluster, tenant, doc_id)
            assert written.status_code == 202, written.text
            found = second.post(
                f"/v1/tenants/{tenant}/search",
                json={
                    "query": f"marker{zlib.crc32(doc_id.encode())}",
                    "k": 3,
                    "mode": "keyword",
                    "read_concern": "session",
                    "write_token": written.json()["write_token"],
                },
                headers=cluster.readers[tenant],
            )
            assert found.status_code == 200, found.text
            if doc_id not in [h["doc_id"] for h in found.json()["hits"]]:
                misses.append(doc_id)
    finally:
        first.close()
        second.close()
    assert misses == []


def test_killing_a_node_under_search_load_fails_no_search_and_it_catches_up(
    cluster: Cluster,
) -> None:
    load = start_load(cluster, writes=True)
    try:
        time.sleep(3)
        # node-2 holds a replica of both shards.
        assert cluster.state.kill("node-2", signal.SIGKILL)
        wait_for(lambda: not cluster.state.alive("node-2"), 30, "node-2 to die")
        time.sleep(8)  # searches and writes go on while it is down
        cluster.state.restart("node-2")
        wait_for(lambda: lag_of(cluster, "node-2") is not None, 60, "node-2 to come back")
        time.sleep(2)
    finally:
        stop_load(load)
    wait_for(lambda: lag_of(cluster, "node-2") == 0, 120, "node-2 to catch up (lag 0)")
    assert load.searches > 20, sorted(load.seconds)[-10:]
    assert load.failed == []
    assert load.accepted, "the writer got nothing accepted"
    await_all_live(cluster, load.accepted)
    status = cluster.status()
    nodes = {n["id"]: n for n in status["nodes"]}  # type: ignore[union-attr]
    assert set(nodes) == {"node-1", "node-2", "node-3"}
    assert {s["shard"] for s in nodes["node-2"]["shards"]} == {0, 1}


def test_killing_one_nats_server_during_ingest_and_search_loses_no_write(
    cluster: Cluster,
) -> None:
    load = start_load(cluster, writes=True)
    try:
        time.sleep(3)
        assert cluster.state.kill("nats-2", signal.SIGKILL)
        wait_for(lambda: not cluster.state.alive("nats-2"), 30, "nats-2 to die")
        time.sleep(8)
    finally:
        stop_load(load)
    try:
        assert load.searches > 20
        assert load.failed == []
        assert load.accepted
        await_all_live(cluster, load.accepted)
    finally:
        cluster.state.restart("nats-2")


def test_a_new_replica_starts_from_a_snapshot_and_catches_up(cluster: Cluster) -> None:
    tenant = cluster.tenants[1]
    with cluster.client() as client:
        for i in range(5):
            assert put(client, cluster, tenant, f"snap-{i}", wait=True).status_code == 200
    time.sleep(3)  # a snapshot interval (2 s) passes: shard 1's replicas snapshot it
    added = subprocess.run(
        [
            sys.executable,
            "-m",
            "shardrag",
            "cluster",
            "add-replica",
            "--shard",
            "1",
            "--node",
            "node-1",
            "--dir",
            str(cluster.state.dir),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=cluster.state.env(),
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["replicas"] == ["node-2", "node-3", "node-1"]

    def node1_caught_up() -> bool:
        for node in cluster.status()["nodes"]:  # type: ignore[union-attr]
            if node["id"] == "node-1":
                shards = {s["shard"]: s for s in node["shards"]}
                return 1 in shards and shards[1]["lag"] == 0 and shards[1]["applied"] > 0
        return False

    wait_for(node1_caught_up, 60, "node-1's new replica of shard 1 to catch up")
    log = (cluster.state.dir / "logs" / "node-1.log").read_text()
    assert "restored from snapshot" in log
    # node-1's replica answers exactly as an old replica does.
    call = SearchCall(ShardQuery(tenant, SearchMode.KEYWORD, 10, "snap", fusion=Fusion.RRF), 1)
    assert ask(cluster, call, "node-1") == ask(cluster, call, "node-2")


def ask(cluster: Cluster, call: SearchCall, node_id: str) -> list[tuple[str, int]]:
    """The hits (doc, chunk) of ``call`` from one named node over NATS (some)."""
    hits = ask_replica(cluster.state, call, node_id)
    assert hits, "no hits"
    return [(h.doc_id, h.chunk_index) for h in hits]


def nats_tls_of(state: ClusterState) -> ssl.SSLContext | None:
    """The TLS context a NATS client of ``state``'s cluster needs (None: plain NATS)."""
    context = state.client_tls()
    return context if isinstance(context, ssl.SSLContext) else None


def ask_replica(state: ClusterState, call: SearchCall, node_id: str) -> list[Hit]:
    """The hits of ``call`` from one named node over NATS (an error fails the test)."""

    async def request() -> SearchReply:
        client = await nats.connect(state.nats_urls, tls=nats_tls_of(state))
        try:
            subject = search_subject(state.name, call.shard_id, node_id)
            msg = await client.request(subject, call.encode(), timeout=10)
            return SearchReply.decode(msg.data)
        finally:
            await client.close()

    reply = asyncio.run(request())
    assert reply.hits is not None, f"{node_id}: {reply.error_message}"
    return list(reply.hits)
