"""Every zoo model end to end against ONNX Runtime: default plan, a random legal fp32 plan, int8 and pruned plans."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from perfpredict import zoo
from perfpredict.runtime import build_executable, compare_outputs, max_rel_err, ort_run, ort_session
from tests.perfpredict.runtime.plans import int8_plan, prune_plan, random_plan

MODELS = zoo.list_models()


def _input(graph, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(graph.input_shape).astype(np.float32)


@pytest.mark.parametrize("name", MODELS)
def test_default_and_random_fp32_plans_match_onnxruntime(zoo_model, name):
    graph, path = zoo_model(name)
    x = _input(graph)
    ref = ort_run(ort_session(path, threads=1), x)[0]
    default = build_executable(graph)
    assert max_rel_err(default.run(x), ref) <= 1e-3
    assert default.conversions == []  # everything NCHW fp32: nothing to convert
    plan = random_plan(graph, seed=zlib.crc32(name.encode()))
    exe = build_executable(graph, plan)
    assert max_rel_err(exe.run(x), ref) <= 1e-3, name
    assert {c.kind for c in exe.conversions} <= {"layout"}


@pytest.mark.parametrize("name", MODELS)
def test_int8_and_pruned_plans_run(zoo_model, name):
    graph, _ = zoo_model(name)
    x = _input(graph, seed=1)
    ref = build_executable(graph).run(x)
    out_shape = tuple(graph.tensor_shapes[graph.outputs[0]])

    q = build_executable(graph, int8_plan(graph, "NHWC"))
    y = q.run(x)
    assert y.shape == out_shape and np.isfinite(y).all()
    report = compare_outputs(y, ref)
    # 7-bit activations through every layer of a randomly initialised net: a loose sanity floor
    assert report["sqnr_db"] > 8.0, report
    kinds = [c.kind for c in q.conversions]
    assert kinds.count("quantize") >= 1 and kinds.count("dequantize") >= 1

    p = build_executable(graph, prune_plan(graph, 0.5, every=2))
    y = p.run(x)
    assert y.shape == out_shape and np.isfinite(y).all()
    assert p.graph.macs < graph.macs


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "squeezenet1_1"])
def test_random_mixed_precision_plans_run(zoo_model, name):
    graph, _ = zoo_model(name)
    x = _input(graph, seed=2)
    ref = build_executable(graph).run(x)
    exe = build_executable(graph, random_plan(graph, seed=3, precisions=("fp32", "int8")))
    y = exe.run(x)
    assert compare_outputs(y, ref)["sqnr_db"] > 8.0
    kinds = {c.kind for c in exe.conversions}
    assert {"quantize", "dequantize"} <= kinds


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_b0"])
def test_all_packed_nhwc_plan_matches_onnxruntime(zoo_model, name):
    from perfpredict.plan import Choice, Plan
    from perfpredict.primitives import candidates, get_primitive

    graph, path = zoo_model(name)
    x = _input(graph, seed=4)
    ref = ort_run(ort_session(path, threads=1), x)[0]
    choices = {}
    for n in graph.nodes:
        if any(p.name == "conv.onednn_packed" for p in candidates(n, layout="NHWC", precision="fp32")):
            choices[n.name] = Choice("conv.onednn_packed", "NHWC")
        else:
            prim = candidates(n, precision="fp32")[0]
            choices[n.name] = Choice(prim.name, "NHWC" if "NHWC" in get_primitive(prim.name).layouts else "NCHW")
    exe = build_executable(graph, Plan(choices))
    assert sum(c.primitive == "conv.onednn_packed" for c in exe.plan.choices.values()) > 0
    assert max_rel_err(exe.run(x), ref) <= 1e-3, name
