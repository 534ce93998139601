"""Index builds off the serving path: a shard's indexes built in a process of its own.

qdrant-edge's ``optimize()`` holds the GIL for its whole run (about 4 minutes at a million
points), so a process that optimises a shard in-process answers nothing meanwhile: no search,
no heartbeat. ``ShardEngine.optimize`` instead

1. flushes the shard and copies its files into a new *generation* directory
   (``<shard>/gen-N``), and from then on journals every write it applies;
2. has a child process (``python -m shardrag.engine.build DIR``, this module) optimise the
   copy, while the parent goes on serving searches and writes on the original;
3. opens the built copy, replays the journal onto it (most of it outside the lock, the rest
   under the exclusive lock), then points ``<shard>/CURRENT`` at it and swaps it in; the old
   generation is deleted.

A shard's files are therefore either directly in its directory (as every shard starts, and as
shards made before this existed are) or in the generation ``CURRENT`` names. A crash at any
step leaves one whole generation named (or none: the directory itself), and opening the shard
deletes whatever else is there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import qdrant_edge as qe

#: The file naming a shard directory's current generation.
CURRENT = "CURRENT"
_GENERATION = "gen-"


def data_dir(path: Path) -> Path:
    """Where the shard at ``path`` keeps its engine files now."""
    current = path / CURRENT
    if current.exists():
        return path / current.read_text().strip()
    return path


def next_generation(path: Path) -> Path:
    """A new generation directory under ``path`` (not created)."""
    current = data_dir(path)
    number = int(current.name.removeprefix(_GENERATION)) + 1 if current != path else 1
    return path / f"{_GENERATION}{number}"


def copy_data(path: Path, target: Path, keep: set[str]) -> None:
    """Copy the engine files of the shard at ``path`` into ``target`` (a flushed shard whose
    files nothing changes meanwhile); ``keep`` are the shard directory's own files."""
    source = data_dir(path)
    shutil.rmtree(target, ignore_errors=True)

    def ignored(directory: str, names: list[str]) -> list[str]:
        if Path(directory) != path:
            return []
        return [n for n in names if n in keep or n == CURRENT or n.startswith(_GENERATION)]

    shutil.copytree(source, target, ignore=ignored)


def stale(path: Path) -> set[str]:
    """Names in the shard directory ``path`` that are not its current files (a build under
    way, a generation swapped out): what a copy of the shard leaves out."""
    current = data_dir(path)
    return {
        entry.name
        for entry in path.iterdir()
        if entry.name.startswith(_GENERATION) and entry != current
    }


def switch_to(path: Path, generation: Path) -> None:
    """Name ``generation`` the current one (atomically)."""
    tmp = path / f"{CURRENT}.tmp"
    tmp.write_text(generation.name)
    tmp.replace(path / CURRENT)


def tidy(path: Path, keep: set[str]) -> None:
    """Delete what is not the current generation from the shard directory ``path``: an
    unfinished build, a generation swapped out, the files of the directory layout before
    the first build. ``keep`` are the directory's own files."""
    current = data_dir(path)
    if current == path:
        # The files are in the directory itself: only unfinished builds go.
        for entry in path.iterdir():
            if entry.name.startswith(_GENERATION):
                shutil.rmtree(entry, ignore_errors=True)
        return
    for entry in path.iterdir():
        if entry == current or entry.name in keep or entry.name == CURRENT:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def run_child(target: Path) -> subprocess.Popen[str]:
    """Start the child process that optimises the shard copy in ``target``."""
    return subprocess.Popen(
        [sys.executable, "-m", "shardrag.engine.build", str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def build(target: str) -> dict[str, object]:
    """Optimise the shard in ``target`` and flush it (the child's work)."""
    start = time.perf_counter()
    shard = qe.EdgeShard.load(target)
    try:
        changed = bool(shard.optimize())
        shard.flush()
    finally:
        shard.close()
    return {"changed": changed, "seconds": round(time.perf_counter() - start, 3)}


if __name__ == "__main__":
    # Below the serving process's priority: on a busy node, searches get the cores first.
    os.nice(10)
    print(json.dumps(build(sys.argv[1])), flush=True)
