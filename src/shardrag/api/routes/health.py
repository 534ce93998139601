"""Liveness, readiness and metrics (no key needed: they reveal no tenant's data)."""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from shardrag.api.deps import Service, service
from shardrag.errors import Unavailable

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, Any]:
    """The process is alive (it answers); its pid tells api processes behind one port apart."""
    return {"status": "ok", "pid": os.getpid()}


@router.get("/readyz")
def readyz(svc: Annotated[Service, Depends(service)]) -> dict[str, Any]:
    """Ready to serve: the data dir is open and its registry answers."""
    if svc.rag.closed:
        raise Unavailable("the data dir is closed")
    tenants = len(svc.rag.tenants())
    return {"status": "ready", "tenants": tenants, "pending_writes": svc.rag.pending_writes()}


@router.get("/metrics", response_class=Response)
def metrics(svc: Annotated[Service, Depends(service)], request: Request) -> Response:
    """Prometheus text format: latency per route, cache counters, documents by state; the
    OpenMetrics format, with trace ids as exemplars, when the scraper asks for it."""
    body, content_type = svc.metrics.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)
