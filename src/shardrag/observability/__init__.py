"""Metrics (Prometheus) and logs of a shardrag process."""

from shardrag.observability.logging import JsonFormatter, configure_json_logging
from shardrag.observability.metrics import Metrics, MetricsMiddleware

__all__ = ["JsonFormatter", "Metrics", "MetricsMiddleware", "configure_json_logging"]
