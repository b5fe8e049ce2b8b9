"""The JSON form of graphs and nodes without their weights: what layer and model records of a user's ONNX model
keep (``extra_json``), so training rebuilds them when the file has moved (:func:`node_to_json`, :func:`pack_graph`),
and the one-node graph a layer measured alone is featurised as."""

from __future__ import annotations

import base64
import json
import math
import zlib
from typing import Any, Mapping

import numpy as np

from perfpredict.errors import FeatureError
from perfpredict.graph import Graph, Node

__all__ = ["CONSTANT_VALUES_KEPT", "node_to_json", "node_from_json", "graph_to_json", "graph_from_json", "pack_graph",
           "unpack_graph", "single_node_graph"]


def node_to_json(node: Node) -> dict[str, Any]:
    """A self-contained JSON form of ``node`` (for layer records); :func:`node_from_json` reverses it."""

    def conv(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        return v

    return {"name": node.name, "op": node.op, "inputs": list(node.inputs), "outputs": list(node.outputs),
            "input_shapes": [list(s) for s in node.input_shapes], "output_shapes": [list(s) for s in node.output_shapes],
            "attrs": conv(dict(node.attrs)), "params": list(node.params), "macs": node.macs, "flops": node.flops,
            "param_count": node.param_count, "bytes_in": node.bytes_in, "bytes_out": node.bytes_out}


def node_from_json(d: Mapping[str, Any]) -> Node:
    """Rebuild a :class:`Node` from :func:`node_to_json` output (attribute lists become tuples)."""

    def tup(v: Any) -> Any:
        if isinstance(v, list):
            return tuple(tup(x) for x in v)
        if isinstance(v, str) and v in ("inf", "-inf"):
            return float(v)
        return v

    try:
        return Node(name=str(d["name"]), op=str(d["op"]), inputs=tuple(d["inputs"]), outputs=tuple(d["outputs"]),
                    input_shapes=tuple(tuple(int(x) for x in s) for s in d["input_shapes"]),
                    output_shapes=tuple(tuple(int(x) for x in s) for s in d["output_shapes"]),
                    attrs={k: tup(v) for k, v in d.get("attrs", {}).items()}, params=tuple(d.get("params", ())),
                    macs=int(d.get("macs", 0)), flops=int(d.get("flops", 0)), param_count=int(d.get("param_count", 0)),
                    bytes_in=int(d.get("bytes_in", 0)), bytes_out=int(d.get("bytes_out", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise FeatureError(f"node_json is not a node description ({type(exc).__name__}: {exc}); expected the "
                           "keys of graph_json.node_to_json") from None


CONSTANT_VALUES_KEPT = 1024
"""Constants (initializers no node takes as a parameter) of at most this many elements keep their values in
:func:`graph_to_json`; larger ones, like parameters, keep their shape and dtype only."""


def graph_to_json(graph: Graph) -> dict[str, Any]:
    """A JSON form of ``graph``'s structure without its weights (for model records of a user's ONNX model):
    the nodes as :func:`node_to_json` writes them, graph inputs/outputs, activation shapes, and each initializer's
    shape and dtype (a small constant that no node takes as a parameter, e.g. a Reshape's shape, keeps its values:
    at most :data:`CONSTANT_VALUES_KEPT` elements). :func:`graph_from_json` reverses it with the same ``graph_id``."""
    params = {p for n in graph.nodes for p in n.params}
    inits = {}
    for name, arr in graph.initializers.items():
        a = np.asarray(arr)
        keep = name not in params and a.size <= CONSTANT_VALUES_KEPT
        inits[name] = {"shape": list(a.shape), "dtype": str(a.dtype),
                       **({"values": a.ravel().tolist()} if keep else {})}
    return {"name": graph.name, "inputs": list(graph.inputs), "outputs": list(graph.outputs),
            "tensor_shapes": {t: list(s) for t, s in graph.tensor_shapes.items()},
            "initializers": inits, "nodes": [node_to_json(n) for n in graph.nodes]}


def graph_from_json(d: Mapping[str, Any]) -> Graph:
    """Rebuild a :class:`Graph` from :func:`graph_to_json` output. Parameters come back as zeros of their shapes
    (costs and memory depend on the shapes only; a pruned plan keeps the same number of channels)."""
    try:
        inits = {}
        for name, meta in d.get("initializers", {}).items():
            shape, dtype = tuple(int(x) for x in meta["shape"]), np.dtype(meta["dtype"])
            inits[name] = np.asarray(meta["values"], dtype=dtype).reshape(shape) if "values" in meta \
                else np.zeros(shape, dtype)
        return Graph(name=str(d["name"]), nodes=tuple(node_from_json(n) for n in d["nodes"]),
                     inputs=tuple(d["inputs"]), outputs=tuple(d["outputs"]), initializers=inits,
                     tensor_shapes={t: tuple(int(x) for x in s) for t, s in d["tensor_shapes"].items()})
    except (KeyError, TypeError, ValueError) as exc:
        raise FeatureError(f"graph JSON is not a graph description ({type(exc).__name__}: {exc}); expected the "
                           "keys of graph_json.graph_to_json") from None


def pack_graph(graph: Graph) -> str:
    """:func:`graph_to_json` compressed into one ASCII string (zlib, base64): the ``"graph"`` a model record of a
    model outside the zoo carries in ``extra_json`` (a few KiB to ~20 KiB; the JSON itself is ~15 times larger)."""
    text = json.dumps(graph_to_json(graph), separators=(",", ":"), sort_keys=True)
    return base64.b64encode(zlib.compress(text.encode(), 9)).decode("ascii")


def unpack_graph(packed: str) -> Graph:
    """The :class:`Graph` of a :func:`pack_graph` string (parameters as zeros, see :func:`graph_from_json`)."""
    try:
        d = json.loads(zlib.decompress(base64.b64decode(packed.encode("ascii"), validate=True)))
    except (ValueError, TypeError, zlib.error, UnicodeError) as exc:
        raise FeatureError(f"packed graph is not readable ({type(exc).__name__}); expected the output of "
                           "graph_json.pack_graph") from None
    return graph_from_json(d)


def single_node_graph(node: Node) -> Graph:
    """A one-node :class:`Graph` around ``node`` (for featurising a layer measured alone)."""
    shapes = {t: s for t, s in zip(node.activation_inputs, node.input_shapes)}
    shapes.update({t: s for t, s in zip(node.outputs, node.output_shapes)})
    return Graph(name=node.name, nodes=(node,), inputs=tuple(node.activation_inputs), outputs=tuple(node.outputs),
                 initializers={}, tensor_shapes=shapes)
