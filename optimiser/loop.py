"""The search loop: a strategy asks for plans, the predictor costs them in batches, the strategy learns.

Every ``validate_every`` trials the incumbent best plans are run on this machine with the runtime
(:func:`perfpredict.runtime.measure_plan`); predicted and measured latency are recorded, the
measurements are appended to a dataset store when one is given, and when the relative error of the
predictions exceeds ``recalibrate_threshold`` a correction of predicted latency is fitted on every plan
validated so far and applied to later predictions (:class:`LatencyCalibration`). The final best plan is
always measured when a validator is given. Ctrl-C stops the search: the strategy's state (Q-table,
Optuna study) and everything evaluated so far are kept, and the result says ``interrupted``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from perfpredict.graph import Graph
from perfpredict.plan import Plan

from optimiser.objectives import Costs, Evaluator
from optimiser.strategies.base import BaseStrategy, Problem

__all__ = ["SearchConfig", "Measured", "Validation", "SearchResult", "Validator", "RuntimeValidator",
           "LatencyCalibration", "run_search"]


@dataclass(frozen=True)
class SearchConfig:
    """Loop settings: trial budget, batch size, validation period (0: only the final plan), how many
    incumbents each validation measures, the relative error that triggers recalibration and how many plans must
    have been validated before the first one (on the device the predictor trained on, one plan that misses is
    more often an outlier of that plan than a bias of the model: ``benchmarks/bench_recalibration.py``)."""

    trials: int = 300
    batch_size: int = 8
    validate_every: int = 0
    validate_top: int = 1
    recalibrate_threshold: float = 0.15
    recalibrate_min_plans: int = 1
    progress: bool = True
    polish_rounds: int = 0
    """Rounds of :func:`polish` from the best plan after the strategy's trials (0: none)."""
    save_every_s: float = 30.0
    """Seconds between saves of the strategy's state during the trials (besides those at every validation, at
    the end and on Ctrl-C), so a killed search loses at most this much."""


@dataclass(frozen=True)
class Measured:
    """A measurement of one plan on this machine."""

    latency_ms: float
    peak_mem_bytes: float | None = None
    stats: Any = None
    memory_method: str | None = None  # how peak_mem_bytes was measured (MemoryMeasurement.method)


class Validator(Protocol):
    """Measures plans on the device (the runtime on this machine, or a remote board)."""

    def measure(self, graph: Graph, plan: Plan) -> Measured:
        """Latency (and peak memory when available) of ``plan``."""
        ...


class RuntimeValidator:
    """Measures with :func:`perfpredict.runtime.measure_plan` (``threads`` torch threads); ``memory``
    also measures peak memory (torch's allocator peak during one more forward pass). ``sink(graph, plan, measured)`` receives every
    measurement (e.g. to append it to a dataset store)."""

    def __init__(self, threads: int | None = None, memory: bool = False,
                 sink: Callable[[Graph, Plan, Measured], None] | None = None, **measure_options: Any):
        self.threads = threads
        self.memory = memory
        self.sink = sink
        self.options = measure_options

    def compare(self, graph: Graph, plans: dict[str, Plan]) -> dict[str, Measured]:
        """Latency of several plans measured round-robin and in lockstep
        (:func:`perfpredict.measure.measure_interleaved`): every plan is timed in every round until all have met
        the target, so that drift of a busy machine spreads over all of them instead of biasing one."""
        from perfpredict.measure import measure_interleaved
        from perfpredict.runtime import build_executable
        from perfpredict.runtime.measurement import _input_for

        fns = {}
        for name, plan in plans.items():
            exe = build_executable(graph, plan, threads=self.threads)
            xs = exe.prepare_input(*_input_for(graph, 0))
            fns[name] = (lambda exe=exe, xs=xs: exe.forward(*xs))
        opts = {k: v for k, v in self.options.items()
                if k in ("warmup", "min_repeats", "max_repeats", "target_ci", "time_cap_s")}
        stats = measure_interleaved(fns, threads=self.threads, lockstep=True, **opts)
        out = {name: Measured(float(s.median_ms), None, s) for name, s in stats.items()}
        if self.sink is not None:
            for name, m in out.items():
                self.sink(graph, plans[name], m)
        return out

    def measure(self, graph: Graph, plan: Plan) -> Measured:
        from perfpredict.runtime import measure_plan

        stats, mem = measure_plan(graph, plan, threads=self.threads, memory=self.memory, **self.options)
        out = Measured(float(stats.median_ms), float(mem.peak_bytes) if mem is not None else None, stats,
                       mem.method if mem is not None else None)
        if self.sink is not None:
            self.sink(graph, plan, out)
        return out


