"""The plans a model campaign draws: legal, distinct, swaps away from the anchor, fastest choices."""

from __future__ import annotations


import pytest

from perfpredict.dataset import make_record, open_store
from perfpredict.errors import PerfPredictError
from perfpredict.measure import latency_stats
from perfpredict.plan import Choice, default_choice, validate_plan
from perfpredict.profile import (
    FastestChoices,
    collect_layer_configs,
    run_model_campaign,
    sample_plans,
    sample_swap_plans,
    zoo_graph,
)
from tests.perfpredict.profile.tiny import DEV, TINY, tiny_spec


def test_sample_plans_are_legal_and_distinct(cache):
    import random

    graph, _ = zoo_graph(tiny_spec())
    plans = sample_plans(graph, 8, random.Random(0), ref_rate=1e6)
    assert len(plans) == 8 and len({p.key for p in plans}) == 8
    assert plans[0].name == "default" and plans[0].choices == {}
    for p in plans:
        validate_plan(graph, p)
    assert any(c.precision == "int8" for p in plans for c in p.choices.values())
    assert any(c.prune > 0 for p in plans for c in p.choices.values())
    assert plans == sample_plans(graph, 8, random.Random(0), ref_rate=1e6)  # seeded
    by_name = {p.name: p for p in plans}
    # whole-graph int8 in each layout, on the first-ranked int8 conv that has it
    for name, layout, prim in (("int8", "NCHW", "conv.int8"), ("int8-nhwc", "NHWC", "conv.dnnl_int8")):
        convs = [c for n, c in by_name[name].choices.items() if graph.node(n).op == "Conv"]
        assert convs and all(c == Choice(prim, layout, "int8") for c in convs), name


def test_swap_plans_move_convolutions_away_from_the_whole_graph_anchor(cache, tmp_path):
    import random

    graph, _ = zoo_graph(tiny_spec())
    plans = sample_swap_plans(graph, 8, random.Random(0), ref_rate=1e6)
    assert len(plans) == 8 and len({p.key for p in plans}) == 8 and plans[0].name == "anchor"
    ops = {n.name: n.op for n in graph.nodes}
    anchor = plans[0].choices
    assert all(c == Choice("conv.dnnl", "NHWC") for n, c in anchor.items() if ops[n] == "Conv")
    assert all(c.primitive == "maxpool.dnnl" for n, c in anchor.items() if ops[n] == "MaxPool")
    def full(p):  # compact plans leave out default choices
        return {n.name: p.choices.get(n.name, default_choice(n)) for n in graph.nodes}

    for p in plans[1:]:
        validate_plan(graph, p)
        moved = {n for n, c in full(p).items() if c != full(plans[0])[n]}
        assert moved and {ops[n] for n in moved} == {"Conv"} and p.name in ("swap", "band")
        assert all(full(p)[n].precision == "fp32" and full(p)[n].primitive != "conv.dnnl" for n in moved)
    assert {"swap", "band"} <= {p.name for p in plans}
    assert plans == sample_swap_plans(graph, 8, random.Random(0), ref_rate=1e6)  # seeded
    with open_store(tmp_path / "s.db") as store:
        with pytest.raises(PerfPredictError, match="plans 'nope' is not known; accepted: mixed, swaps"):
            run_model_campaign(store, threads=(1,), specs=[tiny_spec()], plans="nope", devices={1: DEV}, progress=False)
        rep = run_model_campaign(store, threads=(1,), specs=[tiny_spec()], plans_per_model=2, plans="swaps",
                                 protocol=TINY, devices={1: DEV}, progress=False, layer_campaign=None, memory=False)
        assert rep.stored == 2 and rep.extra["plans_by_kind"]["anchor"] == 1


def test_fastest_choices_pick_the_lowest_median(cache, tmp_path):
    configs = collect_layer_configs([tiny_spec()], 1, seed=0, ops=("Conv",))
    cfg = configs[0]
    with open_store(tmp_path / "f.db") as store:
        for prim, layout, ms in (("conv.onednn", "NHWC", 2.0), ("conv.im2col", "NCHW", 1.0)):
            store.append(make_record(kind="layer", device=DEV, campaign="layers", threads=1,
                                     stats=latency_stats([ms] * 8), node_json=cfg.identity_json, primitive=prim,
                                     layout=layout, precision="fp32", prune=0.0))
        fast = FastestChoices.from_store(store)
    best = fast.best(cfg.node, 1)
    assert (best.primitive, best.layout) == ("conv.im2col", "NCHW")
    assert fast.best(cfg.node, 2).primitive == "conv.im2col"  # falls back to another thread count
    assert fast.best(cfg.node, 1, ("int8",)) is None
