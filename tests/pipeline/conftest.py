"""Fixtures of the write pipeline's tests: the log backend under test (SQLite or NATS)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ROOT_KEY
from tests.support import NATS_URL, free_port, nats_is_up, require


@pytest.fixture(params=["sqlite", "nats"])
def log_settings(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Settings that put the durable log on SQLite (the data dir) or on the real NATS server."""
    if request.param == "sqlite":
        yield {}
        return
    yield from _nats_settings()


@pytest.fixture
def nats_settings() -> Iterator[dict[str, Any]]:
    """Settings that put the durable log on the real NATS server."""
    yield from _nats_settings()


def _nats_settings() -> Iterator[dict[str, Any]]:
    # Streams of this test's own prefix, deleted afterwards.
    require(nats_is_up(), f"NATS JetStream at {NATS_URL}")
    prefix = f"t{secrets.token_hex(5)}"
    yield {"nats_url": NATS_URL, "log_prefix": prefix}
    from shardrag.log.nats import NatsLog

    cleanup = NatsLog(NATS_URL, prefix=prefix)
    cleanup.drop()
    cleanup.close()


def as_env(settings: dict[str, Any]) -> dict[str, str]:
    """The same settings as SHARDRAG_* environment variables (for a subprocess)."""
    return {f"SHARDRAG_{k.upper()}": str(v) for k, v in settings.items()}


class Server:
    """``shardrag serve`` as a subprocess over ``data_dir`` with ``settings`` (SHARDRAG_*)."""

    def __init__(self, data_dir: Path, settings: dict[str, Any]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "SHARDRAG_DATA_DIR": str(data_dir),
            "SHARDRAG_PORT": str(self.port),
            "SHARDRAG_ADMIN_KEY": ROOT_KEY,
            "SHARDRAG_RATE_LIMIT_PER_SECOND": "0",
            "SHARDRAG_RECONCILE_INTERVAL_SECONDS": "0",
            "HF_HUB_OFFLINE": "1",
            **as_env(settings),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shardrag", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(data_dir.parent / f"serve-{self.port}.log", "w"),  # noqa: SIM115
        )
        self.client = httpx.Client(base_url=self.url, timeout=120)
        deadline = time.monotonic() + 120
        while True:
            assert self.process.poll() is None, "serve exited on start"
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.2)

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.client.close()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=120) == 0
        self.client.close()