@dataclass(frozen=True)
class Validation:
    """Predicted versus measured costs of one plan at one point of the search."""

    trial: int
    plan_key: str
    predicted_ms: float
    measured_ms: float
    predicted_mem_bytes: float
    measured_mem_bytes: float | None
    corrected_ms: float | None = None
    plan: Plan | None = field(default=None, compare=False)

    @property
    def rel_error(self) -> float:
        """|predicted - measured| / measured (of the uncorrected prediction)."""
        return abs(self.predicted_ms - self.measured_ms) / max(self.measured_ms, 1e-12)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"trial": self.trial, "predicted_ms": self.predicted_ms, "measured_ms": self.measured_ms,
                "corrected_ms": self.corrected_ms, "rel_error": self.rel_error,
                "predicted_mem_bytes": self.predicted_mem_bytes, "measured_mem_bytes": self.measured_mem_bytes}


class LatencyCalibration:
    """A correction of predicted latency fitted on validated plans: one factor, the median measured / predicted
    ratio (a scale never reorders plans).

    A line in log space (``log m = a log p + b``), which this fitted from three plans on, did worse: fitted to a
    few plans of one model, its slope follows their own errors. Replayed on stored measurements
    (``benchmarks/bench_recalibration.py``), the scale left the other plans of the model closer to their
    measurements in most settings and numbers of validated plans tried.
    """

    def __init__(self) -> None:
        self.pred: list[float] = []
        self.meas: list[float] = []
        self.log_scale = 0.0

    def add(self, predicted: float, measured: float) -> None:
        """Add one (predicted, measured) pair."""
        if predicted > 0 and measured > 0:
            self.pred.append(float(predicted))
            self.meas.append(float(measured))

    def fit(self) -> None:
        """Refit on every pair added so far."""
        if self.pred:
            self.log_scale = float(np.median(np.log(self.meas) - np.log(self.pred)))

    def __call__(self, latency_ms: np.ndarray) -> np.ndarray:
        return np.asarray(latency_ms, dtype=float) * np.exp(self.log_scale)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: the fitted factor and the number of plans."""
        return {"scale": float(np.exp(self.log_scale)), "plans": len(self.pred)}


@dataclass
class SearchResult:
    """What a search produced: every evaluated plan, the best, validations, and how it ended."""

    problem: Problem
    strategy: str
    archive_idx: np.ndarray
    archive_costs: list[Costs]
    best_indices: np.ndarray
    best_costs: Costs
    default_costs: Costs
    trials: int
    seconds: float
    interrupted: bool = False
    validations: list[Validation] = field(default_factory=list)
    final_measured: Measured | None = None
    calibration: LatencyCalibration | None = None
    notes: list[str] = field(default_factory=list)
    anchors: dict[str, int] = field(default_factory=dict)
    """Plans measured beside the best at the end, label -> row of ``archive_idx``: the structured seeds of the search
    (whole-graph layout, primitive and precision changes) and, when :func:`polish` moved the best plan, the plan it
    started from (a polish on mispriced moves can lose what the strategy found)."""

    @property
    def best_plan(self) -> Plan:
        """The best plan found (feasible first, else the closest to the budgets)."""
        return self.problem.space.decode(self.best_indices, name=f"{self.problem.space.graph.name}-optimised")

    @property
    def feasible(self) -> bool:
        """Whether the best plan meets every budget."""
        return self.best_costs.feasible


def _best_k(result_idx: list[np.ndarray], costs: list[Costs], k: int) -> list[int]:
    order = sorted(range(len(costs)), key=lambda j: costs[j].rank_key())
    out, seen = [], set()
    for j in order:
        key = result_idx[j].tobytes()
        if key in seen:
            continue
        seen.add(key)
        out.append(j)
        if len(out) >= k:
            break
    return out


def _family_seeds(space: Any, base: np.ndarray, label: str) -> list[tuple[str, np.ndarray]]:
    """``base`` with every primitive of one implementation wherever one applies, per family of
    :meth:`SearchSpace.primitive_families`."""
    out = []
    for family, prims in space.primitive_families(base).items():
        idx = base
        for p in prims:
            idx = space.with_primitive(idx, p)
        out.append((f"{label}, every .{family} primitive wherever one applies", idx))
    return out


def _anchor_best_families(space: Any, evaluator: Evaluator, best: np.ndarray, archive_idx: list[np.ndarray],
                          archive_costs: list[Costs], anchors: dict[str, int]) -> None:
    """Add to the archive, as anchors measured at the end, the plan ``best`` with every op one library can run moved
    to it, per library (:func:`_family_seeds`; its precisions, pruning and layouts kept): the runtime chains runs of
    oneDNN calls, which the predictor's data, measured one step per op, does not price. A plan already in the
    archive is not added twice."""
    for label, seed in _family_seeds(space, best, "best plan"):
        if not any(np.array_equal(seed, a) for a in archive_idx):
            anchors[label] = len(archive_idx)
            archive_idx.append(seed)
            archive_costs.append(evaluator(seed[None, :])[0])


def polish(space: Any, evaluator: Evaluator, indices: np.ndarray, costs: Costs,
           rounds: int) -> tuple[list[np.ndarray], list[Costs], int]:
    """Coordinate descent on predicted costs from the plan ``indices`` (of ``costs``): each round evaluates, in one
    batch, every plan that changes one of the space's variables (a node's primitive, layout and precision, or a prune
    group's ratio) and moves to the best of them if it ranks better; at most ``rounds`` rounds, fewer when no single
    change helps. A strategy's trials can end next to a better plan that differs in one node; this finds it. Returns
    the plans moved to and their costs, in order, and how many plans were evaluated."""
    values = space.to_variables(indices)
    moved: list[np.ndarray] = []
    moved_costs: list[Costs] = []
    evaluated = 0
    for _ in range(rounds):
        changes = [(v.name, x) for v in space.variables for x in range(v.size) if x != values[v.name]]
        if not changes:
            break
        batch = np.stack([space.from_variables({**values, name: x}) for name, x in changes])
        batch_costs = evaluator(batch)
        evaluated += len(changes)
        j = min(range(len(batch_costs)), key=lambda k: batch_costs[k].rank_key())
        if not batch_costs[j].rank_key() < costs.rank_key():
            break
        indices, costs = batch[j], batch_costs[j]
        name, x = changes[j]
        values[name] = x
        moved.append(indices)
        moved_costs.append(costs)
    return moved, moved_costs, evaluated


def run_search(problem: Problem, strategy: BaseStrategy, evaluator: Evaluator, config: SearchConfig | None = None,
               validator: Validator | None = None, on_batch: Callable[[int], None] | None = None) -> SearchResult:
    """Run ``strategy`` on ``problem`` for ``config.trials`` trials (fewer when the strategy finishes).

    ``on_batch(trials_done)`` is called after every batch (e.g. to checkpoint). Ctrl-C ends the search
    early with ``interrupted=True``; the strategy's state is saved either way.
    """
    from tqdm import tqdm

    cfg = config or SearchConfig()
    space = problem.space
    t0 = time.perf_counter()
    archive_idx: list[np.ndarray] = []
    archive_costs: list[Costs] = []
    validations: list[Validation] = []
    calibration = LatencyCalibration()
    notes: list[str] = []
    default_idx = space.default_indices()
    default_costs = evaluator(default_idx[None, :])[0]
    # structured seeds, counted as trials: the whole-graph NHWC plan with the default primitives, with the
    # cheapest NHWC primitive of each node by the additive tables, with each other primitive that several
    # nodes offer wherever it applies, and with every primitive of one implementation (library) wherever one
    # applies; where int8 is allowed the first two and the families in int8 as well (see SearchSpace.relayout,
    # with_primitive and primitive_families). After the trials the best plan gets its families too
    # (_anchor_best_families)
    unary = problem.additive.unary if problem.additive is not None else None
    anchors: dict[str, int] = {}
    nhwc = space.uniform_layout_indices("NHWC")
    seeds = [("all-NHWC plan", nhwc),
             ("all-NHWC plan, cheapest primitives", space.uniform_layout_indices("NHWC", unary))]
    seeds += [(f"all-NHWC plan, {p} wherever it applies", space.with_primitive(nhwc, p))
              for p in space.alternative_primitives(nhwc)]
    seeds += _family_seeds(space, nhwc, "all-NHWC plan")
    if "int8" in space.config.precisions:
        int8 = space.uniform_layout_indices("NHWC", precision="int8")
        seeds += [("all-int8 NHWC plan", int8),
                  ("all-int8 NHWC plan, cheapest primitives", space.uniform_layout_indices("NHWC", unary, "int8"))]
        seeds += _family_seeds(space, int8, "all-int8 NHWC plan")
    for label, seed in seeds:
        if len(archive_idx) >= cfg.trials or np.array_equal(seed, default_idx) or \
                any(np.array_equal(seed, a) for a in archive_idx):
            continue
        anchors[label] = len(archive_idx)
        archive_idx.append(seed)
        archive_costs.append(evaluator(seed[None, :])[0])
    interrupted = False
    next_validation = cfg.validate_every if cfg.validate_every > 0 else None
    bar = tqdm(total=cfg.trials, desc=f"search ({strategy.name})", unit="plan", file=sys.stderr,
               disable=not cfg.progress, leave=False, dynamic_ncols=True)
    done = len(archive_idx)
    bar.update(done)
    last_save = time.perf_counter()
    try:
        while done < cfg.trials and not strategy.finished:
            cands = strategy.ask(min(cfg.batch_size, cfg.trials - done))
            if not cands:
                break
            idx = np.stack([c.indices for c in cands])
            costs = evaluator(idx)
            strategy.tell(cands, costs)
            archive_idx.extend(idx)
            archive_costs.extend(costs)
            done += len(cands)
            bar.update(len(cands))
            best = strategy.best
            if best is not None:
                bar.set_postfix_str(f"best {_fmt_value(problem, best[1])}", refresh=False)
            if on_batch is not None:
                on_batch(done)
            if validator is not None and next_validation is not None and done >= next_validation:
                next_validation += cfg.validate_every
                new = _validate(problem, evaluator, validator, archive_idx, archive_costs, cfg.validate_top, done)
                validations += new
                if _recalibrate(evaluator, calibration, new, cfg.recalibrate_threshold, cfg.recalibrate_min_plans):
                    archive_costs = evaluator(np.stack(archive_idx))
                    default_costs = evaluator(default_idx[None, :])[0]
                    notes.append(f"latency recalibrated after trial {done}: {calibration.as_dict()}")
                strategy.save()
                last_save = time.perf_counter()
            elif time.perf_counter() - last_save >= cfg.save_every_s:
                strategy.save()
                last_save = time.perf_counter()
    except KeyboardInterrupt:
        interrupted = True
        notes.append(f"interrupted after {done} trials; the best plan so far is kept")
    finally:
        bar.close()
        strategy.save()
    if not archive_costs:
        archive_idx.append(default_idx)
        archive_costs.append(default_costs)
    if cfg.polish_rounds > 0 and not interrupted:
        j = _best_k(archive_idx, archive_costs, 1)[0]
        try:
            moved, moved_costs, evaluated = polish(space, evaluator, archive_idx[j], archive_costs[j],
                                                   cfg.polish_rounds)
        except KeyboardInterrupt:
            interrupted = True
            notes.append("interrupted while polishing the best plan; the best plan so far is kept")
        else:
            if moved:  # the plans moved to join the archive (not counted as trials)
                if not any(np.array_equal(archive_idx[j], archive_idx[a]) for a in anchors.values()):
                    anchors["strategy's best plan before the polish"] = j  # measured at the end beside the polished
                archive_idx.extend(moved)
                archive_costs.extend(moved_costs)
                notes.append(f"polish: {len(moved)} single-variable change(s) from the strategy's best plan lowered "
                             f"its predicted cost ({_fmt_value(problem, archive_costs[j])} -> "
                             f"{_fmt_value(problem, moved_costs[-1])}; {evaluated} plans evaluated)")
    j = _best_k(archive_idx, archive_costs, 1)[0]
    if default_costs.rank_key() < archive_costs[j].rank_key():
        best_idx, best_costs = default_idx, default_costs
        notes.append("no evaluated plan beat the default plan; the default plan is returned")
    else:
        best_idx, best_costs = archive_idx[j], archive_costs[j]
    if not interrupted:
        _anchor_best_families(space, evaluator, best_idx, archive_idx, archive_costs, anchors)
    final = None
    if validator is not None and not interrupted:
        plan = space.decode(best_idx)
        final = validator.measure(space.graph, plan)
        validations.append(Validation(done, plan.key, float(evaluator.raw_uncorrected(best_idx)[0]), final.latency_ms,
                                      best_costs.peak_mem_bytes, final.peak_mem_bytes,
                                      best_costs.latency_ms if evaluator.latency_correction is not None else None,
                                      plan))
    return SearchResult(problem, strategy.name, np.stack(archive_idx), archive_costs, best_idx, best_costs,
                        default_costs, done, time.perf_counter() - t0, interrupted, validations, final,
                        calibration if calibration.pred else None, notes, anchors)


def _fmt_value(problem: Problem, cost: Costs) -> str:
    p = problem.objective.primary
    v = {"latency": f"{cost.latency_ms:.3g} ms", "memory": f"{cost.peak_mem_bytes / 1e6:.3g} MB",
         "accuracy": f"{cost.accuracy_drop_pct:.3g} pt"}[p]
    return v if cost.feasible else f"{v} (over budget)"


def _validate(problem: Problem, evaluator: Evaluator, validator: Validator, archive_idx: list[np.ndarray],
              archive_costs: list[Costs], top: int, trial: int) -> list[Validation]:
    out = []
    for j in _best_k(archive_idx, archive_costs, top):
        plan = problem.space.decode(archive_idx[j])
        m = validator.measure(problem.space.graph, plan)
        raw = float(evaluator.raw_uncorrected(archive_idx[j])[0])
        corrected = archive_costs[j].latency_ms if evaluator.latency_correction is not None else None
        out.append(Validation(trial, plan.key, raw, m.latency_ms, archive_costs[j].peak_mem_bytes, m.peak_mem_bytes,
                              corrected, plan))
    return out


def _recalibrate(evaluator: Evaluator, calibration: LatencyCalibration, new: Sequence[Validation], threshold: float,
                 min_plans: int = 1) -> bool:
    for v in new:
        calibration.add(v.predicted_ms, v.measured_ms)
    if len(calibration.pred) < min_plans:
        return False
    errors = [abs(calibration(np.array([v.predicted_ms]))[0] - v.measured_ms) / v.measured_ms
              if evaluator.latency_correction is not None else v.rel_error for v in new]
    if not errors or max(errors) <= threshold:
        return False
    calibration.fit()
    evaluator.set_correction(calibration)
    return True
