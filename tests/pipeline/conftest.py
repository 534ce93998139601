"""Fixtures of the write pipeline's tests: the log backend under test (SQLite or NATS)."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import require

NATS_URL = "nats://127.0.0.1:4222"


def nats_is_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(params=["sqlite", "nats"])
def log_settings(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Settings that put the durable log on SQLite (the data dir) or on the real NATS server.

    NATS runs on streams of this test's own prefix, deleted afterwards.
    """
    if request.param == "sqlite":
        yield {}
        return
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
