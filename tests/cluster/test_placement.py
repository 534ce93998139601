"""Placement changes under load, against a real cluster started by ``up``.

3 NATS servers, 3 index nodes, 2 shared shards x 2 replicas, workers, 2 api processes. A load
generator searches three tenants and writes to one while that tenant is split onto dedicated
shards (API), one of its replicas is moved to another node (CLI), and a third tenant that
grows past the size threshold is promoted automatically. Asserted: no failed search, no
cross-tenant hit, every accepted write live, and afterwards the tenant's searches are served
by its dedicated shards only (the nodes' per-shard search counters in ``cluster status``).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from shardrag.cluster.launcher import ClusterSpec, ClusterState, down, up
from shardrag.cluster.protocol import SearchCall
from shardrag.models import Fusion, SearchMode, ShardQuery
from tests.cluster.test_failover import WORDS, ask_replica, bearer, text_of, wait_for
from tests.support import postgres_is_up, redis_is_up, require

pytestmark = pytest.mark.timeout(900)

#: A tenant with this many live chunks is promoted by the api processes on their own.
THRESHOLD = 40


@dataclass
class Placed:
    """The cluster, its tenants (id → (writer, reader) headers) and the root headers."""

    state: ClusterState
    root: dict[str, str]
    keys: dict[str, tuple[dict[str, str], dict[str, str]]] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        """A keep-alive client of the api port."""
        return httpx.Client(base_url=self.state.api_url, timeout=60)

    def cli(self, *args: str) -> dict[str, object]:
        """A ``shardrag cluster`` command's JSON output."""
        done = self._run_cli(args)
        assert done.returncode == 0, done.stdout + done.stderr
        found: dict[str, object] = json.loads(done.stdout)
        return found

    def cli_error(self, *args: str) -> dict[str, object]:
        """The JSON error of a ``shardrag cluster`` command that must fail."""
        done = self._run_cli(args)
        assert done.returncode != 0, done.stdout + done.stderr
        found: dict[str, object] = json.loads(done.stdout)
        return found

    def _run_cli(self, args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "shardrag", "cluster", *args]
        return subprocess.run(
            [*command, "--dir", str(self.state.dir), "--json"],
            capture_output=True,
            text=True,
            env=self.state.env(),
            timeout=600,
        )

    def status(self) -> dict[str, object]:
        """``GET /v1/admin/cluster``."""
        with self.client() as client:
            answer = client.get("/v1/admin/cluster", headers=self.root)
        assert answer.status_code == 200, answer.text
        found: dict[str, object] = answer.json()
        return found

    def placement(self, tenant: str) -> dict[str, object] | None:
        """The tenant's entry in the status (None: on one shared shard, settled)."""
        tenants = self.status()["tenants"]
        assert isinstance(tenants, list)
        return next((t for t in tenants if t["tenant"] == tenant), None)

    def searches(self) -> dict[int, int]:
        """Searches answered per shard, summed over the live nodes."""
        found: dict[int, int] = {}
        nodes = self.status()["nodes"]
        assert isinstance(nodes, list)
        for node in nodes:
            for replica in node["shards"]:
                found[replica["shard"]] = found.get(replica["shard"], 0) + replica["searches"]
        return found


def put(
    client: httpx.Client,
    placed: Placed,
    tenant: str,
    doc_id: str,
    wait: bool = False,
    revision: str = "",
) -> httpx.Response:
    """PUT a one-chunk document of ``tenant`` (its text names the tenant)."""
    body = text_of(doc_id) + f"owner{tenant} {revision}\n".encode()
    return client.put(
        f"/v1/tenants/{tenant}/documents/{doc_id}",
        params={"wait": str(wait).lower()},
        files={"file": (f"{doc_id}.txt", body)},
        headers=placed.keys[tenant][0],
    )


