"""Fixtures of the API tests: an app over a fresh data dir, in-process or on a real port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shardrag import Shardrag
from shardrag.api import create_app

ROOT_KEY = "root-key-for-the-test-suite-0123456789"


def bearer(key: str) -> dict[str, str]:
    """The Authorization header of ``key``."""
    return {"Authorization": f"Bearer {key}"}


@dataclass
class ApiUnderTest:
    """An app over its own data dir, a client of it, and helpers to make tenants and keys."""

    rag: Shardrag
    app: FastAPI
    client: TestClient
    root: dict[str, str] = field(default_factory=lambda: bearer(ROOT_KEY))

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


def open_api(data_dir: Path, **settings: Any) -> ApiUnderTest:
    """An ``ApiUnderTest`` over ``data_dir`` (close ``.rag`` when done)."""
    settings = {"shards": 2, "admin_key": ROOT_KEY, "rate_limit_per_second": 0, **settings}
    rag = Shardrag.open(data_dir, **settings)
    app = create_app(rag)
    return ApiUnderTest(rag, app, TestClient(app, raise_server_exceptions=False))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiUnderTest]:
    """One app per test module (the model loads once); tests use their own tenants."""
    under_test = open_api(tmp_path_factory.mktemp("api") / "data")
    try:
        yield under_test
    finally:
        under_test.client.close()
        under_test.rag.close()


@dataclass
class LiveServer:
    """A real HTTP server (uvicorn on a loopback port) over its own data dir."""

    url: str
    admin_key: str
    rag: Shardrag


def free_port() -> int:
    """A loopback port free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``shardrag serve`` in-process on a free port (uvicorn in a thread)."""
    rag = Shardrag.open(
        tmp_path_factory.mktemp("live") / "data",
        shards=2,
        admin_key=ROOT_KEY,
        rate_limit_per_second=0,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(rag), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(url, ROOT_KEY, rag)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        rag.close()
