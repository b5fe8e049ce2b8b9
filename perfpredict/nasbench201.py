"""NAS-Bench-201 architectures as graphs of our IR.

An architecture string such as ``|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|...|`` names the
operation on each of the 6 edges of the cell DAG (node j sums op(node i) over its incoming edges i < j;
node 0 is the cell input, node 3 its output). The macro network is NAS-Bench-201's (``TinyNetwork`` of
its reference code, CIFAR setting):

* input 1x3x32x32; stem Conv3x3(3->C) + BN, C = 16;
* three stages of N = 5 cells with C, 2C, 4C channels, separated by a residual reduction block
  (``ResNetBasicblock``, stride 2): ReLU-Conv3x3/s2-BN, ReLU-Conv3x3-BN, shortcut AvgPool2x2/s2 +
  Conv1x1 (no BN), summed;
* cell operations: ``nor_conv_kxk`` = ReLU-Conv-BN (k = 1, 3), ``avg_pool_3x3`` (stride 1, pad 1, padding
  excluded from the average), ``skip_connect`` (identity), ``none`` (zero);
* final BN-ReLU, global average pool, Linear(4C -> 10).

(The reduction block follows the reference code's ReLU-Conv-BN order.) The ONNX model is written directly
with onnx.helper, with every BN that follows a Conv already folded into the Conv's bias (what
:func:`perfpredict.graph.load_onnx` would do), so the resulting :class:`Graph` matches a torch export of the
same network; weights are seeded random (He normal), biases zero.

Two modes say which computation the graph describes:

``mode="deployed"`` (default): what an exported, optimised network runs.

* ``none`` edges disappear; a node with no incoming non-``none`` edge holds zeros and its out-edges
  disappear too (adding zeros is a no-op).
* Convolutions reading the same node share one ReLU (common-subexpression elimination, as torch's ONNX
  export does).
* Dead code is removed: a node whose value does not reach the cell output is not computed (as a
  compiler's dead-code elimination and torch's ONNX export do).
* A cell whose output node holds zeros is written as ``Mul(cell input, 0)``, the reference code's
  ``Zero`` op (``x.mul(0.)``): the graph stays connected and valid, every later layer still runs (on
  zeros), and the cost of the cell is one elementwise multiply.

``mode="eager"``: what NAS-Bench-201's reference PyTorch code executes eagerly, which is how most of
HELP's GPU and CPU latencies were measured: every edge runs (``none`` as ``Mul(x, 0)``, each ReLU-Conv-BN
with its own ReLU), every node sums all its incoming edges, dead branches included (their outputs are
left unread). Unlike ``deployed``, distinct arch strings give distinct graphs.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from perfpredict.errors import GraphError
from perfpredict.graph import Graph, load_onnx

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""NAS-Bench-201 cell operations."""

NUM_EDGES = 6
NUM_ARCHS = len(OPS) ** NUM_EDGES
OPSET = 17
MODES = ("deployed", "eager")
"""Graph modes: what an optimised export runs, or what the reference PyTorch code runs eagerly."""

Cell = tuple[tuple[tuple[str, int], ...], ...]
"""Parsed cell: for nodes 1, 2, 3, the (op, source node) of each incoming edge."""


def parse_arch(arch: str) -> Cell:
    """Parse a NAS-Bench-201 arch string; a GraphError names what is wrong and what is accepted."""
    if not isinstance(arch, str) or not arch.strip():
        raise GraphError("NAS-Bench-201 arch must be a string like '|nor_conv_3x3~0|+|none~0|skip_connect~1|+...'")
    parts = arch.strip().split("+")
    if len(parts) != 3:
        raise GraphError(f"NAS-Bench-201 arch '{arch}' must have 3 '+'-separated nodes, got {len(parts)}")
    cell = []
    for j, part in enumerate(parts, start=1):
        toks = [t for t in part.strip().strip("|").split("|")]
        if len(toks) != j:
            raise GraphError(f"NAS-Bench-201 arch '{arch}': node {j} must have {j} incoming edges, got {len(toks)}")
        edges = []
        for t in toks:
            op, _, src = t.partition("~")
            if op not in OPS:
                raise GraphError(f"NAS-Bench-201 arch '{arch}': unknown op '{op}'; accepted: {', '.join(OPS)}")
            if not src.isdigit() or int(src) >= j:
                raise GraphError(f"NAS-Bench-201 arch '{arch}': edge '{t}' must read a node 0..{j - 1}")
            edges.append((op, int(src)))
        if sorted(s for _, s in edges) != list(range(j)):
            raise GraphError(f"NAS-Bench-201 arch '{arch}': node {j} must read each of nodes 0..{j - 1} once")
        cell.append(tuple(edges))
    return tuple(cell)


