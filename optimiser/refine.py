"""On-device refinement: try other implementations of a plan's costliest nodes on this machine.

A predictor trained one step at a time can misprice a node that matters (a stem convolution whose fastest kernel
the data never showed in context); the search cannot tell, since it only sees predictions. After the search, the
plan's costliest free nodes (by the additive table the search used) each get their other options of the same
precision and prune ratio, cheapest by that table first; the plans that differ in one such node are measured
round-robin beside the plan itself, then the fastest single change, and all the faster changes together when
there are several, are measured again beside it in a fresh round, and one is kept only if it beat the plan there
too (so that the fastest of many noisy measurements is not kept on luck). Every measurement goes to the
validator's sink, so the dataset gains them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from perfpredict.plan import Plan


@dataclass
class Refinement:
    """What :func:`refine_on_device` tried and kept."""

    start: Plan
    start_ms: float
    tried: dict[str, float] = field(default_factory=dict)
    """Each change measured in the first round -> its latency over the start's in that round."""
    faster: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    plan: Plan | None = None
    measured_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form (the plan itself is written as plan.json)."""
        return {"start_measured_ms": None if math.isnan(self.start_ms) else self.start_ms,
                "tried_relative": self.tried, "faster_in_first_round": self.faster, "kept": self.kept,
                "measured_ms": self.measured_ms}

    @property
    def note(self) -> str:
        """One line for the report."""
        head = f"on-device refinement: {len(self.tried)} single-node change(s) of the costliest nodes measured"
        if not self.tried:
            return "on-device refinement: the costliest nodes have no other option of the same precision and pruning"
        if self.plan is None and not self.faster:
            return head + f"; none was faster than the plan ({self.start_ms:.4g} ms), so it is kept"
        if self.plan is None:
            return head + (f"; {len(self.faster)} faster in the first round, none in a confirming round beside the "
                           f"plan ({self.start_ms:.4g} ms), so it is kept")
        return head + (f"; kept {', '.join(self.kept)}: {self.start_ms:.4g} -> {self.measured_ms:.4g} ms "
                       "(interleaved runs)")


def node_swaps(space: Any, indices: np.ndarray, unary: Sequence[np.ndarray], nodes: int = 3,
               per_node: int = 4) -> list[tuple[str, int, np.ndarray]]:
    """(label, node position, option indices) of the plans that differ from ``indices`` in one of its ``nodes``
    costliest free nodes (by ``unary``, the additive table's cost of each node's options): each other option of
    that node with its current precision and prune ratio, cheapest by the table first, at most ``per_node``."""
    idx = np.asarray(indices, dtype=np.int64)
    top = sorted(space.free, key=lambda i: -float(unary[i][idx[i]]))[:nodes]
    out = []
    for i in top:
        name = space.nodes[i]
        cur = space.options[name][idx[i]]
        alts = [k for k, c in enumerate(space.options[name])
                if k != idx[i] and (c.precision, c.prune) == (cur.precision, cur.prune)]
        for k in sorted(alts, key=lambda k: float(unary[i][k]))[:per_node]:
            cand = idx.copy()
            cand[i] = k
            cand = space.complete(cand)
            if space.is_consistent(cand):
                c = space.options[name][k]
                out.append((f"{name} on {c.primitive} ({c.layout})", i, cand))
    return out


def refine_on_device(space: Any, evaluator: Any, validator: Any, start: Plan, unary: Sequence[np.ndarray],
                     nodes: int = 3, per_node: int = 4, tolerance: float = 0.01,
                     accept: Callable[[Plan], bool] | None = None) -> Refinement:
    """Measure single-node changes of ``start`` (see the module docstring) and return what was kept, if anything.

    Changes that break a budget on predicted costs the start meets are not tried; ``tolerance`` is the margin by
    which a change must beat the start in both rounds; ``accept(plan)`` (a measured accuracy check) can veto the
    kept plan."""
    graph = space.graph
    idx = space.encode(start)
    swaps = node_swaps(space, idx, unary, nodes, per_node)
    start_feasible = evaluator(idx[None, :])[0].feasible
    if swaps:
        costs = evaluator(np.stack([s[2] for s in swaps]))
        swaps = [s for s, c in zip(swaps, costs) if c.feasible or not start_feasible]
    if not swaps:  # nothing to try: nothing to measure
        return Refinement(start, math.nan)
    plans = {"start": start}
    plans.update({label: space.decode(cand, name=f"{graph.name}-refined") for label, _, cand in swaps})
    first = validator.compare(graph, plans)
    base = first["start"].latency_ms
    out = Refinement(start, base, tried={label: first[label].latency_ms / base for label, _, _ in swaps})
    faster = [s for s in swaps if first[s[0]].latency_ms < base * (1 - tolerance)]
    out.faster = [label for label, _, _ in faster]
    winner: dict[int, tuple[str, np.ndarray]] = {}  # node -> its fastest change that beat the start, fastest first
    for label, i, cand in sorted(faster, key=lambda s: first[s[0]].latency_ms):
        winner.setdefault(i, (label, cand))
    if not winner:
        return out
    label, cand = next(iter(winner.values()))  # the fastest change of all
    finalists = {label: (cand, [label])}
    if len(winner) > 1:
        combined = idx.copy()
        for i, (_, cand) in winner.items():
            combined[i] = cand[i]
        combined = space.complete(combined)
        if space.is_consistent(combined) and (evaluator(combined[None, :])[0].feasible or not start_feasible):
            finalists["all faster changes together"] = (combined, [lb for lb, _ in winner.values()])
    confirm_plans = {"start": start}
    confirm_plans.update({label: space.decode(cand, name=f"{graph.name}-refined")
                          for label, (cand, _) in finalists.items()})
    second = validator.compare(graph, confirm_plans)
    base2 = second["start"].latency_ms
    for label in sorted(finalists, key=lambda k: second[k].latency_ms):
        if second[label].latency_ms >= base2 * (1 - tolerance):
            break
        if accept is None or accept(confirm_plans[label]):
            out.plan = confirm_plans[label]
            out.kept = finalists[label][1]
            out.start_ms, out.measured_ms = base2, second[label].latency_ms
            break
    return out


__all__ = ["Refinement", "node_swaps", "refine_on_device"]
