"""Single-node ONNX layers for primitive tests: built with onnx.helper, loaded with load_onnx, run by ORT."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from perfpredict.graph import Node, load_onnx


@dataclass(frozen=True)
class Layer:
    """A loaded one-node model: its Node, the kernel weights, an input and ONNX Runtime's output for it."""

    node: Node
    weights: dict[str, np.ndarray]
    x: np.ndarray
    expected: np.ndarray


def _out_dims(rank: int) -> list[str]:
    return [f"d{i}" for i in range(rank)]  # symbolic: shape inference fills them in


def _run(model, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def conv_layer(cin: int, cout: int, k=(3, 3), *, stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), groups=1,
               hw=(12, 12), batch=1, bias=True, seed=0) -> Layer:
    """A Conv layer with random weights (fan-in scaled) and a standard-normal input."""
    rng = np.random.default_rng(seed)
    k = (k, k) if isinstance(k, int) else tuple(k)
    w = (rng.standard_normal((cout, cin // groups, *k)) / np.sqrt(cin // groups * k[0] * k[1])).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node("Conv", inputs, ["y"], name="conv", kernel_shape=list(k), strides=list(stride),
                            pads=list(pads), dilations=list(dilation), group=groups)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                             [batch, cin, *hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, _out_dims(4))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    g = load_onnx(model)
    n = g.nodes[0]
    weights = {"weight": g.initializers[n.inputs[1]]}
    if bias:
        weights["bias"] = g.initializers[n.inputs[2]]
    x = rng.standard_normal((batch, cin, *hw)).astype(np.float32)
    return Layer(n, weights, x, _run(model, x))


def gemm_layer(m: int, k: int, n: int, *, trans_b=1, alpha=1.0, beta=1.0, c_shape=("n",), op="Gemm",
               seed=0) -> Layer:
    """A Gemm (or MatMul, B (K, N)) layer with a weight B, an optional C of ``c_shape`` ('m'/'n' or ints)."""
    rng = np.random.default_rng(seed)
    b_shape = (n, k) if (op == "Gemm" and trans_b) else (k, n)
    b = (rng.standard_normal(b_shape) / np.sqrt(k)).astype(np.float32)
    inits = [numpy_helper.from_array(b, "B")]
    inputs = ["x", "B"]
    if op == "Gemm" and c_shape is not None:
        shape = tuple({"m": m, "n": n}.get(s, s) for s in c_shape)
        inits.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), "C"))
        inputs.append("C")
    attrs = dict(transB=trans_b, alpha=alpha, beta=beta) if op == "Gemm" else {}
    node = helper.make_node(op, inputs, ["y"], name="fc", **attrs)
    graph = helper.make_graph([node], "fc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, _out_dims(2))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    g = load_onnx(model)
    nd = g.nodes[0]
    weights = {"weight": g.initializers[nd.inputs[1]]}
    if len(nd.inputs) > 2:
        weights["bias"] = g.initializers[nd.inputs[2]]
    x = rng.standard_normal((m, k)).astype(np.float32)
    return Layer(nd, weights, x, _run(model, x))


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| / max|b|."""
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


def sqnr_db(approx: np.ndarray, ref: np.ndarray) -> float:
    """Signal-to-quantisation-noise ratio of ``approx`` against ``ref`` in dB."""
    noise = np.sum((np.asarray(approx, dtype=np.float64) - ref) ** 2)
    return float(10 * np.log10(np.sum(np.asarray(ref, dtype=np.float64) ** 2) / max(noise, 1e-30)))
