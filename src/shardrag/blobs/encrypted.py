"""Encryption at rest: each tenant's originals under its own data key (envelope encryption).

A tenant's data key (AES-256) is made on its first write, wrapped by the master key
(``SHARDRAG_MASTER_KEY`` / ``master_key_file``) with AES-GCM and kept in the registry beside
the tenant; dropping the tenant deletes the wrapped key with it, so every copy of its blobs,
wherever it survives (a backup, a bucket's old versions), is unreadable: crypto-shredding.
Shard snapshots, which hold several tenants, are under the deployment's snapshot key, kept
wrapped the same way (owner ``@snapshots``). A new master key re-wraps every data key
(``Keyring.rotate``) while the processes still know the previous one
(``previous_master_key``): no data is re-encrypted.

A blob is stored as nonce (12 bytes) + AES-GCM(data), the plaintext's SHA-256 as associated
data, under the name HMAC(data key, plaintext SHA-256): the same document of two tenants is
two blobs, and a name says nothing of the content without the key. Callers keep addressing
blobs by their plaintext's SHA-256, as with a plain store.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shardrag.blobs.base import NamedBlobStore, check_digest
from shardrag.errors import InternalError, InvalidParameter, NotFound

_NONCE = 12
#: How long a process keeps an unwrapped data key: a tenant dropped through another process
#: becomes unreadable here within this time.
KEY_CACHE_SECONDS = 60.0


#: The owner of the snapshots' key (no tenant id holds an ``@``).
SNAPSHOTS = "@snapshots"


class DataKeys(Protocol):
    """Where wrapped data keys are kept (the registry)."""

    def data_key(self, owner: str) -> bytes | None:
        """The owner's wrapped data key, or None."""
        ...

    def add_data_key(self, owner: str, wrapped: bytes) -> bytes:
        """Keep ``wrapped`` unless the owner has one already; the one kept."""
        ...

    def wrapped_keys(self) -> dict[str, bytes]:
        """Every wrapped data key by owner."""
        ...

    def rewrap_key(self, owner: str, old: bytes, new: bytes) -> bool:
        """Replace the owner's wrapped key ``old`` by ``new``; False if it is not ``old``."""
        ...


