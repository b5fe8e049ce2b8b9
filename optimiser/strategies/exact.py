"""The exact reference: the minimum of the predicted additive costs, by integer programming (scipy HiGHS).

Plan selection with per-node costs and pairwise conversion costs is a PBQP (Anderson & Gregg, "Optimal
DNN primitive selection with partitioned boolean quadratic programming", CGO 2018). Here it is solved
as a mixed-integer linear program: a binary ``x[node, option]`` per option (one per node), and for each
cost pair ``(src, dst)`` a continuous ``y`` over (src class, dst class) whose row and column sums equal
the ``x`` of the classes (the local-polytope linearisation; with binary ``x`` it forces ``y`` to the
product). Before that, each pair matrix is normalised (row then column minima moved into the node
terms; pairs that become zero are dropped) and options with identical rows/columns are merged into
classes, which keeps the program small (a conversion cost depends only on layout, precision and prune).
Prune groups add one binary per (group, ratio) tied to every member's options.

Budgets on the other costs are elastic linear constraints (a slack with a large weight, so the program
always has an answer: the closest plan when no plan meets the budgets). Accuracy drop and latency are
additive, so those budgets are exact. Peak memory is *not* additive (the live activations and a kernel's
workspace peak at one step): the program bounds the additive weights + workspace term instead and the
evaluator checks the real predicted peak of each answer. The bound is bisected (at most ``max_sweeps``
solves) between the additive term of the unconstrained optimum and zero: a bound whose answer meets the
budget is loosened, one whose answer does not is tightened, and the fastest answer that met the budget is
kept (the least-memory answer when none did). The result is therefore optimal for latency and accuracy
budgets, and for memory budgets optimal under the best additive bound tried (documented, and reported in
``info``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from optimiser.objectives import AdditiveCosts
from optimiser.space import SearchSpace
from optimiser.strategies.base import BaseStrategy, Candidate, Problem, StrategyError, register_strategy

__all__ = ["ExactSolver", "ExactResult", "solve_exact"]

_ELASTIC_WEIGHT = 1e3


@dataclass
class ExactResult:
    """The solution: option indices, the additive objective value, and solver facts."""

    indices: np.ndarray
    objective: float
    optimal: bool
    info: dict[str, Any] = field(default_factory=dict)


class _Builder:
    """Accumulates variables, linear expressions and equality rows of the program."""

    def __init__(self) -> None:
        self.n = 0
        self.integral: list[int] = []
        self.upper: list[float] = []
        self.rows: list[tuple[list[int], list[float], float, float]] = []

    def add_vars(self, k: int, integral: bool, upper: float = 1.0) -> int:
        start = self.n
        self.n += k
        self.integral += [1 if integral else 0] * k
        self.upper += [upper] * k
        return start

    def row(self, cols: list[int], vals: list[float], lo: float, hi: float) -> None:
        self.rows.append((cols, vals, lo, hi))


def _classes(m: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows (axis 0) or columns (axis 1) of ``m`` and each row's/column's class."""
    key = np.round(m if axis == 0 else m.T, 9)
    uniq, inverse = np.unique(key, axis=0, return_inverse=True)
    return uniq, inverse.reshape(-1)


