"""Blobs in a directory, ``root/ab/abcdef...``: written atomically and fsynced.

The directory may be shared by several processes, on one host or on several over a network
file system: every writer writes a file of its own name and renames it into place, so a
reader sees no blob or the whole blob, and two writers of the same blob leave one of their
(identical) copies.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
from pathlib import Path

from shardrag.blobs.base import check_digest
from shardrag.errors import NotFound


def _fsync_directory(directory: Path) -> None:
    # Makes the directory's new entries survive a crash, not only the files' bytes.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # a file system that cannot sync directories
            raise
    finally:
        os.close(fd)


class LocalBlobStore:
    """Content-addressed files under one directory, possibly shared by several processes.

    Files are created 0o644 and directories 0o777, less the process's umask: processes of
    different users sharing the directory need a common group and a umask that leaves the
    group write access to directories (002).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest

    def put(self, data: bytes, owner: str | None = None) -> str:
        """Store ``data`` (fsync, then atomic rename); return its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        self.put_named(digest, data)
        return digest

    def put_named(self, digest: str, data: bytes) -> None:
        """Store ``data`` under a name of a digest's form that is not its own SHA-256 (an
        encrypted blob, ``encrypted.py``); a name stored already is left as it is."""
        path = self._path(digest)
        if path.exists():
            return
        try:
            path.parent.mkdir()
        except FileExistsError:
            pass
        else:
            _fsync_directory(self.root)
        # Random and created exclusively: no other writer, on any host, writes this file.
        tmp = path.parent / f".tmp-{digest[:16]}-{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            # Atomic, even when another writer of the same bytes got there first: one
            # complete copy replaces another.
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_directory(path.parent)

    def get_named(self, digest: str) -> bytes:
        """The bytes stored under a name (``put_named``)."""
        return self.get(digest)

    def get(self, digest: str, owner: str | None = None) -> bytes:
        """The stored bytes."""
        path = self._path(digest)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no blob {digest}", digest=digest) from None

    def exists(self, digest: str, owner: str | None = None) -> bool:
        """Whether the blob is stored."""
        return self._path(digest).exists()
