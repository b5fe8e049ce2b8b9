"""The search space: per node, the legal (primitive, layout, precision, prune) options, and plan encodings.

Options come from the primitive registry: for every primitive that can run a node, every layout it
runs in and every precision it supports (int8 only where a primitive supports it), crossed with the
prune ratios of the node's prune group (``(0,)`` for nodes that cannot be pruned). Nodes whose outputs
must be pruned alike (residual branches meeting at an Add, ...) share one ratio: the runtime's
``prune_groups`` says which when it is available, else the optimiser groups the prunable producers
whose channels meet at an elementwise Add/Mul. ``lossless=True`` keeps fp32 and no pruning.

A plan is encoded as one option index per node (fixed nodes, with a single option, are always 0).
Option ``o`` of a node is ``impl * len(ratios) + ratio``, where ``impl`` indexes the node's
(primitive, layout, precision) triples, default first, and ``ratio`` its group's prune ratios, 0 first.
An activation the runtime can fold into the Conv/Gemm it reads (Relu, Clip, HardSwish, a swish's Sigmoid and
Mul) is *tied*: its option follows the producer's (same layout and precision, so the fold happens wherever the
producer's primitive applies it) and is not a decision.
Strategies that sample variables independently (random search, Optuna) use the factorised
:attr:`SearchSpace.variables`: one implementation variable per node with several, one ratio variable
per prune group; any assignment of those is a legal plan.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from perfpredict.errors import PerfPredictError, PlanError
from perfpredict.graph import Graph
from perfpredict.plan import MAX_PRUNE, Choice, Plan, default_choice, is_prunable
from perfpredict.predictor import channel_sources
from perfpredict.primitives import LAYOUTS, candidates, primitive_family

__all__ = ["SpaceConfig", "SearchSpace", "Variable", "prune_groups_of"]

Impl = tuple[str, str, str]  # (primitive, layout, precision)


@dataclass(frozen=True)
class SpaceConfig:
    """What the search may choose.

    ``prune_ratios`` are offered to prunable nodes (0 is always included); ``lossless`` restricts to
    fp32 and no pruning; ``allow_int8``/``allow_prune`` switch those off separately; ``primitives`` and
    ``layouts`` restrict the implementations (None: every registered one); ``tie_activations`` makes an
    activation that the runtime folds into its Conv/Gemm follow that producer's layout and precision (so
    it is always folded) instead of being a decision of its own.
    """

    prune_ratios: tuple[float, ...] = (0.0, 0.25, 0.5)
    lossless: bool = False
    allow_int8: bool = True
    allow_prune: bool = True
    primitives: tuple[str, ...] | None = None
    layouts: tuple[str, ...] = LAYOUTS
    tie_activations: bool = True

    def __post_init__(self) -> None:
        bad = [r for r in self.prune_ratios if not 0.0 <= r <= MAX_PRUNE]
        if bad:
            raise PerfPredictError(f"prune ratios {bad} are outside [0, {MAX_PRUNE}]")
        ratios = tuple(sorted({0.0, *(float(r) for r in self.prune_ratios)}))
        object.__setattr__(self, "prune_ratios", ratios)
        unknown = [x for x in self.layouts if x not in LAYOUTS]
        if unknown or not self.layouts:
            raise PerfPredictError(f"layouts {list(self.layouts)} are not valid; accepted: {', '.join(LAYOUTS)}")

    @property
    def ratios(self) -> tuple[float, ...]:
        """The prune ratios in effect (``(0.0,)`` when pruning is off)."""
        return (0.0,) if self.lossless or not self.allow_prune else self.prune_ratios

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions in effect."""
        return ("fp32",) if self.lossless or not self.allow_int8 else ("fp32", "int8")


@dataclass(frozen=True)
class Variable:
    """One factorised decision: a node's implementation (``kind="impl"``) or a prune group's ratio."""

    name: str
    kind: str
    index: int  # node index (impl) or group index (ratio)
    size: int