def solve_exact(space: SearchSpace, additive: AdditiveCosts, primary: str = "latency",
                budgets: dict[str, float] | None = None, time_limit: float = 120.0) -> ExactResult:
    """Minimise the additive ``primary`` cost over ``space`` under elastic additive ``budgets``.

    ``budgets`` maps "latency", "memory" (bound on the additive weights + workspace term) or
    "accuracy" to an upper bound. Returns the option indices of every node.
    """
    t0 = time.perf_counter()
    budgets = dict(budgets or {})
    free = list(space.free)
    b = _Builder()
    xoff: dict[int, int] = {}
    for i in free:
        xoff[i] = b.add_vars(int(space.sizes[i]), integral=True)
    for i in free:
        n = int(space.sizes[i])
        b.row(list(range(xoff[i], xoff[i] + n)), [1.0] * n, 1.0, 1.0)
    # prune groups
    for k, g in enumerate(space.groups):
        members = [space.pos[m] for m in g if space.pos[m] in xoff]
        if len(members) < 2:
            continue
        nr = len(space.group_ratios[k])
        z = b.add_vars(nr, integral=True)
        b.row(list(range(z, z + nr)), [1.0] * nr, 1.0, 1.0)
        for i in members:
            ratio_idx = np.arange(space.sizes[i]) % len(space.ratios[space.nodes[i]])
            for r in range(nr):
                cols = [xoff[i] + int(o) for o in np.flatnonzero(ratio_idx == r)]
                b.row(cols + [z + r], [1.0] * len(cols) + [-1.0], 0.0, 0.0)

    def expression(kind: str) -> tuple[dict[int, float], float]:
        unary, pairs, constant = additive.table(kind)
        unary = [np.asarray(u, dtype=float).copy() for u in unary]
        coef: dict[int, float] = {}
        const = float(constant) + sum(float(unary[i][0]) for i in range(len(unary)) if i not in xoff)
        for s, d, m in pairs:
            m = np.asarray(m, dtype=float)
            rmin = m.min(axis=1)
            m = m - rmin[:, None]
            cmin = m.min(axis=0)
            m = m - cmin[None, :]
            unary[s] = unary[s] + rmin
            unary[d] = unary[d] + cmin
            if np.abs(m).max() <= 1e-12:
                continue
            rows, rcls = _classes(m, 0)
            cols_u, ccls = _classes(rows, 1)
            mc = cols_u.T  # (row classes, column classes)
            nr, nc = mc.shape
            y = b.add_vars(nr * nc, integral=False)
            for rc in range(nr):
                members = [xoff[s] + int(a) for a in np.flatnonzero(rcls == rc)]
                b.row([y + rc * nc + cc for cc in range(nc)] + members, [1.0] * nc + [-1.0] * len(members), 0.0, 0.0)
            for cc in range(nc):
                members = [xoff[d] + int(a) for a in np.flatnonzero(ccls == cc)]
                b.row([y + rc * nc + cc for rc in range(nr)] + members, [1.0] * nr + [-1.0] * len(members), 0.0, 0.0)
            for rc in range(nr):
                for cc in range(nc):
                    if mc[rc, cc]:
                        coef[y + rc * nc + cc] = coef.get(y + rc * nc + cc, 0.0) + float(mc[rc, cc])
        for i in free:
            for o, v in enumerate(unary[i]):
                if v:
                    coef[xoff[i] + o] = coef.get(xoff[i] + o, 0.0) + float(v)
        return coef, const

    exprs = {primary: expression(primary)}
    for kind in budgets:
        if kind not in exprs:
            exprs[kind] = expression(kind)
    # scale: the primary at the default plan
    obj_coef, obj_const = exprs[primary]
    default_val = obj_const + sum(obj_coef.get(xoff[i], 0.0) for i in free)
    scale = abs(default_val) if abs(default_val) > 1e-12 else 1.0
    slacks: dict[str, int] = {}
    for kind, bound in budgets.items():
        if kind == primary:
            continue
        coef, const = exprs[kind]
        s = b.add_vars(1, integral=False, upper=np.inf)
        slacks[kind] = s
        denom = max(abs(bound), 1e-12)
        cols = list(coef) + [s]
        vals = [v / denom for v in coef.values()] + [-1.0]
        b.row(cols, vals, -np.inf, (bound - const) / denom)
    c = np.zeros(b.n)
    for j, v in obj_coef.items():
        c[j] += v / scale
    for s in slacks.values():
        c[s] = _ELASTIC_WEIGHT
    data_r, data_c, data_v, lo, hi = [], [], [], [], []
    for r, (cols, vals, l, h) in enumerate(b.rows):
        data_r += [r] * len(cols)
        data_c += cols
        data_v += vals
        lo.append(l)
        hi.append(h)
    a = coo_matrix((data_v, (data_r, data_c)), shape=(len(b.rows), b.n)).tocsr()
    res = milp(c, integrality=np.array(b.integral), bounds=Bounds(np.zeros(b.n), np.array(b.upper)),
               constraints=[LinearConstraint(a, np.array(lo), np.array(hi))] if b.rows else None,
               options={"time_limit": time_limit, "mip_rel_gap": 1e-7, "disp": False})
    if res.x is None:
        raise StrategyError(f"the exact solver found no solution ({res.message})")
    indices = np.zeros(len(space.nodes), dtype=np.int64)
    for i in free:
        n = int(space.sizes[i])
        indices[i] = int(np.argmax(res.x[xoff[i]:xoff[i] + n]))
    indices = space.complete(indices)
    value = _evaluate(additive, primary, indices)
    info = {"status": res.message, "optimal": bool(res.status == 0), "variables": b.n, "rows": len(b.rows),
            "binaries": int(sum(b.integral)), "mip_gap": float(getattr(res, "mip_gap", 0.0) or 0.0),
            "seconds": round(time.perf_counter() - t0, 3),
            "slack": {k: float(res.x[s]) for k, s in slacks.items()}}
    return ExactResult(indices, value, bool(res.status == 0), info)