def master_key_from(value: str | None, path: str | None) -> bytes | None:
    """The master key of the settings (64 hex digits, given or in a file), or None."""
    if path is not None:
        value = Path(path).read_text().strip()
    if value is None:
        return None
    try:
        key = bytes.fromhex(value.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise InvalidParameter(
            "the master key must be 64 hex digits (256 bits)", setting="master_key"
        )
    return key


class Keyring:
    """Unwraps (and on first use makes) data keys under the master key.

    ``previous``: master keys that wrapped keys may still be under (during a rotation);
    nothing new is wrapped with them.
    """

    def __init__(self, master_key: bytes, store: DataKeys, previous: Sequence[bytes] = ()) -> None:
        self._master = AESGCM(master_key)
        self._masters = [self._master, *(AESGCM(k) for k in previous)]
        # Snapshots taken before their key was stored were under this one: the first stored
        # snapshot key is it, so they stay readable (under the master key of that time).
        self._legacy_snapshot_key = hmac.digest(master_key, b"shardrag snapshots", "sha256")
        self._store = store
        #: owner -> (when read, the wrapped key read, the key).
        self._cache: dict[str, tuple[float, bytes, bytes]] = {}
        self._lock = threading.Lock()

    def key(self, owner: str | None, fresh: bool = False) -> bytes:
        """The data key of tenant ``owner`` (None: the snapshots' key), made on first use.

        ``fresh``: as the registry holds it now, not as cached — what a write must use: a
        tenant dropped and made again through another process has another key, and a value
        written under the dropped one would never open again.
        """
        owner = SNAPSHOTS if owner is None else owner
        key = None if fresh else self._cached(owner)
        if key is not None:
            return key
        wrapped = self._store.data_key(owner)
        if wrapped is None:
            new = self._legacy_snapshot_key if owner == SNAPSHOTS else os.urandom(32)
            wrapped = self._store.add_data_key(owner, self._wrap(owner, new))
        return self._remember(owner, wrapped)

    def rotate(self) -> int:
        """Wrap every stored data key under the master key (unwrapping it with the master or
        a previous one); how many were re-wrapped. Safe while serving and to repeat."""
        count = 0
        for owner, wrapped in self._store.wrapped_keys().items():
            key = self._unwrap(owner, wrapped)
            if self._unwraps_with(self._master, owner, wrapped):
                continue  # already under this master key
            if self._store.rewrap_key(owner, wrapped, self._wrap(owner, key)):
                count += 1
        return count

    def existing_key(self, owner: str, fresh: bool = False) -> bytes | None:
        """The tenant's data key if it has one (never makes one); ``fresh`` as for ``key``."""
        key = None if fresh else self._cached(owner)
        if key is not None:
            return key
        wrapped = self._store.data_key(owner)
        if wrapped is None:
            self.forget(owner)
            return None
        return self._remember(owner, wrapped)

    def _cached(self, owner: str) -> bytes | None:
        with self._lock:
            cached = self._cache.get(owner)
        if cached is not None and time.monotonic() - cached[0] < KEY_CACHE_SECONDS:
            return cached[2]
        return None

    def _remember(self, owner: str, wrapped: bytes) -> bytes:
        """The key of ``wrapped``, kept (unwrapped again only when it changed)."""
        with self._lock:
            cached = self._cache.get(owner)
        key = cached[2] if cached is not None and cached[1] == wrapped else None
        if key is None:
            key = self._unwrap(owner, wrapped)
        with self._lock:
            self._cache[owner] = (time.monotonic(), wrapped, key)
        return key

    def forget(self, owner: str) -> None:
        """Drop the cached key of a tenant (it was dropped)."""
        with self._lock:
            self._cache.pop(owner, None)

    def _wrap(self, owner: str, key: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._master.encrypt(nonce, key, owner.encode())

    def _unwrap(self, owner: str, wrapped: bytes) -> bytes:
        for master in self._masters:
            try:
                return master.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], owner.encode())
            except InvalidTag:
                continue
        raise InternalError(
            f"the data key of {owner!r} opens with neither the master key nor a previous one"
        )

    @staticmethod
    def _unwraps_with(master: AESGCM, owner: str, wrapped: bytes) -> bool:
        try:
            master.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], owner.encode())
        except InvalidTag:
            return False
        return True


class EncryptedBlobStore:
    """A ``BlobStore`` that encrypts each owner's blobs under its data key (see the module)."""

    def __init__(self, inner: NamedBlobStore, keyring: Keyring) -> None:
        self.inner = inner
        self.keyring = keyring

    def _name(self, key: bytes, digest: str) -> str:
        check_digest(digest)  # what a caller names must be a digest, as for a plain store
        return hmac.digest(key, digest.encode(), "sha256").hex()

    def put(self, data: bytes, owner: str | None = None) -> str:
        """Store ``data`` encrypted for ``owner``; its plaintext SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        key = self.keyring.key(owner, fresh=True)
        name = self._name(key, digest)
        if not self.inner.exists(name):
            nonce = os.urandom(_NONCE)
            self.inner.put_named(name, nonce + AESGCM(key).encrypt(nonce, data, digest.encode()))
        return digest

    def get(self, digest: str, owner: str | None = None) -> bytes:
        """The plaintext of ``digest`` of ``owner``; NotFound once its key is gone."""
        check_digest(digest)
        try:
            return self._get(digest, owner, fresh=False)
        except NotFound:
            # A key cached before its tenant was dropped and made again names other blobs.
            return self._get(digest, owner, fresh=True)

    def _get(self, digest: str, owner: str | None, fresh: bool) -> bytes:
        keys = self.keyring
        key = keys.key(owner, fresh) if owner is None else keys.existing_key(owner, fresh)
        if key is None:
            raise NotFound(f"no blob {digest} (its tenant's data key is gone)", digest=digest)
        stored = self.inner.get_named(self._name(key, digest))
        try:
            return AESGCM(key).decrypt(stored[:_NONCE], stored[_NONCE:], digest.encode())
        except InvalidTag:
            raise InternalError(f"blob {digest} is corrupt", digest=digest) from None

    def exists(self, digest: str, owner: str | None = None) -> bool:
        """Whether ``digest`` of ``owner`` is stored (and readable)."""
        check_digest(digest)
        key = self.keyring.key(owner) if owner is None else self.keyring.existing_key(owner)
        return key is not None and self.inner.exists(self._name(key, digest))
