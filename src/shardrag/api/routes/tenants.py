"""Tenants, their keys and their audit log; and ``whoami``."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from shardrag import acl as access
from shardrag import validation
from shardrag.api.deps import (
    AUDIT_GROUPS,
    Caller,
    audit_visible,
    caller,
    root_caller,
    tenant_caller,
)
from shardrag.api.schemas import (
    AuditList,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyOut,
    TenantCreate,
    TenantList,
    TenantOut,
    Whoami,
)
from shardrag.errors import Forbidden, InvalidParameter, InvalidTenantId, NotFound
from shardrag.registry import AuditEvent, Role, TenantRecord

_KEY_ID = re.compile(r"[0-9a-f]{1,64}")

router = APIRouter(prefix="/v1", tags=["tenants and keys"])

AdminCaller = Annotated[Caller, Depends(tenant_caller(Role.ADMIN, action="admin", root=True))]


def _tenant_out(record: TenantRecord) -> dict[str, Any]:
    return {"id": record.tenant, "name": record.name, "created_at": record.created_at}


def _slug(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:63].strip("-")


@router.get("/whoami", response_model=Whoami)
def whoami(who: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
    """The tenant and role of the key that calls."""
    return who.principal.to_dict()


@router.post("/tenants", status_code=201, response_model=TenantOut)
def create_tenant(body: TenantCreate, who: Annotated[Caller, Depends(root_caller)]) -> Any:
    """Create a tenant (root key). 409 ``tenant_exists`` if the id is taken."""
    tenant_id = body.id if body.id is not None else _slug(body.name or "")
    if not tenant_id:
        raise InvalidTenantId(f"no tenant id can be made from the name {body.name!r}; give an id")
    who.tenant = validation.tenant_id(tenant_id)
    with who.audited("tenant.create", tenant_id):
        record = who.service.rag.create_tenant(tenant_id, body.name or tenant_id, exist_ok=False)
    return _tenant_out(record)


@router.get("/tenants", response_model=TenantList)
def list_tenants(who: Annotated[Caller, Depends(root_caller)]) -> Any:
    """Every tenant (root key)."""
    return {"tenants": [_tenant_out(r) for r in who.service.rag.tenants()]}


@router.get("/tenants/{t}", response_model=TenantOut)
def get_tenant(
    t: str, who: Annotated[Caller, Depends(tenant_caller(Role.READER, root=True))]
) -> Any:
    """One tenant (root key, or any key of the tenant)."""
    return _tenant_out(who.service.rag.tenant(t))


@router.delete("/tenants/{t}", response_model=TenantOut)
def delete_tenant(t: str, who: Annotated[Caller, Depends(root_caller)]) -> Any:
    """Delete a tenant with all its documents and keys (root key). Its audit log stays."""
    record = who.service.rag.tenant(t)
    who.tenant = t
    with who.audited("tenant.delete", t):
        who.service.rag.drop_tenant(t)
    return _tenant_out(record)


@router.post("/tenants/{t}/keys", status_code=201, response_model=KeyCreated)
def create_key(t: str, body: KeyCreate, who: AdminCaller) -> Any:
    """A new key of the tenant (root or tenant admin). The secret ``key`` is shown only here."""
    if body.role is Role.ROOT:
        raise InvalidParameter("a tenant key is admin, writer or reader")
    with who.audited("key.create", body.role.value) as details:
        groups = None if body.groups is None else access.groups(body.groups)
        details[AUDIT_GROUPS] = None if groups is None else list(groups)
        if not access.within(who.groups, groups):
            # A key with groups would otherwise make one that reads more than it does.
            raise Forbidden(
                "a key with access groups makes keys of its own groups only: give the new "
                f"key groups among {list(who.groups or ())}",
                groups=list(who.groups or ()),
            )
        record, secret = who.service.keys.issue(t, body.role, body.name, groups)
        details["key_id"] = record.key_id
    return {**record.to_dict(), "key": secret}


@router.get("/tenants/{t}/keys", response_model=KeyList)
def list_keys(t: str, who: AdminCaller) -> Any:
    """The tenant's keys, revoked ones included, without secrets (a key with groups sees the
    keys whose groups are within its own)."""
    keys = who.service.rag.registry.keys(t)
    return {"keys": [k.to_dict() for k in keys if access.within(who.groups, k.groups)]}


@router.delete("/tenants/{t}/keys/{key_id}", response_model=KeyOut)
def revoke_key(t: str, key_id: str, who: AdminCaller) -> Any:
    """Revoke a key of the tenant; it stops working at once."""
    registry = who.service.rag.registry
    with who.audited("key.revoke", key_id) as details:
        # Key ids are hex (auth.py): anything else names no key, and never reaches a database.
        record = registry.key(key_id) if _KEY_ID.fullmatch(key_id) else None
        if record is None or record.tenant != t or not access.within(who.groups, record.groups):
            raise NotFound(f"no key {key_id!r} in tenant {t!r}", key_id=key_id[:100])
        details[AUDIT_GROUPS] = None if record.groups is None else list(record.groups)
        revoked = registry.revoke_key(key_id)
    return revoked.to_dict()


@router.get("/tenants/{t}/audit", response_model=AuditList)
def audit_log(
    t: str,
    who: Annotated[Caller, Depends(tenant_caller(Role.ADMIN, root=True))],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,  # SQLite INTEGER
) -> Any:
    """The tenant's audit log, newest first (root or tenant admin).

    A tenant key reads the events of its tenant's incarnation (not those of a dropped tenant
    of the same id, which only the root key reads); a key with groups, the events about what
    its groups read (docs/access.md).
    """
    registry = who.service.rag.registry
    record = who.service.rag.tenant(t)
    found: list[AuditEvent] = []
    next_before: int | None = None
    # Pages of the log until ``limit`` visible ones (or its end) are found.
    while len(found) < limit:
        page = registry.audit(t, limit, before)
        for event in page:
            if audit_visible(event, who, record):
                found.append(event)
                if len(found) == limit:
                    next_before = event.event_id
                    break
        if len(page) < limit:
            break
        before = page[-1].event_id
    if next_before is None and len(found) == limit:
        next_before = found[-1].event_id
    return {"events": [e.to_dict() for e in found], "next_before": next_before}
