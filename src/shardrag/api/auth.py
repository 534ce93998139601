"""API keys: issuing, hashing, authenticating; and what a request's key may do.

A key reads ``srk_<id>_<secret>``. The id finds the record; the secret is compared by its
SHA-256 in constant time. Keys carry 256 random bits, so a fast hash is enough at rest (slow
password hashes are for guessable secrets); a stolen registry file yields no usable key.
The operator's root key comes from ``SHARDRAG_ADMIN_KEY`` or, if that is unset, is generated
on the first start and printed once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from shardrag.errors import Unauthorized
from shardrag.registry import KeyRecord, Registry, Role

_PREFIX = "srk"
_ENV_ROOT_ID = "root-env"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its tenant (None for root) and its role."""

    key_id: str
    tenant: str | None
    role: Role
    #: The key's access groups (None: every document of its tenant, ``acl.py``).
    groups: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``GET /v1/whoami``)."""
        return {
            "key_id": self.key_id,
            "tenant": self.tenant,
            "role": self.role.value,
            "groups": None if self.groups is None else list(self.groups),
        }


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeys:
    """Issues and checks API keys against the registry."""

    def __init__(self, registry: Registry, admin_key: str | None) -> None:
        self.registry = registry
        self._admin_digest = _digest(admin_key) if admin_key else None

    def issue(
        self,
        tenant: str | None,
        role: Role,
        name: str | None = None,
        groups: tuple[str, ...] | None = None,
    ) -> tuple[KeyRecord, str]:
        """A new key: its record and the full key, which is shown once and never stored.

        ``groups``: the access groups whose documents it reads (None: all of its tenant's).
        """
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        record = KeyRecord(key_id, tenant, role, _digest(secret), name, time.time(), groups=groups)
        self.registry.add_key(record)
        return record, f"{_PREFIX}_{key_id}_{secret}"

    def bootstrap(self) -> str | None:
        """The root key to print on a first start, or None (one exists, or comes from env)."""
        if self._admin_digest is not None:
            return None
        if any(k.revoked_at is None for k in self.registry.keys(None)):
            return None
        _, key = self.issue(None, Role.ROOT, "bootstrap")
        return key

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer <key>`` header; ``Unauthorized`` if not."""
        if not authorization:
            raise Unauthorized("send an API key: Authorization: Bearer <key>")
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Unauthorized("the Authorization header must read 'Bearer <key>'")
        if self._admin_digest is not None and hmac.compare_digest(_digest(key), self._admin_digest):
            return Principal(_ENV_ROOT_ID, None, Role.ROOT)
        prefix, _, rest = key.partition("_")
        key_id, _, secret = rest.partition("_")
        record = self.registry.key(key_id) if prefix == _PREFIX and key_id and secret else None
        if record is None or not hmac.compare_digest(_digest(secret), record.secret_hash):
            raise Unauthorized("unknown API key")
        if record.revoked_at is not None:
            raise Unauthorized("this API key was revoked")
        return Principal(record.key_id, record.tenant, record.role, record.groups)
