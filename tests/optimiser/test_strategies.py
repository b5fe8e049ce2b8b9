"""Strategies behind one ask/tell interface: they find the optimum of a tiny space; state resumes."""

from __future__ import annotations

import numpy as np
import pytest

from optimiser.objectives import Evaluator, Objective, additive_costs
from optimiser.space import SearchSpace, SpaceConfig
from optimiser.strategies import Problem, StrategyError, make_strategy, strategy_names
from optimiser.strategies.exact import solve_exact


@pytest.fixture(scope="module")
def tiny(resid_graph, board, roofline):
    cfg = SpaceConfig(lossless=True, layouts=("NCHW",), primitives=("conv.onednn", "conv.winograd", "conv.im2col"))
    space = SearchSpace(resid_graph, cfg)
    add = additive_costs(space, roofline, board)
    best = solve_exact(space, add).objective
    return space, add, best


def _problem(tiny, board, roofline, n, tmp=None, seed=0, storage=None):
    space, add, _ = tiny
    ev = Evaluator(space, roofline, board, Objective())
    return Problem(space, Objective(), ev, add, True, n_trials=n, seed=seed, workdir=tmp, storage=storage), ev


def _run(strategy, ev, n, batch=4):
    while strategy.told < n:
        cands = strategy.ask(min(batch, n - strategy.told))
        if not cands:
            break
        strategy.tell(cands, ev(np.stack([c.indices for c in cands])))
    return strategy.best


def test_registry():
    assert set(strategy_names()) >= {"qlearning", "tpe", "nsga2", "random", "exact"}
    with pytest.raises(StrategyError, match="accepted"):
        make_strategy("annealing", None)


@pytest.mark.parametrize("name,trials", [("random", 150), ("qlearning", 60), ("tpe", 80), ("nsga2", 150)])
def test_strategies_find_the_optimum_of_a_tiny_space(tiny, board, roofline, name, trials):
    space, _, best = tiny
    assert 10 < np.prod([v.size for v in space.variables]) <= 100
    prob, ev = _problem(tiny, board, roofline, trials)
    strat = make_strategy(name, prob)
    cand, cost = _run(strat, ev, trials)
    assert cost.value == pytest.approx(best, rel=1e-9)
    assert space.is_consistent(cand.indices)


def test_qlearning_reaches_the_optimum_of_the_full_space_with_int8_and_pruning(resid_graph, board, roofline):
    space = SearchSpace(resid_graph)
    add = additive_costs(space, roofline, board)
    best = solve_exact(space, add).objective
    ev = Evaluator(space, roofline, board, Objective())
    strat = make_strategy("qlearning", Problem(space, Objective(), ev, add, True, n_trials=200))
    _, cost = _run(strat, ev, 200, batch=8)
    assert cost.value <= best * 1.01


def test_qlearning_successors_group_every_action_by_the_state_it_leads_to(resid_graph, board, roofline):
    space = SearchSpace(resid_graph)
    add = additive_costs(space, roofline, board)
    ev = Evaluator(space, roofline, board, Objective())
    q = make_strategy("qlearning", Problem(space, Objective(), ev, add, True, n_trials=40))
    _run(q, ev, 40, batch=8)
    checked = 0
    for t in range(len(q.steps) - 1):
        n = int(space.sizes[q.steps[t]])
        for state in list(q.q[t])[:3]:
            groups = q._successors(t, state, n)
            assert q._successors(t, state, n) is groups  # computed once per (step, state)
            acts = np.sort(np.concatenate(list(groups.values())))
            assert np.array_equal(acts, np.arange(n))
            for nxt, group in groups.items():
                assert all(q._next_state(t, state, int(a)) == nxt for a in group)
            checked += 1
    assert checked


