"""int8 calibration ranges, qparams and the accuracy report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perfpredict.errors import PlanError
from perfpredict.plan import Choice, Plan
from perfpredict.primitives.quantized import choose_qparams
from perfpredict.runtime import Calibration, build_executable, calibrate, calibration_inputs, compare_outputs
from tests.perfpredict.runtime.nets import residual_se_graph
from tests.perfpredict.runtime.plans import int8_plan


def test_ranges_cover_every_tensor_and_match_the_fp32_run():
    g = residual_se_graph()
    xs = calibration_inputs(g, n=3, seed=5)
    cal = calibrate(g, inputs=[s[0] for s in xs])
    assert set(cal.ranges) == {"x"} | {t for n in g.nodes for t in n.outputs}
    exe = build_executable(g, fuse=False)
    traces = [exe.trace(*s) for s in xs]
    for t, (lo, hi) in cal.ranges.items():
        assert lo == pytest.approx(min(float(tr[t].min()) for tr in traces))
        assert hi == pytest.approx(max(float(tr[t].max()) for tr in traces))
    assert cal.ranges["r1"][0] >= 0.0  # after a relu
    assert cal.qparams("x") == choose_qparams(*cal.ranges["x"])


def test_default_inputs_are_seeded_and_stacks_are_split():
    g = residual_se_graph()
    a, b = calibrate(g), calibrate(g)
    assert a.ranges == b.ranges and a.n_inputs == 4
    stack = np.random.default_rng(0).standard_normal((3, 1, 3, 12, 12)).astype(np.float32)
    assert calibrate(g, inputs=stack).n_inputs == 3
    with pytest.raises(PlanError, match="do not fit"):
        calibrate(g, inputs=np.zeros((2, 3, 5, 5), np.float32))


def test_percentile_ranges_lie_inside_minmax_ranges():
    g = residual_se_graph()
    mm = calibrate(g, method="minmax")
    pc = calibrate(g, method="percentile", percentile=99.0)
    for t in mm.ranges:
        assert mm.ranges[t][0] <= pc.ranges[t][0] + 1e-6 and pc.ranges[t][1] <= mm.ranges[t][1] + 1e-6
    with pytest.raises(PlanError, match="method"):
        calibrate(g, method="entropy")


def test_calibration_follows_the_plans_pruning():
    g = residual_se_graph()
    plan = Plan({"conv4": Choice("conv.int8", "NCHW", "int8", prune=0.5)})
    cal = calibrate(g, plan)
    exe = build_executable(g, plan, calibration=cal)
    assert exe.graph.node("conv4").attrs["out_channels"] == 3
    assert exe.run(np.zeros((1, 3, 12, 12), np.float32)).shape == (1, 10)


def test_missing_tensor_is_a_plan_error():
    g = residual_se_graph()
    with pytest.raises(PlanError, match="no range for tensor 'x'"):
        build_executable(g, int8_plan(g), calibration=Calibration({}))


def test_compare_outputs():
    ref = np.array([[1.0, 3.0, 2.0], [0.5, 0.1, 0.2]])
    same = compare_outputs(ref, ref)
    assert same == {"top1_agreement": 1.0, "sqnr_db": math.inf, "max_rel_err": 0.0}
    noisy = ref + np.array([[0.0, 0.0, 1.5], [0.0, 0.3, 0.0]])
    r = compare_outputs(noisy, ref)
    assert r["top1_agreement"] == 0.5
    assert r["max_rel_err"] == pytest.approx(0.5)
    assert r["sqnr_db"] == pytest.approx(10 * np.log10(np.sum(ref ** 2) / (1.5 ** 2 + 0.3 ** 2)))


def test_int8_accuracy_on_a_zoo_model(zoo_model):
    g, _ = zoo_model("resnet18")
    x = np.random.default_rng(3).standard_normal(g.input_shape).astype(np.float32)
    ref = build_executable(g).run(x)
    report = compare_outputs(build_executable(g, int8_plan(g)).run(x), ref)
    assert report["sqnr_db"] > 15.0
    # calibrating on the very input that is measured cannot be worse than on random others by much
    own = compare_outputs(build_executable(g, int8_plan(g), calibration=x).run(x), ref)
    assert own["sqnr_db"] > report["sqnr_db"] - 3.0
