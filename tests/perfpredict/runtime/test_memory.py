"""Analytical peak memory (weights, live activations, workspace) and the measurement entry point."""

from __future__ import annotations

import pytest

from perfpredict.errors import MeasurementError
from perfpredict.graph import load_onnx
from perfpredict.plan import Choice, Plan
from perfpredict.primitives import get_primitive
from perfpredict.primitives.conv import ONEDNN_BLOCK
from perfpredict.runtime import estimate_peak_memory, measure_plan
from perfpredict.runtime.memory import INT8_CHANNEL_BYTES
from tests.conftest import make_conv_model
from tests.perfpredict.runtime.nets import residual_se_graph, residual_se_net
from tests.perfpredict.runtime.plans import int8_plan


def test_chain_model_by_hand(tmp_path):
    # conv(3->8, 16x16, BN folded) -> relu (fused) -> gap -> flatten -> gemm(8->10)
    g = load_onnx(make_conv_model(tmp_path / "tiny.onnx"))
    est = estimate_peak_memory(g)
    assert est.weights == 4 * (8 * 3 * 3 * 3 + 8 + 10 * 8 + 10)
    conv_out, pooled = 4 * 8 * 16 * 16, 4 * 8
    # the graph input is the caller's buffer: the largest live set is the conv's output beside the pooled vector
    assert est.activations == conv_out + pooled
    assert est.peak_step == "gap"
    conv = g.node("conv")
    assert est.workspace == max(get_primitive("conv.onednn").workspace_bytes(conv, "fp32", "NCHW"),
                                get_primitive("gemm.blas").workspace_bytes(g.node("fc"), "fp32", "NCHW"))
    # the largest workspace (oneDNN computing the 8 channels into a blocked output: 16-channel blocks with AVX-512,
    # 8-channel ones with AVX2) is the conv's own
    assert est.workspace == 4 * max(8, ONEDNN_BLOCK) * 16 * 16
    assert est.total == est.weights + conv_out + est.workspace


def test_estimate_follows_the_allocator_where_workspace_and_live_set_peak_apart():
    from perfpredict.runtime.measurement import measure_memory

    # resnet18's largest workspace (conv.onednn reorders a 512x512x3x3 weight on every call) falls on a late step
    # where few activations are alive: the estimate adds the two only where they coincide
    from perfpredict.models import load_model

    g, _ = load_model("resnet18", resolution=32)
    est = estimate_peak_memory(g)
    assert est.total < est.weights + est.activations + est.workspace
    assert est.total >= est.weights + max(est.activations, est.workspace)
    measured = measure_memory(g, threads=1)
    assert abs(est.total - measured.peak_bytes) <= 0.02 * measured.peak_bytes


def test_int8_weights_and_activations_shrink():
    g = residual_se_graph()
    fp32 = estimate_peak_memory(g)
    q = estimate_peak_memory(g, int8_plan(g))
    conv_gemm = [n for n in g.nodes if n.op in ("Conv", "Gemm")]
    w_elems = sum(g.initializers[n.inputs[1]].size for n in conv_gemm)
    out_ch = sum(g.initializers[n.inputs[1]].shape[0] for n in conv_gemm)
    assert fp32.weights - q.weights == 3 * w_elems - INT8_CHANNEL_BYTES * out_ch
    assert q.activations < fp32.activations


def test_pruning_shrinks_the_estimate():
    g = residual_se_graph()
    pruned = estimate_peak_memory(g, Plan({"conv1": Choice("conv.onednn", prune=0.5)}))
    full = estimate_peak_memory(g)
    assert pruned.weights < full.weights and pruned.activations < full.activations


def test_views_do_not_count_twice():
    from tests.perfpredict.primitives.single_op import OpCase, load_case

    case = OpCase("relu_flatten", (("Relu", ("x",), ("r",), {}), ("Flatten", ("r",), ("out",), {"axis": 1})),
                  {"x": (1, 4, 8, 8)})
    est = estimate_peak_memory(load_case(case))
    assert est.activations == 4 * 4 * 8 * 8  # r (x is the caller's buffer); the flattened r is a view


def test_measure_plan(tmp_path):
    g = load_onnx(make_conv_model(tmp_path / "tiny.onnx"))
    stats, mem = measure_plan(g, threads=1, min_repeats=5, max_repeats=20, time_cap_s=0.2)
    assert stats.n_repeats >= 5 and stats.median_ms > 0 and stats.threads == 1
    assert mem.weight_bytes == estimate_peak_memory(g).weights
    assert mem.peak_bytes == mem.weight_bytes + mem.run_peak_bytes and mem.run_peak_bytes >= 0
    stats, none = measure_plan(g, threads=1, memory=False, min_repeats=5, max_repeats=5)
    assert none is None and stats.n_repeats == 5


