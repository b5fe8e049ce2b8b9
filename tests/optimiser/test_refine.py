"""On-device refinement: which single-node changes are tried, and when one is kept."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from optimiser.refine import node_swaps, refine_on_device
from optimiser.run import OptimiseOptions, optimise


@pytest.fixture()
def searched(resid_graph, board, roofline, tmp_path):
    opts = OptimiseOptions(strategy="random", trials=8, measure=False, outdir=tmp_path, progress=False, lossless=True)
    out = optimise(resid_graph, board, opts, roofline, "roofline")
    return out.space, out.result.problem, out.result.best_plan


class Timer:
    """A validator whose plans run ``base`` ms minus the saving of each changed node (by node name), per round."""

    def __init__(self, space, start, savings, rounds=None):
        self.space, self.start, self.savings = space, space.encode(start), savings
        self.rounds = rounds or []  # per round: node -> saving, overriding ``savings``
        self.calls = []

    def compare(self, graph, plans):
        saving = self.rounds[len(self.calls)] if len(self.calls) < len(self.rounds) else self.savings
        self.calls.append(dict(plans))
        out = {}
        for label, plan in plans.items():
            idx = self.space.encode(plan)
            changed = {self.space.nodes[i] for i in np.flatnonzero(idx != self.start)}
            out[label] = SimpleNamespace(latency_ms=10.0 - sum(saving.get(n, 0.0) for n in changed))
        return out


def test_the_costliest_nodes_get_their_other_options_cheapest_first(searched):
    space, prob, best = searched
    idx, unary = space.encode(best), prob.additive.unary
    swaps = node_swaps(space, idx, unary, nodes=2, per_node=3)
    costliest = sorted(space.free, key=lambda i: -unary[i][idx[i]])[:2]
    assert {i for _, i, _ in swaps} == set(costliest)
    for node in costliest:
        mine = [(label, cand) for label, i, cand in swaps if i == node]
        assert 1 <= len(mine) <= 3
        costs = [unary[node][cand[node]] for _, cand in mine]
        assert costs == sorted(costs)
        for label, cand in mine:
            differ = {space.nodes[j] for j in np.flatnonzero(cand != idx)} - {space.nodes[a] for a in space.tied}
            assert differ == {space.nodes[node]} and label.startswith(space.nodes[node])
            old, new = space.options[space.nodes[node]][idx[node]], space.options[space.nodes[node]][cand[node]]
            assert (old.precision, old.prune) == (new.precision, new.prune) and old != new


def test_changes_faster_in_both_rounds_are_kept_together(searched):
    space, prob, best = searched
    swaps = node_swaps(space, space.encode(best), prob.additive.unary)
    a, b = sorted({space.nodes[i] for _, i, _ in swaps})[:2]
    timer = Timer(space, best, {a: 1.0, b: 0.5})
    ref = refine_on_device(space, prob.evaluator, timer, best, prob.additive.unary)
    assert len(timer.calls) == 2 and set(timer.calls[1]) == {"start", *ref.kept[:1], "all faster changes together"}
    assert ref.plan is not None and len(ref.kept) == 2 and ref.measured_ms == pytest.approx(8.5)
    assert ref.start.choices == best.choices and ref.start_ms == 10.0
    assert set(ref.tried) == {label for label, _, _ in swaps} and "kept" in ref.note
    changed = {n for n in best.choices if ref.plan.choices[n] != best.choices[n]}
    assert {a, b} <= changed


def test_a_change_faster_only_in_the_first_round_is_not_kept(searched):
    space, prob, best = searched
    swaps = node_swaps(space, space.encode(best), prob.additive.unary)
    a = space.nodes[swaps[0][1]]
    timer = Timer(space, best, {}, rounds=[{a: 1.0}, {a: 0.0}])
    ref = refine_on_device(space, prob.evaluator, timer, best, prob.additive.unary)
    assert ref.faster and ref.plan is None and not ref.kept and "none in a confirming round" in ref.note
    assert ref.as_dict()["measured_ms"] is None


def test_nothing_faster_measures_one_round_and_a_veto_is_respected(searched):
    space, prob, best = searched
    timer = Timer(space, best, {})
    ref = refine_on_device(space, prob.evaluator, timer, best, prob.additive.unary)
    assert ref.plan is None and len(timer.calls) == 1 and "none was faster" in ref.note
    a = space.nodes[node_swaps(space, space.encode(best), prob.additive.unary)[0][1]]
    vetoed = refine_on_device(space, prob.evaluator, Timer(space, best, {a: 2.0}), best, prob.additive.unary,
                              accept=lambda plan: False)
    assert vetoed.plan is None and vetoed.faster


def test_optimise_reports_the_refinement_and_keeps_its_plan(resid_graph, board, roofline, tmp_path, monkeypatch):
    from optimiser import run

    calls = []

    class Validator:
        def __init__(self, *a, **k):
            pass

        def compare(self, graph, plans):
            calls.append(set(plans))
            # the search's anchors: the predicted best is fastest; then the first change of each node is faster
            return {k: SimpleNamespace(latency_ms=(9.0 if k != "start" and " on " in k and len(calls) > 1 else
                                                   10.0 if k not in ("best", "default") else 5.0 if k == "best"
                                                   else 20.0)) for k in plans}

        def measure(self, graph, plan):
            return SimpleNamespace(latency_ms=20.0, peak_mem_bytes=None, stats=None, memory_method=None)

    monkeypatch.setattr("optimiser.loop.RuntimeValidator", Validator)
    opts = OptimiseOptions(strategy="random", trials=8, outdir=tmp_path, progress=False, lossless=True,
                           refine_nodes=1)
    out = run.optimise(resid_graph, board, opts, roofline, "roofline")
    assert out.refinement is not None and len(calls) == 3
    rep = out.report
    assert rep["refinement"]["kept"] and any(n.startswith("on-device refinement") for n in rep["notes"])
    assert out.chosen_plan is not None and out.chosen_plan.choices == out.refinement.plan.choices
    assert (tmp_path / "plan.json").is_file() and (tmp_path / "plan_predicted.json").is_file()


def test_no_option_to_try_measures_nothing(searched):
    space, prob, best = searched

    class Never:
        def compare(self, graph, plans):
            raise AssertionError("nothing should be measured")

    ref = refine_on_device(space, prob.evaluator, Never(), best, prob.additive.unary, nodes=0)
    assert ref.plan is None and not ref.tried and "no other option" in ref.note
    assert ref.as_dict()["start_measured_ms"] is None
