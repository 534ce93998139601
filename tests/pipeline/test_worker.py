"""``shardrag worker --stage``: the ingest and embed stages as processes of their own on NATS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shardrag.cli import app as cli
from tests.api.conftest import ROOT_KEY, bearer
from tests.pipeline.conftest import Server, as_env
from tests.support import NATS_URL, nats_is_up, require


def start_worker(
    stage: str, data_dir: Path, settings: dict[str, Any], log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SHARDRAG_DATA_DIR": str(data_dir),
        "HF_HUB_OFFLINE": "1",
        **as_env(settings),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "shardrag", "worker", "--stage", stage],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
    )


@pytest.mark.timeout(300)
def test_separate_ingest_and_embed_workers_do_the_work_of_the_server(
    tmp_path: Path, nats_settings: dict[str, Any]
) -> None:
    data_dir = tmp_path / "data"
    settings = {**nats_settings, "stages": "index", "ack_wait_seconds": 10}
    server = Server(data_dir, settings)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        root = bearer(ROOT_KEY)
        server.client.post("/v1/tenants", json={"id": "w"}, headers=root)
        key = bearer(
            server.client.post("/v1/tenants/w/keys", json={"role": "writer"}, headers=root).json()[
                "key"
            ]
        )
        url = "/v1/tenants/w/documents/kelp.txt"
        put = server.client.put(url, content=b"Kelp forests shelter sea otters.", headers=key)
        assert put.status_code == 202
        time.sleep(1.5)
        # The server runs only the index stage: nothing parses or embeds the document.
        assert server.client.get(url, headers=key).json()["latest_state"] == "pending"

        for stage in ("ingest", "embed"):
            workers.append(start_worker(stage, data_dir, settings, tmp_path / f"{stage}.log"))
        deadline = time.monotonic() + 120
        while server.client.get(url, headers=key).json()["state"] != "live":
            assert time.monotonic() < deadline, [p.poll() for p in workers]
            time.sleep(0.1)
        waited = server.client.put(
            "/v1/tenants/w/documents/tides.txt",
            params={"wait": "true"},
            content=b"Tide tables for the northern harbour.",
            headers=key,
        )
        assert waited.status_code == 200 and waited.json()["state"] == "live", waited.text
        hits = server.client.post(
            "/v1/tenants/w/search", json={"query": "sea otters kelp", "k": 2}, headers=key
        ).json()["hits"]
        assert hits[0]["doc_id"] == "kelp.txt"
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        assert [w.wait(timeout=60) for w in workers] == [0, 0]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        server.stop()


def test_a_worker_without_nats_is_refused() -> None:
    result = CliRunner().invoke(cli, ["worker", "--stage", "ingest"], env={"SHARDRAG_NATS_URL": ""})
    assert result.exit_code == 2
    assert "SHARDRAG_NATS_URL" in result.output


def test_an_unknown_stage_is_refused() -> None:
    require(nats_is_up(), f"NATS JetStream at {NATS_URL}")
    result = CliRunner().invoke(cli, ["worker", "--stage", "polish", "--nats-url", NATS_URL])
    assert result.exit_code == 2 and "stage must be one of" in result.output
