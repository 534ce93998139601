"""The command line, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shardrag import Shardrag
from shardrag.cli import app

runner = CliRunner()


def cli(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def cli_json(*args: str | Path) -> dict:  # type: ignore[type-arg]
    code, out, err = cli(*args, "--json")
    assert code == 0, err or out
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "guides").mkdir(parents=True)
    (root / "guides" / "replication.md").write_text(
        "# Replication\n\nEvery shard has three replicas applying one ordered log.\n"
    )
    (root / "failover.txt").write_text("When a node fails, queries move to another replica.\n")
    (root / "page.html").write_text(
        "<html><nav>Home | About</nav><main><h1>Backups</h1><p>Snapshots go to object "
        "storage every night.</p></main><script>track()</script></html>"
    )
    (root / ".hidden.md").write_text("secret notes")
    (root / "image.png").write_bytes(b"\x89PNG\r\n")
    return root


def test_ingest_a_folder_uses_relative_paths_as_ids(tmp_path: Path, folder: Path) -> None:
    data = tmp_path / "data"
    report = cli_json("ingest", folder, "--tenant", "acme", "--data-dir", data)
    outcomes = {f["doc_id"]: f["outcome"] for f in report["files"]}
    assert outcomes == {
        "failover.txt": "added",
        "guides/replication.md": "added",
        "page.html": "added",
    }
    again = cli_json("ingest", folder, "--tenant", "acme", "--data-dir", data)
    assert {f["outcome"] for f in again["files"]} == {"unchanged"}
    (folder / "failover.txt").write_text("When a node fails, the router retries elsewhere.\n")
    third = cli_json("ingest", folder, "--tenant", "acme", "--data-dir", data)
    assert {f["doc_id"]: f["outcome"] for f in third["files"]}["failover.txt"] == "updated"


def test_ids_are_stable_across_ways_of_naming_a_file_and_prune_mirrors_a_folder(
    tmp_path: Path, folder: Path
) -> None:
    data = tmp_path / "data"
    common = ("--tenant", "acme", "--data-dir", data)
    first = cli_json("ingest", folder, *common, "--prefix", "kb/", "--metadata", "source=wiki")
    assert {f["doc_id"] for f in first["files"]} == {
        "kb/failover.txt",
        "kb/guides/replication.md",
        "kb/page.html",
    }
    # The same file named directly, with the same root: the same document, unchanged.
    one = folder / "guides" / "replication.md"
    again = cli_json(
        "ingest", one, *common, "--root", folder, "--prefix", "kb/", "--metadata", "source=wiki"
    )
    assert [(f["doc_id"], f["outcome"]) for f in again["files"]] == [
        ("kb/guides/replication.md", "unchanged")
    ]
    named = cli_json("ingest", one, *common, "--id", "kb/guides/replication.md")
    assert [f["doc_id"] for f in named["files"]] == ["kb/guides/replication.md"]
    code, out, _ = cli("ingest", folder, *common, "--id", "x", "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "invalid_parameter"
    code, out, _ = cli("ingest", one, *common, "--root", tmp_path / "elsewhere", "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "invalid_parameter"
    outside = cli_json("ingest", one, *common, "--id", "notes/keep.md")
    assert outside["files"][0]["outcome"] == "added"
    # A file removed from the folder: --prune deletes its document, nothing outside kb/.
    (folder / "page.html").unlink()
    pruned = cli_json(
        "ingest", folder, *common, "--prefix", "kb/", "--prune", "--metadata", "source=wiki"
    )
    outcomes = {f["doc_id"]: f["outcome"] for f in pruned["files"]}
    assert outcomes["kb/page.html"] == "pruned"
    listed = cli_json("docs", *common)
    live = {d["doc_id"]: d for d in listed["documents"]}
    assert set(live) == {"kb/failover.txt", "kb/guides/replication.md", "notes/keep.md"}
    assert live["kb/failover.txt"]["metadata"] == {"source": "wiki"}


def test_a_file_that_failed_is_not_tried_again_unchanged_and_docs_lists_it_failed(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    common = ("--tenant", "acme", "--data-dir", data)
    report = tmp_path / "report.pdf"
    report.write_text("A text file with a .pdf name would fail to parse.")
    (tmp_path / "notes.txt").write_text("Replicas apply the log in order.")
    cli_json("ingest", tmp_path / "notes.txt", *common)
    # notes.txt becomes broken: its live version 1 stays, version 2 fails.
    (tmp_path / "notes.txt").write_bytes(b"\x00\x01\x02 binary \x00" * 50)
    for _ in range(2):
        code, _, _ = cli("ingest", report, tmp_path / "notes.txt", *common, "--json")
        assert code == 1
    with Shardrag.open(data) as rag:
        assert rag.get_document("acme", "report.pdf").latest.version == 1
        notes = rag.get_document("acme", "notes.txt")
        assert (notes.version, notes.latest.version) == (1, 2)
    failed = cli_json("docs", *common, "--state", "failed")
    assert {d["doc_id"] for d in failed["documents"]} == {"report.pdf", "notes.txt"}


def test_version_flag() -> None:
    code, out, _ = cli("--version")
    assert code == 0 and out.strip().startswith("shardrag ")


def test_json_is_shown_as_a_flag() -> None:
    code, out, _ = cli("query", "--help")
    assert code == 0
    line = next(row for row in out.splitlines() if "--json" in row)
    assert "<bool>" not in line and "machine-readable" in line


def test_a_usage_error_under_json_is_json() -> None:
    """As the installed script runs it: a missing option is a JSON error, exit code 2."""
    done = subprocess.run(
        [sys.executable, "-m", "shardrag", "query", "replicas", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "usage_error" and "--tenant" in error["message"]


def test_ingest_reports_each_failed_file_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_text("Replicas apply the log in order.")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    code, out, _ = cli(
        "ingest",
        tmp_path / "ok.txt",
        tmp_path / "broken.pdf",
        "--tenant",
        "acme",
        "--data-dir",
        tmp_path / "data",
        "--json",
    )
    assert code == 1
    files = {f["doc_id"]: f for f in json.loads(out)["files"]}
    assert files["ok.txt"]["outcome"] == "added"
    assert files["broken.pdf"]["error"]["code"] == "unparseable_document"


def test_query_docs_delete(tmp_path: Path, folder: Path) -> None:
    data = tmp_path / "data"
    cli_json("ingest", folder, "--tenant", "acme", "--data-dir", data)
    hits = cli_json(
        "query",
        "how many replicas does a shard have?",
        "--tenant",
        "acme",
        "--data-dir",
        data,
        "--k",
        "2",
    )["hits"]
    assert hits[0]["doc_id"] == "guides/replication.md"
    assert set(hits[0]) >= {"doc_id", "version", "chunk_index", "text", "score", "metadata"}
    keyword = cli_json(
        "query", "snapshots", "--tenant", "acme", "--data-dir", data, "--mode", "keyword"
    )["hits"]
    assert [h["doc_id"] for h in keyword] == ["page.html"]
    assert "track()" not in keyword[0]["text"] and "Home" not in keyword[0]["text"]

    listed = cli_json("docs", "--tenant", "acme", "--data-dir", data)["documents"]
    assert [(d["doc_id"], d["version"], d["state"]) for d in listed] == [
        ("failover.txt", 1, "live"),
        ("guides/replication.md", 1, "live"),
        ("page.html", 1, "live"),
    ]
    cli_json("delete", "page.html", "--tenant", "acme", "--data-dir", data)
    assert (
        cli_json("query", "snapshots", "--tenant", "acme", "--data-dir", data, "--mode", "keyword")[
            "hits"
        ]
        == []
    )
    code, out, _ = cli("delete", "page.html", "--tenant", "acme", "--data-dir", data, "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "document_not_found"


def test_query_filters(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Shardrag.open(data) as rag:
        rag.put_document("acme", "ops", b"Replica runbook.", metadata={"team": "ops", "tier": 1})
        rag.put_document("acme", "dev", b"Replica design.", metadata={"team": "dev", "tier": 2})

    def ids(*filters: str) -> set[str]:
        args = [a for f in filters for a in ("--filter", f)]
        out = cli_json("query", "replica", "--tenant", "acme", "--data-dir", data, *args)
        return {h["doc_id"] for h in out["hits"]}

    assert ids("team=ops") == {"ops"}
    assert ids("tier=2") == {"dev"}
    assert ids("team=ops", "team=dev") == {"ops", "dev"}
    code, out, _ = cli(
        "query", "replica", "--tenant", "acme", "--data-dir", data, "--filter", "nonsense", "--json"
    )
    assert code == 2 and json.loads(out)["error"]["code"] == "invalid_parameter"


def test_ingest_with_access_groups_and_search_within_groups(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (tmp_path / "hr").mkdir()
    (tmp_path / "hr" / "pay.md").write_text("Replica of the payroll runbook for HR only.\n")
    (tmp_path / "open.md").write_text("Replica of the public runbook.\n")
    cli_json("ingest", tmp_path / "hr", "--tenant", "acme", "--data-dir", data, "--acl", "hr")
    cli_json("ingest", tmp_path / "open.md", "--tenant", "acme", "--data-dir", data)

    def ids(command: str, *groups: str) -> set[str]:
        args = [a for g in groups for a in ("--groups", g)]
        out = cli_json(command, "replica runbook", "--tenant", "acme", "--data-dir", data, *args)
        hits = out["hits"]
        return {h["doc_id"] for h in hits}

    assert ids("query") == {"pay.md", "open.md"}
    assert ids("query", "eng") == {"open.md"}
    assert ids("query", "eng,hr") == {"pay.md", "open.md"}
    assert ids("ask", "eng") == {"open.md"}
    code, out, _ = cli(
        "ask",
        "replica runbook",
        "--tenant",
        "acme",
        "--data-dir",
        data,
        "--filter",
        "x=1",
        "--json",
    )
    assert code == 0 and json.loads(out)["hits"] == []
    code, out, _ = cli("ask", "replica runbook", "--tenant", "acme", "--data-dir", data)
    assert code == 0 and "(extractive:" in out
    shown = cli_json("docs", "--tenant", "acme", "--data-dir", data)
    assert {d["doc_id"]: d["acl"] for d in shown["documents"]} == {"pay.md": ["hr"], "open.md": []}


def test_bad_input_gives_codes_and_exit_2(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Shardrag.open(data) as rag:
        rag.put_document("acme", "doc", b"Replicas.")
    code, out, _ = cli("query", "  ", "--tenant", "acme", "--data-dir", data, "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "empty_query"
    code, _, err = cli("query", "x", "--tenant", "Bad Tenant", "--data-dir", data)
    assert code == 2 and "invalid_tenant_id" in err
    code, out, _ = cli("query", "x", "--tenant", "nobody", "--data-dir", data, "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "tenant_not_found"
    code, out, _ = cli(
        "ingest", tmp_path / "missing", "--tenant", "acme", "--data-dir", data, "--json"
    )
    assert code == 2 and json.loads(out)["error"]["code"] == "invalid_parameter"


def test_demo_answers_from_the_bundled_corpus(tmp_path: Path) -> None:
    out = cli_json("demo", "--data-dir", tmp_path / "data")
    assert len(out["ingested"]) >= 6
    assert all(f["outcome"] == "added" for f in out["ingested"])
    assert out["hits"][0]["doc_id"] == "shard-replication.md"


def query_in_another_process(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardrag", "query", "replica", "--tenant", "acme", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_doctor_reports_the_runtime_it_picked_for_this_cpu() -> None:
    from shardrag.embed.runtime import choose_runtime

    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["embed_runtime"] == choose_runtime("auto")
    assert report["embed_runtime_setting"] == "auto"
    assert report["model_load_seconds"] > 0 and report["query_embed_ms"] > 0
    assert Path(report["graph"]).is_file()


def test_data_dir_env_var_and_a_busy_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Shardrag.open(data) as rag:
        rag.put_document("acme", "doc", b"Replicas apply the log.")
        env = {**os.environ, "SHARDRAG_DATA_DIR": str(data)}
        busy = query_in_another_process(env)
    assert busy.returncode == 1
    error = json.loads(busy.stdout)["error"]
    assert error["code"] == "data_dir_locked" and str(os.getpid()) in error["message"]
    free = query_in_another_process(env)
    assert free.returncode == 0, free.stderr
    assert json.loads(free.stdout)["hits"][0]["doc_id"] == "doc"


def shard_quantizations(data: Path) -> set[str]:
    """The quantization each shard of a data dir was made with (its engine settings file)."""
    return {
        json.loads(path.read_text()).get("quantization", "none")
        for path in data.rglob("shardrag-engine.json")
    }


def test_new_shards_are_int8_unless_configured_and_keep_theirs(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default, plain = tmp_path / "default", tmp_path / "plain"
    cli_json("ingest", folder, "--tenant", "acme", "--data-dir", default)
    assert shard_quantizations(default) == {"int8"}
    monkeypatch.setenv("SHARDRAG_QUANTIZATION", "none")
    cli_json("ingest", folder, "--tenant", "acme", "--data-dir", plain)
    assert shard_quantizations(plain) == {"none"}
    # The int8 shards, opened under "none", stay int8 and answer.
    hits = cli_json("query", "replicas", "--tenant", "acme", "--data-dir", default)["hits"]
    assert hits and shard_quantizations(default) == {"int8"}
    monkeypatch.setenv("SHARDRAG_QUANTIZATION", "fp4")
    code, out, err = cli("query", "replicas", "--tenant", "acme", "--data-dir", default)
    assert code != 0 and "quantization" in err + out
