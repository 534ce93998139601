"""The write pipeline's operations: a tenant's dead letters and their re-drive; reconciliation."""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool

from shardrag.api.deps import Caller, root_caller, tenant_caller
from shardrag.api.schemas import (
    ClusterStatusOut,
    DeadLetterList,
    DeadLetterOut,
    ErrorOut,
    PromoteIn,
    RebalanceOut,
    ReconcileOut,
    RotateOut,
    TenantPlacementOut,
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
    found = who.service.rag.dead_letters(t, limit, who.groups)
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
        dead = who.service.rag.redrive(t, dead_letter_id, who.groups)
        details.update(doc_id=dead.doc_id, version=dead.version)
    return dead.to_dict()


@router.post("/v1/admin/reconcile", response_model=ReconcileOut, tags=["operations"])
async def reconcile(
    who: Root, dry_run: Annotated[bool, Query(description="report, repair nothing")] = False
) -> Any:
    """Compare the registry with the shards and repair drift (root key only)."""
    report = await run_in_threadpool(who.service.rag.reconcile, dry_run)
    return report.to_dict()


@router.post("/v1/admin/security/rotate-master-key", response_model=RotateOut, tags=["operations"])
async def rotate_master_key(who: Root) -> Any:
    """Re-wrap every data key under the master key this server runs with (root key).

    Run it once every process runs with the new key as ``SHARDRAG_MASTER_KEY`` and the old
    one as ``SHARDRAG_PREVIOUS_MASTER_KEY``; then the old key can go (docs/security.md).
    409 ``encryption_off`` without a master key.
    """
    with who.audited("security.rotate_master_key", "master key") as details:
        count = await run_in_threadpool(who.service.rag.rotate_master_key)
        details["rewrapped"] = count
    return {"rewrapped": count}


@router.get("/v1/admin/cluster", response_model=ClusterStatusOut, tags=["operations"])
async def cluster_status(who: Root) -> Any:
    """Shards, their replicas and log heads; live nodes with applied offsets and lag (root).

    Embedded, the one node is this process (``local``). ``breakers``: each node's circuit
    breaker in the router of the api process that answers (``api_pid``).
    """
    rag = who.service.rag
    status = await run_in_threadpool(rag.cluster_status)
    breakers = rag.router.breaker_states()
    return {
        **status.to_dict(),
        "breakers": {node: state.label for node, state in breakers.items()},
        "api_pid": os.getpid(),
    }


@router.post(
    "/v1/admin/tenants/{tenant}/promote",
    response_model=TenantPlacementOut,
    status_code=202,
    tags=["operations"],
)
async def promote_tenant(tenant: str, body: PromoteIn, who: Root) -> Any:
    """Move a tenant to dedicated shards (``shards`` > 1 splits it by document id) while it
    keeps serving (root; distributed mode, else 409 ``cluster_only``). The move runs in the
    background; ``GET /v1/admin/cluster`` shows its phase until it is settled."""
    placement = await run_in_threadpool(who.service.rag.promote_tenant, tenant, body.shards, False)
    return {
        "tenant": tenant,
        "shards": list(placement.shards),
        "phase": placement.phase,
        "target": list(placement.target),
        "source": list(placement.source),
    }


@router.post("/v1/admin/cluster/rebalance", response_model=RebalanceOut, tags=["operations"])
async def rebalance(
    who: Root, dry_run: Annotated[bool, Query(description="plan, move nothing")] = False
) -> Any:
    """Move replicas between live nodes until none holds more than one above another (root;
    distributed mode). Each move adds the new replica, waits until it caught up, then removes
    the old one: no gap in any shard's replicas."""
    moves = await run_in_threadpool(who.service.rag.rebalance, dry_run)
    return {
        "dry_run": dry_run,
        "moves": [
            {"shard": m.shard_id, "from_node": m.from_node, "to_node": m.to_node} for m in moves
        ],
    }
