"""Objectives, constraints and the batched evaluation of candidate plans on predicted costs.

A plan has three costs: predicted latency (ms), predicted peak memory (bytes) and estimated accuracy
drop (percentage points, from :mod:`optimiser.accuracy`). A search minimises one of them under budgets
on the others (single objective with constraints) or looks for the Pareto front of several.

Infeasible plans are ranked by how far they are from the budgets: a strategy sees a penalised scalar
``value = objective * (1 + penalty * sum(relative violations))``, and "best" means the feasible plan
with the lowest objective, else the plan with the smallest total violation (the closest plan).
:class:`AdditiveCosts` holds the per-node and pairwise tables of a :class:`NodeCostModel` over the
space's options, for the exact solver and for Q-learning's per-step rewards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

from perfpredict.errors import PerfPredictError
from perfpredict.predictor import NodeCostModel, Predictor

if TYPE_CHECKING:
    from perfpredict.devices import DeviceSpec
    from optimiser.space import SearchSpace

__all__ = ["OBJECTIVES", "Constraints", "Objective", "Costs", "Evaluator", "AccuracyEstimate",
           "AdditiveCosts", "additive_costs"]

OBJECTIVES: tuple[str, ...] = ("latency", "memory", "accuracy")
"""Objective names: predicted latency (ms), predicted peak memory (bytes), accuracy drop (pct points)."""


@dataclass(frozen=True)
class Constraints:
    """Budgets (None: unconstrained): latency in ms, peak memory in bytes, accuracy drop in percentage points."""

    latency_ms: float | None = None
    memory_bytes: float | None = None
    accuracy_drop_pct: float | None = None

    def __post_init__(self) -> None:
        for name in ("latency_ms", "memory_bytes", "accuracy_drop_pct"):
            v = getattr(self, name)
            if v is not None and (not math.isfinite(v) or v < 0 or (v == 0 and name != "accuracy_drop_pct")):
                raise PerfPredictError(f"budget {name}={v} must be a positive number"
                                       + (" (0 allowed)" if name == "accuracy_drop_pct" else ""))

    def as_dict(self) -> dict[str, float | None]:
        """JSON-ready form."""
        return {"latency_ms": self.latency_ms, "memory_bytes": self.memory_bytes,
                "accuracy_drop_pct": self.accuracy_drop_pct}


@dataclass(frozen=True)
class Costs:
    """Evaluated costs of one plan.

    ``violations`` has one entry per budget set (latency, memory, accuracy, in that order, those set
    only): ``cost / budget - 1`` (<= 0 means met; accuracy uses ``drop - budget`` in points);
    ``value`` is the penalised scalar a single-objective strategy minimises; ``values`` the raw
    objective values for multi-objective strategies.
    """

    latency_ms: float
    peak_mem_bytes: float
    accuracy_drop_pct: float
    violations: tuple[float, ...] = ()
    value: float = 0.0
    values: tuple[float, ...] = ()

    @property
    def feasible(self) -> bool:
        """Whether every budget is met."""
        return all(v <= 1e-12 for v in self.violations)

    @property
    def violation(self) -> float:
        """Sum of positive violations (0 when feasible)."""
        return float(sum(max(0.0, v) for v in self.violations))

    def rank_key(self) -> tuple[int, float]:
        """Sort key: feasible plans first by objective, then infeasible ones by violation."""
        return (0, self.value) if self.feasible else (1, self.violation)

    def as_dict(self) -> dict[str, float | bool]:
        """JSON-ready form."""
        return {"latency_ms": self.latency_ms, "peak_mem_bytes": self.peak_mem_bytes,
                "accuracy_drop_pct": self.accuracy_drop_pct, "feasible": self.feasible,
                "violation": self.violation, "value": self.value}


@dataclass(frozen=True)
class Objective:
    """What to minimise (``names[0]`` for single-objective strategies; all for Pareto) and the budgets."""

    names: tuple[str, ...] = ("latency",)
    constraints: Constraints = field(default_factory=Constraints)
    penalty: float = 10.0

    def __post_init__(self) -> None:
        if not self.names:
            raise PerfPredictError(f"at least one objective is needed; accepted: {', '.join(OBJECTIVES)}")
        bad = [n for n in self.names if n not in OBJECTIVES]
        if bad:
            raise PerfPredictError(f"unknown objective(s) {', '.join(bad)}; accepted: {', '.join(OBJECTIVES)}")

    @property
    def primary(self) -> str:
        """The objective a single-objective strategy minimises."""
        return self.names[0]

    def score(self, latency: float, memory: float, accuracy: float) -> Costs:
        """Costs with violations, penalised value and objective values filled in."""
        c = self.constraints
        viol = []
        if c.latency_ms is not None:
            viol.append(latency / c.latency_ms - 1.0)
        if c.memory_bytes is not None:
            viol.append(memory / c.memory_bytes - 1.0)
        if c.accuracy_drop_pct is not None:
            viol.append(accuracy - c.accuracy_drop_pct)
        raw = {"latency": latency, "memory": memory, "accuracy": accuracy}
        primary = raw[self.primary]
        excess = sum(max(0.0, v) for v in viol)
        scale = abs(primary) if self.primary != "accuracy" else 1.0
        value = primary + self.penalty * excess * max(scale, 1e-9)
        return Costs(float(latency), float(memory), float(accuracy), tuple(float(v) for v in viol), float(value),
                     tuple(float(raw[n]) for n in self.names))


class AccuracyEstimate(Protocol):
    """Estimated accuracy drop (percentage points) of plans given as option indices of a space."""

    def drop(self, indices: np.ndarray) -> np.ndarray:
        """One drop per row of the (plans x nodes) index matrix."""
        ...


class Evaluator:
    """Scores candidate plans with a predictor, batched, with a memo of plans already seen.

    ``latency_correction`` (set by the search loop after validation on the device) maps predicted
    latency to corrected latency; the memo keeps uncorrected predictions, so changing it is cheap.
    """

    def __init__(self, space: "SearchSpace", predictor: Predictor, device: "DeviceSpec", objective: Objective,
                 accuracy: AccuracyEstimate | None = None):
        self.space = space
        self.predictor = predictor
        self.device = device
        self.objective = objective
        self.accuracy = accuracy
        self.latency_correction: Callable[[np.ndarray], np.ndarray] | None = None
        self._memo: dict[bytes, tuple[float, float, float]] = {}
        self.calls = 0
        self.predicted = 0

    def set_correction(self, fn: Callable[[np.ndarray], np.ndarray] | None) -> None:
        """Apply ``fn`` to predicted latency from now on."""
        self.latency_correction = fn

    def raw_uncorrected(self, indices: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) of each row before any correction."""
        idx = np.atleast_2d(np.asarray(indices, dtype=np.int64))
        self._predict(idx)
        return np.array([self._memo[row.tobytes()][0] for row in idx], dtype=float)

    def _predict(self, idx: np.ndarray) -> None:
        keys = [row.tobytes() for row in idx]
        seen: dict[bytes, int] = {}
        todo = [k for k, key in enumerate(keys) if key not in self._memo and seen.setdefault(key, k) == k]
        if not todo:
            return
        sub = idx[todo]
        plans = self.space.decode_many(sub)
        pred = self.predictor.predict(self.space.graph, plans, self.device)
        lat = np.asarray(pred.latency_ms, dtype=float)
        mem = np.asarray(pred.peak_mem_bytes, dtype=float)
        acc = np.asarray(self.accuracy.drop(sub), dtype=float) if self.accuracy is not None else np.zeros(len(sub))
        for j, k in enumerate(todo):
            self._memo[keys[k]] = (float(lat[j]), float(mem[j]), float(acc[j]))
        self.calls += 1
        self.predicted += len(todo)

    def raw(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(latency ms, peak bytes, accuracy drop) of each row, predicted in one batch for unseen rows."""
        idx = np.atleast_2d(np.asarray(indices, dtype=np.int64))
        self._predict(idx)
        vals = np.array([self._memo[row.tobytes()] for row in idx], dtype=float).reshape(len(idx), 3)
        lat = vals[:, 0]
        if self.latency_correction is not None:
            lat = np.asarray(self.latency_correction(lat), dtype=float)
        return lat, vals[:, 1], vals[:, 2]

    def __call__(self, indices: np.ndarray) -> list[Costs]:
        """Scored costs of each row of ``indices``."""
        lat, mem, acc = self.raw(indices)
        return [self.objective.score(a, b, c) for a, b, c in zip(lat, mem, acc)]


# ------------------------------------------------------------------------------------- additive tables


@dataclass
class AdditiveCosts:
    """Per-node and pairwise cost tables over a space's options, folded onto the free nodes.

    ``unary[i]`` has one entry per option of free node ``i`` (other nodes: a single 0); ``pairs`` lists
    ``(src, dst, matrix)`` between two free nodes, ``src`` before ``dst``. Terms of fixed nodes are
    folded into ``constant`` or into the other node's unary table; terms of tied activations into their
    producer's. ``memory`` and ``accuracy`` are additive unary terms folded the same way (weights +
    workspace bytes; accuracy-drop points). Every table is read at the option indices of free nodes only.
    """

    unary: list[np.ndarray]
    pairs: list[tuple[int, int, np.ndarray]]
    constant: float
    memory: list[np.ndarray]
    memory_constant: float = 0.0
    accuracy: list[np.ndarray] | None = None
    accuracy_constant: float = 0.0

    def latency(self, indices: np.ndarray) -> np.ndarray:
        """Additive latency of each row of a (plans x nodes) index matrix."""
        idx = np.atleast_2d(indices)
        total = np.full(len(idx), self.constant)
        for i, u in enumerate(self.unary):
            if len(u) > 1:
                total += u[idx[:, i]]
        for s, d, m in self.pairs:
            total += m[idx[:, s], idx[:, d]]
        return total

    def _sum(self, tables: list[np.ndarray], constant: float, indices: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(indices)
        total = np.full(len(idx), constant)
        for i, t in enumerate(tables):
            if len(t) > 1:
                total += t[idx[:, i]]
        return total

    def memory_term(self, indices: np.ndarray) -> np.ndarray:
        """Additive memory term (bytes) of each row."""
        return self._sum(self.memory, self.memory_constant, indices)

    def accuracy_term(self, indices: np.ndarray) -> np.ndarray:
        """Additive accuracy drop of each row (zeros when no accuracy tables are set)."""
        if self.accuracy is None:
            return np.zeros(len(np.atleast_2d(indices)))
        return self._sum(self.accuracy, self.accuracy_constant, indices)

    def table(self, objective: str) -> tuple[list[np.ndarray], list[tuple[int, int, np.ndarray]], float]:
        """(unary, pairs, constant) of ``objective`` (latency, memory or accuracy)."""
        if objective == "latency":
            return self.unary, self.pairs, self.constant
        if objective == "memory":
            return self.memory, [], self.memory_constant
        if self.accuracy is None:
            return [np.zeros_like(m) for m in self.memory], [], 0.0
        return self.accuracy, [], self.accuracy_constant


class _Folder:
    """Maps every node's options onto the options of a free root node (itself, a tied producer, or none)."""

    def __init__(self, space: "SearchSpace"):
        self.space = space
        n = len(space.nodes)
        self.root: list[int | None] = [None] * n
        self.map: list[np.ndarray] = [np.zeros(1, dtype=np.int64)] * n
        free = set(space.free)
        for i in range(n):
            if i in free:
                self.root[i] = i
                self.map[i] = np.arange(space.sizes[i])
        for act, (prod, mapping) in space.tied.items():
            if self.root[prod] is not None:
                self.root[act] = self.root[prod]
                self.map[act] = mapping[self.map[prod]]
            else:  # producer fixed: the activation is fixed too
                self.map[act] = mapping[:1]

    def fold_unary(self, tables: Sequence[np.ndarray]) -> tuple[list[np.ndarray], float]:
        sp = self.space
        out = [np.zeros(int(sp.sizes[i]) if self.root[i] == i else 1) for i in range(len(sp.nodes))]
        const = 0.0
        for i, t in enumerate(tables):
            t = np.asarray(t, dtype=float)
            r = self.root[i]
            if r is None:
                const += float(t[self.map[i][0]])
            else:
                out[r] = out[r] + t[self.map[i]]
        return out, const


