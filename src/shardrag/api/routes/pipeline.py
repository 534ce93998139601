"""The write pipeline's operations: a tenant's dead letters and their re-drive; reconciliation."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool

from shardrag.api.deps import Caller, root_caller, tenant_caller
from shardrag.api.schemas import (
    ClusterStatusOut,
    DeadLetterList,
    DeadLetterOut,
    ErrorOut,
    ReconcileOut,
)
from shardrag.registry import Role

router = APIRouter(tags=["pipeline"])

Admin = Annotated[Caller, Depends(tenant_caller(Role.ADMIN, root=True))]
Redriver = Annotated[
    Caller, Depends(tenant_caller(Role.ADMIN, action="dead_letter.redrive", root=True))
]
Root = Annotated[Caller, Depends(root_caller)]


@router.get("/v1/tenants/{t}/dead-letters", response_model=DeadLetterList)
def list_dead_letters(t: str, who: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    """Events of the tenant's writes that a stage gave up on (tenant admin, or root)."""
    found = who.service.rag.dead_letters(t, limit)
    return {"dead_letters": [d.to_dict() for d in found]}


@router.post(
    "/v1/tenants/{t}/dead-letters/{dead_letter_id}/redrive",
    response_model=DeadLetterOut,
    responses={404: {"model": ErrorOut}},
)
def redrive_dead_letter(t: str, dead_letter_id: int, who: Redriver) -> Any:
    """Put a dead letter back in its stream once its cause is fixed (tenant admin, or root).

    Its version is ``pending`` again and continues from the stage that gave up on it.
    """
    with who.audited("dead_letter.redrive", str(dead_letter_id)) as details:
        dead = who.service.rag.redrive(t, dead_letter_id)
        details.update(doc_id=dead.doc_id, version=dead.version)
    return dead.to_dict()


@router.post("/v1/admin/reconcile", response_model=ReconcileOut, tags=["operations"])
async def reconcile(
    who: Root, dry_run: Annotated[bool, Query(description="report, repair nothing")] = False
) -> Any:
    """Compare the registry with the shards and repair drift (root key only)."""
    report = await run_in_threadpool(who.service.rag.reconcile, dry_run)
    return report.to_dict()


@router.get("/v1/admin/cluster", response_model=ClusterStatusOut, tags=["operations"])
async def cluster_status(who: Root) -> Any:
    """Shards, their replicas and log heads; live nodes with applied offsets and lag (root).

    Embedded, the one node is this process (``local``).
    """
    status = await run_in_threadpool(who.service.rag.cluster_status)
    return status.to_dict()