def arch_string(ops: Sequence[str]) -> str:
    """The arch string of the 6 edge ops in NAS-Bench-201 order (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2)."""
    if len(ops) != NUM_EDGES or any(o not in OPS for o in ops):
        raise GraphError(f"need {NUM_EDGES} ops from {', '.join(OPS)}, got {list(ops)}")
    o = list(ops)
    return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"


def edge_ops(arch: str) -> tuple[str, ...]:
    """The 6 edge ops of ``arch`` in NAS-Bench-201 order."""
    return tuple(op for node in parse_arch(arch) for op, _ in node)


def live_edges(arch: str) -> tuple[tuple[int, str, int], ...]:
    """The edges a deployed network computes, as (source node, op, destination node): ``none`` edges, edges
    out of all-zero nodes and edges whose result never reaches node 3 are dropped."""
    cell = parse_arch(arch)
    defined = [True, False, False, False]
    for j, node in enumerate(cell, start=1):
        defined[j] = any(op != "none" and defined[i] for op, i in node)
    edges = [(i, op, j) for j, node in enumerate(cell, start=1) for op, i in node if op != "none" and defined[i]]
    live = [False, False, False, defined[3]]
    for i, _, j in sorted(edges, key=lambda e: -e[2]):
        if live[j]:
            live[i] = True
    return tuple(e for e in edges if live[e[2]])


class _Writer:
    """Accumulates ONNX nodes and initialisers of one network."""

    def __init__(self, seed: int):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def _name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def _init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], stem: str, **attrs) -> str:
        name = self._name(stem)
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, stem: str, bias: bool = True) -> str:
        w = self.rng.standard_normal((cout, cin, k, k), dtype=np.float32)
        w *= np.float32(np.sqrt(2.0 / (cin * k * k)))
        name = self._name(stem)
        ins = [x, self._init(f"{name}.weight", w)]
        if bias:
            ins.append(self._init(f"{name}.bias", np.zeros(cout, np.float32)))
        p = k // 2
        self.nodes.append(helper.make_node("Conv", ins, [name], name=name, kernel_shape=[k, k],
                                           strides=[stride, stride], pads=[p, p, p, p]))
        return name

    def relu_conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int, stem: str) -> str:
        return self.conv(self.node("Relu", [x], f"{stem}_relu"), cin, cout, k, stride, f"{stem}_conv")

    def batchnorm(self, x: str, c: int, stem: str) -> str:
        name = self._name(stem)
        ins = [x] + [self._init(f"{name}.{p}", v) for p, v in (
            ("scale", np.ones(c, np.float32)), ("bias", np.zeros(c, np.float32)),
            ("mean", np.zeros(c, np.float32)), ("var", np.ones(c, np.float32)))]
        self.nodes.append(helper.make_node("BatchNormalization", ins, [name], name=name, epsilon=1e-5))
        return name

    def zero(self, x: str, stem: str) -> str:
        return self.node("Mul", [x, self._init(self._name(f"{stem}_zero"), np.zeros((), np.float32))], f"{stem}_mul")

    def add_all(self, terms: list[str], stem: str) -> str:
        out = terms[0]
        for t in terms[1:]:
            out = self.node("Add", [out, t], f"{stem}_add")
        return out