def prune_groups_of(graph: Graph) -> list[tuple[str, ...]]:
    """Groups of prunable nodes that must share a prune ratio (singletons included), in topological order.

    Uses the runtime's ``prune_groups(graph)`` when the runtime provides it (and leaves out nodes whose
    channels are all fixed, see ``unprunable_reasons``); otherwise groups the
    prunable channel sources that meet at a multi-input elementwise op (Add, Mul, ...), whose inputs
    must keep the same channels.
    """
    prunable = [n.name for n in graph.nodes if is_prunable(graph, n)]
    try:
        from perfpredict.runtime import prune_groups  # type: ignore[attr-defined]
    except ImportError:
        prune_groups = None
    blocked: set[str] = set()
    if prune_groups is not None:
        from perfpredict.runtime import unprunable_reasons

        groups = [tuple(g.members) for g in prune_groups(graph)]
        blocked = set(unprunable_reasons(graph))
        prunable = [m for m in prunable if m not in blocked]
    else:
        groups = _own_groups(graph)
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    covered: set[str] = set()
    out = []
    for g in groups:
        members = tuple(sorted((m for m in g if m in prunable and m not in covered), key=order.__getitem__))
        if members:
            out.append(members)
            covered.update(members)
    out += [(m,) for m in prunable if m not in covered]
    shared = _shared_param_nodes(graph)
    if shared:
        sources = channel_sources(graph)
        suspects = [g for g in out if any(n in g or set(g) & set(sources[n]) for n in shared)]
        refused = {g for g in suspects if not _runtime_prunes(graph, g)}
        out = [g for g in out if g not in refused]
    return sorted(out, key=lambda g: order[g[0]])


def _runtime_prunes(graph: Graph, group: tuple[str, ...]) -> bool:
    """Whether the runtime accepts pruning ``group`` (True when no runtime is available to ask)."""
    try:
        from perfpredict.runtime.pruning import prune_graph
    except ImportError:
        return True
    try:
        prune_graph(graph, {m: MAX_PRUNE / 2 for m in group})
    except PlanError:
        return False
    return True


def _shared_param_nodes(graph: Graph) -> set[str]:
    """Nodes with an initialiser that another node also reads (ONNX exporters deduplicate equal tensors,
    e.g. zero biases). The runtime may refuse to slice such a weight for one node only, so groups whose
    pruning would change the channels of such a node are checked with the runtime and left out of the
    search when it refuses."""
    users: dict[str, list[str]] = {}
    for n in graph.nodes:
        for p in n.params:
            users.setdefault(p, []).append(n.name)
    return {u for names in users.values() if len(names) > 1 for u in names}


def _own_groups(graph: Graph) -> list[tuple[str, ...]]:
    sources = channel_sources(graph)
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for node in graph.nodes:
        if node.op in ("Add", "Mul", "Sub", "Div") and len(node.activation_inputs) > 1:
            srcs = list(sources[node.name])
            for s in srcs[1:]:
                parent[find(s)] = find(srcs[0])
    groups: dict[str, list[str]] = {}
    for x in list(parent):
        groups.setdefault(find(x), []).append(x)
    return [tuple(v) for v in groups.values()]


