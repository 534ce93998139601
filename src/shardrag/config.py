"""Settings: one ``SHARDRAG_`` environment namespace and an optional ``shardrag.toml``.

Precedence, highest first: arguments given in code, ``SHARDRAG_*`` variables, the TOML file
(``$SHARDRAG_CONFIG``, else ``./shardrag.toml``), the defaults below.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from shardrag.errors import InvalidParameter
from shardrag.models import Fusion

#: The bundled model's runtimes (embed/runtime.py).
EMBED_RUNTIMES = ("auto", "onnx-int8", "onnx-fp32", "torch-fp32")
#: The quantizations of dense vectors a shard can be made with (engine/shard.py).
QUANTIZATIONS = ("none", "int8")


@dataclass(frozen=True)
class Settings:
    """Every tunable of an embedded shardrag; see docs/configuration.md."""

    data_dir: Path = Path("./shardrag-data")
    #: Shards in the data dir; a tenant is placed on one when it is created.
    shards: int = 1
    #: Largest document accepted, in bytes (413 document_too_large above).
    max_document_bytes: int = 25 * 1024 * 1024
    #: Target chunk size and overlap, in the embedding model's tokens.
    chunk_tokens: int = 200
    chunk_overlap_tokens: int = 32
    #: "bundled" (all-MiniLM-L6-v2 on the CPU) or "http" (an OpenAI-compatible endpoint).
    embedder: str = "bundled"
    #: Texts per model forward pass. 8 is as fast as any size on a 2-core CPU (64 is 18 % slower)
    #: and bounds how long a query waits behind ingestion (~180 ms); docs/benchmarks.md.
    embed_batch_size: int = 8
    #: The bundled model's runtime: "auto" (int8 ONNX where the CPU has fast integer dot
    #: products, else fp32 ONNX), "onnx-int8", "onnx-fp32", or "torch-fp32" (the reference,
    #: needs the extra shardrag[torch]); docs/embedding.md.
    embed_runtime: str = "auto"
    #: Where the bundled model's compiled graphs are kept (default ~/.cache/shardrag/models).
    model_cache_dir: Path | None = None
    embed_url: str | None = None
    embed_model: str | None = None
    embed_api_key: str | None = None
    embed_dimension: int | None = None
    embed_timeout_seconds: float = 30.0
    #: Vectors kept in the embedding cache (per data dir, all tenants).
    embedding_cache_entries: int = 200_000
    #: Hot tier: cached search results and query vectors (0 entries turns it off).
    result_cache_entries: int = 10_000
    result_cache_ttl_seconds: float = 300.0
    #: New points in a shard after which its indexes are rebuilt (see engine.optimize).
    optimize_threshold: int = 20_000
    #: HNSW search effort of dense queries; 0: by each shard's size (docs/shard-key.md).
    search_ef: int = 0
    #: Dense vectors of new shards: "int8" (int8 copies in RAM, float32 originals on disk,
    #: the best 2 x limit rescored on them) or "none" (float32 in RAM); a shard keeps the one
    #: it was made with. int8 measured faster and half the RAM at 1M points, the same recall
    #: (docs/shard-key.md).
    quantization: str = "int8"
    #: Answers: an OpenAI-compatible chat endpoint if set, else extractive answers.
    llm_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_api_key: str | None = None
    llm_timeout_seconds: float = 60.0
    #: Tokens of passage text an answer's prompt may hold.
    answer_context_tokens: int = 1500
    #: Fusion of dense and keyword ranks in hybrid mode (docs/retrieval.md).
    fusion: Fusion = Fusion.DBSF
    max_k: int = 1000
    #: Service (``shardrag serve``): where it listens.
    host: str = "127.0.0.1"
    port: int = 8080
    #: The operator's root key; if unset, one is generated and printed on first start.
    admin_key: str | None = None
    #: Largest HTTP request body (413 request_too_large above); leaves room for multipart.
    max_request_bytes: int = 26 * 1024 * 1024
    #: Requests per second per API key, sustained and in a burst (0 turns the limit off).
    rate_limit_per_second: float = 50.0
    rate_limit_burst: int = 100
    #: Failed authentications per second per client address, sustained and in a burst;
    #: beyond, 429 ``rate_limited`` before the key is even looked at (0 turns it off).
    auth_failures_per_second: float = 1.0
    auth_failures_burst: int = 20
    #: Whether the unauthenticated ``/metrics`` names tenants (per-tenant refusal counts).
    #: Off: those counts are one sum, so scraping reveals no tenant's name (docs/security.md).
    metrics_tenant_names: bool = False
    #: How long a session or strong read may wait for its writes to be applied.
    read_concern_timeout_seconds: float = 30.0
    #: Level of the JSON log lines (debug, info, warning, error); ``access_log`` writes one
    #: line per request at info (logger ``shardrag.access``, docs/security.md).
    log_level: str = "info"
    access_log: bool = True
    #: HTTPS: the server's certificate chain and key (PEM); with ``tls_client_ca``, clients
    #: must present a certificate signed by it (mutual TLS). Unset: plain HTTP.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    #: TLS to NATS: the CA of its server certificate, and this process's client certificate
    #: and key when the server verifies clients. (PostgreSQL and Redis take theirs in their
    #: URLs: ``?sslmode=verify-full&sslrootcert=…``, ``rediss://…?ssl_ca_certs=…``.)
    nats_tls_ca: str | None = None
    nats_tls_cert: str | None = None
    nats_tls_key: str | None = None
    #: Encryption at rest of originals and snapshots: the master key (64 hex digits, AES-256)
    #: or a file holding it. Unset: stored as given (docs/security.md).
    master_key: str | None = None
    master_key_file: str | None = None
    #: The master key before a rotation (same forms): data keys still wrapped under it are
    #: read, none is wrapped with it; ``shardrag security rotate-master-key`` re-wraps them.
    previous_master_key: str | None = None
    previous_master_key_file: str | None = None
    #: The durable log between the services: NATS JetStream at this URL, else (unset) SQLite
    #: in the data dir. ``log_prefix`` names its streams (and subjects).
    nats_url: str | None = None
    log_prefix: str = "shardrag"
    #: Write-path stages this process runs: "ingest,embed,index" (all), or some, or "none".
    stages: str = "all"
    #: "log": every write goes through the durable log (the default). "direct": the embedded
    #: core's synchronous path in the caller's thread — the benchmark's baseline, without the
    #: log's crash safety for accepted writes.
    write_path: str = "log"
    #: Deliveries of an event before it is dead-lettered; backoff between them (with jitter).
    max_attempts: int = 5
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 30.0
    #: A delivery not acknowledged within this long goes to another worker (its worker died).
    ack_wait_seconds: float = 60.0
    #: How long a waiting write (``wait=True``) waits for its version to be decided.
    write_timeout_seconds: float = 600.0
    #: Seconds between reconciliation passes in ``shardrag serve`` (0 turns them off).
    reconcile_interval_seconds: float = 600.0
    # -- the distributed mode (docs/cluster.md) -------------------------------------------------
    #: This process belongs to a cluster: the shard map lives in NATS key-value, searches go
    #: through the router to the index nodes over NATS, and no shard is opened here.
    cluster: bool = False
    #: Backends shared by every process of a cluster (unset: the data dir's own files).
    #: ``postgresql://...``; ``redis://...``; ``s3://bucket/prefix`` or ``file:///shared/dir``.
    registry_url: str | None = None
    redis_url: str | None = None
    cache_prefix: str = "shardrag"
    blob_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    #: JetStream replicas of the log's streams and the shard map's buckets (3 on a 3-server
    #: NATS cluster: losing one server loses nothing).
    log_replicas: int = 1
    #: Replicas per shard when a cluster's layout is first written (``cluster up``).
    replicas: int = 1
    #: An index node's id (``shardrag node --id``) and how long its heartbeat counts.
    node_id: str | None = None
    node_ttl_seconds: float = 6.0
    #: Seconds between snapshots of a node's shards to the blob store (0: never).
    snapshot_interval_seconds: float = 300.0
    #: Placement (docs/cluster.md "Placement"): a tenant of a shared shard with this many
    #: live chunks is promoted to a shard of its own (0: only by hand); a tenant with more
    #: than ``split_threshold_chunks`` per shard is split into more shards (0: never); api
    #: processes check every ``placement_check_seconds``.
    promote_threshold_chunks: int = 0
    split_threshold_chunks: int = 0
    placement_check_seconds: float = 30.0
    #: The router: a query's deadline, and how long one replica may take before the router
    #: asks another.
    search_timeout_seconds: float = 10.0
    replica_timeout_seconds: float = 1.0
    #: Bind the API's port with SO_REUSEPORT, so several api processes share one port.
    reuse_port: bool = False
    # -- resilience of the query path (docs/cluster.md "Resilience") -------------------------
    #: A node's circuit breaker in the router opens after this many failures in a row (no
    #: answer within the replica timeout, or a node fault) and stays open this long before a
    #: trial request may close it again.
    breaker_failures: int = 3
    breaker_cooldown_seconds: float = 2.0
    #: A request still unanswered after its shard's recent p95 latency (never less than this)
    #: gets a hedged second request to another replica.
    hedge_floor_seconds: float = 0.02
    #: Searches and answers one tenant may have in flight per api process (429
    #: tenant_overloaded beyond; 0 turns the limit off).
    tenant_max_concurrent_queries: int = 8
    #: Tokens of model work (embeddings, answers' context) one tenant may have in flight per
    #: api process; more waits behind that tenant's own calls (0 turns the budget off).
    tenant_max_model_tokens: int = 16384
    #: An index node obeys fault-injection requests (test and chaos suites only).
    fault_injection: bool = False

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Defaults, then the TOML file, then the environment, then ``overrides``."""
        values: dict[str, Any] = {}
        toml_path = Path(os.environ.get("SHARDRAG_CONFIG", "shardrag.toml"))
        if toml_path.is_file():
            with toml_path.open("rb") as f:
                values.update(tomllib.load(f))
        for field in fields(cls):
            env = os.environ.get(f"SHARDRAG_{field.name.upper()}")
            if env is not None:
                values[field.name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> Settings:
        """Build settings from strings or typed values, rejecting unknown names."""
        known = {f.name: f for f in fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise InvalidParameter(f"unknown settings: {sorted(unknown)}", unknown=sorted(unknown))
        defaults = cls()
        typed = {
            name: _coerce(name, value, getattr(defaults, name)) for name, value in values.items()
        }
        settings = dataclasses.replace(defaults, **typed)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject values outside their ranges with a message naming the setting."""
        checks = {
            "shards": self.shards >= 1,
            "max_document_bytes": self.max_document_bytes >= 1,
            "chunk_tokens": self.chunk_tokens >= 16,
            "chunk_overlap_tokens": 0 <= self.chunk_overlap_tokens < self.chunk_tokens,
            "embedder": self.embedder in ("bundled", "http"),
            "embed_batch_size": self.embed_batch_size >= 1,
            "embed_runtime": self.embed_runtime in EMBED_RUNTIMES,
            "max_k": self.max_k >= 1,
            "search_ef": self.search_ef >= 0,
            "quantization": self.quantization in QUANTIZATIONS,
            "result_cache_entries": self.result_cache_entries >= 0,
            "answer_context_tokens": self.answer_context_tokens >= 1,
            "result_cache_ttl_seconds": self.result_cache_ttl_seconds > 0,
            "port": 0 <= self.port <= 65535,
            "admin_key": self.admin_key is None or len(self.admin_key) >= 16,
            "max_request_bytes": self.max_request_bytes >= 1024,
            "rate_limit_per_second": self.rate_limit_per_second >= 0,
            "rate_limit_burst": self.rate_limit_burst >= 1,
            "auth_failures_per_second": self.auth_failures_per_second >= 0,
            "auth_failures_burst": self.auth_failures_burst >= 1,
            "read_concern_timeout_seconds": self.read_concern_timeout_seconds > 0,
            "log_replicas": 1 <= self.log_replicas <= 5,
            "replicas": self.replicas >= 1,
            "node_ttl_seconds": self.node_ttl_seconds > 0,
            "snapshot_interval_seconds": self.snapshot_interval_seconds >= 0,
            "promote_threshold_chunks": self.promote_threshold_chunks >= 0,
            "split_threshold_chunks": self.split_threshold_chunks >= 0,
            "placement_check_seconds": self.placement_check_seconds > 0,
            "search_timeout_seconds": self.search_timeout_seconds > 0,
            "replica_timeout_seconds": self.replica_timeout_seconds > 0,
            "breaker_failures": self.breaker_failures >= 1,
            "breaker_cooldown_seconds": self.breaker_cooldown_seconds > 0,
            "hedge_floor_seconds": self.hedge_floor_seconds >= 0,
            "tenant_max_concurrent_queries": self.tenant_max_concurrent_queries >= 0,
            "tenant_max_model_tokens": self.tenant_max_model_tokens >= 0,
            "log_level": self.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
            "tls_key": (self.tls_cert is None) == (self.tls_key is None),
            "tls_client_ca": self.tls_client_ca is None or self.tls_cert is not None,
            "nats_tls_key": (self.nats_tls_cert is None) == (self.nats_tls_key is None),
            "master_key": self.master_key is None or self.master_key_file is None,
            "previous_master_key": (
                self.previous_master_key is None or self.previous_master_key_file is None
            ),
        }
        for name, ok in checks.items():
            if not ok:
                hidden = name in ("admin_key", "master_key", "previous_master_key")
                shown = "<hidden>" if hidden else repr(getattr(self, name))
                raise InvalidParameter(f"setting {name}={shown} is out of range")
        if self.cluster and not self.nats_url:
            raise InvalidParameter(
                "the distributed mode (SHARDRAG_CLUSTER) needs SHARDRAG_NATS_URL"
            )
        if self.embedder == "http" and not self.embed_url:
            raise InvalidParameter("embedder 'http' needs SHARDRAG_EMBED_URL")


def _coerce(name: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str):
        return Path(value) if isinstance(default, Path) else value
    try:
        if isinstance(default, bool):
            return value.lower() in ("1", "true", "yes", "on")
        if isinstance(default, Fusion):
            return Fusion(value.lower())
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, Path):
            return Path(value)
    except ValueError as exc:
        raise InvalidParameter(f"setting {name}={value!r}: {exc}", setting=name) from exc
    if name == "embed_dimension":
        return int(value)
    if name == "model_cache_dir":
        return Path(value)
    return value
