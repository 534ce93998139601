"""The FastAPI app of ``shardrag serve``: the API over one embedded ``Shardrag``."""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from shardrag.api.accesslog import AccessLog
from shardrag.api.auth import ApiKeys
from shardrag.api.costs import ModelBudget
from shardrag.api.deps import Service
from shardrag.api.docs import ERROR_RESPONSES, install_docs
from shardrag.api.errors import install_error_handlers
from shardrag.api.guard import Guard
from shardrag.api.limits import QueryAdmission
from shardrag.api.ratelimit import RateLimiter
from shardrag.api.routes import documents, health, pipeline, search, tenants
from shardrag.embedded import Shardrag
from shardrag.observability import Metrics, MetricsMiddleware
from shardrag.observability.metrics import ResilienceStats

log = logging.getLogger(__name__)
CONSOLE_DIR = Path(__file__).parent / "console"

DESCRIPTION = """
Multi-tenant retrieval-augmented generation.

Authenticate with `Authorization: Bearer <key>`. The operator's root key creates tenants and
their keys; a tenant's keys are `admin` (keys, audit log), `writer` (documents) or `reader`
(search, answers). A key only ever reaches its own tenant: any other tenant is 404.
Every error is `{"error": {"code", "message", "details"}}` with a stable `code`.
"""


def create_app(rag: Shardrag) -> FastAPI:
    """The app serving ``rag``; the caller keeps ownership of ``rag`` (and closes it).

    ``app.state.bootstrap_key`` holds a root key generated now (first start without
    ``SHARDRAG_ADMIN_KEY``), for the caller to show once; otherwise None.
    """
    settings = rag.settings
    keys = ApiKeys(rag.registry, settings.admin_key)
    admission = QueryAdmission(
        settings.tenant_max_concurrent_queries,
        settings.search_timeout_seconds,
        cpu_clock=time.process_time,
    )
    metrics = Metrics(
        documents=lambda: {s.value: n for s, n in rag.document_counts().items()},
        pipeline=rag.pipeline_stats,
        cache=lambda: rag.result_cache.stats() if rag.result_cache else None,
        resilience=lambda: _resilience(rag, admission, settings.metrics_tenant_names),
        embedding={
            "model": rag.embedder.model_id,
            "runtime": getattr(rag.embedder, "runtime", "unknown"),
        },
    )
    app = FastAPI(
        title="shardrag",
        version="0.1.0",
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        **_WITHOUT_NATIVE_TRACING,
    )
    app.state.service = Service(rag=rag, keys=keys, metrics=metrics)
    app.state.bootstrap_key = keys.bootstrap()
    app.state.query_admission = admission
    app.state.model_budget = ModelBudget(
        settings.tenant_max_model_tokens, settings.search_timeout_seconds
    )
    install_error_handlers(app)
    app.include_router(health.router)
    for router in (
        tenants.router,
        documents.originals,
        documents.router,
        search.router,
        pipeline.router,
    ):
        app.include_router(router, responses=ERROR_RESPONSES)
    install_docs(app)
    _mount_console(app)
    # Outermost last: metrics time everything, including the guard's refusals.
    app.add_middleware(
        Guard,
        keys=keys,
        limiter=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
        auth_failures=RateLimiter(settings.auth_failures_per_second, settings.auth_failures_burst),
        max_body_bytes=settings.max_request_bytes,
        admission=admission,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(AccessLog)
    return app


# FastAPI (0.16x) traces requests itself when OpenTelemetry is installed, continuing the
# caller's traceparent beside the api's own request span (AccessLog) rather than under it: two
# request spans of one request. The api's span carries the route, status and tenant and the
# access log's timing, so FastAPI's is turned off where FastAPI has the setting.
_WITHOUT_NATIVE_TRACING: dict[str, Any] = (
    {"telemetry": {"tracing": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


#: The tenant label of per-tenant counts when ``/metrics`` may not name tenants.
ANY_TENANT = "*"


def _resilience(rag: Shardrag, admission: QueryAdmission, tenant_names: bool) -> ResilienceStats:
    refused = admission.stats()
    router = rag.router
    rejections = refused.tenant_rejections
    if not tenant_names and rejections:
        rejections = {ANY_TENANT: sum(rejections.values())}
    return ResilienceStats(
        breakers={n: int(s) for n, s in router.breaker_states().items()} if router else {},
        hedges=router.hedges if router else 0,
        tenant_rejections=rejections,
        shed=refused.shed,
    )


def _mount_console(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def console() -> FileResponse:
        # The page's own policy sits in a <meta>, where frame-ancestors is ignored: no other
        # site may frame the console (clickjacking an operator's key).
        headers = {"Content-Security-Policy": "frame-ancestors 'none'", "X-Frame-Options": "DENY"}
        return FileResponse(CONSOLE_DIR / "index.html", media_type="text/html", headers=headers)

    app.mount("/console", StaticFiles(directory=CONSOLE_DIR), name="console")
