"""One call to optimise a model for a device: space, predictor, accuracy model, strategy, loop, outputs.

:func:`optimise` is what ``perfpredict optimise`` runs; :func:`validate_on_device` what ``perfpredict
validate`` runs. Predictors are named as the CLI names them (:func:`resolve_predictor`): "roofline"
(the analytical model), a checkpoint path or name under ``trained_models/`` (the GNN or a baseline), or
None for the default: the shipped ``proxy`` checkpoint when it exists, else the roofline model.

Accuracy policy: the search is lossless (fp32, no pruning) unless the user allows a drop
(``max_accuracy_drop_pct``), gives calibration data (then a 1-point budget applies unless another is
given) or asks for accuracy as an objective. With a drop allowed, per-layer sensitivities are measured
with the runtime on the calibration data (or seeded random inputs: fidelity to fp32) and cached under
the output directory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence


from perfpredict.errors import PerfPredictError
from perfpredict.graph import Graph
from perfpredict.plan import Plan, default_plan, validate_plan
from perfpredict.predictor import NodeCostModel

from optimiser.objectives import Constraints, Evaluator, Objective, additive_costs
from optimiser.space import SearchSpace, SpaceConfig
from optimiser.strategies import Problem, make_strategy

__all__ = ["OptimiseOptions", "OptimiseOutcome", "optimise", "resolve_predictor", "validate_on_device",
           "build_space", "build_search", "predictor_primitives", "unpriced_primitives", "DEFAULT_CHECKPOINT",
           "DEFAULT_ACCURACY_BUDGET"]

DEFAULT_CHECKPOINT = "proxy"
"""Name of the shipped predictor checkpoint under ``trained_models/`` used by default."""

DEFAULT_ACCURACY_BUDGET = 1.0
"""Accuracy-drop budget (points) when calibration data is given without an explicit budget."""


@dataclass
class OptimiseOptions:
    """Everything ``perfpredict optimise`` can set (see its --help)."""

    strategy: str = "qlearning"
    trials: int = 300
    batch_size: int = 8
    objectives: tuple[str, ...] = ("latency",)
    latency_budget_ms: float | None = None
    memory_budget_mb: float | None = None
    max_accuracy_drop_pct: float | None = None
    lossless: bool = False
    prune_ratios: tuple[float, ...] = (0.0, 0.25, 0.5)
    calibration: str | None = None
    calibration_samples: int = 16
    validate_every: int = 0
    polish_rounds: int = 20
    refine_nodes: int = 3
    measure: bool = True
    threads: int | None = None
    storage: str | None = None
    study: str | None = None
    outdir: Path = Path("runs/optimise")
    seed: int = 0
    dataset: str | None = None
    progress: bool = True
    strategy_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimiseOutcome:
    """The search result plus what the report needs (measured figures, accuracy, files written)."""

    result: Any
    device: Any
    predictor_name: str
    space: SearchSpace
    accuracy_note: str
    measured_default: Any = None
    measured_accuracy: Any = None
    chosen_plan: Plan | None = None
    chosen_note: str | None = None
    chosen_measured_ms: float | None = None
    measured_best: Any = None
    measure_note: str | None = None
    refinement: Any = None
    files: dict[str, str] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


class _ThreadedPredictor:
    """Passes a thread count to predictors whose ``predict`` takes one (the GNN and baselines)."""

    def __init__(self, inner: Any, threads: int | None):
        self.inner = inner
        self.threads = threads
        self.name = getattr(inner, "name", type(inner).__name__)

    def predict(self, graphs: Any, plans: Sequence[Plan], device: Any) -> Any:
        if self.threads is None:
            return self.inner.predict(graphs, plans, device)
        return self.inner.predict(graphs, plans, device, threads=self.threads)


def resolve_predictor(name: str | None, threads: int | None = None, device: Any = None,
                      zero_shot: str = "proxy") -> tuple[Any, str]:
    """(predictor, label) for ``name``: "roofline", a checkpoint path or name, or None for the default.

    With ``device``, a checkpoint that did not train on it answers through the trained device nearest by
    fingerprint (``zero_shot`` "proxy", where that applies; "board" uses the board's features:
    :mod:`perfpredict.proxy_route`); the label then names the proxy."""
    from perfpredict.analytical import RooflineModel

    if name == "roofline":
        return RooflineModel(threads=threads), "roofline"
    from perfpredict.gnn_predictor import load_predictor, resolve_model_path

    if name is None:
        try:
            resolve_model_path(DEFAULT_CHECKPOINT)
        except PerfPredictError:
            return RooflineModel(threads=threads), "roofline (no trained_models/proxy checkpoint found)"
        name = DEFAULT_CHECKPOINT
    pred = load_predictor(name)
    label = str(getattr(pred, "source_path", name))
    if getattr(pred, "kind", None) == "calibrated":  # an adapted checkpoint: its own name, then its source's
        label = f"{name}, adapted to '{pred.target.name}' from {label}"
    if device is not None:
        from perfpredict.proxy_route import route_predictor

        pred, route = route_predictor(pred, device, threads, zero_shot)
        if route is not None:
            label += f" via {route.proxy.name} ({route.proxy.device_id}) x {route.ratio:.3g}"
    return _ThreadedPredictor(pred, threads), label


def _accuracy_policy(opts: OptimiseOptions) -> tuple[bool, float | None]:
    """(lossless, accuracy budget) after the defaults of the module docstring."""
    wants = opts.max_accuracy_drop_pct is not None or "accuracy" in opts.objectives
    if opts.lossless:
        if wants:
            raise PerfPredictError("--lossless forbids int8 and pruning, so an accuracy budget or objective makes "
                                   "no sense with it; drop one of them")
        return True, None
    if not wants and opts.calibration is None:
        return True, None
    budget = opts.max_accuracy_drop_pct
    if budget is None and "accuracy" not in opts.objectives:
        budget = DEFAULT_ACCURACY_BUDGET
    return False, budget


def _busy_note(threads: int | None) -> str | None:
    """The note a search that times plans here carries when other work keeps this machine busy as it starts
    (:func:`perfpredict.measure.contention_note`): its measured figures are then slower and noisier."""
    from perfpredict.measure import contention_note

    note = contention_note(threads)
    return None if note is None else f"when the search began, {note}"


def _check_options(opts: OptimiseOptions) -> None:
    if opts.trials < 1:
        raise PerfPredictError(f"--trials must be a positive integer, got {opts.trials}")
    if opts.refine_nodes < 0:
        raise PerfPredictError(f"--refine-nodes must be 0 or a positive integer, got {opts.refine_nodes}")
    if opts.polish_rounds < 0:
        raise PerfPredictError(f"--polish-rounds must be 0 or a positive integer, got {opts.polish_rounds}")
    if opts.batch_size < 1:
        raise PerfPredictError(f"batch size must be a positive integer, got {opts.batch_size}")
    if opts.validate_every < 0:
        raise PerfPredictError(f"--validate-every must be 0 (final plan only) or positive, got {opts.validate_every}")
    if opts.threads is not None and opts.threads < 1:
        raise PerfPredictError(f"--threads must be a positive integer, got {opts.threads}")


def predictor_primitives(predictor: Any) -> tuple[str, ...] | None:
    """The primitives ``predictor`` has learned (its vocabulary), following wrappers and adapted checkpoints to the
    predictor underneath; None for one that prices any primitive (the analytical models)."""
    seen: set[int] = set()
    while predictor is not None and id(predictor) not in seen:
        seen.add(id(predictor))
        known = getattr(predictor, "known_primitives", None)
        if known is not None:
            return tuple(known)
        predictor = getattr(predictor, "inner", None) or getattr(predictor, "source", None)
    return None


def build_space(graph: Graph, opts: OptimiseOptions, predictor: Any = None) -> SearchSpace:
    """The search space the options describe; with ``predictor``, only the primitives it has learned are offered
    (a node's default is always kept), since a primitive it never saw would be priced by extrapolation."""
    lossless, _ = _accuracy_policy(opts)
    return SearchSpace(graph, SpaceConfig(prune_ratios=opts.prune_ratios, lossless=lossless,
                                          primitives=predictor_primitives(predictor)))


def unpriced_primitives(graph: Graph, predictor: Any, precisions: tuple[str, ...] = ("fp32", "int8")) -> list[str]:
    """Registered primitives that could run a node of ``graph`` at one of ``precisions`` but that ``predictor`` has
    not learned, leaving out a node's default (always kept, so never left out of the search)."""
    from perfpredict.primitives import candidates, default_primitive

    known = predictor_primitives(predictor)
    if known is None:
        return []
    defaults = {n.name: default_primitive(n).name for n in graph.nodes if candidates(n, precision="fp32")}
    offered = {p.name for n in graph.nodes for prec in precisions for p in candidates(n, precision=prec)
               if p.name != defaults.get(n.name)}
    return sorted(offered - set(known))


def build_search(graph: Graph, device: Any, predictor: Any, opts: OptimiseOptions, accuracy: Any = None,
                 space: SearchSpace | None = None) -> tuple[Problem, Evaluator, SearchSpace]:
    """The space, evaluator and problem of a search (no strategy yet)."""
    from perfpredict.analytical import RooflineModel

    _, budget = _accuracy_policy(opts)
    space = space if space is not None else build_space(graph, opts, predictor)
    constraints = Constraints(opts.latency_budget_ms,
                              opts.memory_budget_mb * 1e6 if opts.memory_budget_mb is not None else None, budget)
    objective = Objective(tuple(opts.objectives), constraints)
    evaluator = Evaluator(space, predictor, device, objective, accuracy)
    inner = getattr(predictor, "inner", predictor)
    exact_source = isinstance(inner, RooflineModel) or (opts.strategy == "exact" and isinstance(inner, NodeCostModel))
    # shaping / exact tables: the predictor's own node and pair costs when it has them (a learned predictor's
    # are its second-order expansion around the default plan), else the roofline model's
    cost_model = inner if exact_source or isinstance(inner, NodeCostModel) else RooflineModel(threads=opts.threads)
    tables = getattr(accuracy, "tables", None)
    additive = additive_costs(space, cost_model, device, tables)
    problem = Problem(space, objective, evaluator, additive, exact_source, n_trials=opts.trials, seed=opts.seed,
                      workdir=Path(opts.outdir), storage=opts.storage, study_name=opts.study)
    return problem, evaluator, space


def _default_storage(opts: OptimiseOptions) -> str | None:
    if opts.storage is not None or opts.strategy not in ("tpe", "nsga2"):
        return opts.storage
    return f"sqlite:///{(Path(opts.outdir) / 'optuna.db').resolve()}"


def _dataset_sink(path: str, device: Any, threads: int | None, predictor_name: str):
    from perfpredict.dataset import make_record, open_store
    from perfpredict.graph_json import pack_graph

    store = open_store(path)
    packed: dict[str, str] = {}

    def sink(graph: Graph, plan: Plan, measured: Any) -> None:
        # the count the measurement ran with (torch's current count when --threads is not given)
        used = threads or getattr(measured.stats, "threads", None) or 1
        if graph.graph_id not in packed:  # the graph travels with the record, so training can rebuild it
            packed[graph.graph_id] = pack_graph(graph)
        rec = make_record(kind="model", device=device, campaign="optimise-validation", threads=used,
                          stats=measured.stats, graph_id=graph.graph_id, plan_json=plan, model_name=graph.name,
                          peak_mem_bytes=int(measured.peak_mem_bytes) if measured.peak_mem_bytes else None,
                          extra={"predictor": predictor_name, "graph": packed[graph.graph_id],
                                 **({"mem": {"method": measured.memory_method}} if measured.memory_method else {})})
        store.append(rec, if_exists="skip")

    return sink


def optimise(graph: Graph, device: Any, opts: OptimiseOptions, predictor: Any = None,
             predictor_name: str | None = None) -> OptimiseOutcome:
    """Search a plan for ``graph`` on ``device`` and write the outputs under ``opts.outdir``."""
    from optimiser.accuracy import (AccuracyMeter, AdditiveAccuracy, accuracy_tables, layer_sensitivity,
                                    load_calibration, synthetic_calibration)
    from optimiser.loop import RuntimeValidator, SearchConfig, run_search
    from optimiser.report import write_outputs

    _check_options(opts)
    if predictor is None:
        predictor, predictor_name = resolve_predictor(None, opts.threads)
    predictor_name = predictor_name or type(predictor).__name__
    outdir = Path(opts.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    opts = dataclasses.replace(opts, storage=_default_storage(opts))
    lossless, budget = _accuracy_policy(opts)

    space = build_space(graph, opts, predictor)
    meter = None
    accuracy = None
    note = "lossless: fp32 only, no pruning (allow a drop with --max-accuracy-drop or --calibration)"
    if not lossless:
        data = load_calibration(opts.calibration, graph, limit=opts.calibration_samples) if opts.calibration else \
            synthetic_calibration(graph, opts.calibration_samples, opts.seed)
        meter = AccuracyMeter(graph, data, threads=opts.threads)
        sens = layer_sensitivity(space, meter, outdir / "cache", progress=opts.progress)
        accuracy = AdditiveAccuracy(space, accuracy_tables(space, sens))
        kind = "accuracy drop on labelled data" if data.labels is not None else \
            "fidelity loss (% of inputs not faithful to fp32: other top-1 or SQNR < 20 dB)"
        note = (f"accuracy: {kind} from {data.source} ({len(data)} inputs); per-layer sensitivities "
                f"({sens.runs} new runs), additive estimate during the search")
    problem, evaluator, space = build_search(graph, device, predictor, opts, accuracy, space)
    strategy = make_strategy(opts.strategy, problem, **opts.strategy_options)

    validator = None
    if opts.measure:
        sink = _dataset_sink(opts.dataset, device, opts.threads, predictor_name) if opts.dataset else None
        validator = RuntimeValidator(threads=opts.threads, sink=sink)
    from perfpredict.proxy_route import isa_note, thread_range_note, trained_on

    # on a device the predictor trained on, a miss by one or two validated plans is theirs more often than the
    # model's: correcting every plan by it made the others worse (benchmarks/bench_recalibration.py)
    trained_here = trained_on(getattr(predictor, "inner", predictor), device, opts.threads)
    cfg = SearchConfig(trials=opts.trials, batch_size=opts.batch_size, validate_every=opts.validate_every,
                       polish_rounds=opts.polish_rounds,
                       recalibrate_min_plans=3 if trained_here else 1, progress=opts.progress)
    busy = _busy_note(opts.threads) if validator is not None else None
    result = run_search(problem, strategy, evaluator, cfg, validator)
    resumed_from = getattr(strategy, "resumed_from", None)  # a registered strategy may lack it
    if resumed_from:
        result.notes.append(f"resumed from {resumed_from}; --trials counted this run's new plans")
    if busy:
        result.notes.append(busy)
    unpriced = unpriced_primitives(graph, predictor, space.config.precisions)
    if unpriced:
        result.notes.append(f"left out of the search: {', '.join(unpriced)}, which the predictor was not trained on "
                            "(it would extrapolate their cost); retrain it with measurements of them")
    inner = getattr(predictor, "inner", predictor)
    result.notes.extend(n for n in (thread_range_note(inner, device, opts.threads),
                                    isa_note(inner, device, opts.threads)) if n)
    outcome = OptimiseOutcome(result, device, predictor_name, space, note)
    if validator is None:
        outcome.measure_note = ("plans were not run: measuring was turned off (--no-measure), or the board is not "
                                "this machine (measurements need --device-features local, or --measure for a board "
                                "file describing it)")
    try:
        checked: dict[str, Any] = {}

        def accuracy_of(plan: Plan) -> Any:
            if plan.key not in checked:
                checked[plan.key] = meter.measure(plan)
            return checked[plan.key]

        def within_budget(plan: Plan) -> bool:
            lossy = any(c.precision != "fp32" or c.prune > 0 for c in plan.choices.values())
            return meter is None or budget is None or not lossy or accuracy_of(plan).drop_pct <= budget

        if validator is not None and not result.interrupted:
            _choose_measured(outcome, validator, accept=within_budget)
            if opts.refine_nodes > 0 and problem.additive is not None:
                _refine(outcome, evaluator, validator, problem.additive.unary, opts.refine_nodes, within_budget)
        if meter is not None and not result.interrupted:
            outcome.measured_accuracy = accuracy_of(outcome.chosen_plan or result.best_plan)
    except KeyboardInterrupt:  # the search is done: keep its result, skip the remaining measurements
        result.interrupted = True
        result.notes.append("interrupted while measuring the final plans; the search result is written")
    outcome.files, outcome.report = write_outputs(outcome, outdir, strategy)
    return outcome


def _choose_measured(outcome: OptimiseOutcome, validator: Any, tolerance: float = 0.03,
                     accept: Callable[[Plan], bool] | None = None) -> None:
    """Measure the predicted best, the default plan, the two best incumbents validated during the search and
    the search's anchors (its structured seeds: whole-graph layout, primitive and precision changes; and the
    strategy's best before the polish, when the polish moved it) that meet the budgets, round-robin on this machine,
    and keep the fastest when it beats the predicted best by more than ``tolerance`` (budgets are still judged on
    predicted costs). The anchors are few and differ from the predicted best in many nodes at once, or in the moves
    the polish made on predictions alone, so they guard against the predictor's errors. ``accept(plan)`` (e.g. a
    measured accuracy check) can veto a faster plan; the next fastest is then considered."""
    res = outcome.result
    graph = outcome.space.graph
    best = res.best_plan
    plans = {"best": best}
    if res.default_costs.feasible or not res.best_costs.feasible:
        plans["default"] = default_plan(graph)
    seen = {best.key}
    for v in sorted((v for v in res.validations if v.plan is not None), key=lambda v: v.measured_ms):
        if v.plan.key not in seen and len(plans) < 4:
            seen.add(v.plan.key)
            plans[f"incumbent validated at trial {v.trial}"] = v.plan
    for label, j in res.anchors.items():
        plan = outcome.space.decode(res.archive_idx[j])
        if plan.key not in seen and (res.archive_costs[j].feasible or not res.best_costs.feasible):
            seen.add(plan.key)
            plans[label] = plan
    measured = validator.compare(graph, plans)
    outcome.measured_best = measured["best"]
    outcome.measured_default = measured.get("default") or validator.measure(graph, default_plan(graph))
    final = measured["best"].latency_ms
    for name in sorted(measured, key=lambda k: measured[k].latency_ms):
        if name == "best" or measured[name].latency_ms >= final * (1 - tolerance):
            return
        if accept is None or accept(plans[name]):
            break
        res.notes.append(f"the {name} measured {measured[name].latency_ms:.4g} ms but its measured accuracy "
                         "is outside the budget; it is not kept")
    what = "the default plan" if name == "default" else f"the {name}"
    plan = plans[name]
    outcome.chosen_plan = Plan(plan.choices, f"{graph.name}-measured-best", outcome.space.graph_id)
    outcome.chosen_measured_ms = measured[name].latency_ms
    outcome.chosen_note = (f"the predicted best plan measured {final:.4g} ms on this machine, but {what} measured "
                           f"{measured[name].latency_ms:.4g} ms (interleaved runs): plan.json holds {what}; the "
                           "predicted best is in plan_predicted.json")


def _refine(outcome: OptimiseOutcome, evaluator: Any, validator: Any, unary: Any, nodes: int,
            accept: Callable[[Plan], bool]) -> None:
    """:func:`optimiser.refine.refine_on_device` from the plan chosen so far; a kept change becomes plan.json."""
    from optimiser.refine import refine_on_device

    space, res = outcome.space, outcome.result
    start = outcome.chosen_plan or res.best_plan
    ref = refine_on_device(space, evaluator, validator, start, unary, nodes=nodes, accept=accept)
    outcome.refinement = ref
    if ref.plan is None:
        return
    graph = space.graph
    outcome.chosen_plan = Plan(ref.plan.choices, f"{graph.name}-measured-best", space.graph_id)
    outcome.chosen_measured_ms = ref.measured_ms
    outcome.chosen_note = ("plan.json holds the plan refined on this machine (see the refinement note); the "
                           "predicted best is in plan_predicted.json")


def validate_on_device(graph: Graph, plan: Plan, device: Any, predictor: Any, threads: int | None = None,
                       memory: bool = False) -> dict[str, Any]:
    """Predicted versus measured latency (and memory) of ``plan`` and of the default plan."""
    from optimiser.loop import RuntimeValidator

    validate_plan(graph, plan)
    plans = [plan, default_plan(graph)]
    pred = predictor.predict(graph, plans, device)
    v = RuntimeValidator(threads=threads, memory=memory)
    rows = {}
    for label, p, lat, mem in zip(("plan", "default"), plans, pred.latency_ms, pred.peak_mem_bytes):
        m = v.measure(graph, p)
        rows[label] = {"predicted_ms": float(lat), "measured_ms": m.latency_ms,
                       "rel_error": abs(float(lat) - m.latency_ms) / m.latency_ms,
                       "predicted_mem_bytes": float(mem), "measured_mem_bytes": m.peak_mem_bytes,
                       "stable": bool(getattr(m.stats, "stable", True))}
    rows["speedup_measured"] = rows["default"]["measured_ms"] / rows["plan"]["measured_ms"]
    rows["speedup_predicted"] = rows["default"]["predicted_ms"] / rows["plan"]["predicted_ms"]
    return rows
