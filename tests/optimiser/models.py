"""Small models for the optimiser tests, built with onnx.helper (no zoo export needed)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_residual_model(path, *, hw: int = 8, c: int = 8, seed: int = 0) -> str:
    """conv3x3 -> relu -> conv3x3 -> relu -> conv3x3 -> add(skip) -> relu -> conv1x1 -> GAP -> flatten -> gemm."""
    rng = np.random.default_rng(seed)
    inits = []

    def weight(name: str, shape: tuple[int, ...]) -> str:
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name))
        return name

    nodes = [
        helper.make_node("Conv", ["x", weight("w1", (c, 3, 3, 3)), weight("b1", (c,))], ["c1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", weight("w2", (c, c, 3, 3)), weight("b2", (c,))], ["c2"], name="conv2",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", weight("w3", (c, c, 3, 3)), weight("b3", (c,))], ["c3"], name="conv3",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c3", "r1"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["r3"], name="relu3"),
        helper.make_node("Conv", ["r3", weight("w4", (2 * c, c, 1, 1)), weight("b4", (2 * c,))], ["c4"],
                         name="conv4", kernel_shape=[1, 1]),
        helper.make_node("GlobalAveragePool", ["c4"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", weight("wf", (10, 2 * c)), weight("bf", (10,))], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "resid", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return str(path)
