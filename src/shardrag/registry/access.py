"""Records of access control: API keys, the audit log and idempotent responses.

They live in the registry beside the tenants they belong to, so a tenant dropped takes its
keys, audit trail and remembered responses with it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Role(enum.StrEnum):
    """What a key may do. ``root`` is the operator's key: tenants and keys, never documents."""

    ROOT = "root"
    ADMIN = "admin"
    WRITER = "writer"
    READER = "reader"

    def may(self, needed: Role) -> bool:
        """Whether this role includes ``needed`` (admin ⊃ writer ⊃ reader; root is apart)."""
        if self is Role.ROOT or needed is Role.ROOT:
            return self is needed
        order = [Role.READER, Role.WRITER, Role.ADMIN]
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True)
class KeyRecord:
    """An API key as stored: never the secret, only its SHA-256."""

    key_id: str
    tenant: str | None
    role: Role
    secret_hash: str
    name: str | None
    created_at: float
    revoked_at: float | None = None
    #: The access groups of the tenant's documents it may read (None: every document).
    groups: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form without the hash (API key listings)."""
        return {
            "id": self.key_id,
            "tenant": self.tenant,
            "role": self.role.value,
            "name": self.name,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "groups": None if self.groups is None else list(self.groups),
        }


@dataclass(frozen=True)
class AuditEvent:
    """One write or admin action: who, what, on what, when, and how it ended."""

    tenant: str | None
    actor: str
    action: str
    target: str
    outcome: str
    at: float
    details: dict[str, Any]
    event_id: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the audit API)."""
        return {
            "id": self.event_id,
            "at": self.at,
            "tenant": self.tenant,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "details": self.details,
        }


@dataclass(frozen=True)
class StoredResponse:
    """The first answer to a request made with an ``Idempotency-Key``."""

    request_hash: str
    status: int
    body: dict[str, Any]
    created_at: float
