"""The search loop: budgets no plan meets, Ctrl-C, validation on this machine and recalibration, outputs."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from perfpredict.plan import Plan, validate_plan

from optimiser.loop import LatencyCalibration, Measured, RuntimeValidator, SearchConfig, polish, run_search
from optimiser.objectives import Constraints, Evaluator, Objective, additive_costs
from optimiser.pareto import pareto_mask
from optimiser.run import OptimiseOptions, optimise
from optimiser.space import SearchSpace, SpaceConfig
from optimiser.strategies import Problem, make_strategy


def _setup(graph, board, roofline, objective, tmp=None, lossless=False, n=32):
    space = SearchSpace(graph, SpaceConfig(lossless=lossless))
    ev = Evaluator(space, roofline, board, objective)
    prob = Problem(space, objective, ev, additive_costs(space, roofline, board), True, n_trials=n, workdir=tmp)
    return prob, ev


def test_infeasible_budget_returns_the_closest_plan(resid_graph, board, roofline):
    obj = Objective(("latency",), Constraints(latency_ms=1e-6))
    prob, ev = _setup(resid_graph, board, roofline, obj)
    res = run_search(prob, make_strategy("qlearning", prob), ev, SearchConfig(trials=32, progress=False))
    assert not res.feasible and res.best_costs.violation > 0
    lat = [c.latency_ms for c in res.archive_costs]
    assert res.best_costs.latency_ms == pytest.approx(min(lat))  # closest to a latency budget = fastest
    validate_plan(resid_graph, res.best_plan)


def test_ctrl_c_keeps_the_best_plan_and_the_state(resid_graph, board, roofline, tmp_path):
    prob, ev = _setup(resid_graph, board, roofline, Objective(), tmp=tmp_path, n=64)
    strat = make_strategy("qlearning", prob)

    def interrupt(done: int) -> None:
        if done >= 16:
            signal.raise_signal(signal.SIGINT)

    # Python turns SIGINT into KeyboardInterrupt only if it was not ignored at start-up, and a shell ignores it
    # in the jobs it starts in the background: install the handler a terminal's Ctrl-C reaches
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        res = run_search(prob, strat, ev, SearchConfig(trials=64, batch_size=8, progress=False), on_batch=interrupt)
    finally:
        signal.signal(signal.SIGINT, previous)
    # the layout seed counts as a trial, so the interrupt comes after the batch that passes 16
    assert res.interrupted and 16 <= res.trials < 24 and len(res.archive_costs) == res.trials
    assert (tmp_path / "qtable.npz").is_file()
    assert res.best_costs.latency_ms <= min(c.latency_ms for c in res.archive_costs) + 1e-12


def test_the_state_is_saved_during_the_trials_so_a_killed_search_resumes(resid_graph, board, roofline, tmp_path):
    prob, ev = _setup(resid_graph, board, roofline, Objective(), tmp=tmp_path, n=48)
    strat = make_strategy("qlearning", prob)
    on_disk = []  # what a kill -9 after each batch would leave: the episodes in the saved Q-table

    def look(done: int) -> None:
        table = tmp_path / "qtable.npz"
        on_disk.append(json.loads(str(np.load(table)["meta"]))["episodes"] if table.is_file() else 0)

    run_search(prob, strat, ev, SearchConfig(trials=48, batch_size=8, progress=False, save_every_s=0.0),
               on_batch=look)
    # saved after each batch, once the batch's callback has run: from the second batch on, a kill loses one batch
    assert on_disk[1] > 0 and on_disk == sorted(on_disk) and len(set(on_disk)) == len(on_disk)
    resumed = make_strategy("qlearning", prob)
    assert resumed.resumed and resumed.episodes == strat.episodes


def test_validation_records_and_recalibrates(resid_graph, board, roofline):
    prob, ev = _setup(resid_graph, board, roofline, Objective(), lossless=True, n=16)
    validator = RuntimeValidator(threads=1, min_repeats=3, max_repeats=10, time_cap_s=0.2)
    cfg = SearchConfig(trials=16, batch_size=8, validate_every=8, recalibrate_threshold=0.0, progress=False)
    res = run_search(prob, make_strategy("random", prob), ev, cfg, validator)
    assert len(res.validations) == 3  # after trials 8 and 16, and the final plan
    assert all(v.measured_ms > 0 for v in res.validations)
    assert res.final_measured is not None and res.calibration is not None
    assert ev.latency_correction is not None
    raw = ev.raw_uncorrected(res.best_indices[None])[0]
    assert res.best_costs.latency_ms == pytest.approx(float(res.calibration(np.array([raw]))[0]))


def test_compare_times_the_plans_in_the_same_rounds(resid_graph, monkeypatch):
    import perfpredict.measure as measure
    from perfpredict.plan import default_plan

    calls = []
    real = measure.measure_interleaved

    def spy(fns, **kw):
        calls.append(kw)
        return real(fns, **kw)

    monkeypatch.setattr(measure, "measure_interleaved", spy)
    plans = {"default": default_plan(resid_graph), "again": default_plan(resid_graph)}
    validator = RuntimeValidator(threads=1, min_repeats=3, max_repeats=12, time_cap_s=0.5)
    out = validator.compare(resid_graph, plans)
    assert set(out) == set(plans) and all(m.latency_ms > 0 for m in out.values())
    # in lockstep: no plan leaves the rotation before the others, so all have as many samples
    assert calls and calls[0]["lockstep"] is True
    assert len({m.stats.n_repeats for m in out.values()}) == 1


def test_polish_moves_one_variable_at_a_time_while_the_cost_falls(resid_graph, board, roofline):
    prob, ev = _setup(resid_graph, board, roofline, Objective(), lossless=True)
    space = prob.space
    start = space.default_indices()
    start_cost = ev(start[None])[0]
    moved, costs, evaluated = polish(space, ev, start, start_cost, rounds=50)
    assert moved and evaluated >= len(moved)
    keys = [start_cost.rank_key()] + [c.rank_key() for c in costs]
    assert all(b < a for a, b in zip(keys, keys[1:]))  # every move ranks better than the plan before it
    values = [space.to_variables(start)] + [space.to_variables(m) for m in moved]
    assert all(sum(a[k] != b[k] for k in a) == 1 for a, b in zip(values, values[1:]))
    # where it stops no single change helps
    last = moved[-1]
    again, _, _ = polish(space, ev, last, costs[-1], rounds=5)
    assert again == []
    assert polish(space, ev, start, start_cost, rounds=0) == ([], [], 0)


def test_search_polishes_its_best_plan(resid_graph, board, roofline):
    results = {}
    for rounds in (0, 20):
        prob, ev = _setup(resid_graph, board, roofline, Objective(), lossless=True, n=4)
        cfg = SearchConfig(trials=4, batch_size=2, polish_rounds=rounds, progress=False)
        results[rounds] = run_search(prob, make_strategy("random", prob), ev, cfg)
    plain, polished = results[0], results[20]
    assert polished.trials == plain.trials == 4
    # four random plans leave room: the polished best ranks better, and the plans it moved to join the archive
    assert polished.best_costs.rank_key() < plain.best_costs.rank_key()
    assert len(polished.archive_costs) > len(plain.archive_costs)
    assert any(n.startswith("polish:") for n in polished.notes)
    assert not any(n.startswith("polish:") for n in plain.notes)
    # the plan the polish started from is among the plans measured beside the polished one at the end (a seed, or
    # under a label of its own)
    start = min(range(4), key=lambda k: polished.archive_costs[k].rank_key())
    assert any(np.array_equal(polished.archive_idx[a], polished.archive_idx[start]) for a in polished.anchors.values())
    assert "strategy's best plan before the polish" not in plain.anchors


def test_the_plan_polished_from_is_measured_at_the_end(resid_graph, board, roofline, monkeypatch):
    prob, ev = _setup(resid_graph, board, roofline, Objective(), lossless=True, n=8)
    space = prob.space
    # no structured seeds (each collapses to the default plan, which is never a seed): the strategy's own best is
    # a sampled plan
    monkeypatch.setattr(space, "uniform_layout_indices", lambda *a, **k: space.default_indices())
    monkeypatch.setattr(space, "alternative_primitives", lambda *a, **k: [])
    monkeypatch.setattr(space, "primitive_families", lambda *a, **k: {})
    res = run_search(prob, make_strategy("random", prob), ev,
                     SearchConfig(trials=8, batch_size=4, polish_rounds=20, progress=False))
    start = min(range(res.trials), key=lambda k: res.archive_costs[k].rank_key())
    assert len(res.archive_costs) > res.trials  # the polish moved
    assert res.anchors == {"strategy's best plan before the polish": start}


def test_negative_polish_rounds_are_refused(resid_graph, board):
    from perfpredict.errors import PerfPredictError

    with pytest.raises(PerfPredictError, match="--polish-rounds"):
        optimise(resid_graph, board, OptimiseOptions(polish_rounds=-1, measure=False, progress=False))


class _TwiceAsSlow:
    """A validator whose device runs every plan at twice the roofline's prediction."""

    def __init__(self, evaluator):
        self.evaluator = evaluator

    def measure(self, graph, plan):
        idx = self.evaluator.space.encode(plan)[None]
        return Measured(2.0 * float(self.evaluator.raw_uncorrected(idx)[0]))


