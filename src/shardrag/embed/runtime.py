"""Which runtime runs the bundled model on this CPU, and the compiled graph it runs.

The runtimes (docs/embedding.md has the measurements behind the choice):

- ``onnx-int8``: ONNX Runtime on a graph built from the bundled weights, its weight matrices
  quantized to int8 per output channel (activations quantized on the fly), except the
  feed-forward down-projections, which stay fp32. The default wherever
  the CPU has fast integer dot products (AVX2, AVX-512 VNNI, AMX on x86; every 64-bit ARM).
- ``onnx-fp32``: the same graph unquantized: identical to the reference within float rounding.
  The default on x86 CPUs without AVX2, where int8 kernels are no faster.
- ``torch-fp32``: sentence-transformers on PyTorch, the reference the others are tested
  against. Only with the optional extra ``shardrag[torch]``; never picked automatically.

Every runtime computes the same function (BERT, mean pooling, L2 normalisation) and writes
into one vector space: a corpus embedded by one is searchable with queries of another.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from shardrag.errors import EmbedderUnavailable

log = logging.getLogger(__name__)

BUNDLED_DIMENSION = 384
_INT8_FLAGS = frozenset({"avx2", "avx512_vnni", "avx_vnni", "amx_int8"})


@lru_cache(maxsize=1)
def cpu_features() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo is absent)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def choose_runtime(requested: str, features: frozenset[str] | None = None) -> str:
    """The runtime to use: ``requested`` itself unless it is ``auto``."""
    if requested != "auto":
        return requested
    features = cpu_features() if features is None else features
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686") and not features & _INT8_FLAGS:
        return "onnx-fp32"
    return "onnx-int8"


def default_cache_dir() -> Path:
    """Where compiled graphs are kept: ``$XDG_CACHE_HOME/shardrag/models`` (~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shardrag" / "models"


@dataclass(frozen=True)
class CompiledGraph:
    """An ONNX graph of the bundled model, on disk, ready for a session."""

    path: Path
    precision: str
    built: bool  # False when it came from the cache


_build_lock = threading.Lock()


def compiled_graph(model_dir: Path, precision: str, cache_dir: Path) -> CompiledGraph:
    """The graph of ``model_dir`` at ``precision`` ("fp32" or "int8"), built once and cached.

    The cache key covers the weights file (path, size, mtime), the graph builder's version and
    the ONNX Runtime version (whose quantizer wrote it), so an upgrade of any rebuilds it.
    Builds write a temporary file and rename it into place: processes starting together may
    each build, but none ever reads a half-written graph.
    """
    import onnxruntime

    from shardrag.embed.graph import GRAPH_VERSION

    weights = model_dir / "model.safetensors"
    stat = weights.stat()
    key = hashlib.sha256(
        f"{GRAPH_VERSION}|{precision}|{onnxruntime.__version__}|{weights.resolve()}|"
        f"{stat.st_size}|{stat.st_mtime_ns}".encode()
    ).hexdigest()[:16]
    path = cache_dir / f"all-minilm-l6-v2-{precision}-{key}.onnx"
    if path.exists():
        return CompiledGraph(path, precision, built=False)
    with _build_lock:
        if path.exists():
            return CompiledGraph(path, precision, built=False)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbedderUnavailable(
                f"cannot create the model cache {cache_dir}: {exc} "
                "(set SHARDRAG_MODEL_CACHE_DIR to a writable directory)",
                path=str(cache_dir),
            ) from exc
        log.info("building the %s graph of the bundled model into %s", precision, cache_dir)
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".build-") as tmp:
            built = _build(model_dir, precision, Path(tmp))
            os.replace(built, path)
    return CompiledGraph(path, precision, built=True)


def _build(model_dir: Path, precision: str, workdir: Path) -> Path:
    from shardrag.embed.graph import build_bert_graph

    fp32 = workdir / "fp32.onnx"
    fp32.write_bytes(build_bert_graph(model_dir))
    if precision == "fp32":
        return fp32
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from shardrag.embed.graph import ffn_output_matmuls

    layers = json.loads((model_dir / "config.json").read_text())["num_hidden_layers"]
    int8 = workdir / "int8.onnx"
    with _quiet_root_logger():
        # Weight matrices only (the attention products of two activations stay fp32), one
        # scale per output channel. The feed-forward down-projections stay fp32: quantizing
        # them too cost 0.005 nDCG@10 on CISI and halved the cosine margin to the reference,
        # for 7 % more speed (docs/embedding.md).
        quantize_dynamic(
            fp32,
            int8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=ffn_output_matmuls(layers),
        )
    return int8


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    # The quantizer advises "pre-processing" on the root logger; that advice is for image models.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
