"""Graph IR: a CNN loaded from ONNX, with static shapes, normalised attributes and cost facts per node.

The IR knows nothing of torch. :func:`load_onnx` runs onnx's own shape inference, turns ``Constant`` nodes
into initialisers, removes ``Identity``/``Dropout``, folds ``BatchNormalization`` into the ``Conv`` it
follows, and rejects any op outside :data:`SUPPORTED_OPS` with an error naming the op, the node and the
supported list. Every :class:`Node` carries its op, shapes, attributes (kernel, stride, pads, dilation,
groups, ...), MACs, FLOPs, parameter count and activation bytes in and out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from perfpredict.errors import GraphError

SUPPORTED_OPS: tuple[str, ...] = (
    "Conv", "Gemm", "MatMul", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Mul", "Add",
    "Concat", "Split", "Slice", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Flatten",
    "Reshape", "Transpose", "Pad", "Softmax", "Dropout", "Identity", "BatchNormalization",
)
"""ONNX ops accepted by :func:`load_onnx`. Dropout and Identity are removed; BatchNormalization is folded
into a preceding Conv and kept as a per-channel affine node otherwise."""

OPSET_RANGE = (11, 21)
_REMOVED_OPS = {"Dropout", "Identity"}
_DTYPE_BYTES = {"float32": 4, "float16": 2, "int64": 8, "int32": 4, "int8": 1, "uint8": 1, "bool": 1}


@dataclass(frozen=True)
class Node:
    """One operator of the graph, with static shapes and cost facts.

    ``inputs`` lists every input name in ONNX order (initialisers included; ``""`` for an omitted optional
    input); ``params`` names the inputs that are initialisers (weights, biases, shape constants).
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]
    attrs: Mapping[str, Any]
    params: tuple[str, ...] = ()
    macs: int = 0
    flops: int = 0
    param_count: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    @property
    def activation_inputs(self) -> tuple[str, ...]:
        """Input names that are activations (not initialisers, not omitted)."""
        return tuple(i for i in self.inputs if i and i not in self.params)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Shape of the first output."""
        return self.output_shapes[0]

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of the first activation input."""
        return self.input_shapes[0]


@dataclass(frozen=True)
class Edge:
    """A data-flow edge: ``tensor`` produced by node ``src`` is read by node ``dst`` (indices into nodes)."""

    src: int
    dst: int
    tensor: str


