"""Sealing: a tenant's text, names and metadata encrypted under its data key wherever shardrag
keeps them besides the blob store — shard payloads, log events, registry columns, the shared
result cache — so that with a master key no file holds them in plaintext, and a dropped
tenant's remains open for no one (its data key is gone: ``blobs/encrypted.py``).

A sealed value is AES-256-GCM under the owner's data key, with what it is (``purpose``) and
its owner as associated data: a value moved to another owner or another place does not open.
Values the engine or a database must compare (metadata filter values, cache keys) are *tagged*
instead: an HMAC under the owner's key, equal for equal values, meaningless without the key.

Writes seal under the owner's key as the registry holds it now (a process may cache the key
of a tenant that another process dropped and made again); a sealed value starts with its
key's id, so a reader holding a stale key reads the current one and a value of a dropped
incarnation is recognised as unreadable.

Without a master key the ``Plain`` sealer changes nothing, at no cost.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shardrag.errors import InternalError

_NONCE = 12
#: What a sealed string starts with (then its owner, a dot, and base64 of nonce + ciphertext).
SEALED_PREFIX = "sealed1."


_KEY_ID = 8


class OwnerKeys(Protocol):
    """Data keys by owner (``blobs.encrypted.Keyring``)."""

    def key(self, owner: str | None, fresh: bool = False) -> bytes:
        """The owner's data key, made on first use (``fresh``: not from a cache)."""
        ...

    def existing_key(self, owner: str, fresh: bool = False) -> bytes | None:
        """The owner's data key, or None once it is gone (the tenant was dropped)."""
        ...


class Bound(Protocol):
    """Sealing for one owner with one key: a batch of writes (``Sealer.bound``)."""

    owner: str
    active: bool

    def seal(self, data: bytes, purpose: str) -> bytes:
        """``data`` encrypted."""
        ...

    def tag(self, value: str) -> str:
        """``value``'s tag."""
        ...


class Sealer(Protocol):
    """Seals and tags values of an owner (a tenant)."""

    @property
    def active(self) -> bool:
        """Whether values are sealed at all (a master key is set)."""
        ...

    def seal(self, owner: str, data: bytes, purpose: str) -> bytes:
        """``data`` encrypted for ``owner``."""
        ...

    def unseal(self, owner: str, sealed: bytes, purpose: str) -> bytes | None:
        """The plaintext of ``sealed``; None when the owner's key is gone."""
        ...

    def tag(self, owner: str, value: str) -> str:
        """A stand-in for ``value`` that compares equal where ``value`` does (as a filter
        looks it up: under the key as cached)."""
        ...

    def bound(self, owner: str, fresh: bool = True) -> Bound:
        """Seal and tag a batch of ``owner``'s values with one key: as the registry holds it
        now (``fresh``, what a durable write needs), or as cached (enough for a cache entry,
        which a stale key only makes a miss)."""
        ...


class _PlainBound:
    active = False

    def __init__(self, owner: str) -> None:
        self.owner = owner

    def seal(self, data: bytes, purpose: str) -> bytes:
        return data

    def tag(self, value: str) -> str:
        return value


class Plain:
    """No master key: values stay as they are."""

    active = False

    def seal(self, owner: str, data: bytes, purpose: str) -> bytes:
        return data

    def unseal(self, owner: str, sealed: bytes, purpose: str) -> bytes | None:
        return sealed

    def tag(self, owner: str, value: str) -> str:
        return value

    def bound(self, owner: str, fresh: bool = True) -> Bound:
        return _PlainBound(owner)


class _KeyBound:
    active = True

    def __init__(self, owner: str, key: bytes) -> None:
        self.owner = owner
        self.key = key

    def seal(self, data: bytes, purpose: str) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed = AESGCM(self.key).encrypt(nonce, data, _aad(self.owner, purpose))
        return _key_id(self.key) + nonce + sealed

    def tag(self, value: str) -> str:
        return _tag(self.key, value)


class KeySealer:
    """Seals under each owner's data key (see the module)."""

    active = True

    def __init__(self, keys: OwnerKeys) -> None:
        self.keys = keys

    def bound(self, owner: str, fresh: bool = True) -> Bound:
        return _KeyBound(owner, self.keys.key(owner, fresh=fresh))

    def seal(self, owner: str, data: bytes, purpose: str) -> bytes:
        return self.bound(owner).seal(data, purpose)

    def unseal(self, owner: str, sealed: bytes, purpose: str) -> bytes | None:
        wanted = sealed[:_KEY_ID]
        key = self.keys.existing_key(owner)
        if key is not None and _key_id(key) != wanted:
            key = self.keys.existing_key(owner, fresh=True)  # cached before a re-creation
        if key is None or _key_id(key) != wanted:
            return None  # sealed for an incarnation whose key is gone
        body = sealed[_KEY_ID:]
        try:
            return AESGCM(key).decrypt(body[:_NONCE], body[_NONCE:], _aad(owner, purpose))
        except InvalidTag:
            raise InternalError(f"a sealed {purpose} of {owner!r} does not open") from None

    def tag(self, owner: str, value: str) -> str:
        return _tag(self.keys.key(owner), value)


def _key_id(key: bytes) -> bytes:
    return hmac.digest(key, b"shardrag key id", "sha256")[:_KEY_ID]


def _tag(key: bytes, value: str) -> str:
    tags = hmac.digest(key, b"shardrag tags", "sha256")
    return hmac.new(tags, value.encode(), hashlib.sha256).hexdigest()[:40]


def _aad(owner: str, purpose: str) -> bytes:
    return f"{purpose}\x00{owner}".encode()


def seal_text(sealing: Bound, value: str | None, purpose: str) -> str | None:
    """A string sealed as a string (``sealed1.<owner>.<base64>``); None stays None."""
    if value is None or not sealing.active:
        return value
    sealed = sealing.seal(value.encode(), purpose)
    return f"{SEALED_PREFIX}{sealing.owner}.{base64.b64encode(sealed).decode()}"


def unseal_text(sealer: Sealer, value: str | None, purpose: str) -> str | None:
    """The plaintext of a ``seal_text`` string (others are returned as they are); None when
    its owner's key is gone."""
    if value is None or not value.startswith(SEALED_PREFIX):
        return value
    owner, _, body = value[len(SEALED_PREFIX) :].partition(".")
    opened = sealer.unseal(owner, base64.b64decode(body), purpose)
    return None if opened is None else opened.decode()
