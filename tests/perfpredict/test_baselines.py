"""Baselines: FLOPs linear regression and the nn-Meter-style kernel sum (synthetic targets, behaviour only)."""

import random
from dataclasses import replace

import numpy as np
import pytest

from perfpredict.baselines import BaselineError, FlopsLinearBaseline, KernelSumBaseline, make_baseline
from perfpredict.features import PLAN_COLUMNS, FeatureSpace, encode_plans, plan_node_features, template_for
from perfpredict.plan import Choice, Plan
from perfpredict.predictor import NodeCostModel, Predictor
from perfpredict.samples import SampleSet, make_splits
from perfpredict.train import evaluate

from .synthetic import DEVICE, random_plan, synthetic_samples, zoo_graph


@pytest.fixture(scope="module")
def samples():
    return synthetic_samples(plans_per_graph=10, seed=1, layers=True)


@pytest.fixture(scope="module")
def kernel_rf(samples):
    return KernelSumBaseline("rf").fit(samples)


def _gflops(sample):
    space = FeatureSpace.current()
    tpl = sample.template
    pf = plan_node_features(tpl, encode_plans(tpl, [sample.plan], space), space, sample.device, sample.threads)
    col = len(space.primitives) + 1 + PLAN_COLUMNS.index("log_eff_flops")
    return float(np.expm1(pf.plan[0, :, col].astype(np.float64)).sum() / 1e9)


def test_flops_baseline_recovers_an_affine_function_per_device(samples):
    models = [replace(s, latency_ms=(0.3 if s.threads == 1 else 0.2) * _gflops(s) + 0.05) for s in samples.models]
    fitted = FlopsLinearBaseline().fit(SampleSet(models))
    m = evaluate(fitted, SampleSet(models))
    assert m["latency"]["mape"] < 1e-3
    assert m["memory"]["mape"] < 1e-3  # the synthetic memory is affine in the analytical estimate
    assert isinstance(fitted, Predictor)


def test_kernel_sum_is_fusion_aware(kernel_rf):
    g = zoo_graph("resnet")
    tpl = template_for(g)
    conv = next(n for n in g.nodes if n.op == "Conv")
    relu = next(n for n in g.nodes if n.op == "Relu" and n.inputs[0] == conv.outputs[0])
    r = tpl.node_names.index(relu.name)
    fused, unfused = Plan({}), Plan({conv.name: Choice("conv.int8", "NCHW", "int8")})
    k = kernel_rf.kernel_latencies(tpl, [fused, unfused], DEVICE)
    assert k[0, r] == 0.0  # conv + relu is one kernel
    assert k[1, r] > 0.0  # int8 conv and fp32 relu: the relu runs on its own
    assert np.all(k >= 0)


def test_kernel_sum_approximates_an_additive_function(samples, kernel_rf):
    split = make_splits(samples, "random:0.34", 0)[0]
    fitted = KernelSumBaseline("gbm").fit(split.train)
    m = evaluate(fitted, split.test)
    assert m["latency"]["mape"] < 30.0 and m["latency"]["spearman"] > 0.8
    assert isinstance(kernel_rf, NodeCostModel) and isinstance(kernel_rf, Predictor)


def test_kernel_node_costs_sum_to_the_prediction(kernel_rf):
    g = zoo_graph("squeezenet")
    conv = next(n for n in g.nodes if n.op == "Conv")
    base = Plan({})
    opts = {conv.name: [Choice("conv.onednn"), Choice("conv.im2col"), Choice("conv.reference")]}
    costs = kernel_rf.node_costs(g, DEVICE, opts)[conv.name]
    t0 = kernel_rf.predict(g, [base], DEVICE).latency_ms[0]
    for k, o in enumerate(opts[conv.name]):
        t = kernel_rf.predict(g, [base.with_choice(conv.name, o)], DEVICE).latency_ms[0]
        assert costs[k] - costs[0] == pytest.approx(t - t0, rel=1e-6, abs=1e-9)


def test_kernel_sum_needs_layer_samples(samples):
    with pytest.raises(BaselineError, match="layer samples"):
        KernelSumBaseline("rf").fit(SampleSet(samples.models))
    with pytest.raises(BaselineError, match="unknown baseline"):
        make_baseline("nope")
    with pytest.raises(BaselineError, match="not fitted"):
        FlopsLinearBaseline().predict(zoo_graph("resnet"), [Plan({})], DEVICE)


def test_save_load_round_trip(kernel_rf, tmp_path):
    from perfpredict.gnn_predictor import load_predictor

    path = kernel_rf.save(tmp_path / "k")
    back = KernelSumBaseline.load(path)
    assert isinstance(load_predictor(tmp_path / "k"), KernelSumBaseline)
    g = zoo_graph("mobilenet_v2")
    plans = [random_plan(g, random.Random(k)) for k in range(3)]
    np.testing.assert_array_equal(kernel_rf.predict(g, plans, DEVICE).latency_ms, back.predict(g, plans, DEVICE).latency_ms)
