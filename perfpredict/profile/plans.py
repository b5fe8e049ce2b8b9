"""The plans a model campaign measures: the default, fastest-biased, int8, NHWC, pruned and random legal plans."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace
from typing import Mapping, Sequence


from perfpredict.dataset import Store
from perfpredict.graph import Graph, Node
from perfpredict.plan import Choice, Plan, default_choice
from perfpredict.profile.campaign import LAYER_CAMPAIGN, canonical
from perfpredict.profile.layers import REFERENCE_PRIMITIVES, node_identity

PLAN_KINDS: tuple[str, ...] = ("mixed", "swaps")
"""The plan samplers of model campaigns: :func:`sample_plans` and :func:`sample_swap_plans`."""


class FastestChoices:
    """The fastest measured unpruned choice of each layer configuration, from a store's layer records.

    ``best(node, threads, precisions)`` is the choice with the lowest median among stable-or-not records of
    the node's configuration at that thread count (None when the configuration was not measured).
    """

    def __init__(self, table: Mapping[tuple[str, int], list[tuple[float, str, str, str]]]) -> None:
        self._table = table
        self._by_identity: dict[str, list[int]] = defaultdict(list)
        for ident, t in sorted(table):
            self._by_identity[ident].append(t)

    @classmethod
    def from_store(cls, store: Store | None, campaign: str | None = LAYER_CAMPAIGN) -> "FastestChoices":
        """Index the layer records of ``campaign`` (all campaigns when None) of ``store``."""
        table: dict[tuple[str, int], list[tuple[float, str, str, str]]] = defaultdict(list)
        if store is not None:
            for r in store.iter_records(kind="layer", campaign=campaign):
                if r.median_ms is None or (r.prune or 0) > 0 or r.node_json is None:
                    continue
                table[(r.node_json, r.threads)].append((r.median_ms, r.primitive, r.layout, r.precision))
        for v in table.values():
            v.sort()
        return cls(dict(table))

    def __len__(self) -> int:
        return len(self._table)

    def best(self, node: Node, threads: int, precisions: Sequence[str] = ("fp32",)) -> Choice | None:
        """The fastest measured choice of ``node`` at ``threads`` among ``precisions`` (records at another
        thread count when the configuration was not measured at ``threads``)."""
        ident = canonical(node_identity(node))
        rows = self._table.get((ident, threads))
        if rows is None:
            others = [k for k in self._by_identity.get(ident, ()) if k != threads]
            rows = self._table.get((ident, others[0])) if others else None
        for _ms, prim, layout, precision in rows or ():
            if precision in precisions:
                return Choice(prim, layout, precision, 0.0)
        return None


SLOW_PLAN_MACS = 10_000_000
"""Random plans give conv.fft only to nodes with at most this many MACs (it is quadratic-time slow on big
ones); the C reference kernels only where their predicted time is under ``max_node_ms``."""


def _legal_choices(node: Node, ref_rate: float | None, max_node_ms: float) -> list[Choice]:
    from perfpredict.primitives import candidates

    out = []
    for precision in ("fp32", "int8"):
        for prim in candidates(node, precision=precision):
            if prim.name in REFERENCE_PRIMITIVES and (not ref_rate or node.macs / ref_rate > max_node_ms):
                continue
            if prim.name == "conv.fft" and node.macs > SLOW_PLAN_MACS:
                continue
            for layout in prim.layouts:
                out.append(Choice(prim.name, layout, precision, 0.0))
    return out


def compact_plan(graph: Graph, plan: Plan) -> Plan:
    """``plan`` with only its non-default choices (nodes not named run their default), named and tied to
    the graph."""
    choices = {n.name: c for n in graph.nodes if (c := plan.choices.get(n.name)) is not None
               and c != default_choice(n)}
    return Plan(choices, plan.name, graph.graph_id)


def sample_plans(graph: Graph, n_plans: int, rng: random.Random, *, threads: int = 1,
                 fastest: FastestChoices | None = None, ref_rate: float | None = None,
                 max_node_ms: float = 2.0) -> list[Plan]:
    """Up to ``n_plans`` distinct legal plans for ``graph``, in this order: ``default``; ``fast-fp32`` and
    ``fast-any`` (per node the fastest choice the layer records found at ``threads``, fp32 only / any
    precision; default where the configuration was not measured); ``int8`` and ``int8-nhwc`` (every node with an
    int8 primitive at int8, on the first-ranked one that runs in NCHW / in NHWC, else in its own layout); ``pruned-0.5`` (every prune group at
    ratio 0.5); ``nhwc``; then ``random`` plans
    (per node a uniformly drawn legal primitive/layout/precision, the C reference kernels only where
    predicted under ``max_node_ms``; each prune group pruned with probability 0.3 at 0.25 or 0.5) and
    ``mixed`` plans (per node the fast choice with probability 0.6, else a random one). Plans are
    compact (non-default choices only)."""
    from perfpredict.primitives import candidates
    from perfpredict.runtime import prune_groups

    groups = prune_groups(graph)
    out: list[Plan] = []
    seen: set[str] = set()

    def add(choices: Mapping[str, Choice], name: str) -> None:
        if len(out) >= n_plans:
            return
        p = compact_plan(graph, Plan(dict(choices), name, graph.graph_id))
        if p.key in seen:
            return
        seen.add(p.key)
        out.append(p)

    defaults = {n.name: default_choice(n) for n in graph.nodes}
    add(defaults, "default")
    if fastest is not None and len(fastest):
        for name, precs in (("fast-fp32", ("fp32",)), ("fast-any", ("fp32", "int8"))):
            ch = {n.name: fastest.best(n, threads, precs) or defaults[n.name] for n in graph.nodes}
            add(ch, name)
    for layout, name in (("NCHW", "int8"), ("NHWC", "int8-nhwc")):
        prims = {n.name: next(iter(candidates(n, layout=layout, precision="int8") or
                                   candidates(n, precision="int8")), None) for n in graph.nodes}
        add({n: Choice(p.name, layout if layout in p.layouts else p.layouts[0], "int8") if p else defaults[n]
             for n, p in prims.items()}, name)
    if groups:
        add({**defaults, **{m: replace(defaults[m], prune=0.5) for g in groups for m in g.members}}, "pruned-0.5")
    nhwc = {}
    for n in graph.nodes:
        c = candidates(n, layout="NHWC", precision="fp32")
        nhwc[n.name] = Choice(c[0].name, "NHWC") if c else defaults[n.name]
    add(nhwc, "nhwc")
    legal = {n.name: _legal_choices(n, ref_rate, max_node_ms) or [defaults[n.name]] for n in graph.nodes}
    attempts = 0
    while len(out) < n_plans and attempts < 20 * n_plans:
        attempts += 1
        mixed = attempts % 2 == 0 and fastest is not None and len(fastest) > 0
        ch = {}
        for n in graph.nodes:
            fast = fastest.best(n, threads, ("fp32", "int8")) if mixed else None
            ch[n.name] = fast if fast is not None and rng.random() < 0.6 else rng.choice(legal[n.name])
        for g in groups:
            if rng.random() < 0.3:
                r = rng.choice((0.25, 0.5))
                for m in g.members:
                    ch[m] = replace(ch[m], prune=r)
        add(ch, "mixed" if mixed else "random")
    return out


def anchor_plan(graph: Graph, primitive: str = "conv.dnnl") -> dict[str, Choice]:
    """Every node in NHWC at fp32 on a primitive of ``primitive``'s family
    (:func:`~perfpredict.primitives.primitive_family`: ``dnnl`` puts MaxPool on ``maxpool.dnnl``, a gate on
    ``mul.dnnl``) where one runs it, else on its first-ranked NHWC fp32 primitive (its default where it has none):
    the whole-graph plans the optimiser's searches end on."""
    from perfpredict.primitives import candidates, primitive_family

    family = primitive_family(primitive)
    out = {}
    for n in graph.nodes:
        prims = candidates(n, layout="NHWC", precision="fp32")
        pick = next((c for c in prims if primitive_family(c.name) == family), prims[0] if prims else None)
        out[n.name] = Choice(pick.name, "NHWC") if pick is not None else default_choice(n)
    return out