@pytest.fixture(scope="module")
def placed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Placed]:
    """A cluster whose api processes promote tenants past ``THRESHOLD`` chunks."""
    require(postgres_is_up(), "PostgreSQL on 127.0.0.1:5432")
    require(redis_is_up(), "Redis on 127.0.0.1:6379")
    directory = tmp_path_factory.mktemp("placement")
    spec = ClusterSpec(
        dir=directory,
        name=f"pl{secrets.token_hex(3)}",
        shards=2,
        replicas=2,
        nodes=3,
        api_port=0,
        extra_env={
            "SHARDRAG_RESULT_CACHE_ENTRIES": "0",
            "SHARDRAG_RATE_LIMIT_PER_SECOND": "0",
            "SHARDRAG_SNAPSHOT_INTERVAL_SECONDS": "3",
            "SHARDRAG_PROMOTE_THRESHOLD_CHUNKS": str(THRESHOLD),
            "SHARDRAG_PLACEMENT_CHECK_SECONDS": "1",
        },
    )
    state = up(spec)
    try:
        found = Placed(state, bearer(state.admin_key))
        with found.client() as client:
            for name in ("split", "quiet", "grows"):
                tenant = f"{name}{secrets.token_hex(2)}"
                made = client.post("/v1/tenants", json={"id": tenant}, headers=found.root)
                assert made.status_code == 201, made.text
                keys = []
                for role in ("writer", "reader"):
                    key = client.post(
                        f"/v1/tenants/{tenant}/keys", json={"role": role}, headers=found.root
                    )
                    keys.append(bearer(key.json()["key"]))
                found.keys[tenant] = (keys[0], keys[1])
                for i in range(10):
                    assert put(client, found, tenant, f"seed-{i}", wait=True).status_code == 200
        yield found
    finally:
        shutil.copytree(
            directory / "logs", tmp_path_factory.mktemp("placement-logs"), dirs_exist_ok=True
        )
        down(directory, purge=True)


