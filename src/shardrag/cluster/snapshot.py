"""Snapshots of a shard replica in the blob store: how a new replica starts without the log.

A snapshot is a gzipped tar of the replica's engine directory, taken by the replica's own
applier between two ops (so no op is half in it) after a flush, plus the log position it
holds. A new replica unpacks the newest snapshot of its shard and applies the shard's log
from that position on: it catches up without replaying the shard's whole history.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import time
from pathlib import Path

from shardrag.blobs import BlobStore
from shardrag.cluster.shardmap import SnapshotRef
from shardrag.engine import ShardEngine
from shardrag.errors import InvalidInput


def take_snapshot(
    engine: ShardEngine, shard_id: int, position: int, node_id: str, blobs: BlobStore
) -> SnapshotRef:
    """Store a snapshot of ``engine`` (applied up to ``position``) in ``blobs``.

    The caller is the replica's only writer (its applier, between two ops): after the flush
    nothing changes the files while they are copied; searches go on meanwhile.
    """
    buffer = io.BytesIO()
    # An index build under way writes its own copy of the shard: not part of the snapshot.
    with engine.frozen_files() as skipped:

        def kept(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
            parts = info.name.split("/")  # "./gen-2/segments/...": the top entry is parts[1]
            return None if len(parts) > 1 and parts[1] in skipped else info

        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(engine.path, arcname=".", filter=kept)
    data = buffer.getvalue()
    digest = blobs.put(data)
    return SnapshotRef(shard_id, digest, position, node_id, time.time(), len(data))


def restore_snapshot(snapshot: SnapshotRef, blobs: BlobStore, target: Path) -> None:
    """Unpack ``snapshot`` as the engine directory ``target`` (which must not exist yet)."""
    data = blobs.get(snapshot.digest)
    staging = target.with_name(target.name + ".restoring")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if not (member.isfile() or member.isdir()):
                raise InvalidInput(f"snapshot {snapshot.digest} holds a link or device")
        # The "data" filter refuses absolute paths and paths leaving the directory.
        tar.extractall(staging, filter="data")
    staging.rename(target)