@dataclass(frozen=True, eq=False)
class Graph:
    """An immutable CNN graph: nodes in topological order, weights as numpy arrays.

    ``inputs``/``outputs`` are graph-level tensor names; ``tensor_shapes`` maps every activation tensor to
    its static shape.
    """

    name: str
    nodes: tuple[Node, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    initializers: Mapping[str, np.ndarray]
    tensor_shapes: Mapping[str, tuple[int, ...]]
    edges: tuple[Edge, ...] = field(default=())
    _index: Mapping[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        index = {n.name: i for i, n in enumerate(self.nodes)}
        if len(index) != len(self.nodes):
            raise GraphError(f"graph '{self.name}': node names must be unique")
        object.__setattr__(self, "_index", index)
        if not self.edges:
            object.__setattr__(self, "edges", _edges(self.nodes))

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, name: str) -> Node:
        """The node called ``name``."""
        try:
            return self.nodes[self._index[name]]
        except KeyError:
            raise GraphError(f"graph '{self.name}' has no node '{name}'") from None

    def index(self, name: str) -> int:
        """Topological index of the node called ``name``."""
        self.node(name)
        return self._index[name]

    def producer(self, tensor: str) -> Node | None:
        """The node that writes ``tensor``, or None for graph inputs and initialisers."""
        for e in self.edges:
            if e.tensor == tensor:
                return self.nodes[e.src]
        for n in self.nodes:
            if tensor in n.outputs:
                return n
        return None

    def consumers(self, name: str) -> list[Node]:
        """Nodes that read an output of node ``name``."""
        i = self.index(name)
        seen: list[int] = []
        for e in self.edges:
            if e.src == i and e.dst not in seen:
                seen.append(e.dst)
        return [self.nodes[j] for j in seen]

    def predecessors(self, name: str) -> list[Node]:
        """Nodes whose outputs node ``name`` reads."""
        i = self.index(name)
        seen: list[int] = []
        for e in self.edges:
            if e.dst == i and e.src not in seen:
                seen.append(e.src)
        return [self.nodes[j] for j in seen]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of the first graph input."""
        return self.tensor_shapes[self.inputs[0]]

    @property
    def macs(self) -> int:
        """Total multiply-accumulates."""
        return sum(n.macs for n in self.nodes)

    @property
    def flops(self) -> int:
        """Total floating-point operations."""
        return sum(n.flops for n in self.nodes)

    @property
    def param_count(self) -> int:
        """Total parameters (weights and biases of Conv/Gemm/MatMul/BN)."""
        return sum(n.param_count for n in self.nodes)

    @cached_property
    def graph_id(self) -> str:
        """A stable hash of the structure (ops, attributes, shapes, edges), independent of weights (computed once:
        the graph is immutable)."""
        h = hashlib.sha1()
        for n in self.nodes:
            h.update(json.dumps([n.op, n.input_shapes, n.output_shapes, _jsonable(n.attrs)],
                                sort_keys=True).encode())
        for e in self.edges:
            h.update(f"{e.src}>{e.dst};".encode())
        return h.hexdigest()[:16]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return obj


def _edges(nodes: tuple[Node, ...]) -> tuple[Edge, ...]:
    producer: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.outputs:
            producer[o] = i
    edges = []
    for j, n in enumerate(nodes):
        for t in n.activation_inputs:
            if t in producer:
                edges.append(Edge(producer[t], j, t))
    return tuple(edges)


# --------------------------------------------------------------------------------------------- loading


def load_onnx(source: str | Path | onnx.ModelProto, *, batch: int = 1, name: str | None = None) -> Graph:
    """Load an ONNX CNN into a :class:`Graph`.

    Symbolic input dimensions are fixed (the first to ``batch``), shapes come from onnx's shape inference,
    and BatchNormalization is folded into the Conv it follows. Raises :class:`GraphError` with a one-line
    message for an unreadable file, an opset outside 11..21, an unsupported op, or missing shapes.
    """
    model = _read_model(source)
    label = name or (Path(source).stem if isinstance(source, (str, Path)) else (model.graph.name or "model"))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise GraphError(f"{label}: ONNX opset {opset} is not supported; accepted opsets are "
                         f"{OPSET_RANGE[0]} to {OPSET_RANGE[1]}")
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise GraphError(f"{label}: node '{node.name}' uses op '{node.domain}.{node.op_type}' from a custom "
                             f"domain; supported ops: {', '.join(SUPPORTED_OPS)}")
        if node.op_type not in SUPPORTED_OPS and node.op_type != "Constant":
            raise GraphError(f"{label}: unsupported op '{node.op_type}' at node '{node.name or node.output[0]}'; "
                             f"supported ops: {', '.join(SUPPORTED_OPS)}")
    _fix_input_dims(model, batch, label)
    try:
        model = shape_inference.infer_shapes(model, check_type=False, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises several exception types here
        raise GraphError(f"{label}: ONNX shape inference failed: {str(exc).splitlines()[0]}") from None
    return _build(model, label)


def _read_model(source: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(source, onnx.ModelProto):
        model = source
        where = "model"
    else:
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise GraphError(f"{path}: no such ONNX file")
        try:
            model = onnx.load(str(path))
        except Exception as exc:
            raise GraphError(f"{path}: not a readable ONNX model (malformed or truncated: "
                             f"{type(exc).__name__})") from None
    if not model.graph.node:
        raise GraphError(f"{where}: the ONNX graph has no nodes (empty, malformed or truncated file)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise GraphError(f"{where}: invalid ONNX model: {str(exc).splitlines()[0]}") from None
    return model


def _fix_input_dims(model: onnx.ModelProto, batch: int, label: str) -> None:
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        for k, d in enumerate(dims):
            if not d.HasField("dim_value"):
                if k == 0:
                    d.dim_value = batch
                else:
                    raise GraphError(f"{label}: input '{inp.name}' has a symbolic dimension {k} "
                                     f"('{d.dim_param}'); only the batch dimension may be symbolic (export the "
                                     "model with fixed channels, height and width)")


def _dims(vi: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if not d.HasField("dim_value"):
            return None
        out.append(int(d.dim_value))
    return tuple(out)


def _attr_dict(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Raw:
    """Mutable working copy of one ONNX node while the graph is normalised."""

    def __init__(self, op: str, name: str, inputs: list[str], outputs: list[str], attrs: dict[str, Any]):
        self.op, self.name, self.inputs, self.outputs, self.attrs = op, name, inputs, outputs, attrs


def _build(model: onnx.ModelProto, label: str) -> Graph:
    g = model.graph
    inits: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        s = _dims(vi)
        if s is not None:
            shapes[vi.name] = s
            dtypes[vi.name] = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name
    graph_inputs = [i.name for i in g.input if i.name not in inits]
    graph_outputs = [o.name for o in g.output]

    raws: list[_Raw] = []
    used_names: set[str] = set()
    for k, n in enumerate(g.node):
        if n.op_type == "Constant":
            attrs = n.attribute[0]
            inits[n.output[0]] = numpy_helper.to_array(attrs.t) if attrs.name == "value" else \
                np.asarray(onnx.helper.get_attribute_value(attrs))
            continue
        nm = n.name or f"{n.op_type.lower()}_{k}"
        while nm in used_names:
            nm = f"{nm}_{k}"
        used_names.add(nm)
        raws.append(_Raw(n.op_type, nm, list(n.input), list(n.output), _attr_dict(n)))

    raws = _remove_identities(raws, graph_outputs)
    raws = _fold_batchnorm(raws, inits, graph_outputs)
    raws = _toposort(raws, set(graph_inputs) | set(inits), label)

    nodes = []
    for r in raws:
        for t in r.outputs[:1]:
            if t not in shapes:
                raise GraphError(f"{label}: shape inference gave no static shape for '{t}' (node '{r.name}', "
                                 f"op {r.op})")
        nodes.append(_make_node(r, inits, shapes, dtypes, label))
    used_inits = {p for n in nodes for p in n.params}
    tensor_shapes = {t: s for t, s in shapes.items() if t not in inits}
    return Graph(name=label, nodes=tuple(nodes), inputs=tuple(graph_inputs), outputs=tuple(graph_outputs),
                 initializers={k: v for k, v in inits.items() if k in used_inits}, tensor_shapes=tensor_shapes)


def _remove_identities(raws: list[_Raw], graph_outputs: list[str]) -> list[_Raw]:
    rename: dict[str, str] = {}
    keep = []
    for r in raws:
        r.inputs = [rename.get(i, i) for i in r.inputs]
        if r.op in _REMOVED_OPS:
            src, dst = r.inputs[0], r.outputs[0]
            if dst in graph_outputs:  # keep the graph's output name: rename the producer's output instead
                for p in keep:
                    p.outputs = [dst if o == src else o for o in p.outputs]
                rename[src] = dst
            else:
                rename[dst] = src
            continue
        keep.append(r)
    for r in keep:
        r.inputs = [rename.get(i, i) for i in r.inputs]
    return keep


def _fold_batchnorm(raws: list[_Raw], inits: dict[str, np.ndarray], graph_outputs: list[str]) -> list[_Raw]:
    producer = {o: r for r in raws for o in r.outputs}
    readers: dict[str, int] = {}
    for r in raws:
        for i in r.inputs:
            readers[i] = readers.get(i, 0) + 1
    out = []
    folded: set[int] = set()
    for r in raws:
        if r.op != "BatchNormalization":
            out.append(r)
            continue
        x, scale, bias, mean, var = r.inputs[:5]
        eps = float(r.attrs.get("epsilon", 1e-5))
        gamma = inits[scale] / np.sqrt(inits[var] + eps)
        beta = inits[bias] - inits[mean] * gamma
        conv = producer.get(x)
        if conv is not None and conv.op == "Conv" and readers.get(x, 0) == 1 and x not in graph_outputs \
                and id(conv) not in folded and conv.inputs[1] in inits:
            w = inits[conv.inputs[1]]
            wname = f"{conv.name}.weight_bnfold"
            bname = f"{conv.name}.bias_bnfold"
            inits[wname] = (w * gamma.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
            b0 = inits[conv.inputs[2]] if len(conv.inputs) > 2 and conv.inputs[2] else np.zeros(w.shape[0], np.float32)
            inits[bname] = (b0 * gamma + beta).astype(np.float32)
            conv.inputs = [conv.inputs[0], wname, bname]
            conv.outputs = [r.outputs[0]]
            folded.add(id(conv))
            continue
        sname, bname = f"{r.name}.scale", f"{r.name}.shift"
        inits[sname], inits[bname] = gamma.astype(np.float32), beta.astype(np.float32)
        r.inputs = [x, sname, bname]
        r.outputs = r.outputs[:1]
        r.attrs = {}
        out.append(r)
    return out


def _toposort(raws: list[_Raw], available: set[str], label: str) -> list[_Raw]:
    ready = set(available)
    pending = list(raws)
    ordered: list[_Raw] = []
    while pending:
        progressed = False
        rest = []
        for r in pending:
            if all((not i) or i in ready for i in r.inputs):
                ordered.append(r)
                ready.update(r.outputs)
                progressed = True
            else:
                rest.append(r)
        if not progressed:
            missing = sorted({i for r in rest for i in r.inputs if i and i not in ready})
            raise GraphError(f"{label}: graph has a cycle or dangling inputs: {', '.join(missing[:5])}")
        pending = rest
    return ordered


def _pair(v: Any, n: int = 2) -> tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v)
    return (int(v),) * n


def _make_node(r: _Raw, inits: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]],
               dtypes: Mapping[str, str], label: str) -> Node:
    params = tuple(i for i in r.inputs if i and i in inits)
    act = [i for i in r.inputs if i and i not in inits]
    in_shapes = tuple(shapes.get(i, ()) for i in act)
    for i, s in zip(act, in_shapes):
        if not s and i:
            # scalars are legal (shape ()), but a missing entry for a non-scalar is not
            if i not in shapes:
                raise GraphError(f"{label}: no static shape for tensor '{i}' read by node '{r.name}'")
    out_shapes = tuple(shapes.get(o, ()) for o in r.outputs)
    attrs = _normalise_attrs(r, inits, in_shapes, out_shapes)
    macs, flops = _cost(r.op, attrs, in_shapes, out_shapes)
    param_count = int(sum(inits[p].size for p in params if r.op in ("Conv", "Gemm", "MatMul", "BatchNormalization")))

    def nbytes(names: list[str], shp: tuple[tuple[int, ...], ...]) -> int:
        return int(sum(int(np.prod(s, dtype=np.int64)) * _DTYPE_BYTES.get(dtypes.get(t, "float32"), 4)
                       for t, s in zip(names, shp)))

    return Node(name=r.name, op=r.op, inputs=tuple(r.inputs), outputs=tuple(r.outputs), input_shapes=in_shapes,
                output_shapes=out_shapes, attrs=attrs, params=params, macs=int(macs), flops=int(flops),
                param_count=param_count, bytes_in=nbytes(act, in_shapes), bytes_out=nbytes(r.outputs, out_shapes))


def _normalise_attrs(r: _Raw, inits: Mapping[str, np.ndarray], in_shapes: tuple[tuple[int, ...], ...],
                     out_shapes: tuple[tuple[int, ...], ...]) -> dict[str, Any]:
    a = r.attrs
    op = r.op
    if op == "Conv":
        w = inits[r.inputs[1]]
        k = tuple(int(x) for x in w.shape[2:])
        nd = len(k)
        stride = _pair(a.get("strides", 1), nd)
        dil = _pair(a.get("dilations", 1), nd)
        pads = _explicit_pads(a, in_shapes[0][2:], k, stride, dil)
        return {"kernel": k, "stride": stride, "pads": pads, "dilation": dil, "groups": int(a.get("group", 1)),
                "in_channels": int(in_shapes[0][1]), "out_channels": int(w.shape[0]),
                "bias": len(r.inputs) > 2 and bool(r.inputs[2])}
    if op in ("MaxPool", "AveragePool"):
        k = _pair(a["kernel_shape"])
        nd = len(k)
        stride = _pair(a.get("strides", 1), nd)
        dil = _pair(a.get("dilations", 1), nd)
        return {"kernel": k, "stride": stride, "pads": _explicit_pads(a, in_shapes[0][2:], k, stride, dil),
                "dilation": dil, "ceil_mode": int(a.get("ceil_mode", 0)),
                "count_include_pad": int(a.get("count_include_pad", 0))}
    if op == "Gemm":
        return {"alpha": float(a.get("alpha", 1.0)), "beta": float(a.get("beta", 1.0)),
                "trans_a": int(a.get("transA", 0)), "trans_b": int(a.get("transB", 0)),
                "out_features": int(out_shapes[0][-1])}
    if op == "Clip":
        lo = inits[r.inputs[1]] if len(r.inputs) > 1 and r.inputs[1] in inits else a.get("min", -np.inf)
        hi = inits[r.inputs[2]] if len(r.inputs) > 2 and r.inputs[2] in inits else a.get("max", np.inf)
        return {"min": float(np.asarray(lo)), "max": float(np.asarray(hi))}
    if op == "HardSigmoid":
        return {"alpha": float(a.get("alpha", 0.2)), "beta": float(a.get("beta", 0.5))}
    if op in ("Concat", "Softmax", "Flatten"):
        default = {"Concat": None, "Softmax": -1, "Flatten": 1}[op]
        axis = int(a.get("axis", default))
        rank = len(out_shapes[0]) if op != "Flatten" else len(in_shapes[0])
        return {"axis": axis % rank if rank else axis}
    if op == "Split":
        axis = int(a.get("axis", 0)) % len(in_shapes[0])
        sizes = [int(s[axis]) for s in out_shapes]
        return {"axis": axis, "split": tuple(sizes)}
    if op == "Slice":
        starts = inits[r.inputs[1]].tolist()
        ends = inits[r.inputs[2]].tolist()
        rank = len(in_shapes[0])
        axes = inits[r.inputs[3]].tolist() if len(r.inputs) > 3 and r.inputs[3] else list(range(len(starts)))
        steps = inits[r.inputs[4]].tolist() if len(r.inputs) > 4 and r.inputs[4] else [1] * len(starts)
        return {"starts": tuple(int(s) for s in starts), "ends": tuple(int(min(e, 2**62)) for e in ends),
                "axes": tuple(int(x) % rank for x in axes), "steps": tuple(int(s) for s in steps)}
    if op == "ReduceMean":
        if "axes" in a:
            axes = a["axes"]
        elif len(r.inputs) > 1 and r.inputs[1] in inits:
            axes = inits[r.inputs[1]].tolist()
        else:
            axes = list(range(len(in_shapes[0])))
        rank = len(in_shapes[0])
        return {"axes": tuple(sorted(int(x) % rank for x in axes)), "keepdims": int(a.get("keepdims", 1))}
    if op == "Reshape":
        return {"shape": tuple(out_shapes[0])}
    if op == "Transpose":
        perm = a.get("perm", list(reversed(range(len(in_shapes[0])))))
        return {"perm": tuple(int(p) for p in perm)}
    if op == "Pad":
        pads = inits[r.inputs[1]].tolist() if len(r.inputs) > 1 and r.inputs[1] in inits else a.get("pads", [])
        value = 0.0
        if len(r.inputs) > 2 and r.inputs[2] in inits:
            value = float(np.asarray(inits[r.inputs[2]]).reshape(-1)[0]) if inits[r.inputs[2]].size else 0.0
        mode = a.get("mode", b"constant")
        return {"pads": tuple(int(p) for p in pads), "mode": mode.decode() if isinstance(mode, bytes) else mode,
                "value": value}
    return {}


def _explicit_pads(a: Mapping[str, Any], spatial: tuple[int, ...], k: tuple[int, ...], stride: tuple[int, ...],
                   dil: tuple[int, ...]) -> tuple[int, ...]:
    """Pads as (begin..., end...) in ONNX order, with auto_pad resolved."""
    nd = len(k)
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, kk, s, d in zip(spatial, k, stride, dil):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (kk - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            begins.append(small if auto == "SAME_UPPER" else big)
            ends.append(big if auto == "SAME_UPPER" else small)
        return tuple(begins + ends)
    if auto == "VALID":
        return (0,) * (2 * nd)
    return tuple(int(p) for p in a.get("pads", [0] * (2 * nd)))


def _numel(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def _cost(op: str, attrs: Mapping[str, Any], ins: tuple[tuple[int, ...], ...],
          outs: tuple[tuple[int, ...], ...]) -> tuple[int, int]:
    out = outs[0] if outs else ()
    if op == "Conv":
        k = int(np.prod(attrs["kernel"]))
        macs = _numel(out) * (attrs["in_channels"] // attrs["groups"]) * k
        return macs, 2 * macs + (_numel(out) if attrs["bias"] else 0)
    if op in ("Gemm", "MatMul"):
        kdim = ins[0][-1] if not attrs.get("trans_a") else ins[0][-2]
        macs = _numel(out) * int(kdim)
        return macs, 2 * macs + _numel(out)
    if op in ("MaxPool", "AveragePool"):
        return 0, _numel(out) * int(np.prod(attrs["kernel"]))
    if op in ("GlobalAveragePool", "ReduceMean", "Softmax"):
        return 0, _numel(ins[0]) * (3 if op == "Softmax" else 1)
    if op in ("Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Mul", "Add", "BatchNormalization"):
        per = {"Sigmoid": 4, "HardSwish": 3, "HardSigmoid": 2, "BatchNormalization": 2}.get(op, 1)
        return 0, _numel(out) * per
    return 0, 0


def graph_summary(graph: Graph) -> dict[str, Any]:
    """A JSON-ready summary: node count, op histogram, MACs, parameters, input shape."""
    ops: dict[str, int] = {}
    for n in graph.nodes:
        ops[n.op] = ops.get(n.op, 0) + 1
    return {"name": graph.name, "graph_id": graph.graph_id, "nodes": len(graph.nodes), "ops": ops,
            "macs": graph.macs, "flops": graph.flops, "params": graph.param_count,
            "input_shape": list(graph.input_shape)}
