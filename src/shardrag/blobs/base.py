"""The blob store protocol: immutable originals addressed by their SHA-256."""

from __future__ import annotations

import re
from typing import Protocol

from shardrag.errors import InvalidParameter

_DIGEST = re.compile(r"[0-9a-f]{64}")


def check_digest(digest: str) -> None:
    """Refuse anything but a SHA-256 hex digest (64 lowercase hex characters)."""
    # A digest becomes a file name or an object key: anything else could escape the store.
    if not _DIGEST.fullmatch(digest):
        raise InvalidParameter(f"not a SHA-256 hex digest: {digest!r:.100}")


class BlobStore(Protocol):
    """Content-addressed storage of document originals (so any version can be re-driven).

    ``owner``: the tenant whose data it is (None: the cluster's own, shard snapshots). A
    plain store ignores it (the same bytes are stored once); an encrypted one
    (``encrypted.py``) keeps each owner's copy under the owner's key.
    """

    def put(self, data: bytes, owner: str | None = None) -> str:
        """Store ``data`` durably; return its SHA-256 hex digest. Storing twice is a no-op."""
        ...

    def get(self, digest: str, owner: str | None = None) -> bytes:
        """The bytes stored under ``digest``; NotFound if absent."""
        ...

    def exists(self, digest: str, owner: str | None = None) -> bool:
        """Whether ``digest`` is stored."""
        ...


class NamedBlobStore(Protocol):
    """What an encrypted store keeps its ciphertexts in: blobs under names it chooses."""

    def put_named(self, digest: str, data: bytes) -> None:
        """Store ``data`` under ``digest`` (a name of a digest's form)."""
        ...

    def get_named(self, digest: str) -> bytes:
        """The bytes stored under ``digest``; NotFound if absent."""
        ...

    def exists(self, digest: str, owner: str | None = None) -> bool:
        """Whether ``digest`` is stored."""
        ...
