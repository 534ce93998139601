"""Fixtures of the API tests: an app over a fresh data dir, in-process or on a real port.

With ``SHARDRAG_TEST_CLUSTER=<dir>`` (a directory of ``shardrag cluster up``, holding
cluster.json) the ``api`` and ``live_server`` fixtures target that cluster instead: requests go
over HTTP to its api processes, with its root key, and ``.rag`` is an api core of this process
connected to the same cluster (it hosts no shard and runs no stage), for the tests that read
the registry or the app's schema. Tests marked ``in_process`` are skipped there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.support import served

from shardrag import Shardrag
from shardrag.api import create_app
from shardrag.cluster.launcher import ClusterState
from shardrag.cluster.protocol import SearchCall, SearchReply, search_subject
from shardrag.config import Settings
from shardrag.models import SearchMode, ShardQuery
from shardrag.pipeline.events import shard_subject

ROOT_KEY = "root-key-for-the-test-suite-0123456789"
#: A directory of ``shardrag cluster up``: when set, the API tests run against that cluster.
CLUSTER_DIR = os.environ.get("SHARDRAG_TEST_CLUSTER") or None
HERE = Path(__file__).resolve().parent


def bearer(key: str) -> dict[str, str]:
    """The Authorization header of ``key``."""
    return {"Authorization": f"Bearer {key}"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Against a cluster, skip the tests of this directory marked ``in_process``."""
    if CLUSTER_DIR is None:
        return
    for item in items:
        marker = item.get_closest_marker("in_process")
        if marker is None or HERE not in Path(item.path).resolve().parents:
            continue
        why = marker.kwargs.get("reason", "it needs the served app in this process")
        item.add_marker(pytest.mark.skip(reason=f"in_process, not against a cluster: {why}"))


@dataclass
class ApiUnderTest:
    """An app over its own data dir, a client of it, and helpers to make tenants and keys.

    Against a cluster: ``client`` is an ``httpx.Client`` of the cluster's api (``url``),
    ``root`` bears the cluster's admin key, and ``rag``/``app`` are this process's api core
    of the same cluster (not the processes that answer ``client``).
    """

    rag: Shardrag
    app: FastAPI
    client: httpx.Client
    root: dict[str, str] = field(default_factory=lambda: bearer(ROOT_KEY))
    #: The base URL of the api processes that ``client`` talks to; None: in-process.
    url: str | None = None

    def tenant(self, tenant_id: str) -> dict[str, dict[str, str]]:
        """Create ``tenant_id`` with one key per role; the headers of each role's key."""
        created = self.client.post(
            "/v1/tenants", json={"id": tenant_id, "name": tenant_id.title()}, headers=self.root
        )
        assert created.status_code == 201, created.text
        return {role: bearer(self.key(tenant_id, role)) for role in ("admin", "writer", "reader")}

    def key(self, tenant_id: str, role: str) -> str:
        """A new key of the tenant (made with the root key)."""
        made = self.client.post(
            f"/v1/tenants/{tenant_id}/keys", json={"role": role}, headers=self.root
        )
        assert made.status_code == 201, made.text
        key: str = made.json()["key"]
        return key


def settle_replicas(rag: Shardrag, timeout: float = 30.0) -> None:
    """Wait until every live replica of every shard has applied its log up to the head.

    A write is live once one replica of its shard applied it; the shard's other replica may
    lag a moment, and an eventual search it answers shows the older state (and is not cached:
    the router caches only results of replicas at the log head). Each replica is asked by
    name, as the router does, with the head as the offset it must have applied.
    """
    conn = rag.backends.nats
    assert rag.settings.cluster and conn is not None, (
        "settle_replicas needs an api core of a cluster"
    )
    prefix = rag.settings.log_prefix
    deadline = time.monotonic() + timeout
    for shard_id in range(rag.layout.shards):
        head = rag.log.last_sequence(shard_subject(shard_id))
        alive = {node.node_id for node in rag.shard_map.nodes()}
        for node_id in rag.shard_map.replicas(shard_id).nodes:
            if node_id not in alive:
                continue
            while True:
                wait = max(0.0, min(5.0, deadline - time.monotonic()))
                probe = SearchCall(
                    ShardQuery("settle", SearchMode.KEYWORD, 1, "settle"),
                    shard_id=shard_id,
                    min_applied=head,
                    wait_seconds=wait,
                )
                subject = search_subject(prefix, shard_id, node_id)
                message = conn.run(
                    conn.client.request(subject, probe.encode(), timeout=wait + 2.0),
                    timeout=wait + 5.0,
                )
                reply = SearchReply.decode(message.data)
                if reply.applied >= head:
                    break
                assert time.monotonic() < deadline, (
                    f"{node_id} applied shard {shard_id} to {reply.applied}, the head is {head}"
                )