@dataclass
class Load:
    """Searches of every tenant and writes to one, from threads, until stopped."""

    searches: int = 0
    failed: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    accepted: list[tuple[str, str, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)


def start_load(placed: Placed, writes_to: str, max_writes: int) -> Load:
    """Two searching clients over every tenant, one writer to ``writes_to``."""
    load = Load()
    lock = threading.Lock()
    tenants = sorted(placed.keys)

    def searcher(n: int) -> None:
        with placed.client() as client:
            i = 0
            while not load.stop.is_set():
                i += 1
                tenant = tenants[(n + i) % len(tenants)]
                query = f"{WORDS[(n + i) % len(WORDS)]} seed"
                try:
                    answer = client.post(
                        f"/v1/tenants/{tenant}/search",
                        json={"query": query, "k": 5},
                        headers=placed.keys[tenant][1],
                    )
                    hits = answer.json().get("hits") if answer.status_code == 200 else None
                    outcome = None if hits else f"{answer.status_code} {answer.text[:200]}"
                except httpx.HTTPError as exc:
                    hits, outcome = None, f"{type(exc).__name__}: {exc}"
                with lock:
                    load.searches += 1
                    if outcome:
                        load.failed.append(outcome)
                    for hit in hits or []:
                        if f"owner{tenant}" not in hit["text"]:
                            load.foreign.append(f"{tenant}: {hit['text'][:80]}")

    def writer() -> None:
        with placed.client() as client:
            for i in range(max_writes):
                if load.stop.is_set():
                    return
                # New documents and updates of the seeds, on every shard of a split.
                doc_id = f"seed-{i % 10}" if i % 3 == 0 else f"w{i}-{secrets.token_hex(3)}"
                try:
                    answer = put(client, placed, writes_to, doc_id, revision=f"rev{i}")
                except httpx.HTTPError:
                    continue  # not accepted: nothing was promised
                if answer.status_code != 202:
                    continue
                body = answer.json()
                load.accepted.append((writes_to, doc_id, body["version"]))
                # Read-your-writes across the move: the write's token finds its document.
                marker = f"marker{zlib.crc32(doc_id.encode())}"
                found = client.post(
                    f"/v1/tenants/{writes_to}/search",
                    json={
                        "query": marker,
                        "k": 3,
                        "mode": "keyword",
                        "read_concern": "session",
                        "write_token": body["write_token"],
                    },
                    headers=placed.keys[writes_to][1],
                )
                hits = found.json().get("hits") if found.status_code == 200 else None
                if not hits or hits[0]["doc_id"] != doc_id or f"rev{i}" not in hits[0]["text"]:
                    with lock:
                        load.failed.append(f"session read of {doc_id}: {found.text[:200]}")
                time.sleep(0.1)

    for n in range(2):
        load.threads.append(threading.Thread(target=searcher, args=(n,), daemon=True))
    load.threads.append(threading.Thread(target=writer, daemon=True))
    for thread in load.threads:
        thread.start()
    return load


def stop_load(load: Load) -> None:
    """Stop the load generator."""
    load.stop.set()
    for thread in load.threads:
        thread.join(timeout=120)


def live_at_least(placed: Placed, accepted: list[tuple[str, str, int]]) -> bool:
    """Whether every accepted write is live (at its version or a later one)."""
    with placed.client() as client:
        for tenant, doc_id, version in accepted:
            info = client.get(
                f"/v1/tenants/{tenant}/documents/{doc_id}", headers=placed.keys[tenant][1]
            )
            if info.status_code != 200:
                return False
            body = info.json()
            if body["state"] != "live" or body["version"] < version:
                return False
    return True


def hosted_by(placed: Placed, node_id: str) -> set[int]:
    """The shards a live node reports hosting."""
    nodes = placed.status()["nodes"]
    assert isinstance(nodes, list)
    return {r["shard"] for n in nodes if n["id"] == node_id for r in n["shards"]}


def hosted_replicas(placed: Placed, shard: int) -> list[str]:
    """The live nodes that report hosting ``shard``."""
    nodes = placed.status()["nodes"]
    assert isinstance(nodes, list)
    return sorted(n["id"] for n in nodes if shard in {r["shard"] for r in n["shards"]})


def tenant_named(placed: Placed, name: str) -> str:
    """The fixture's tenant whose id starts with ``name``."""
    return next(t for t in placed.keys if t.startswith(name))


def test_a_tenant_split_onto_dedicated_shards_under_load_loses_nothing(placed: Placed) -> None:
    tenant = tenant_named(placed, "split")
    load = start_load(placed, tenant, max_writes=24)
    try:
        time.sleep(2)
        with placed.client() as client:
            answer = client.post(
                f"/v1/admin/tenants/{tenant}/promote", json={"shards": 2}, headers=placed.root
            )
        assert answer.status_code == 202, answer.text
        assert answer.json()["phase"] in ("copying", "draining", "settled")
        wait_for(
            lambda: (placed.placement(tenant) or {}).get("phase") == "settled",
            300,
            f"tenant {tenant} to settle on its dedicated shards",
        )
    finally:
        stop_load(load)
    assert load.searches > 20
    assert load.failed == []
    assert load.foreign == []
    assert load.accepted, "the writer got nothing accepted"
    wait_for(lambda: live_at_least(placed, load.accepted), 120, "every accepted write to be live")

    placement = placed.placement(tenant)
    assert placement is not None
    dedicated = placement["shards"]
    assert isinstance(dedicated, list) and len(dedicated) == 2
    assert all(s >= 2 for s in dedicated)  # not the layout's shared shards 0 and 1
    # Its documents are all there, spread over both shards, each found by its marker.
    with placed.client() as client:
        for doc_id in ["seed-3", *[d for _, d, _ in load.accepted[-4:]]]:
            marker = f"marker{zlib.crc32(doc_id.encode())}"
            hits = client.post(
                f"/v1/tenants/{tenant}/search",
                json={"query": marker, "k": 3, "mode": "keyword"},
                headers=placed.keys[tenant][1],
            ).json()["hits"]
            assert [h["doc_id"] for h in hits][:1] == [doc_id], hits

    # Its searches now reach only its dedicated shards (the nodes' counters).
    time.sleep(3)  # a heartbeat carries the counters
    before = placed.searches()
    with placed.client() as client:
        for i in range(20):
            answer = client.post(
                f"/v1/tenants/{tenant}/search",
                json={"query": WORDS[i % len(WORDS)], "k": 5},
                headers=placed.keys[tenant][1],
            )
            assert answer.status_code == 200, answer.text
    time.sleep(3)
    after = placed.searches()
    grew = {s for s in after if after[s] > before.get(s, 0)}
    assert grew == set(dedicated), (before, after)


def test_a_replica_moved_to_another_node_under_load_serves_without_a_gap(placed: Placed) -> None:
    tenant = tenant_named(placed, "quiet")
    status = placed.status()
    shards = status["shards"]
    assert isinstance(shards, list)
    shard = next(s for s in shards if s["shard"] == 0)
    holders = list(shard["replicas"])
    spare = next(n for n in ("node-1", "node-2", "node-3") if n not in holders)
    load = start_load(placed, tenant, max_writes=12)
    try:
        time.sleep(1)
        moved = placed.cli("move-replica", "--shard", "0", "--from", holders[0], "--to", spare)
    finally:
        stop_load(load)
    assert sorted(moved["replicas"]) == sorted([holders[1], spare])  # type: ignore[arg-type]
    assert load.failed == []
    assert load.foreign == []
    wait_for(lambda: live_at_least(placed, load.accepted), 120, "every accepted write to be live")
    wait_for(lambda: 0 not in hosted_by(placed, holders[0]), 60, f"{holders[0]} to give up shard 0")
    assert 0 in hosted_by(placed, spare)
    # A rebalance plan of a balanced cluster moves nothing it should not: every node ends
    # within one replica of the others.
    plan = placed.cli("rebalance", "--dry-run")
    assert plan["dry_run"] is True


def test_a_tenant_past_the_size_threshold_is_promoted_on_its_own(placed: Placed) -> None:
    tenant = tenant_named(placed, "grows")
    with placed.client() as client:
        for i in range(THRESHOLD):
            assert put(client, placed, tenant, f"grow-{i}").status_code == 202
    wait_for(
        lambda: (placed.placement(tenant) or {}).get("phase") == "settled",
        300,
        f"tenant {tenant} to be promoted past {THRESHOLD} chunks",
    )
    placement = placed.placement(tenant)
    assert placement is not None
    assert len(placement["shards"]) == 1 and placement["shards"][0] >= 2  # type: ignore[arg-type,index]
    with placed.client() as client:
        marker = f"marker{zlib.crc32(b'grow-7')}"
        hits = client.post(
            f"/v1/tenants/{tenant}/search",
            json={"query": marker, "k": 3, "mode": "keyword", "read_concern": "strong"},
            headers=placed.keys[tenant][1],
        ).json()["hits"]
        assert hits and hits[0]["doc_id"] == "grow-7"
        assert all(f"owner{tenant}" in h["text"] for h in hits)

    with placed.client() as client:
        missing = []
        for i in range(THRESHOLD):
            doc_id = f"grow-{i}"
            marker = f"marker{zlib.crc32(doc_id.encode())}"
            found = client.post(
                f"/v1/tenants/{tenant}/search",
                json={"query": marker, "k": 3, "mode": "keyword"},
                headers=placed.keys[tenant][1],
            ).json()["hits"]
            if not found or found[0]["doc_id"] != doc_id:
                missing.append(doc_id)
        assert missing == [], "after the promotion"

    # The CLI on a settled tenant changes nothing.
    again = placed.cli("promote-tenant", tenant)
    assert again["shards"] == placement["shards"] and again["phase"] == "settled"

    # The dedicated tenant split in two (CLI) while it is written to: every document, the old
    # and the new, is found on its new shard afterwards, on every replica.
    writer = threading.Thread(target=put_during, args=(placed, tenant, "late", 15), daemon=True)
    writer.start()
    split = placed.cli("promote-tenant", tenant, "--shards", "2")
    writer.join(timeout=300)
    assert split["phase"] == "settled" and len(split["shards"]) == 2  # type: ignore[arg-type]
    assert not set(split["shards"]) & set(placement["shards"])  # type: ignore[arg-type]
    docs = [f"grow-{i}" for i in range(THRESHOLD)] + [f"late-{i}" for i in range(15)]
    wait_for(lambda: live_at_least(placed, [(tenant, d, 1) for d in docs]), 120, "the late writes")
    shards = split["shards"]
    assert isinstance(shards, list)
    # Each new shard's second replica shows in its node's next heartbeat.
    wait_for(
        lambda: all(len(hosted_replicas(placed, shard)) == 2 for shard in shards),
        60,
        f"both replicas of shards {shards} to be hosted",
    )
    replicas = {shard: hosted_replicas(placed, shard) for shard in shards}
    assert all(len(nodes) == 2 for nodes in replicas.values()), replicas
    deadline = time.monotonic() + 60  # a replica may apply the last writes a moment later
    while wrong := [d for d in docs if not found_on_every_replica(placed, tenant, replicas, d)]:
        assert time.monotonic() < deadline, f"after the split, not on every replica: {wrong}"
        time.sleep(1)
    # Split again only into a multiple of its shards (each new shard has one old one as its
    # source); never merged.
    refused = placed.cli_error("promote-tenant", tenant, "--shards", "3")
    assert refused["error"]["code"] == "invalid_parameter", refused  # type: ignore[index]


def put_during(placed: Placed, tenant: str, prefix: str, count: int) -> None:
    """Write ``count`` new documents of ``tenant``, one every 0.3 s (asserting each accepted)."""
    with placed.client() as client:
        for i in range(count):
            assert put(client, placed, tenant, f"{prefix}-{i}").status_code == 202
            time.sleep(0.3)


def found_on_every_replica(
    placed: Placed, tenant: str, replicas: dict[int, list[str]], doc_id: str
) -> bool:
    """Whether every replica of the shard ``doc_id`` belongs to (its shards in order:
    ``replicas``) finds it by its marker, asked by name over NATS, and no replica of the
    tenant's other shards does."""
    shards = list(replicas)
    home = shards[zlib.crc32(doc_id.encode()) % len(shards)]
    marker = f"marker{zlib.crc32(doc_id.encode())}"
    for shard, nodes in replicas.items():
        for node in nodes:
            call = SearchCall(
                ShardQuery(tenant, SearchMode.KEYWORD, 3, marker, fusion=Fusion.RRF), shard
            )
            hits = [h.doc_id for h in ask_replica(placed.state, call, node)]
            if (doc_id in hits) != (shard == home):
                return False
    return True
