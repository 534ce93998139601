"""OpenTelemetry traces, off unless configured by the standard environment.

``configure_tracing(service)`` (each process's entry point calls it) installs the SDK with an
OTLP/HTTP exporter when ``OTEL_TRACES_EXPORTER=otlp`` or an ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (and ``OTEL_SDK_DISABLED`` is not true), with
``OTEL_SERVICE_NAME`` over the process's own name (``shardrag-api``, ``shardrag-node`` ...).
Otherwise, and when the ``otel`` extra is not installed, every helper here is a no-op that
costs a function call.

A request's trace crosses processes in W3C ``traceparent`` headers: HTTP (a caller's is
continued by the api) and NATS message headers (router → each shard replica).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError:  # the otel extra is not installed
    trace = None  # type: ignore[assignment]

_configured = False

#: The service names shardrag's processes report as (``OTEL_SERVICE_NAME`` overrides).
API_SERVICE = "shardrag-api"
NODE_SERVICE = "shardrag-node"


def worker_service(stage: str) -> str:
    """The service name of a pipeline worker of ``stage``."""
    return f"shardrag-worker-{stage}"


def configure_tracing(service_name: str) -> bool:
    """Install the SDK and its OTLP/HTTP exporter if the environment asks for traces;
    whether it did (once per process)."""
    global _configured
    if _configured or trace is None or not _wanted():
        return _configured
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True
    return True


def _wanted() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporter == "none":
        return False
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    return exporter == "otlp" or bool(endpoint)


def flush() -> None:
    """Export the spans ended so far (before a process exits, or in tests)."""
    if trace is not None:
        provider: Any = trace.get_tracer_provider()
        if hasattr(provider, "force_flush"):
            provider.force_flush()


@contextlib.contextmanager
def span(
    name: str,
    kind: str = "internal",
    parent: Mapping[str, str] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """A span around the block (``kind``: internal, server, client); ``parent``: carrier
    headers holding the W3C context to continue (an HTTP request's, a NATS message's)."""
    if not _configured or trace is None:
        yield None
        return
    tracer = trace.get_tracer("shardrag")
    context = propagate.extract(dict(parent)) if parent else None
    kinds = {
        "internal": trace.SpanKind.INTERNAL,
        "server": trace.SpanKind.SERVER,
        "client": trace.SpanKind.CLIENT,
    }
    values = {k: v for k, v in (attributes or {}).items() if v is not None}
    with tracer.start_as_current_span(
        name, context=context, kind=kinds[kind], attributes=values
    ) as current:
        try:
            yield current
        except Exception as exc:
            current.record_exception(exc)
            current.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            raise


class Pending:
    """A span opened under the current one and ended by ``end``, maybe in another thread:
    for work that outlives the block that started it (a streamed answer's generation)."""

    def __init__(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        self._span = None
        if _configured and trace is not None:
            values = {k: v for k, v in (attributes or {}).items() if v is not None}
            self._span = trace.get_tracer("shardrag").start_span(name, attributes=values)

    def end(self, error: BaseException | None = None) -> None:
        """End the span (once), marked failed by ``error`` if given."""
        span, self._span = self._span, None
        if span is None or trace is None:
            return
        if error is not None:
            span.record_exception(error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
        span.end()


def enabled() -> bool:
    """Whether this process exports traces (``configure_tracing`` found them wanted)."""
    return _configured


def current_trace_id() -> str | None:
    """The trace id (32 hex digits) of the current span if it is recorded; else None."""
    if not _configured or trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return f"{context.trace_id:032x}"


def annotate(attributes: Mapping[str, Any]) -> None:
    """Set attributes on the current span (nothing when not tracing)."""
    if _configured and trace is not None:
        current = trace.get_current_span()
        for key, value in attributes.items():
            current.set_attribute(key, value)


def inject() -> dict[str, str]:
    """The headers carrying the current trace context (empty when not tracing)."""
    if not _configured or trace is None:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def attach(headers: Mapping[str, str] | None) -> Any:
    """Make ``headers``' trace context current (a token for ``detach``; None if none)."""
    if not _configured or trace is None or not headers:
        return None
    return otel_context.attach(propagate.extract(dict(headers)))


def detach(token: Any) -> None:
    """Undo ``attach``."""
    if token is not None and trace is not None:
        otel_context.detach(token)
