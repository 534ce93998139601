"""Nothing committed is lost: across close, across SIGKILL, and the data dir is exclusive."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shardrag import Shardrag, VersionState
from shardrag.errors import DataDirLocked

DOC = b"Every shard has three replicas that apply one ordered log."


def run_child(script: str, data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_reopening_after_close_finds_every_document(tmp_path: Path) -> None:
    with Shardrag.open(tmp_path / "d", shards=2) as rag:
        for i in range(12):
            rag.put_document(f"t{i % 3}", f"doc{i}", DOC + f" number {i}".encode())
        rag.delete_document("t0", "doc0")
    with Shardrag.open(tmp_path / "d") as rag:
        for i in range(1, 12):
            info = rag.get_document(f"t{i % 3}", f"doc{i}")
            assert info.state is VersionState.LIVE
            assert any(h.doc_id == f"doc{i}" for h in rag.search(f"t{i % 3}", f"number {i}", k=5))
        assert rag.get_document("t0", "doc0").state is VersionState.DELETED


def test_nothing_committed_is_lost_when_the_process_is_killed(tmp_path: Path) -> None:
    # The child writes documents as fast as it can and reports each one once put returns;
    # it is killed with SIGKILL mid-stream, usually in the middle of a write.
    child = run_child(
        """
        import sys
        from shardrag import Shardrag
        rag = Shardrag.open(sys.argv[1])
        for i in range(10_000):
            text = (f"Document {i} explains replica number {i} of the log. " * 30).encode()
            rag.put_document("acme", f"doc{i}", text, filename="d.txt")
            print(i, flush=True)
        """,
        tmp_path / "d",
    )
    assert child.stdout is not None
    committed: list[int] = []
    deadline = time.monotonic() + 120
    while len(committed) < 25 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        committed.append(int(line))
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert len(committed) >= 25, child.stderr.read() if child.stderr else ""

    with Shardrag.open(tmp_path / "d") as rag:
        for i in committed:
            assert rag.get_document("acme", f"doc{i}").state is VersionState.LIVE
            hits = rag.search("acme", f"replica number {i}", k=3, mode="keyword")
            assert hits[0].doc_id == f"doc{i}"
        # Whatever was in flight was finished or undone: nothing is left pending.
        assert rag.registry.pending_versions() == []
        assert rag.list_documents("acme", state="pending") == []


def test_a_second_process_is_told_who_holds_the_data_dir(tmp_path: Path) -> None:
    with Shardrag.open(tmp_path / "d"):
        child = run_child(
            """
            import json, sys
            from shardrag import Shardrag
            from shardrag.errors import DataDirLocked
            try:
                Shardrag.open(sys.argv[1])
            except DataDirLocked as exc:
                print(json.dumps(exc.to_dict()))
            """,
            tmp_path / "d",
        )
        out, _ = child.communicate(timeout=120)
    error = json.loads(out)
    assert error["code"] == "data_dir_locked"
    assert error["details"]["holder"]["pid"] == os.getpid()
    assert str(os.getpid()) in error["message"]


def test_the_lock_is_exclusive_in_process_too_and_released_on_close(tmp_path: Path) -> None:
    rag = Shardrag.open(tmp_path / "d")
    with pytest.raises(DataDirLocked):
        Shardrag.open(tmp_path / "d")
    rag.close()
    Shardrag.open(tmp_path / "d").close()


def test_recovery_finishes_a_commit_the_registry_missed(tmp_path: Path) -> None:
    # Simulate a crash between the shard commit and the registry update.
    with Shardrag.open(tmp_path / "d") as rag:
        rag.put_document("acme", "doc", DOC)
        engine = rag.shards.shard(rag.tenant("acme").shard_id)
        original = rag.registry.mark_live
        rag.registry.mark_live = lambda *a: (_ for _ in ()).throw(RuntimeError("crash"))  # type: ignore[method-assign]
        with pytest.raises(Exception, match="crash"):
            rag.put_document("acme", "doc", DOC + b" Second version adds failover.")
        rag.registry.mark_live = original  # type: ignore[method-assign]
        assert engine.count("acme", "doc", 1).live == 0  # the shard already moved to v2
    with Shardrag.open(tmp_path / "d") as rag:
        info = rag.get_document("acme", "doc")
        assert (info.state, info.version) == (VersionState.LIVE, 2)
        assert rag.search("acme", "failover", k=1)[0].version == 2