@pytest.mark.parametrize("min_plans", [1, 2])
def test_recalibration_waits_for_min_plans(resid_graph, board, roofline, min_plans):
    prob, ev = _setup(resid_graph, board, roofline, Objective(), lossless=True, n=24)
    cfg = SearchConfig(trials=24, batch_size=8, validate_every=8, recalibrate_threshold=0.15,
                       recalibrate_min_plans=min_plans, progress=False)
    res = run_search(prob, make_strategy("random", prob), ev, cfg, _TwiceAsSlow(ev))
    notes = [n for n in res.notes if n.startswith("latency recalibrated")]
    assert notes and notes[0].endswith(f"'plans': {min_plans}}}")  # the first correction, after min_plans plans
    assert res.calibration is not None and res.calibration.as_dict()["scale"] == pytest.approx(2.0)


def test_latency_calibration_is_the_median_ratio():
    cal = LatencyCalibration()
    assert cal(np.array([2.0]))[0] == 2.0  # unfitted: no correction
    for p, m in [(1.0, 3.0), (2.0, 5.0), (4.0, 9.0), (8.0, 40.0), (-1.0, 2.0)]:  # the last one is ignored
        cal.add(p, m)
    cal.fit()
    out = cal(np.array([0.5, 1.0, 2.0, 4.0, 8.0, 16.0]))
    assert np.all(np.diff(out) > 0)
    ratio = np.exp(np.median(np.log([3.0, 2.5, 2.25, 5.0])))  # one factor whatever the plans' spread
    assert out == pytest.approx(np.array([0.5, 1.0, 2.0, 4.0, 8.0, 16.0]) * ratio)
    assert cal.as_dict() == {"scale": pytest.approx(ratio), "plans": 4}