class SearchSpace:
    """Legal options per node of ``graph`` and the encodings between plans and option indices."""

    def __init__(self, graph: Graph, config: SpaceConfig | None = None):
        self.graph = graph
        self.config = config or SpaceConfig()
        self.graph_id = graph.graph_id  # hashed once: Graph.graph_id recomputes on every access
        cfg = self.config
        self.nodes: tuple[str, ...] = tuple(n.name for n in graph.nodes)
        self.pos: dict[str, int] = {n: i for i, n in enumerate(self.nodes)}
        ratios = cfg.ratios
        groups = prune_groups_of(graph) if len(ratios) > 1 else []
        self.groups: tuple[tuple[str, ...], ...] = tuple(groups)
        self.group_of: dict[str, int] = {m: k for k, g in enumerate(groups) for m in g}
        self.group_ratios: tuple[tuple[float, ...], ...] = tuple(ratios for _ in groups)
        self.impls: dict[str, tuple[Impl, ...]] = {}
        self.ratios: dict[str, tuple[float, ...]] = {}
        self.options: dict[str, tuple[Choice, ...]] = {}
        for node in graph.nodes:
            impls = self._impls(node)
            rs = ratios if node.name in self.group_of else (0.0,)
            self.impls[node.name] = impls
            self.ratios[node.name] = rs
            self.options[node.name] = tuple(Choice(p, lay, prec, r) for p, lay, prec in impls for r in rs)
        # an activation the runtime folds into its Conv/Gemm follows the producer's layout and precision
        self.tied: dict[int, tuple[int, np.ndarray]] = {}
        if cfg.tie_activations:
            from perfpredict.analytical import fusable_activations

            for act, prod in fusable_activations(graph).items():
                self._tie(self.pos[act], self.pos[prod])
        self.sizes = np.array([len(self.options[n]) for n in self.nodes], dtype=np.int64)
        self.free: tuple[int, ...] = tuple(int(i) for i in np.flatnonzero(self.sizes > 1) if int(i) not in self.tied)
        self._option_index = [{c: k for k, c in enumerate(self.options[n])} for n in self.nodes]
        self._ratio_of = [np.array([c.prune for c in self.options[n]]) for n in self.nodes]
        variables = []
        for i, n in enumerate(self.nodes):
            if len(self.impls[n]) > 1 and i not in self.tied:
                variables.append(Variable(n, "impl", i, len(self.impls[n])))
        for k, g in enumerate(groups):
            variables.append(Variable(f"prune:{g[0]}", "ratio", k, len(self.group_ratios[k])))
        self.variables: tuple[Variable, ...] = tuple(variables)

    def _tie(self, act: int, prod: int) -> None:
        name = self.nodes[act]
        impls = self.impls[name]
        tied: list[Choice] = []
        mapping = []
        for pc in self.options[self.nodes[prod]]:
            pick = next((i for i in impls if i[1] == pc.layout and i[2] == pc.precision), None) \
                or next((i for i in impls if i[2] == pc.precision), None) or impls[0]
            c = Choice(pick[0], pick[1], pick[2], 0.0)
            if c not in tied:
                tied.append(c)
            mapping.append(tied.index(c))
        self.options[name] = tuple(tied)
        self.impls[name] = tuple((c.primitive, c.layout, c.precision) for c in tied)
        self.tied[act] = (prod, np.array(mapping, dtype=np.int64))

    def complete(self, indices: np.ndarray) -> np.ndarray:
        """``indices`` (one row or a matrix) with every tied activation set from its producer."""
        idx = np.array(indices, dtype=np.int64, copy=True)
        for act, (prod, mapping) in self.tied.items():
            idx[..., act] = mapping[idx[..., prod]]
        return idx

    def _impls(self, node) -> tuple[Impl, ...]:  # noqa: ANN001 - Node
        cfg = self.config
        default = default_choice(node)
        found: list[Impl] = [(default.primitive, default.layout, default.precision)]
        for prim in candidates(node):
            if cfg.primitives is not None and prim.name not in cfg.primitives and prim.name != default.primitive:
                continue
            for layout in prim.layouts:
                if layout not in cfg.layouts:
                    continue
                for prec in prim.precisions:
                    if prec in cfg.precisions and (prim.name, layout, prec) not in found:
                        found.append((prim.name, layout, prec))
        return tuple(found)

    # --- facts
    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def log10_size(self) -> float:
        """log10 of the number of distinct plans (group-shared ratios counted once)."""
        total = sum(math.log10(len(self.impls[n])) for i, n in enumerate(self.nodes) if i not in self.tied)
        return total + sum(math.log10(len(r)) for r in self.group_ratios)

    @property
    def signature(self) -> str:
        """A text identity of the space (graph and option lists), to check a resumed search matches."""
        import hashlib

        h = hashlib.sha1(self.graph_id.encode())
        for n in self.nodes:
            h.update(repr([c.to_dict() for c in self.options[n]]).encode())
        return h.hexdigest()[:16]

    def ratio_of(self, node: int, option: np.ndarray | int) -> np.ndarray | float:
        """Prune ratio of ``option`` (scalar or array) of node index ``node``."""
        return self._ratio_of[node][option]

    def option_index(self, node: int, impl: int, ratio: int) -> int:
        """The option index of (implementation ``impl``, ratio ``ratio``) of node index ``node``."""
        return impl * len(self.ratios[self.nodes[node]]) + ratio

    # --- encodings
    def default_indices(self) -> np.ndarray:
        """The option indices of the default plan (every node's default choice: index 0)."""
        return np.zeros(len(self.nodes), dtype=np.int64)

    def relayout(self, indices: np.ndarray, layout: str, unary: Sequence[np.ndarray] | None = None,
                 precision: str | None = None) -> np.ndarray:
        """``indices`` with every untied node that has an option in ``layout`` at its current precision and prune
        ratio moved to one: a coherent layout change, which single-node moves cannot reach without paying for
        the conversions on both sides. Without ``unary`` a node keeps its primitive (and stays put when that
        primitive lacks ``layout``); with it (per node a cost per option, as
        :class:`~optimiser.objectives.AdditiveCosts` holds) it takes its cheapest option in ``layout``.

        With ``precision`` every node that has an option in that precision (in ``layout``, or in any layout when
        its tensors are the same in both) moves to it as well - a whole-graph precision change, which
        single-node moves reach only through a quantise/dequantise pair each; such a move changes the
        primitive, so the node takes its first option (its cheapest with ``unary``)."""
        from perfpredict.runtime.executor import layout_matters

        idx = np.array(indices, dtype=np.int64, copy=True)
        for i, n in enumerate(self.nodes):
            if i in self.tied:
                continue
            opts, cur = self.options[n], self.options[n][int(idx[i])]
            usable = range(len(opts)) if unary is None else range(min(len(opts), len(unary[i])))

            def matching(prec: str, layouts: tuple[str, ...], keep_primitive: bool) -> list[int]:
                return [k for k in usable if opts[k].layout in layouts and opts[k].precision == prec
                        and opts[k].prune == cur.prune and (not keep_primitive or opts[k].primitive == cur.primitive)]

            same: list[int] = []
            if precision is not None and precision != cur.precision:
                any_layout = not layout_matters(self.graph.node(n).out_shape)
                same = matching(precision, (layout,), False) or \
                    (matching(precision, self.config.layouts, False) if any_layout else [])
            same = same or matching(cur.precision, (layout,), unary is None)
            if same:
                idx[i] = same[0] if unary is None else min(same, key=lambda k: float(unary[i][k]))
        return self.complete(idx)

    def _same_slot(self, i: int, cur: Choice) -> list[int]:
        """Options of untied node ``i`` at ``cur``'s layout, precision and prune ratio."""
        return [k for k, c in enumerate(self.options[self.nodes[i]])
                if (c.layout, c.precision, c.prune) == (cur.layout, cur.precision, cur.prune)]

    def with_primitive(self, indices: np.ndarray, primitive: str) -> np.ndarray:
        """``indices`` with every untied node that offers ``primitive`` at its current layout, precision and prune
        ratio moved to it: a whole-graph primitive change (e.g. every convolution on packed weights)."""
        idx = np.array(indices, dtype=np.int64, copy=True)
        for i, n in enumerate(self.nodes):
            if i in self.tied:
                continue
            ks = [k for k in self._same_slot(i, self.options[n][int(idx[i])])
                  if self.options[n][k].primitive == primitive]
            if ks:
                idx[i] = ks[0]
        return self.complete(idx)

    def alternative_primitives(self, indices: np.ndarray, min_nodes: int = 2) -> list[str]:
        """Primitives the plan ``indices`` does not use that at least ``min_nodes`` untied nodes offer at their
        current layout, precision and prune ratio, most widely offered first (:meth:`with_primitive` targets)."""
        used = {self.options[n][int(indices[i])].primitive for i, n in enumerate(self.nodes)}
        offered = Counter(p for i, n in enumerate(self.nodes) if i not in self.tied
                          for p in {self.options[n][k].primitive
                                    for k in self._same_slot(i, self.options[n][int(indices[i])])})
        return sorted((p for p, c in offered.items() if c >= min_nodes and p not in used),
                      key=lambda p: (-offered[p], p))

    def primitive_families(self, indices: np.ndarray) -> dict[str, list[str]]:
        """The plan's alternative primitives (offered by at least one untied node, :meth:`alternative_primitives`)
        grouped by implementation (:func:`~perfpredict.primitives.primitive_family`: ``conv.dnnl``,
        ``conv.dnnl_int8`` and ``maxpool.dnnl`` are all ``dnnl``, oneDNN's C API) for the implementations of more
        than one primitive, counting one the plan already uses: moving every op it can to one library at once, as
        a whole-graph anchor does for one primitive."""
        family = primitive_family
        used = {family(self.options[n][int(indices[i])].primitive) for i, n in enumerate(self.nodes)}
        families: dict[str, list[str]] = {}
        for p in self.alternative_primitives(indices, min_nodes=1):
            families.setdefault(family(p), []).append(p)
        return {f: ps for f, ps in sorted(families.items()) if len(ps) + (f in used) > 1}

    def uniform_layout_indices(self, layout: str, unary: Sequence[np.ndarray] | None = None,
                               precision: str | None = None) -> np.ndarray:
        """The default plan moved to ``layout`` (and ``precision``) as a whole (:meth:`relayout` of
        :meth:`default_indices`)."""
        return self.relayout(self.default_indices(), layout, unary, precision)

    def decode(self, indices: Sequence[int] | np.ndarray, name: str = "") -> Plan:
        """The plan with option ``indices[i]`` at node ``i``."""
        idx = np.asarray(indices)
        if idx.shape != (len(self.nodes),):
            raise PlanError(f"expected {len(self.nodes)} option indices, got shape {idx.shape}")
        choices = {}
        for i, n in enumerate(self.nodes):
            k = int(idx[i])
            if not 0 <= k < self.sizes[i]:
                raise PlanError(f"node '{n}': option index {k} is outside 0..{self.sizes[i] - 1}")
            choices[n] = self.options[n][k]
        return Plan(choices, name=name, graph_id=self.graph_id)

    def decode_many(self, indices: np.ndarray) -> list[Plan]:
        """:meth:`decode` over the rows of a (plans x nodes) matrix."""
        return [self.decode(row) for row in np.asarray(indices)]

    def encode(self, plan: Plan) -> np.ndarray:
        """The option indices of ``plan``; a PlanError names a node whose choice is outside the space."""
        resolved = plan.resolve(self.graph)
        out = np.empty(len(self.nodes), dtype=np.int64)
        for i, n in enumerate(self.nodes):
            k = self._option_index[i].get(resolved[n])
            if k is None:
                legal = ", ".join(f"{c.primitive}/{c.layout}/{c.precision}/{c.prune:g}" for c in self.options[n][:8])
                raise PlanError(f"node '{n}': choice {resolved[n].to_dict()} is not in the search space; "
                                f"options include {legal}")
            out[i] = k
        if not self.is_consistent(out):
            raise PlanError("plan is outside the search space: members of a prune group have different ratios, "
                            "or a foldable activation does not follow its producer's layout and precision")
        return out

    def is_consistent(self, indices: np.ndarray) -> bool:
        """Whether every prune group's members share one ratio and tied activations follow their producer."""
        for act, (prod, mapping) in self.tied.items():
            if indices[act] != mapping[indices[prod]]:
                return False
        for g in self.groups:
            rs = {float(self._ratio_of[self.pos[m]][indices[self.pos[m]]]) for m in g}
            if len(rs) > 1:
                return False
        return True

    # --- factorised variables
    def from_variables(self, values: Mapping[str, int]) -> np.ndarray:
        """Option indices from variable values (missing variables take 0, the default)."""
        impl = np.zeros(len(self.nodes), dtype=np.int64)
        group_ratio = np.zeros(len(self.groups), dtype=np.int64)
        for v in self.variables:
            x = int(values.get(v.name, 0))
            if not 0 <= x < v.size:
                raise PlanError(f"variable '{v.name}' = {x} is outside 0..{v.size - 1}")
            if v.kind == "impl":
                impl[v.index] = x
            else:
                group_ratio[v.index] = x
        return self._compose(impl, group_ratio)

    def _compose(self, impl: np.ndarray, group_ratio: np.ndarray) -> np.ndarray:
        out = np.empty(len(self.nodes), dtype=np.int64)
        for i, n in enumerate(self.nodes):
            g = self.group_of.get(n)
            r = int(group_ratio[g]) if g is not None else 0
            out[i] = impl[i] * len(self.ratios[n]) + r
        return self.complete(out) if self.tied else out

    def to_variables(self, indices: np.ndarray) -> dict[str, int]:
        """Variable values of consistent option ``indices``."""
        out = {}
        for v in self.variables:
            if v.kind == "impl":
                out[v.name] = int(indices[v.index]) // len(self.ratios[self.nodes[v.index]])
            else:
                first = self.pos[self.groups[v.index][0]]
                out[v.name] = int(indices[first]) % len(self.ratios[self.nodes[first]])
        return out

    def sample(self, rng: np.random.Generator, n: int = 1) -> np.ndarray:
        """``n`` uniformly random consistent plans as a (n x nodes) index matrix."""
        impl = np.zeros((n, len(self.nodes)), dtype=np.int64)
        for i, name in enumerate(self.nodes):
            impl[:, i] = rng.integers(0, len(self.impls[name]), size=n)
        gr = np.zeros((n, len(self.groups)), dtype=np.int64)
        for k, rs in enumerate(self.group_ratios):
            gr[:, k] = rng.integers(0, len(rs), size=n)
        return np.stack([self._compose(impl[j], gr[j]) for j in range(n)]) if n else \
            np.zeros((0, len(self.nodes)), dtype=np.int64)

    def describe(self) -> dict:
        """A JSON-ready summary: node counts, free nodes, groups, options per op, log10 size."""
        per_op: dict[str, int] = {}
        for i in self.free:
            op = self.graph.nodes[i].op
            per_op[op] = max(per_op.get(op, 0), int(self.sizes[i]))
        return {"nodes": len(self.nodes), "free_nodes": len(self.free), "tied_activations": len(self.tied),
                "prune_groups": len(self.groups),
                "shared_prune_groups": sum(1 for g in self.groups if len(g) > 1),
                "max_options_per_op": per_op, "log10_plans": round(self.log10_size, 2),
                "prune_ratios": list(self.config.ratios), "precisions": list(self.config.precisions)}
