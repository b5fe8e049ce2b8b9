"""Small ONNX graphs of non-conv ops for primitive tests, run through the runtime and through ONNX Runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from perfpredict.graph import Graph, load_onnx
from perfpredict.plan import Choice, Plan, default_choice
from perfpredict.primitives import get_primitive
from perfpredict.runtime import build_executable


@dataclass(frozen=True)
class OpCase:
    """One op (or a short chain) on activation inputs ``x`` (and ``y``, ...) with constant inputs.

    ``nodes`` are ``(op, inputs, outputs, attrs)``; inputs named in ``consts`` are initialisers.
    """

    id: str
    nodes: tuple[tuple[str, tuple[str, ...], tuple[str, ...], dict[str, Any]], ...]
    inputs: dict[str, tuple[int, ...]]
    outputs: tuple[str, ...] = ("out",)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 17


def single(case_id: str, op: str, ins: tuple[str, ...] = ("x",), shape=(1, 8, 6, 6), *, extra_inputs=None,
           consts=None, outputs=("out",), opset=17, **attrs) -> OpCase:
    """An OpCase with one node ``op`` reading ``ins`` and writing ``outputs``."""
    inputs = {"x": tuple(shape)}
    inputs.update(extra_inputs or {})
    return OpCase(case_id, ((op, tuple(ins), tuple(outputs), attrs),), inputs, tuple(outputs), dict(consts or {}),
                  opset)


def make_model(case: OpCase) -> onnx.ModelProto:
    """The ONNX model of ``case``."""
    nodes = [helper.make_node(op, list(ins), list(outs), name=f"{op.lower()}_{k}", **attrs)
             for k, (op, ins, outs, attrs) in enumerate(case.nodes)]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in case.inputs.items()]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in case.outputs]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in case.consts.items()]
    graph = helper.make_graph(nodes, case.id, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
    return onnx.shape_inference.infer_shapes(model)  # fills in the output shapes


def case_inputs(case: OpCase, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded standard-normal inputs of ``case``."""
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in case.inputs.items()}


def ort_outputs(case: OpCase, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """ONNX Runtime's outputs of ``case``."""
    sess = ort.InferenceSession(make_model(case).SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, feeds)]


def load_case(case: OpCase) -> Graph:
    """``case`` loaded as a perfpredict Graph."""
    return load_onnx(make_model(case), name=case.id)


def plan_for(graph: Graph, layout: str = "NCHW", precision: str = "fp32") -> Plan:
    """Every node at its default primitive in ``layout`` (where the primitive has it) and ``precision``
    (where it supports it)."""
    choices = {}
    for n in graph.nodes:
        prim = get_primitive(default_choice(n).primitive)
        lay = layout if layout in prim.layouts else prim.layouts[0]
        prec = precision if precision in prim.precisions else "fp32"
        choices[n.name] = Choice(prim.name, lay, prec)
    return Plan(choices)


def run_case(case: OpCase, layout: str = "NCHW", precision: str = "fp32", seed: int = 0
             ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(runtime outputs, ONNX Runtime outputs) of ``case`` on seeded inputs."""
    graph = load_case(case)
    feeds = case_inputs(case, seed)
    xs = [feeds[n] for n in graph.inputs]
    calibration = [tuple(xs)] if precision == "int8" else None
    exe = build_executable(graph, plan_for(graph, layout, precision), calibration=calibration)
    ours = exe.run(*xs)
    ours = list(ours) if isinstance(ours, tuple) else [ours]
    return ours, ort_outputs(case, feeds)


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    """max|a - ref| / max|ref| (absolute when ref is all zero)."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    assert a.shape == ref.shape, (a.shape, ref.shape)
    scale = np.max(np.abs(ref)) if ref.size else 0.0
    err = np.max(np.abs(a - ref)) if a.size else 0.0
    return float(err / scale) if scale > 0 else float(err)


def kernel_output(case: OpCase, layout: str) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """The first node's kernel built directly in ``layout`` at fp32 and applied to inputs in that memory format."""
    graph = load_case(case)
    node = graph.nodes[0]
    prim = get_primitive(default_choice(node).primitive)
    from perfpredict.runtime.executor import node_weights
    from perfpredict.runtime.kernel import BuildContext

    kernel = prim.build(node, node_weights(graph, node), BuildContext(layout=layout))
    feeds = case_inputs(case)
    fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
    ts = [torch.from_numpy(feeds[t]) for t in node.activation_inputs]
    ts = [t.contiguous(memory_format=fmt) if t.dim() == 4 else t for t in ts]
    with torch.inference_mode():
        return kernel(*ts)