def test_optimise_writes_outputs_and_a_pareto_front(resid_graph, board, roofline, tmp_path):
    opts = OptimiseOptions(strategy="nsga2", trials=16, objectives=("latency", "memory"), measure=False,
                           outdir=tmp_path, progress=False, max_accuracy_drop_pct=None)
    out = optimise(resid_graph, board, opts, roofline, "roofline")
    plan = Plan.load(tmp_path / "plan.json")
    validate_plan(resid_graph, plan)
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["strategy"] == "nsga2" and rep["trials"] == 16 and rep["speedup_predicted"] > 0
    assert (tmp_path / "optuna.db").is_file()
    rows = [line.split(",") for line in (tmp_path / "pareto.csv").read_text().splitlines()[1:]]
    pts = np.array([[float(r[1]), float(r[2])] for r in rows])
    assert len(pts) >= 1 and pareto_mask(pts).all()
    assert (tmp_path / "pareto.png").is_file() and out.report["pareto"]["hypervolume"] > 0


def test_structured_anchors_are_recorded_and_measured_at_the_end(resid_graph, board, roofline, tmp_path):
    from types import SimpleNamespace

    from optimiser.run import _choose_measured

    opts = OptimiseOptions(strategy="random", trials=16, measure=False, outdir=tmp_path, progress=False,
                           lossless=True)
    out = optimise(resid_graph, board, opts, roofline, "roofline")
    res = out.result
    assert res.anchors and all(0 <= j < len(res.archive_idx) for j in res.anchors.values())
    j = res.anchors["all-NHWC plan"]
    assert np.array_equal(res.archive_idx[j], out.space.uniform_layout_indices("NHWC"))

    class Validator:  # measures the anchor fastest, everything else slower
        def __init__(self):
            self.seen = {}

        def compare(self, graph, plans):
            self.seen = dict(plans)
            return {k: SimpleNamespace(latency_ms=1.0 if k == "all-NHWC plan" else 2.0) for k in plans}

    v = Validator()
    _choose_measured(out, v)
    assert {"best", "default", "all-NHWC plan"} <= set(v.seen)
    assert out.chosen_plan is not None and out.chosen_plan.choices == out.space.decode(res.archive_idx[j]).choices


