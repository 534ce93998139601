"""The blob store protocol: immutable originals addressed by their SHA-256."""

from __future__ import annotations

from typing import Protocol


class BlobStore(Protocol):
    """Content-addressed storage of document originals (so any version can be re-driven)."""

    def put(self, data: bytes) -> str:
        """Store ``data`` durably; return its SHA-256 hex digest. Storing twice is a no-op."""
        ...

    def get(self, digest: str) -> bytes:
        """The bytes stored under ``digest``; NotFound if absent."""
        ...

    def exists(self, digest: str) -> bool:
        """Whether ``digest`` is stored."""
        ...
