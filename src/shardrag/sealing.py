"""Sealing: a tenant's text, names and metadata encrypted under its data key wherever shardrag
keeps them besides the blob store — shard payloads, log events, registry columns, the shared
result cache — so that with a master key no file holds them in plaintext, and a dropped
tenant's remains open for no one (its data key is gone: ``blobs/encrypted.py``).

A sealed value is AES-256-GCM under the owner's data key, with what it is (``purpose``) and
its owner as associated data: a value moved to another owner or another place does not open.
Values the engine or a database must compare (metadata filter values, cache keys) are *tagged*
instead: an HMAC under the owner's key, equal for equal values, meaningless without the key.

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


class OwnerKeys(Protocol):
    """Data keys by owner (``blobs.encrypted.Keyring``)."""

    def key(self, owner: str | None) -> bytes:
        """The owner's data key, made on first use."""
        ...

    def existing_key(self, owner: str) -> bytes | None:
        """The owner's data key, or None once it is gone (the tenant was dropped)."""
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
        """A stand-in for ``value`` that compares equal where ``value`` does."""
        ...


class Plain:
    """No master key: values stay as they are."""

    active = False

    def seal(self, owner: str, data: bytes, purpose: str) -> bytes:
        return data

    def unseal(self, owner: str, sealed: bytes, purpose: str) -> bytes | None:
        return sealed

    def tag(self, owner: str, value: str) -> str:
        return value


class KeySealer:
    """Seals under each owner's data key (see the module)."""

    active = True

    def __init__(self, keys: OwnerKeys) -> None:
        self.keys = keys

    def seal(self, owner: str, data: bytes, purpose: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + AESGCM(self.keys.key(owner)).encrypt(nonce, data, _aad(owner, purpose))

    def unseal(self, owner: str, sealed: bytes, purpose: str) -> bytes | None:
        key = self.keys.existing_key(owner)
        if key is None:
            return None
        try:
            return AESGCM(key).decrypt(sealed[:_NONCE], sealed[_NONCE:], _aad(owner, purpose))
        except InvalidTag:
            raise InternalError(f"a sealed {purpose} of {owner!r} does not open") from None

    def tag(self, owner: str, value: str) -> str:
        key = hmac.digest(self.keys.key(owner), b"shardrag tags", "sha256")
        return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:40]


def _aad(owner: str, purpose: str) -> bytes:
    return f"{purpose}\x00{owner}".encode()


def seal_text(sealer: Sealer, owner: str, value: str | None, purpose: str) -> str | None:
    """A string sealed as a string (``sealed1.<owner>.<base64>``); None stays None."""
    if value is None or not sealer.active:
        return value
    sealed = sealer.seal(owner, value.encode(), purpose)
    return f"{SEALED_PREFIX}{owner}.{base64.b64encode(sealed).decode()}"


def unseal_text(sealer: Sealer, value: str | None, purpose: str) -> str | None:
    """The plaintext of a ``seal_text`` string (others are returned as they are); None when
    its owner's key is gone."""
    if value is None or not value.startswith(SEALED_PREFIX):
        return value
    owner, _, body = value[len(SEALED_PREFIX) :].partition(".")
    opened = sealer.unseal(owner, base64.b64decode(body), purpose)
    return None if opened is None else opened.decode()
