"""The exact solver: optimal on a small space (checked by enumerating every plan), budgets, memory sweep."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from optimiser.objectives import Constraints, Evaluator, Objective, additive_costs
from optimiser.space import SearchSpace, SpaceConfig
from optimiser.strategies import Problem, StrategyError, make_strategy
from optimiser.strategies.exact import solve_exact


def enumerate_space(space: SearchSpace) -> np.ndarray:
    """Every plan of the space as option indices."""
    sizes = [v.size for v in space.variables]
    rows = [space.from_variables({v.name: x for v, x in zip(space.variables, combo)})
            for combo in itertools.product(*[range(s) for s in sizes])]
    return np.stack(rows)


@pytest.fixture(scope="module")
def small(resid_graph, board, roofline):
    cfg = SpaceConfig(prune_ratios=(0.0, 0.5), layouts=("NCHW",),
                      primitives=("conv.onednn", "conv.winograd", "conv.int8", "gemm.blas", "gemm.int8"))
    space = SearchSpace(resid_graph, cfg)
    add = additive_costs(space, roofline, board)
    everything = enumerate_space(space)
    return space, add, everything


def test_space_is_enumerable_and_additive(small, board, roofline):
    space, add, everything = small
    assert 1000 < len(everything) < 100_000
    sample = everything[:: max(1, len(everything) // 200)]
    pred = roofline.predict(space.graph, space.decode_many(sample), board)
    assert np.allclose(add.latency(sample), pred.latency_ms, rtol=1e-9)


def test_exact_latency_optimum_matches_brute_force(small):
    space, add, everything = small
    res = solve_exact(space, add, "latency")
    assert res.optimal
    lat = add.latency(everything)
    assert res.objective == pytest.approx(lat.min(), rel=1e-9)
    assert space.is_consistent(res.indices)


def test_exact_with_memory_term_budget_matches_brute_force(small):
    space, add, everything = small
    lat, mem = add.latency(everything), add.memory_term(everything)
    budget = float(np.quantile(mem, 0.3))
    res = solve_exact(space, add, "latency", {"memory": budget})
    assert res.info["slack"]["memory"] == pytest.approx(0.0, abs=1e-9)
    assert res.objective == pytest.approx(lat[mem <= budget].min(), rel=1e-9)
    # an impossible budget gives the closest plan: the least additive memory
    res = solve_exact(space, add, "latency", {"memory": float(mem.min()) * 0.5})
    assert add.memory_term(res.indices)[0] == pytest.approx(mem.min(), rel=1e-9)


@pytest.mark.parametrize("quantile, within", [(0.2, 1.02), (0.1, 1.02), (0.05, 1.10)])
def test_exact_strategy_with_peak_memory_sweep(small, board, roofline, quantile, within):
    space, add, everything = small
    ev = Evaluator(space, roofline, board, Objective())
    _, peak, _ = ev.raw(everything)
    lat, _, _ = ev.raw(everything)
    budget = float(np.quantile(peak, quantile))
    obj = Objective(("latency",), Constraints(memory_bytes=budget))
    ev = Evaluator(space, roofline, board, obj)
    strat = make_strategy("exact", Problem(space, obj, ev, add, True))
    (cand,) = strat.ask(4)
    cost = ev(cand.indices[None])[0]
    assert cost.feasible
    # close to the true constrained optimum (the bisection over an additive bound is a documented approximation)
    assert cost.latency_ms <= lat[peak <= budget].min() * within
    assert strat.finished and strat.ask(1) == []


def test_exact_needs_an_additive_predictor(small, board, roofline):
    space, add, _ = small
    with pytest.raises(StrategyError, match="additive"):
        make_strategy("exact", Problem(space, Objective(), None, add, additive_is_exact=False))


def test_accuracy_budget_exact_and_qlearning(resid_graph, board, roofline):
    """With additive accuracy tables (a known function here, not a measurement), the exact solver's
    constrained optimum matches enumeration and Q-learning returns a plan within the budget."""
    from optimiser.accuracy import AdditiveAccuracy

    cfg = SpaceConfig(prune_ratios=(0.0, 0.5), layouts=("NCHW",),
                      primitives=("conv.onednn", "conv.winograd", "conv.int8", "gemm.blas", "gemm.int8"))
    space = SearchSpace(resid_graph, cfg)
    tables = [np.array([(0.4 if c.precision == "int8" else 0.0) + (1.0 if c.prune > 0 else 0.0)
                        for c in space.options[n]]) for n in space.nodes]
    add = additive_costs(space, roofline, board, tables)
    everything = enumerate_space(space)
    drop, lat = add.accuracy_term(everything), add.latency(everything)
    budget = 1.5
    res = solve_exact(space, add, "latency", {"accuracy": budget})
    assert res.objective == pytest.approx(lat[drop <= budget + 1e-9].min(), rel=1e-9)
    obj = Objective(("latency",), Constraints(accuracy_drop_pct=budget))
    ev = Evaluator(space, roofline, board, obj, AdditiveAccuracy(space, tables))
    q = make_strategy("qlearning", Problem(space, obj, ev, add, True, n_trials=80))
    while q.told < 80:
        cands = q.ask(8)
        q.tell(cands, ev(np.stack([c.indices for c in cands])))
    cand, cost = q.best
    assert cost.feasible and cost.accuracy_drop_pct <= budget
    assert cost.latency_ms < lat[np.all(everything == space.default_indices(), axis=1)][0]
