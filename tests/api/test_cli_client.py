"""The CLI as a client: ingest, query, docs, delete against a server, same output as embedded."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.api.conftest import LiveServer, bearer
from tests.support import free_port
from typer.testing import CliRunner

from shardrag.cli import app
from shardrag.models import WriteToken

runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout


@pytest.fixture(scope="module")
def writer_key(live_server: LiveServer) -> str:
    root = bearer(live_server.admin_key)
    created = httpx.post(f"{live_server.url}/v1/tenants", json={"id": "cli"}, headers=root)
    assert created.status_code in (201, 409), created.text
    made = httpx.post(
        f"{live_server.url}/v1/tenants/cli/keys", json={"role": "writer"}, headers=root
    )
    key: str = made.json()["key"]
    return key


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "guides").mkdir(parents=True)
    (root / "guides" / "replication.md").write_text(
        "# Replication\n\nEvery shard has three replicas applying one ordered log.\n"
    )
    (root / "failover.txt").write_text("When a node fails, queries move to another replica.\n")
    (root / "broken.pdf").write_bytes(b"%PDF-1.7 not really")
    return root


def test_remote_commands_print_what_the_embedded_ones_print(
    live_server: LiveServer, writer_key: str, folder: Path, tmp_path: Path
) -> None:
    remote = ("--url", live_server.url, "--api-key", writer_key)
    local = ("--data-dir", tmp_path / "data")
    outputs: dict[str, list[Any]] = {"remote": [], "local": []}
    for side, where in (("remote", remote), ("local", local)):
        steps = [
            ("ingest", folder, "--tenant", "cli", "--json"),
            ("query", "how many replicas", "--tenant", "cli", "--k", "2", "--json"),
            ("docs", "--tenant", "cli", "--state", "live", "--json"),
            ("delete", "failover.txt", "--tenant", "cli", "--json"),
            ("docs", "--tenant", "cli"),
            (
                "ask",
                "how many replicas?",
                "--tenant",
                "cli",
                "--mode",
                "keyword",
                "--stream",
                "--json",
            ),
            ("ask", "how many replicas?", "--tenant", "cli", "--mode", "dense", "--stream"),
        ]
        for step in steps:
            code, out = run(*step, *where)
            parsed = "--json" in step and "--stream" not in step  # a stream is JSON lines
            outputs[side].append((code, json.loads(out) if parsed else out))
            live_server.settle()  # a cluster's next eventual read may reach any replica
    remote_out, local_out = outputs["remote"], outputs["local"]
    assert remote_out[0][0] == local_out[0][0] == 1  # the broken pdf fails the ingest
    for files in (remote_out[0][1]["files"], local_out[0][1]["files"]):
        for f in files:
            f.pop("path")
            f.pop("write_token", None)  # a position in each server's own log
    assert remote_out[0] == local_out[0]
    remote_hits, local_hits = remote_out[1][1]["hits"], local_out[1][1]["hits"]
    assert [(h["doc_id"], h["text"]) for h in remote_hits] == [
        (h["doc_id"], h["text"]) for h in local_hits
    ]
    assert [h["score"] for h in remote_hits] == pytest.approx([h["score"] for h in local_hits])
    # The delete's token names the same write; its commit position is in each server's own log.
    tokens = [WriteToken.decode(out[3][1].pop("write_token")) for out in (remote_out, local_out)]
    assert [dataclasses.replace(t, position=None) for t in tokens] == [
        dataclasses.replace(tokens[1], position=None)
    ] * 2
    assert all(t.position for t in tokens)
    assert remote_out[2:5] == local_out[2:5]
    assert "guides/replicati" in remote_out[4][1] and "failover" not in remote_out[4][1]
    # A streamed answer over the api: one JSON event a line (the model's pieces would come
    # as deltas), the same answer as embedded, in the mode asked for.
    answers = []
    for keyword, dense in ((remote_out[5], remote_out[6]), (local_out[5], local_out[6])):
        assert keyword[0] == dense[0] == 0
        events = [json.loads(line) for line in keyword[1].splitlines()]
        assert [e["event"] for e in events] == ["context", "delta", "done"]
        assert events[0]["generated"] is False
        done = events[-1]
        assert "three replicas" in done["answer"] and done["answer"] == events[1]["text"]
        assert [c["doc_id"] for c in done["citations"]] == ["guides/replication.md"]
        answers.append(done["answer"])
        assert dense[1].startswith("A: ") and "three replicas" in dense[1]
        assert "(extractive:" in dense[1] and "[1] guides/replication.md v1" in dense[1]
    assert answers[0] == answers[1]


def test_remote_errors_keep_their_codes_and_exit_status(
    live_server: LiveServer, writer_key: str
) -> None:
    code, out = run(
        "delete",
        "never-was.txt",
        "--tenant",
        "cli",
        "--json",
        "--url",
        live_server.url,
        "--api-key",
        writer_key,
    )
    assert code == 1 and json.loads(out)["error"]["code"] == "document_not_found"
    code, out = run(
        "query",
        "x",
        "--tenant",
        "other",
        "--json",
        "--url",
        live_server.url,
        "--api-key",
        writer_key,
    )
    assert json.loads(out)["error"]["code"] == "tenant_not_found"
    code, out = run(
        "query",
        "x",
        "--tenant",
        "cli",
        "--json",
        "--url",
        live_server.url,
        "--api-key",
        "srk_bad_key",
    )
    assert json.loads(out)["error"]["code"] == "unauthorized"


def test_serve_starts_prints_a_root_key_once_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "SHARDRAG_DATA_DIR": str(tmp_path / "data")}
    env.pop("SHARDRAG_ADMIN_KEY", None)
    port = free_port()
    server = subprocess.Popen(
        [Path(sys.executable).parent / "shardrag", "serve", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: list[str] = []
        assert server.stderr is not None
        deadline = time.monotonic() + 120
        while not any("serving" in line for line in lines) and time.monotonic() < deadline:
            lines.append(server.stderr.readline())
        text = "".join(lines)
        assert "root key" in text and "srk_" in text, text
        key = next(line.strip() for line in lines if line.startswith("srk_"))
        while True:
            try:
                me = httpx.get(f"http://127.0.0.1:{port}/v1/whoami", headers=bearer(key))
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.1)
        assert me.json()["role"] == "root"
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
