"""Blobs in a local directory: ``root/ab/abcdef...``, written atomically and fsynced."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from shardrag.errors import InvalidParameter, NotFound

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class LocalBlobStore:
    """Content-addressed files under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        # The digest names a file: anything but 64 hex characters could escape the root.
        if not _DIGEST.match(digest):
            raise InvalidParameter(f"not a SHA-256 hex digest: {digest!r}")
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store ``data`` (atomic rename after fsync); return its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, digest: str) -> bytes:
        """The stored bytes."""
        path = self._path(digest)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no blob {digest}", digest=digest) from None

    def exists(self, digest: str) -> bool:
        """Whether the blob is stored."""
        return self._path(digest).exists()