def _cell(w: _Writer, x: str, c: int, arch: str, stem: str, mode: str) -> str:
    if mode == "eager":
        edges = tuple((i, op, j) for j, node in enumerate(parse_arch(arch), start=1) for op, i in node)
    else:
        edges = live_edges(arch)
    values: dict[int, str] = {0: x}
    relus: dict[int, str] = {}
    for j in (1, 2, 3):
        terms = []
        for i, op, dst in edges:
            if dst != j:
                continue
            src = values[i]
            tag = f"{stem}_n{j}e{i}"
            if op == "skip_connect":
                terms.append(src)
            elif op == "none":
                terms.append(w.zero(src, tag))
            elif op == "avg_pool_3x3":
                terms.append(w.node("AveragePool", [src], f"{tag}_avgpool", kernel_shape=[3, 3], strides=[1, 1],
                                    pads=[1, 1, 1, 1], count_include_pad=0))
            else:
                k = 1 if op == "nor_conv_1x1" else 3
                if mode == "eager":
                    relu = w.node("Relu", [src], f"{tag}_relu")
                else:
                    relu = relus[i] = relus.get(i) or w.node("Relu", [src], f"{stem}_n{i}_relu")
                terms.append(w.conv(relu, c, c, k, 1, f"{tag}_conv"))
        if terms:
            values[j] = w.add_all(terms, f"{stem}_n{j}")
    return values[3] if 3 in values else w.zero(x, stem)


def _reduction(w: _Writer, x: str, cin: int, cout: int, stem: str) -> str:
    a = w.relu_conv_bn(x, cin, cout, 3, 2, f"{stem}_a")
    b = w.relu_conv_bn(a, cout, cout, 3, 1, f"{stem}_b")
    pooled = w.node("AveragePool", [x], f"{stem}_down_pool", kernel_shape=[2, 2], strides=[2, 2])
    short = w.conv(pooled, cin, cout, 1, 1, f"{stem}_down_conv", bias=False)
    return w.node("Add", [short, b], f"{stem}_add")


def nb201_onnx(arch: str, *, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10,
               resolution: int = 32, batch: int = 1, seed: int = 0, mode: str = "deployed") -> onnx.ModelProto:
    """The ONNX model of NAS-Bench-201 architecture ``arch`` in ``mode`` (see the module docstring)."""
    parse_arch(arch)
    if mode not in MODES:
        raise GraphError(f"unknown NAS-Bench-201 graph mode '{mode}'; accepted: {', '.join(MODES)}")
    if min(channels, cells_per_stage, num_classes, resolution, batch) < 1 or resolution % 4:
        raise GraphError("channels, cells_per_stage, num_classes, batch must be >= 1 and resolution a positive "
                         f"multiple of 4; got C={channels}, N={cells_per_stage}, classes={num_classes}, "
                         f"resolution={resolution}, batch={batch}")
    w = _Writer(seed)
    x = w.conv("input", 3, channels, 3, 1, "stem")
    c = channels
    for stage in range(3):
        if stage:
            x = _reduction(w, x, c, 2 * c, f"reduce{stage}")
            c *= 2
        for k in range(cells_per_stage):
            x = _cell(w, x, c, arch, f"s{stage}c{k}", mode)
    x = w.node("Relu", [w.batchnorm(x, c, "lastact_bn")], "lastact_relu")
    x = w.node("Flatten", [w.node("GlobalAveragePool", [x], "gap")], "flatten", axis=1)
    fc_w = (w.rng.standard_normal((num_classes, c)) / np.sqrt(c)).astype(np.float32)
    fc = w.node("Gemm", [x, w._init("classifier.weight", fc_w), w._init("classifier.bias",
                                                                          np.zeros(num_classes, np.float32))],
                "classifier", transB=1)
    graph = helper.make_graph(
        w.nodes, "nasbench201",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, resolution, resolution])],
        [helper.make_tensor_value_info(fc, TensorProto.FLOAT, [batch, num_classes])], w.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="perfpredict.nasbench201")
    model.ir_version = 8
    return model


@lru_cache(maxsize=64)
def nb201_graph(arch: str, *, batch: int = 1, mode: str = "deployed") -> Graph:
    """The :class:`Graph` of NAS-Bench-201 architecture ``arch`` (CIFAR-10 macro network), cached per arch."""
    return load_onnx(nb201_onnx(arch, batch=batch, mode=mode), batch=batch, name=f"nb201{arch}")


__all__ = ["OPS", "MODES", "NUM_EDGES", "NUM_ARCHS", "parse_arch", "arch_string", "edge_ops", "live_edges", "nb201_onnx",
           "nb201_graph"]
