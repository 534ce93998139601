"""The cold tier: originals by content hash."""

from pathlib import Path

from shardrag.blobs.base import BlobStore
from shardrag.blobs.local import LocalBlobStore


def open_blob_store(data_dir: Path) -> BlobStore:
    """The blob store of an embedded data dir."""
    return LocalBlobStore(data_dir / "blobs")


__all__ = ["BlobStore", "LocalBlobStore", "open_blob_store"]