def additive_costs(space: "SearchSpace", model: NodeCostModel, device: "DeviceSpec",
                   accuracy_tables: Sequence[np.ndarray] | None = None) -> AdditiveCosts:
    """Build :class:`AdditiveCosts` of ``model`` over the options of ``space``.

    ``accuracy_tables`` (one array per node over its options) adds the accuracy-drop term.
    """
    g = space.graph
    opts = {n: space.options[n] for n in space.nodes}
    fold = _Folder(space)
    node = model.node_costs(g, device, opts)
    mem = model.node_memory(g, device, opts)
    unary, constant = fold.fold_unary([node[n] for n in space.nodes])
    memory, mem_const = fold.fold_unary([mem[n] for n in space.nodes])
    pairs: dict[tuple[int, int], np.ndarray] = {}
    for src, dst in model.cost_pairs(g):
        s, d = space.pos[src], space.pos[dst]
        m = np.asarray(model.edge_costs(g, device, src, dst, opts[src], opts[dst]), dtype=float)
        if not m.any():
            continue
        rs, rd = fold.root[s], fold.root[d]
        m = m[np.ix_(fold.map[s], fold.map[d])]
        if rs is None and rd is None:
            constant += float(m[0, 0])
        elif rs is None:
            unary[rd] = unary[rd] + m[0, :]
        elif rd is None:
            unary[rs] = unary[rs] + m[:, 0]
        elif rs == rd:
            unary[rs] = unary[rs] + np.diagonal(m)
        else:
            if rs > rd:
                rs, rd, m = rd, rs, m.T
            pairs[(rs, rd)] = pairs[(rs, rd)] + m if (rs, rd) in pairs else m
    acc, acc_const = (fold.fold_unary(accuracy_tables) if accuracy_tables is not None else (None, 0.0))
    return AdditiveCosts(unary, [(s, d, m) for (s, d), m in pairs.items()], constant, memory, mem_const,
                         acc, acc_const)
