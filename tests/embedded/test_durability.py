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
        # Whatever was accepted but in flight is finished from the log after the restart.
        rag.search("acme", "replica", read_concern="strong")
        for i in committed:
            assert rag.get_document("acme", f"doc{i}").state is VersionState.LIVE
            hits = rag.search("acme", f"replica number {i}", k=3, mode="keyword")
            assert hits[0].doc_id == f"doc{i}"
        # Nothing is left pending.
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


def test_a_commit_the_registry_missed_is_finished_after_a_restart(tmp_path: Path) -> None:
    # The registry fails after the shard applied v2's commit: the shard is rolled forward,
    # never back. The applier keeps the op unapplied in its position and the next open
    # replays it.
    with Shardrag.open(tmp_path / "d") as rag:
        rag.put_document("acme", "doc", DOC)
        engine = rag.shards.shard(rag.tenant("acme").shard_id)

        def broken(*args: object) -> None:
            raise RuntimeError("registry down")

        rag.registry.mark_live = broken  # type: ignore[method-assign]
        rag.put_document("acme", "doc", DOC + b" Second version adds failover.", wait=False)
        deadline = time.monotonic() + 60
        while engine.count("acme", "doc", 1).live and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.count("acme", "doc", 1).live == 0  # the shard already moved to v2
        assert engine.count("acme", "doc", 2).live == 1
        assert rag.get_document("acme", "doc").latest.state is VersionState.PENDING
    with Shardrag.open(tmp_path / "d") as rag:
        assert rag.search("acme", "failover", k=1, read_concern="strong")[0].version == 2
        info = rag.get_document("acme", "doc")
        assert (info.state, info.version) == (VersionState.LIVE, 2)


def test_a_registry_outage_delays_a_write_and_loses_nothing(tmp_path: Path) -> None:
    with Shardrag.open(tmp_path / "d", retry_base_seconds=0.05) as rag:
        real = rag.registry.mark_live
        failures = []

        def flaky(*args: object) -> None:
            if len(failures) < 3:
                failures.append(args)
                raise RuntimeError("registry down")
            real(*args)  # type: ignore[arg-type]

        rag.registry.mark_live = flaky  # type: ignore[method-assign]
        result = rag.put_document("acme", "doc", DOC)
        assert len(failures) == 3
        assert (result.state, result.version) == (VersionState.LIVE, 1)
        assert rag.search("acme", "replicas", k=1)[0].doc_id == "doc"