def test_a_library_family_is_an_anchor(board, roofline, tmp_path):
    """squeezenet's convolutions and max pools both have a oneDNN C API primitive: one anchor moves them together
    (the predictor may price one of them badly; the anchor is measured at the end all the same)."""
    from perfpredict.models import load_model

    graph, _ = load_model("squeezenet1_1", resolution=32)
    opts = OptimiseOptions(strategy="random", trials=24, measure=False, outdir=tmp_path, progress=False,
                           lossless=True)
    out = optimise(graph, board, opts, roofline, "roofline")
    j = out.result.anchors["all-NHWC plan, every .dnnl primitive wherever one applies"]
    prims = {c.primitive for c in out.space.decode(out.result.archive_idx[j]).choices.values()}
    assert {"conv.dnnl", "maxpool.dnnl"} <= prims


def test_the_best_plan_moved_to_one_library_is_an_anchor(resid_graph, board, roofline):
    from optimiser.loop import _anchor_best_families

    prob, ev = _setup(resid_graph, board, roofline, Objective(), lossless=False, n=8)
    space = prob.space
    rng = np.random.default_rng(0)
    best = next(b for b in space.sample(rng, 200) if "dnnl" in space.primitive_families(b))
    archive_idx, archive_costs, anchors = [best], [ev(best[None, :])[0]], {}
    _anchor_best_families(space, ev, best, archive_idx, archive_costs, anchors)
    prims = space.primitive_families(best)["dnnl"]
    seed = archive_idx[anchors["best plan, every .dnnl primitive wherever one applies"]]
    assert len(archive_costs) == len(archive_idx) == 1 + len(anchors)
    before, after = space.decode(best).choices, space.decode(seed).choices
    # the same precisions, pruning and layouts; a oneDNN primitive wherever the node offers one at them
    assert all((before[n].precision, before[n].prune, before[n].layout) == (after[n].precision, after[n].prune,
                                                                             after[n].layout) for n in before)
    assert any(after[n].primitive in prims and before[n].primitive not in prims for n in before)
    _anchor_best_families(space, ev, best, archive_idx, archive_costs, anchors)  # no plan twice
    assert len(archive_idx) == 1 + len(anchors)


def test_int8_anchors_are_offered_when_int8_is_allowed_and_a_veto_passes_over_them(resid_graph, board, roofline,
                                                                                   tmp_path):
    from types import SimpleNamespace

    from optimiser.run import _choose_measured

    opts = OptimiseOptions(strategy="random", trials=16, measure=False, outdir=tmp_path, progress=False,
                           max_accuracy_drop_pct=100.0)
    out = optimise(resid_graph, board, opts, roofline, "roofline")
    res = out.result
    j = res.anchors["all-int8 NHWC plan"]
    assert np.array_equal(res.archive_idx[j], out.space.uniform_layout_indices("NHWC", precision="int8"))
    fast = {"all-int8 NHWC plan": 1.0, "all-NHWC plan": 1.5}

    class Validator:
        def compare(self, graph, plans):
            return {k: SimpleNamespace(latency_ms=fast.get(k, 2.0)) for k in plans}

    vetoed = []

    def accept(plan):
        lossy = any(c.precision == "int8" for c in plan.choices.values())
        vetoed.extend([plan] if lossy else [])
        return not lossy

    _choose_measured(out, Validator(), accept=accept)
    assert len(vetoed) == 1  # the int8 anchor was the fastest and was checked first
    assert out.chosen_plan.choices == out.space.decode(res.archive_idx[res.anchors["all-NHWC plan"]]).choices
    assert any("all-int8 NHWC plan" in n and "not kept" in n for n in res.notes)