def _evaluate(additive: AdditiveCosts, kind: str, indices: np.ndarray) -> float:
    if kind == "latency":
        return float(additive.latency(indices)[0])
    if kind == "memory":
        return float(additive.memory_term(indices)[0])
    return float(additive.accuracy_term(indices)[0])


class ExactSolver(BaseStrategy):
    """Strategy wrapper of :func:`solve_exact`: one candidate, then finished.

    Needs the problem's additive tables to be the predictor's own (``additive_is_exact``). With a
    memory budget, runs the sweep described in the module docstring using the problem's evaluator.
    """

    name = "exact"

    def __init__(self, problem: Problem, time_limit: float = 120.0, max_sweeps: int = 8):
        super().__init__(problem)
        if problem.additive is None or not problem.additive_is_exact:
            raise StrategyError("strategy 'exact' needs an additive predictor (a NodeCostModel such as the "
                                "roofline model: --predictor roofline); the chosen predictor is not additive")
        self.time_limit = time_limit
        self.max_sweeps = max_sweeps
        self.result: ExactResult | None = None
        self.sweeps: list[dict[str, float]] = []
        self._done = False

    def _budgets(self) -> dict[str, float]:
        c = self.problem.objective.constraints
        out = {}
        if c.latency_ms is not None:
            out["latency"] = c.latency_ms
        if c.accuracy_drop_pct is not None:
            out["accuracy"] = c.accuracy_drop_pct
        return out

    def solve(self) -> ExactResult:
        """Solve (with the memory-budget sweep when a memory budget is set)."""
        prob = self.problem
        primary = prob.objective.primary
        budgets = self._budgets()
        mem_budget = prob.objective.constraints.memory_bytes
        if mem_budget is None or prob.evaluator is None:
            if mem_budget is not None:
                budgets["memory"] = mem_budget
            self.result = solve_exact(self.space, prob.additive, primary, budgets, self.time_limit)
            return self.result
        add = prob.additive
        first = solve_exact(self.space, add, primary, budgets, self.time_limit)
        lo, hi = 0.0, float(add.memory_term(first.indices)[0])
        best: ExactResult | None = None
        closest = first
        res = first
        for sweep in range(self.max_sweeps):
            if sweep:
                budgets["memory"] = max((lo + hi) / 2, 1.0)
                res = solve_exact(self.space, add, primary, budgets, self.time_limit)
            cost = prob.evaluator(res.indices[None, :])[0]
            real = float(cost.peak_mem_bytes)
            res.info["peak_bytes"], res.info["value"] = real, float(cost.value)
            self.sweeps.append({"additive_cap_bytes": budgets.get("memory"), "peak_bytes": real})
            if real <= mem_budget:
                if best is None or res.info["value"] < best.info["value"]:
                    best = res
                if sweep == 0:
                    break  # the unconstrained optimum already fits
                lo = budgets["memory"]
            else:
                if real < closest.info.get("peak_bytes", np.inf):
                    closest = res
                hi = budgets.get("memory", hi)
        best = best or closest
        best.info["memory_sweeps"] = self.sweeps
        self.result = best
        return best

    def ask(self, n: int = 1) -> list[Candidate]:
        """The solution, once; nothing afterwards."""
        if self._done or n <= 0:
            return []
        self._done = True
        res = self.solve()
        return [self._candidate(res.indices)]

    @property
    def finished(self) -> bool:
        return self._done


register_strategy("exact", ExactSolver)
