"""Plan generators for runtime tests: random legal plans, int8 plans, prune plans."""

from __future__ import annotations

import random

from perfpredict.graph import Graph
from perfpredict.plan import Choice, Plan
from perfpredict.primitives import candidates
from perfpredict.runtime import prune_groups


def random_plan(graph: Graph, seed: int, precisions: tuple[str, ...] = ("fp32",)) -> Plan:
    """A random legal plan: per node a random precision among ``precisions`` it supports, then a random
    primitive for it and a random layout of that primitive."""
    rng = random.Random(seed)
    choices = {}
    for n in graph.nodes:
        options = [p for p in precisions if candidates(n, precision=p)]
        prec = rng.choice(options) if options else "fp32"
        prim = rng.choice(candidates(n, precision=prec))
        choices[n.name] = Choice(prim.name, rng.choice(prim.layouts), prec)
    return Plan(choices)


def int8_plan(graph: Graph, layout: str = "NCHW") -> Plan:
    """Every node that has an int8 primitive at int8 (in ``layout`` where it can), the rest at fp32 defaults."""
    choices = {}
    for n in graph.nodes:
        found = candidates(n, precision="int8")
        if not found:
            continue
        prim = next((p for p in found if layout in p.layouts), found[0])
        choices[n.name] = Choice(prim.name, layout if layout in prim.layouts else prim.layouts[0], "int8")
    return Plan(choices)


def prune_plan(graph: Graph, ratio: float, base: Plan | None = None, every: int = 1) -> Plan:
    """``base`` (default plan choices) with the first member of every ``every``-th prune group at ``ratio``."""
    from perfpredict.plan import default_choice

    choices = dict(base.choices) if base is not None else {}
    for k, g in enumerate(prune_groups(graph)):
        if k % every:
            continue
        m = g.members[0]
        c = choices.get(m) or default_choice(graph.node(m))
        choices[m] = Choice(c.primitive, c.layout, c.precision, ratio)
    return Plan(choices)