def sample_swap_plans(graph: Graph, n_plans: int, rng: random.Random, *, anchor: str = "conv.dnnl",
                      ref_rate: float | None = None, max_node_ms: float = 2.0) -> list[Plan]:
    """Up to ``n_plans`` distinct plans near the whole-graph ``anchor`` plan (:func:`anchor_plan`): the anchor,
    then ``swap`` plans (one to three random Conv nodes moved to another legal fp32 choice) and ``band`` plans
    (every Conv node whose output height lies in a random band, moved to one primitive drawn among those that run
    one of them). The search compares plans like these at its end; mixed random plans rarely show a primitive's
    effect against that anchor. Plans are compact (non-default choices only)."""
    base = anchor_plan(graph, anchor)
    out: list[Plan] = []
    seen: set[str] = set()

    def add(choices: Mapping[str, Choice], name: str) -> None:
        p = compact_plan(graph, Plan(dict(choices), name, graph.graph_id))
        if p.key not in seen:
            seen.add(p.key)
            out.append(p)

    add(base, "anchor")
    convs = [n for n in graph.nodes if n.op == "Conv"]
    others = {n.name: [c for c in _legal_choices(n, ref_rate, max_node_ms)
                       if c.precision == "fp32" and c.primitive != base[n.name].primitive] for n in convs}
    movable = [n for n in convs if others[n.name]]
    heights = sorted({n.out_shape[2] for n in movable})
    attempts = 0
    while movable and len(out) < n_plans and attempts < 20 * n_plans:
        attempts += 1
        ch = dict(base)
        if attempts % 2:
            for n in rng.sample(movable, min(len(movable), rng.randint(1, 3))):
                ch[n.name] = rng.choice(others[n.name])
            add(ch, "swap")
        else:
            lo, hi = sorted(rng.sample(heights, 2)) if len(heights) > 1 else (heights[0], heights[0])
            band = [n for n in movable if lo <= n.out_shape[2] <= hi]
            prim = rng.choice(sorted({c.primitive for n in band for c in others[n.name]}))
            for n in band:
                c = [c for c in others[n.name] if c.primitive == prim]
                if c:
                    ch[n.name] = next((x for x in c if x.layout == "NHWC"), c[0])
            add(ch, "band")
    return out