def test_qtable_save_and_resume(tiny, board, roofline, tmp_path):
    prob, ev = _problem(tiny, board, roofline, 40, tmp=tmp_path)
    q = make_strategy("qlearning", prob)
    assert q.resumed_from is None
    _run(q, ev, 20)
    q.save()
    assert (tmp_path / "qtable.npz").is_file()
    q2 = make_strategy("qlearning", prob)
    assert q2.resumed and q2.episodes == 20 and q2.n_states == q.n_states
    assert q2.resumed_from.startswith(f"Q-table {tmp_path / 'qtable.npz'} (20 earlier episodes")
    for t in range(len(q.q)):
        assert q.q[t].keys() == q2.q[t].keys()
        for k in q.q[t]:
            assert np.allclose(q.q[t][k], q2.q[t][k])
    assert q2.epsilon() == q.epsilon()
    # another space refuses the table
    other = SearchSpace(tiny[0].graph, SpaceConfig(lossless=True))
    with pytest.raises(StrategyError, match="another search"):
        make_strategy("qlearning", Problem(other, Objective(), None, additive_costs(other, roofline, board), True,
                                           workdir=tmp_path))


def test_qsdnn_preset_runs(tiny, board, roofline):
    prob, ev = _problem(tiny, board, roofline, 30)
    q = make_strategy("qlearning", prob, preset="qsdnn")
    assert q.epsilon(0) == 1.0 and q.reward_kind == "terminal"
    _run(q, ev, 30)
    assert q.best is not None


def test_optuna_study_resumes_from_sqlite(tiny, board, roofline, tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    prob, ev = _problem(tiny, board, roofline, 20, storage=url)
    s1 = make_strategy("tpe", prob, study_name="resume-me")
    _, cost1 = _run(s1, ev, 12)
    s1.ask(1)  # a pending (asked, never told) trial, as left by an interrupted session
    s1.save()
    assert s1.resumed_from is None
    s2 = make_strategy("tpe", prob, study_name="resume-me")
    assert s2.resumed_trials == 12
    assert s2.resumed_from.startswith(f"Optuna study 'resume-me' in {url}: its 12 earlier trials")
    assert s2.best[1].value == pytest.approx(cost1.value)
    _run(s2, ev, 20)
    s2.save()
    import optuna
    from optuna.trial import TrialState

    stored = optuna.load_study(study_name="resume-me", storage=url)
    states = [t.state for t in stored.get_trials()]
    assert states.count(TrialState.COMPLETE) == 20 and TrialState.RUNNING not in states
    assert all("latency_ms" in t.user_attrs for t in stored.get_trials())


def test_optuna_bad_storage_is_a_user_error(tiny, board, roofline):
    prob, _ = _problem(tiny, board, roofline, 5, storage="nosuchdb://x")
    with pytest.raises(StrategyError, match="storage"):
        make_strategy("tpe", prob)


def test_polish_reaches_a_single_move_optimum_and_tries_whole_graph_layouts(resid_graph, board, roofline):
    space = SearchSpace(resid_graph, SpaceConfig(lossless=True))
    add = additive_costs(space, roofline, board)
    ev = Evaluator(space, roofline, board, Objective())
    q = make_strategy("qlearning", Problem(space, Objective(), ev, add, True, n_trials=16))
    start = space.default_indices()
    out = q.polish_indices(start)
    assert space.is_consistent(out)
    assert add.latency(out[None])[0] <= add.latency(start[None])[0] + 1e-12
    # no single free node can improve the polished plan on the additive tables
    here = add.latency(out[None])[0]
    for i in space.free:
        for k in range(space.sizes[i]):
            trial = out.copy()
            trial[i] = k
            trial = space.complete(trial)
            assert add.latency(trial[None])[0] >= here - 1e-9
    # at least as good as polishing the whole-graph NHWC plan alone
    nhwc = q.polish_indices(space.uniform_layout_indices("NHWC"))
    assert here <= add.latency(nhwc[None])[0] + 1e-9
    assert make_strategy("qlearning", Problem(space, Objective(), ev, add, True, n_trials=16),
                         preset="qsdnn").polish is False