@pytest.mark.parametrize("method", ["allocator", "rss"])
def test_measured_run_peak_tracks_activations(method):
    from perfpredict.runtime.measurement import measure_memory

    # large enough (over 20 MB of activations and workspace) that the kernel's approximate resident-set
    # counters, which the "rss" method reads, cannot hide the run's peak (at ~1.5 MB they read 0.04-1.5 MB)
    big = load_onnx(residual_se_net(hw=384), name="residual_se_384")
    est = estimate_peak_memory(big)
    got = measure_memory(big, threads=1, method=method)
    # the run's own peak is in the estimate's order of magnitude
    assert 0.25 * (est.activations + est.workspace) < got.run_peak_bytes < 4 * (est.activations + est.workspace)
    assert got.weight_bytes == est.weights
    assert (got.method == "allocator") == (method == "allocator")


def test_measure_plan_beside_times_the_plan_round_robin_with_other_workloads(tmp_path):
    from perfpredict.runtime.measurement import measure_plan_beside

    g = load_onnx(make_conv_model(tmp_path / "tiny.onnx"))
    calls = []
    stats = measure_plan_beside(g, None, {"other": lambda: calls.append(1)}, threads=1, min_repeats=5,
                                max_repeats=20, time_cap_s=0.2)
    assert set(stats) == {"plan", "other"} and stats["plan"].median_ms > 0 and stats["plan"].n_repeats >= 5
    assert len(calls) >= stats["other"].n_repeats >= 5
    with pytest.raises(MeasurementError, match="'plan' names the plan itself"):
        measure_plan_beside(g, None, {"plan": lambda: None})


def test_allocator_memory_repeats_to_the_byte_and_follows_the_plan():
    from perfpredict.runtime.measurement import measure_memory

    g = residual_se_graph()
    first, second = measure_memory(g, threads=1), measure_memory(g, threads=1)
    assert first == second and first.run_peak_bytes > 0
    # pruning half the channels of conv1 shrinks what the run holds
    pruned = measure_memory(g, Plan({"conv1": Choice("conv.onednn", prune=0.5)}), threads=1)
    assert pruned.run_peak_bytes < first.run_peak_bytes and pruned.weight_bytes < first.weight_bytes
    with pytest.raises(MeasurementError, match="accepted: allocator, rss"):
        measure_memory(g, method="vmhwm")


def _nhwc_plan(graph, precision: str) -> Plan:
    """Every node that has a primitive at ``precision`` in NHWC on its first such (conv.dnnl / conv.dnnl_int8)."""
    from perfpredict.primitives import candidates

    choices = {}
    for n in graph.nodes:
        found = candidates(n, layout="NHWC", precision=precision)
        if found:
            choices[n.name] = Choice(found[0].name, "NHWC", precision)
    return Plan(choices)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_channel_split_views_in_nhwc_follow_the_allocator(precision):
    # ShuffleNetV2 splits channels into views; in NHWC a channel slice is not one dense block, so the branch
    # convolution copies it and an int8 Concat goes through fp32 (8 bytes per output element): without both
    # rules the int8 estimate missed the allocator by 19% on such plans
    from perfpredict.runtime.executor import view_is_dense
    from perfpredict.runtime.measurement import measure_memory
    from tests.perfpredict.synthetic import zoo_graph

    g = zoo_graph("shufflenet_v2")
    splits = [n for n in g.nodes if n.op == "Split"]
    assert splits and all(view_is_dense(n, "NCHW") and not view_is_dense(n, "NHWC") for n in splits)
    plan = _nhwc_plan(g, precision)
    est = estimate_peak_memory(g, plan)
    measured = measure_memory(g, plan, threads=1)
    assert est.weights == measured.weight_bytes
    assert abs(est.total - measured.peak_bytes) <= 0.02 * measured.peak_bytes, (est, measured)


def test_view_is_dense_reads_the_sliced_axes():
    from perfpredict.graph import Node
    from perfpredict.runtime.executor import view_is_dense

    def sliced(axes, starts, ends, shape=(1, 8, 4, 4), steps=None):
        return Node("s", "Slice", ("x",), ("y",), (shape,), ((1,),), {
            "axes": axes, "starts": starts, "ends": ends, "steps": steps or (1,) * len(axes)})

    assert view_is_dense(sliced((1,), (0,), (4,)), "NCHW") and not view_is_dense(sliced((1,), (0,), (4,)), "NHWC")
    assert not view_is_dense(sliced((1,), (0,), (4,), shape=(2, 8, 4, 4)), "NCHW")  # batch 2: strided
    assert not view_is_dense(sliced((2,), (1,), (3,)), "NCHW") and view_is_dense(sliced((0,), (0,), (1,)), "NHWC")
    assert view_is_dense(sliced((1,), (0,), (2**62,)), "NHWC")  # keeps the whole axis: nothing is sliced
    assert view_is_dense(sliced((1,), (-8,), (8,)), "NHWC")
    assert not view_is_dense(sliced((1,), (0,), (8,), steps=(2,)), "NCHW")
    flat = Node("f", "Flatten", ("x",), ("y",), ((1, 8, 4, 4),), ((1, 128),), {"axis": 1})
    assert view_is_dense(flat, "NHWC")
