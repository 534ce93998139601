"""Metrics (Prometheus) and logs of a shardrag process."""

from shardrag.observability.metrics import Metrics, MetricsMiddleware

__all__ = ["Metrics", "MetricsMiddleware"]