def _settle_after_a_write(rag: Shardrag) -> Callable[[httpx.Response], None]:
    """An httpx response hook: after a decided document write, let every replica apply it.

    The suite reads its waiting writes back with eventual searches, as a client of one
    replica may; in a cluster each replica must have applied them first.
    """

    def hook(response: httpx.Response) -> None:
        request = response.request
        if (
            request.method in ("PUT", "DELETE")
            and "/documents/" in request.url.path
            and response.status_code == 200
        ):
            settle_replicas(rag)

    return hook


def open_api(data_dir: Path, **settings: Any) -> ApiUnderTest:
    """An ``ApiUnderTest`` over ``data_dir`` (close ``.rag`` when done)."""
    settings = {"shards": 2, "admin_key": ROOT_KEY, "rate_limit_per_second": 0, **settings}
    rag = Shardrag.open(data_dir, **settings)
    app = create_app(rag)
    return ApiUnderTest(rag, app, TestClient(app, raise_server_exceptions=False))


@dataclass
class Cluster:
    """The cluster under test and this process's api core connected to it."""

    state: ClusterState
    rag: Shardrag


def cluster_settings(state: ClusterState, data_dir: Path, **overrides: Any) -> Settings:
    """The settings of an api core of ``state``'s cluster over ``data_dir`` (its own files)."""
    values = {
        name.removeprefix("SHARDRAG_").lower(): value
        for name, value in state.env_overrides.items()
        if name.startswith("SHARDRAG_")
    }
    return Settings.load(**{**values, "data_dir": data_dir, **overrides})


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster | None]:
    """The cluster of ``SHARDRAG_TEST_CLUSTER`` (None without it), with an api core of it here."""
    if CLUSTER_DIR is None:
        yield None
        return
    state = ClusterState.load(Path(CLUSTER_DIR))
    data_dir = tmp_path_factory.mktemp("cluster-core") / "data"
    rag = Shardrag(cluster_settings(state, data_dir, stages="none"))
    try:
        yield Cluster(state, rag)
    finally:
        rag.close()


def _tenants(client: httpx.Client, root: dict[str, str]) -> set[str]:
    listed = client.get("/v1/tenants", headers=root)
    assert listed.status_code == 200, listed.text
    return {t["id"] for t in listed.json()["tenants"]}


@pytest.fixture(scope="module")
def cluster_cleanup(cluster: Cluster | None) -> Iterator[None]:
    """Against a cluster: delete, after the module, every tenant it created (root key).

    The cluster outlives the module, and another module may use the same tenant ids.
    """
    if cluster is None:
        yield
        return
    root = bearer(cluster.state.admin_key)
    with httpx.Client(base_url=cluster.state.api_url, timeout=120) as client:
        before = _tenants(client, root)
        yield
        for tenant in sorted(_tenants(client, root) - before):
            gone = client.delete(f"/v1/tenants/{tenant}", headers=root)
            assert gone.status_code in (200, 404), f"deleting tenant {tenant}: {gone.text}"


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, cluster: Cluster | None, cluster_cleanup: None
) -> Iterator[ApiUnderTest]:
    """One app per test module (the model loads once); tests use their own tenants."""
    if cluster is not None:
        state = cluster.state
        client = httpx.Client(
            base_url=state.api_url,
            timeout=120,
            event_hooks={"response": [_settle_after_a_write(cluster.rag)]},
        )
        try:
            yield ApiUnderTest(
                cluster.rag,
                create_app(cluster.rag),
                client,
                root=bearer(state.admin_key),
                url=state.api_url,
            )
        finally:
            client.close()
        return
    under_test = open_api(tmp_path_factory.mktemp("api") / "data")
    try:
        yield under_test
    finally:
        under_test.client.close()
        under_test.rag.close()


@dataclass
class LiveServer:
    """A real HTTP server (uvicorn on a loopback port) over its own data dir.

    Against a cluster: the cluster's api, its admin key, and this process's api core of it.
    """

    url: str
    admin_key: str
    rag: Shardrag
    #: Whether ``url`` is a cluster's api (``rag`` is then this process's api core of it).
    cluster: bool = False

    def settle(self) -> None:
        """Against a cluster: let every replica apply the writes made so far (see
        ``settle_replicas``). In-process the one replica has applied every decided write."""
        if self.cluster:
            settle_replicas(self.rag)


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, cluster: Cluster | None, cluster_cleanup: None
) -> Iterator[LiveServer]:
    """``shardrag serve`` in-process on a free port (uvicorn in a thread), or the cluster's."""
    if cluster is not None:
        yield LiveServer(cluster.state.api_url, cluster.state.admin_key, cluster.rag, True)
        return
    rag = Shardrag.open(
        tmp_path_factory.mktemp("live") / "data",
        shards=2,
        admin_key=ROOT_KEY,
        rate_limit_per_second=0,
    )
    try:
        with served(create_app(rag)) as url:
            yield LiveServer(url, ROOT_KEY, rag)
    finally:
        rag.close()
