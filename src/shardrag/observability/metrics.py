"""Prometheus metrics: request latency per route, cache counters, documents by state,
circuit breakers, hedges and refused queries.

Each ``Metrics`` has its own collector registry, so several apps in one process (tests)
never share or clash over series. Gauges of state (documents, write pipeline, cache) are read when
/metrics is scraped, from the components that own them, never kept in two places.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shardrag.cache import CacheStats
from shardrag.observability.tracing import current_trace_id

#: The exemplar label that carries a request's trace id on its latency (OpenMetrics).
EXEMPLAR_TRACE_LABEL = "trace_id"
# Seconds: from a cached answer (~0.1 ms) to a long ingest with ?wait=true.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True)
class PipelineStats:
    """The write pipeline's state as the metrics show it."""

    pending_writes: int
    dead_letters: int
    applied: dict[int, int] = field(default_factory=dict)
    log_head: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ResilienceStats:
    """The query path's defences in one api process, as the metrics show them."""

    #: Node id -> its circuit breaker in this process's router: 0 closed, 1 half-open, 2 open.
    breakers: dict[str, int] = field(default_factory=dict)
    hedges: int = 0
    #: Tenant -> queries refused with 429 tenant_overloaded.
    tenant_rejections: dict[str, int] = field(default_factory=dict)
    shed: int = 0


class _ResilienceCollector(Collector):
    """Reads breakers, hedges and refusals at scrape time."""

    def __init__(self, resilience: Callable[[], ResilienceStats]) -> None:
        self.resilience = resilience

    def collect(self) -> Iterator[Metric]:
        stats = self.resilience()
        breakers = GaugeMetricFamily(
            "shardrag_breaker_state",
            "Circuit breaker of an index node in this api process: 0 closed, 1 half-open, 2 open",
            labels=["node"],
        )
        for node, state in sorted(stats.breakers.items()):
            breakers.add_metric([node], state)
        yield breakers
        yield CounterMetricFamily(
            "shardrag_router_hedges",
            "Hedged second requests sent to another replica of a slow shard",
            value=stats.hedges,
        )
        rejected = CounterMetricFamily(
            "shardrag_tenant_overloaded",
            "Queries refused (429 tenant_overloaded): the tenant had its limit in flight",
            labels=["tenant"],
        )
        for tenant, count in sorted(stats.tenant_rejections.items()):
            rejected.add_metric([tenant], count)
        yield rejected
        yield CounterMetricFamily(
            "shardrag_queries_shed",
            "Queries refused (503 overloaded) because they could not meet their deadline",
            value=stats.shed,
        )


class _StateCollector(Collector):
    """Reads the state gauges and cache counters at scrape time."""

    def __init__(
        self,
        documents: Callable[[], Mapping[str, int]],
        pipeline: Callable[[], PipelineStats],
        cache: Callable[[], CacheStats | None],
    ) -> None:
        self.documents = documents
        self.pipeline = pipeline
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        docs = GaugeMetricFamily(
            "shardrag_documents", "Documents by state (all tenants)", labels=["state"]
        )
        for state, count in self.documents().items():
            docs.add_metric([state], count)
        yield docs
        pipeline = self.pipeline()
        yield GaugeMetricFamily(
            "shardrag_pending_writes",
            "Versions accepted and not yet decided (live, failed or superseded)",
            value=pipeline.pending_writes,
        )
        yield GaugeMetricFamily(
            "shardrag_dead_letters",
            "Events the write pipeline gave up on, awaiting a re-drive",
            value=pipeline.dead_letters,
        )
        applied = GaugeMetricFamily(
            "shardrag_shard_applied_offset",
            "Log sequence of the last op this process's replica of a shard applied",
            labels=["shard"],
        )
        head = GaugeMetricFamily(
            "shardrag_shard_log_head", "Log sequence of a shard's newest op", labels=["shard"]
        )
        for shard_id, offset in sorted(pipeline.applied.items()):
            applied.add_metric([str(shard_id)], offset)
        for shard_id, sequence in sorted(pipeline.log_head.items()):
            head.add_metric([str(shard_id)], sequence)
        yield applied
        yield head
        stats = self.cache()
        if stats is None:
            return
        families = {
            "hits": CounterMetricFamily(
                "shardrag_cache_hits", "Result cache hits", labels=["kind"]
            ),
            "misses": CounterMetricFamily(
                "shardrag_cache_misses", "Result cache misses", labels=["kind"]
            ),
            "evictions": CounterMetricFamily(
                "shardrag_cache_evictions", "Result cache evictions", labels=["kind"]
            ),
        }
        entries = GaugeMetricFamily(
            "shardrag_cache_entries", "Result cache entries held", labels=["kind"]
        )
        for kind, counts in sorted(stats.by_kind.items()):
            for name, family in families.items():
                family.add_metric([kind], getattr(counts, name))
            entries.add_metric([kind], counts.entries)
        yield from families.values()
        yield entries


class Metrics:
    """The metrics of one api process."""

    def __init__(
        self,
        documents: Callable[[], Mapping[str, int]],
        pipeline: Callable[[], PipelineStats],
        cache: Callable[[], CacheStats | None],
        resilience: Callable[[], ResilienceStats] = ResilienceStats,
        embedding: Mapping[str, str] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        if embedding:
            # Which model and runtime embed here (e.g. onnx-int8), as labels of a constant 1.
            info = Gauge(
                "shardrag_embedder_info",
                "The embedding model and the runtime that runs it in this process",
                sorted(embedding),
                registry=self.registry,
            )
            info.labels(**embedding).set(1)
        self.request_seconds = Histogram(
            "shardrag_http_request_duration_seconds",
            "HTTP request latency by route template, method and status",
            ["route", "method", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(documents, pipeline, cache))
        self.registry.register(_ResilienceCollector(resilience))

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """``GET /metrics``: (body, content type). OpenMetrics, which carries exemplars
        (trace ids), when the scraper's ``accept`` header asks for it; else Prometheus text."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class MetricsMiddleware:
    """Times every HTTP request under its route template (``/v1/tenants/{t}/search``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            # Unmatched paths share one label: raw paths would be unbounded cardinality.
            template = getattr(route, "path", None) or "unmatched"
            # With tracing on, the request's trace rides along as an exemplar: a dashboard's
            # latency point links to the trace of a request that made it (OpenMetrics only).
            trace_id = current_trace_id()
            self.metrics.request_seconds.labels(template, scope["method"], str(status)).observe(
                time.perf_counter() - started,
                {EXEMPLAR_TRACE_LABEL: trace_id} if trace_id else None,
            )