def test_lossless_search_has_no_int8_anchors(resid_graph, board, roofline, tmp_path):
    opts = OptimiseOptions(strategy="random", trials=8, measure=False, outdir=tmp_path, progress=False,
                           lossless=True)
    res = optimise(resid_graph, board, opts, roofline, "roofline").result
    assert not any("int8" in label for label in res.anchors)


class _Vocabulary:
    """The roofline, declaring that it has learned only some primitives (as a trained predictor does)."""

    def __init__(self, inner, known):
        self.source = inner
        self.known_primitives = tuple(known)

    def predict(self, *args, **kwargs):
        return self.source.predict(*args, **kwargs)


def test_primitives_the_predictor_never_saw_are_left_out_and_said(resid_graph, board, roofline, tmp_path):
    from perfpredict.primitives import candidates
    from optimiser.run import build_space, predictor_primitives, unpriced_primitives

    offered = sorted({p.name for n in resid_graph.nodes for p in candidates(n)})
    unseen = ["conv.dnnl", "conv.dnnl_int8"]
    assert set(unseen) <= set(offered)
    pred = _Vocabulary(roofline, [p for p in offered if p not in unseen])
    assert predictor_primitives(roofline) is None
    assert predictor_primitives(_Vocabulary(pred, [])) == ()  # the outermost vocabulary wins
    assert unpriced_primitives(resid_graph, pred) == unseen
    assert unpriced_primitives(resid_graph, pred, ("fp32",)) == [p for p in unseen if not p.endswith("int8")]
    opts = OptimiseOptions(strategy="random", trials=8, measure=False, outdir=tmp_path, progress=False)
    space = build_space(resid_graph, opts, pred)
    def used(sp):
        return {c.primitive for options in sp.options.values() for c in options}

    assert used(space) and not used(space) & set(unseen)
    assert "conv.dnnl" in used(build_space(resid_graph, opts))
    res = optimise(resid_graph, board, opts, pred, "partial").result  # lossless: fp32 primitives only
    assert any("conv.dnnl," in note + "," and "conv.dnnl_int8" not in note and "not trained on" in note
               for note in res.notes)


def test_a_search_that_times_plans_here_notes_a_busy_machine(resid_graph, board, roofline, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import perfpredict.measure

    class Validator:  # every plan measures the same: what is tested is the note, not the choice
        def __init__(self, *a, **k):
            pass

        def compare(self, graph, plans):
            return {k: SimpleNamespace(latency_ms=10.0) for k in plans}

        def measure(self, graph, plan):
            return SimpleNamespace(latency_ms=10.0, peak_mem_bytes=None, stats=None, memory_method=None)

    monkeypatch.setattr("optimiser.loop.RuntimeValidator", Validator)
    asked = []
    monkeypatch.setattr(perfpredict.measure, "contention_note",
                        lambda threads=None: asked.append(threads) or "other processes kept 2.0 CPUs busy")
    opts = OptimiseOptions(strategy="random", trials=8, outdir=tmp_path, progress=False, lossless=True,
                           refine_nodes=0, threads=2)
    notes = optimise(resid_graph, board, opts, roofline, "roofline").report["notes"]
    assert "when the search began, other processes kept 2.0 CPUs busy" in notes and asked == [2]
    opts = OptimiseOptions(strategy="random", trials=8, outdir=tmp_path, progress=False, lossless=True, measure=False)
    assert not any("busy" in n for n in optimise(resid_graph, board, opts, roofline, "roofline").report["notes"])
    assert asked == [2]  # nothing timed here: the machine is not watched
