"""The Predictor protocol: what the optimiser depends on to cost a plan without running it.

Implementations (the GNN, the baselines, the analytical roofline model) live in their own modules and
are interchangeable behind :class:`Predictor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from perfpredict.devices import DeviceSpec
    from perfpredict.graph import Graph, Node
    from perfpredict.plan import Choice, Plan


@dataclass(frozen=True)
class Prediction:
    """Predicted costs, one entry per (graph, plan) pair asked for."""

    latency_ms: np.ndarray
    peak_mem_bytes: np.ndarray

    def __len__(self) -> int:
        return len(self.latency_ms)


@runtime_checkable
class Predictor(Protocol):
    """Predicts end-to-end latency and peak memory of graphs under plans on a device, batched.

    ``graphs`` is one Graph (shared by every plan) or a sequence as long as ``plans``.
    """

    def predict(self, graphs: "Graph | Sequence[Graph]", plans: "Sequence[Plan]",
                device: "DeviceSpec") -> Prediction:
        ...


# ------------------------------------------------------------------------------------ additive costs


@runtime_checkable
class NodeCostModel(Protocol):
    """Additive costs of a plan, for exact solvers (PBQP/ILP) and per-step rewards.

    A plan's latency is modelled as ``sum over nodes of node_costs[node][option] + sum over
    (src, dst) in cost_pairs(graph) of edge_costs(src, dst)[src_option, dst_option]``. The pairs are
    the graph's data-flow edges (layout conversions and quantise/dequantise where neighbouring choices
    disagree) plus the channel-source pairs of :func:`channel_sources` (a node's cost depends on how
    much its upstream prunable producer was pruned). ``node_memory`` is the additive memory term of
    each option: weight bytes plus workspace bytes (peak memory itself is not additive).
    Options are :class:`perfpredict.plan.Choice` objects; arrays hold one entry per option (node
    terms) or one row per source option and one column per destination option (edge terms).
    """

    def node_costs(self, graph: "Graph", device: "DeviceSpec",
                   options: "Mapping[str, Sequence[Choice]]") -> dict[str, np.ndarray]:
        """Latency in ms of each option of each node named in ``options``."""
        ...

    def edge_costs(self, graph: "Graph", device: "DeviceSpec", src_node: str, dst_node: str,
                   src_options: "Sequence[Choice]", dst_options: "Sequence[Choice]") -> np.ndarray:
        """Latency in ms added by the pair (src option, dst option), shape (len(src), len(dst))."""
        ...

    def node_memory(self, graph: "Graph", device: "DeviceSpec",
                    options: "Mapping[str, Sequence[Choice]]") -> dict[str, np.ndarray]:
        """Weight plus workspace bytes of each option of each node named in ``options``."""
        ...

    def cost_pairs(self, graph: "Graph") -> "Sequence[tuple[str, str]]":
        """The (src, dst) node pairs that carry edge costs, src before dst in topological order."""
        ...


_CHANNEL_RESET_OPS = ("Gemm", "MatMul")


def _is_depthwise(node: "Node") -> bool:
    a = node.attrs
    return node.op == "Conv" and a["groups"] > 1 and a["groups"] == a["in_channels"] == a["out_channels"]


def channel_sources(graph: "Graph") -> dict[str, dict[str, float]]:
    """For every node, the prunable nodes whose pruning shrinks its input, with their weights.

    Pruning a dense Conv or Gemm removes output channels; the reduction flows through every op that
    keeps channels (activations, pooling, elementwise ops, depthwise convs, reshapes) until the next
    dense Conv/Gemm/MatMul, whose *input* shrinks. ``result[node][src] = w`` says that a share ``w``
    of ``node``'s activation input elements comes from ``src`` (numel-weighted over inputs, so a
    Concat of two pruned branches weighs each by its channel share); the rest (``1 - sum(w)``) is
    never pruned. A node's input keep factor is ``sum(w * (1 - prune[src])) + 1 - sum(w)``.
    """
    from perfpredict.plan import is_prunable

    tensor_src: dict[str, dict[str, float]] = {}
    result: dict[str, dict[str, float]] = {}
    for node in graph.nodes:
        acts = node.activation_inputs
        sizes = [float(np.prod(s)) if s else 1.0 for s in node.input_shapes[:len(acts)]]
        total = sum(sizes) or 1.0
        mix: dict[str, float] = {}
        for t, size in zip(acts, sizes):
            for src, w in tensor_src.get(t, {}).items():
                mix[src] = mix.get(src, 0.0) + w * size / total
        result[node.name] = mix
        if (node.op == "Conv" and not _is_depthwise(node)) or node.op in _CHANNEL_RESET_OPS:
            out = {node.name: 1.0} if is_prunable(graph, node) else {}
        else:
            out = mix
        for o in node.outputs:
            tensor_src[o] = out
    return result


def interaction_pairs(graph: "Graph") -> list[tuple[str, str]]:
    """Data-flow node pairs plus channel-source pairs (see :func:`channel_sources`), deduplicated, in order."""
    seen: dict[tuple[str, str], None] = {}
    for e in graph.edges:
        seen[(graph.nodes[e.src].name, graph.nodes[e.dst].name)] = None
    for dst, srcs in channel_sources(graph).items():
        for src in srcs:
            seen[(src, dst)] = None
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    return sorted(seen, key=lambda p: (order[p[1]], order[p[0]]))


def predict_by_graph(predict_plans: Any, graphs: Any, plans: Sequence[Any], device: Any,
                     threads: int | None = None) -> Any:
    """Predict ``plans`` on one graph or one graph per plan with ``predict_plans(template, plans, device,
    threads)``, the batched per-graph fast path of the predictors: plans of the same graph go in one call."""
    from perfpredict.errors import PerfPredictError
    # imported here, not at the top: features imports analytical, which imports this module
    from perfpredict.features import template_for
    from perfpredict.graph import Graph

    plans = list(plans)
    if isinstance(graphs, Graph):
        return predict_plans(template_for(graphs), plans, device, threads)
    graphs = list(graphs)
    if len(graphs) != len(plans):
        raise PerfPredictError(f"predict: {len(graphs)} graphs for {len(plans)} plans; pass one graph or one "
                               "per plan")
    lat: np.ndarray | None = None  # shaped by the first answer: a predictor may give more than one value per plan
    mem = np.zeros(len(plans))
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(graphs):
        groups.setdefault(id(g), []).append(i)
    for idx in groups.values():
        p = predict_plans(template_for(graphs[idx[0]]), [plans[i] for i in idx], device, threads)
        if lat is None:
            lat = np.zeros((len(plans), *np.shape(p.latency_ms)[1:]))
        lat[idx], mem[idx] = p.latency_ms, p.peak_mem_bytes
    return Prediction(np.zeros(0) if lat is None else lat, mem)
