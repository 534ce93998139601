"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from psycopg import sql

REPO_ROOT = Path(__file__).resolve().parents[1]
CISI_DIR = REPO_ROOT.parent / "shared" / "datasets" / "cisi"


NATS_URL = "nats://127.0.0.1:4222"


def nats_is_up() -> bool:
    """Whether the machine's NATS server answers on 127.0.0.1:4222."""
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=1):
            return True
    except OSError:
        return False


REDIS_URL = os.environ.get("SHARDRAG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_is_up() -> bool:
    """Whether the Redis server at ``REDIS_URL`` answers a PING."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


POSTGRES_URL = os.environ.get("SHARDRAG_TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/postgres")


def postgres_is_up() -> bool:
    """Whether the PostgreSQL server of ``POSTGRES_URL`` accepts a connection."""
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create a fresh database on ``POSTGRES_URL``'s server; yield its URL; drop it after."""
    name = f"shardrag_test_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield urlsplit(POSTGRES_URL)._replace(path=f"/{name}").geturl()
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def require(condition: bool, reason: str) -> None:
    """Skip locally when a prerequisite is missing; fail under CI=true, where it must exist."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


def require_own_servers() -> None:
    """Require what a cluster needs to run its own Redis and PostgreSQL (``own_redis``,
    ``own_postgres``): redis-server, PostgreSQL's server binaries and, as root, a ``postgres``
    user to run PostgreSQL as, and setpriv."""
    from shardrag.cluster.launcher import find_postgres_bin, find_redis_server

    require(find_redis_server() is not None, "redis-server (Debian package redis-server)")
    require(find_postgres_bin() is not None, "PostgreSQL's server (Debian package postgresql)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
            user = True
        except KeyError:
            user = False
        require(user, "a 'postgres' user (root runs PostgreSQL as it)")
        require(shutil.which("setpriv") is not None, "setpriv (Debian package util-linux)")


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port in a thread; yield ``http://127.0.0.1:PORT``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll interval keeps shutdown() from waiting half a second per test.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler for fake endpoints: one call to reply, no access log on stderr."""

    def reply(self, content_type: str, payload: bytes) -> None:
        """Answer 200 with ``payload``."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


def free_port() -> int:
    """A loopback port free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_healthy(url: str, alive: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait until ``url``'s ``/healthz`` answers 200; fail if ``alive()`` turns false (the
    server died) or ``timeout`` passes first."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if not alive():
            raise RuntimeError(f"the server at {url} stopped before it was healthy")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server at {url} was not healthy within {timeout:g} s")
        time.sleep(0.05)


@contextmanager
def served(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port, in a thread; its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, thread.is_alive)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_until(condition: Callable[[], bool], timeout: float, every: float = 0.02) -> bool:
    """Whether ``condition()`` came true within ``timeout`` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)
    return True
