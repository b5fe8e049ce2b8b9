from types import SimpleNamespace

import numpy as np
import pytest

import benchmarks.conversion_prior as cp
from perfpredict.plan import default_plan
from perfpredict.runtime.executor import make_schedule, resolve_plan
from tests.perfpredict.runtime.plans import int8_plan
from tests.perfpredict.synthetic import zoo_graph

COSTS = {"layout:NHWC": 4.0, "layout:NCHW": 3.0, "quantize": 2.0, "dequantize": 1.5}


def test_a_groups_conversions_are_those_the_runtime_schedules_in_front_of_its_nodes(monkeypatch):
    # int8 NHWC vgg: the graph input (fp32 NCHW) is relaid into NHWC and quantised in front of the first conv; the
    # final conversion back to fp32 NCHW has no reader and belongs to no group (every other step of the schedule
    # does); the default plan converts nothing
    g = zoo_graph("vgg")
    monkeypatch.setattr(cp, "graph_of", lambda sample: g)
    groups = [[1.0, [n.name]] for n in g.nodes]
    first = next(i for i, n in enumerate(g.nodes) if n.op == "Conv")
    nbytes = 4.0 * np.prod(g.tensor_shapes[g.nodes[first].inputs[0]])
    plan = int8_plan(g, "NHWC")
    conv = cp.group_conversions(SimpleNamespace(plan=plan), groups)
    assert conv[first]["layout:NHWC"] == conv[first]["quantize"] == nbytes and conv[first]["steps"] == 2
    inner = [c for c in make_schedule(g, resolve_plan(g, plan).choices).conversions if c.consumer != "<output>"]
    assert sum(c.get("steps", 0) for c in conv) == len(inner) > 2
    assert not any(c for c in cp.group_conversions(SimpleNamespace(plan=default_plan(g)), groups))


def _rows(rng, n_groups=40):
    """Step groups timed bare and with conversions whose time is COSTS x 2 bytes at the bandwidth + 5 us a step."""
    rows = []
    for g in range(n_groups):
        base = rng.uniform(0.05, 2.0)
        rows.append({"group": ("m", 1, (f"n{g}",), ()), "ms": base, "byte_ms": 1e-7, "step_ms": 0.006, "steps": 0.0,
                     **dict.fromkeys(COSTS, 0.0)})
        for _ in range(3):
            conv = {k: (rng.uniform(1e4, 1e6) if rng.random() < 0.5 else 0.0) for k in COSTS}
            steps = float(sum(v > 0 for v in conv.values()))
            if not steps:
                continue
            ms = base + sum(COSTS[k] * v * 1e-7 for k, v in conv.items()) + 0.005 * steps
            rows.append({"group": ("m", 1, (f"n{g}",), ()), "ms": ms, "byte_ms": 1e-7, "step_ms": 0.006,
                         "steps": steps, **conv})
    return rows


def test_the_fit_recovers_each_kinds_cost_from_groups_paired_with_their_bare_timing():
    rows = _rows(np.random.default_rng(0))
    # a group never timed bare has nothing to pair with
    rows.append({**rows[1], "group": ("other", 1, ("x",), ())})
    ps = cp.pairs(rows)
    assert len(ps) == sum(1 for r in rows if r["steps"]) - 1
    fit = cp.fit(ps)
    for k, v in COSTS.items():
        assert fit[k] == pytest.approx(v, rel=1e-6)
    assert fit["per_step_ms"] == pytest.approx(0.005, rel=1e-6)
    for b in cp.by_size(ps):  # one kind alone: extra / prior lies between the step's and the bytes' ratio
        lo, hi = sorted((COSTS[b["kind"]], 0.005 / 0.006))
        assert lo <= b["extra_over_prior"] <= hi


def test_the_pooled_costs_leave_out_the_excluded_stores():
    a = cp.pairs(_rows(np.random.default_rng(1)))
    b = [dict(p, extra_ms=10.0 * p["extra_ms"]) for p in a]
    payload, table = cp.summarise({"a": a, "b": b}, {"b"})
    assert payload["pooled_stores"] == ["a"]
    assert payload["costs"] == pytest.approx(COSTS, rel=1e-6)
    assert payload["fits"]["b"]["layout:NHWC"] == pytest.approx(40.0, rel=1e-6)
    assert "| a |" in table and "Median over a:" in table
