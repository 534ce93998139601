"""What routes depend on: the service, the caller, role checks and the audit trail."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from shardrag import acl as access
from shardrag.api.auth import ApiKeys, Principal
from shardrag.embedded import Shardrag
from shardrag.errors import Forbidden, InvalidParameter, ShardragError
from shardrag.observability import Metrics
from shardrag.registry import AuditEvent, Role, TenantRecord

#: A request narrows its key's access groups to these (comma-separated), never widens them.
GROUPS_HEADER = "X-Shardrag-Groups"
#: The access groups of a document written as a raw body (comma-separated).
ACL_HEADER = "X-Shardrag-Acl"


@dataclass
class Service:
    """Everything the routes of one app share."""

    rag: Shardrag
    keys: ApiKeys
    metrics: Metrics


@dataclass
class Caller:
    """The authenticated caller of a request and the tenant it acts on."""

    service: Service
    principal: Principal
    trace_id: str
    tenant: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: What the request reads: its key's access groups narrowed by ``GROUPS_HEADER``.
    groups: access.Groups = None

    @property
    def actor(self) -> str:
        """How the audit log names the caller: ``key:<id>`` with its role."""
        return f"key:{self.principal.key_id} ({self.principal.role.value})"

    def audit(self, action: str, target: str, outcome: str, **details: Any) -> None:
        """Append an event to the audit log of the caller's tenant.

        The event records who may read it (``audit_visible``): the tenant's incarnation, and
        the groups of what it touched (``acl``: a document's; ``groups``: a key's), else the
        acting key's groups.
        """
        registry = self.service.rag.registry
        record = registry.get_tenant(self.tenant) if self.tenant else None
        if record is not None:
            details[AUDIT_INCARNATION] = record.incarnation
        if AUDIT_ACL not in details and AUDIT_GROUPS not in details:
            details[AUDIT_GROUPS] = _listed(self.principal.groups)
        registry.append_audit(
            AuditEvent(
                tenant=self.tenant,
                actor=self.actor,
                action=action,
                target=target,
                outcome=outcome,
                at=time.time(),
                details={"trace_id": self.trace_id, **details},
            )
        )

    @contextmanager
    def audited(self, action: str, target: str) -> Iterator[dict[str, Any]]:
        """Audit what the block does: ``ok`` or the error code it raised (then re-raised).

        The block may add details to the yielded dict (the version written, say).
        """
        details: dict[str, Any] = {}
        try:
            yield details
        except ShardragError as exc:
            self.audit(action, target, exc.code, **details)
            raise
        except Exception:
            self.audit(action, target, "internal_error", **details)
            raise
        self.audit(action, target, "ok", **details)


#: Keys of an audit event's details that say who may read it (``audit_visible``).
AUDIT_INCARNATION = "incarnation"
AUDIT_ACL = "acl"
AUDIT_GROUPS = "groups"


def _listed(groups: access.Groups) -> list[str] | None:
    return None if groups is None else list(groups)


def audit_visible(event: AuditEvent, who: Caller, record: TenantRecord) -> bool:
    """Whether ``who`` may read an audit event of ``record``'s tenant id.

    The root key reads every event, a dropped incarnation's too (compliance). A tenant key
    reads only its incarnation's; a key with groups only events about documents of groups
    it reads (``acl``) or about keys and actors whose groups are within its own.
    """
    if who.principal.role is Role.ROOT:
        return True
    details = event.details
    incarnation = details.get(AUDIT_INCARNATION)
    if incarnation is None:
        if event.at < record.created_at:  # written before incarnations were recorded
            return False
    elif incarnation != record.incarnation:
        return False
    if who.groups is None:
        return True
    if AUDIT_ACL in details:
        return access.may_read(who.groups, details[AUDIT_ACL] or ())
    scope = details.get(AUDIT_GROUPS)
    return access.within(who.groups, None if scope is None else tuple(scope))


def service(request: Request) -> Service:
    """The app's shared service."""
    found: Service = request.app.state.service
    return found


def _caller(request: Request, tenant: str | None) -> Caller:
    principal: Principal = request.state.principal
    repeated = request.headers.getlist(GROUPS_HEADER)
    if len(repeated) > 1:
        # Proxies and frameworks differ on which copy counts: refuse, never guess.
        raise InvalidParameter(f"send {GROUPS_HEADER} once (comma-separated groups)")
    narrowed = repeated[0] if repeated else None
    return Caller(
        service=service(request),
        principal=principal,
        trace_id=request.state.trace_id,
        tenant=tenant,
        groups=access.narrow(
            principal.groups,
            None if narrowed is None else access.groups(narrowed, GROUPS_HEADER),
        ),
    )


def caller(request: Request) -> Caller:
    """Any authenticated caller (the guard has checked the key)."""
    return _caller(request, None)


def tenant_caller(
    needed: Role, action: str | None = None, root: bool = False
) -> Callable[[Request, str], Caller]:
    """A dependency: a caller of tenant ``t`` whose role includes ``needed``.

    The guard has already answered 404 to keys of other tenants. The root key manages
    tenants and keys but never reads or writes documents: it passes only where ``root``.
    A refused write or admin action (``action`` given) is audited.
    """

    def dependency(request: Request, t: str) -> Caller:
        found = _caller(request, t)
        role = found.principal.role
        allowed = root if role is Role.ROOT else role.may(needed)
        if not allowed:
            if action is not None and found.service.rag.registry.get_tenant(t) is not None:
                found.audit(action, request.url.path, "forbidden")
            raise Forbidden(
                f"a {role.value} key may not do this; it needs the {needed.value} role"
                + (" of a tenant key" if role is Role.ROOT else ""),
                role=role.value,
                needed=needed.value,
            )
        if role is Role.ROOT:
            found.service.rag.tenant(t)  # 404 for a tenant that does not exist
        return found

    return dependency


def root_caller(request: Request) -> Caller:
    """The operator's root key, and nothing else."""
    found = caller(request)
    if found.principal.role is not Role.ROOT:
        raise Forbidden("only the root (operator) key may manage tenants")
    return found
