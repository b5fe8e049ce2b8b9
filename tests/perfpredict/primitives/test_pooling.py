"""Pooling primitives (maxpool/averagepool/globalaveragepool/reducemean .torch) against ONNX Runtime,
including the edge cases where ONNX and torch semantics differ (asymmetric pads, ceil mode, count_include_pad)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perfpredict.primitives import candidates
from tests.perfpredict.primitives.single_op import OpCase, case_inputs, kernel_output, load_case, rel_err, run_case, single

S = (1, 8, 9, 9)
CASES = [
    single("max_k3s2p1", "MaxPool", shape=S, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    single("max_k2s2", "MaxPool", shape=(1, 8, 8, 8), kernel_shape=[2, 2], strides=[2, 2]),
    single("max_ceil", "MaxPool", shape=(1, 8, 10, 10), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    single("max_ceil_pad", "MaxPool", shape=(1, 8, 10, 10), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
           ceil_mode=1),
    single("max_asym", "MaxPool", shape=S, kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]),
    single("max_dilated", "MaxPool", shape=S, kernel_shape=[3, 3], strides=[1, 1], pads=[2, 2, 2, 2],
           dilations=[2, 2]),
    single("max_same_upper", "MaxPool", shape=(1, 8, 8, 8), kernel_shape=[3, 3], strides=[2, 2],
           auto_pad="SAME_UPPER"),
    single("avg_excl", "AveragePool", shape=S, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    single("avg_incl", "AveragePool", shape=S, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
           count_include_pad=1),
    single("avg_k2s2", "AveragePool", shape=(1, 8, 8, 8), kernel_shape=[2, 2], strides=[2, 2]),
    single("avg_ceil", "AveragePool", shape=(1, 8, 10, 10), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    single("avg_ceil_incl", "AveragePool", shape=(1, 8, 10, 10), kernel_shape=[3, 3], strides=[2, 2],
           pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
    single("avg_asym", "AveragePool", shape=S, kernel_shape=[2, 2], strides=[2, 2], pads=[1, 0, 0, 1]),
    single("avg_asym_incl", "AveragePool", shape=S, kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 2, 1],
           count_include_pad=1),
    single("gap", "GlobalAveragePool", shape=S),
    single("reducemean_hw", "ReduceMean", shape=S, axes=[2, 3], keepdims=1),
    single("reducemean_hw_flat", "ReduceMean", shape=S, axes=[-2, -1], keepdims=0),
    single("reducemean_c", "ReduceMean", shape=S, axes=[1], keepdims=1),
    OpCase("reducemean_opset18", (("ReduceMean", ("x", "ax"), ("out",), {"keepdims": 1}),), {"x": S},
           consts={"ax": np.array([2, 3], dtype=np.int64)}, opset=18),
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_fp32_matches_onnxruntime(case, layout):
    ours, ref = run_case(case, layout)
    assert ours[0].shape == ref[0].shape
    assert rel_err(ours[0], ref[0]) <= 1e-4


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_int8_close_to_fp32(case):
    x = case_inputs(case)["x"]
    step = (max(x.max(), 0) - min(x.min(), 0)) / 127  # one step of the 7-bit input quantisation
    for layout in ("NCHW", "NHWC"):
        ours, ref = run_case(case, layout, "int8")
        assert ours[0].shape == ref[0].shape
        # pooling keeps the input's scale: the output is off by at most about one input step
        assert np.max(np.abs(ours[0] - ref[0])) <= 1.5 * step, layout


@pytest.mark.parametrize("case", [c for c in CASES if c.id.startswith(("max", "avg"))], ids=lambda c: c.id)
def test_nhwc_kernel_keeps_channels_last(case):
    assert kernel_output(case, "NHWC").is_contiguous(memory_format=torch.channels_last)


def test_int8_pooling_runs_on_quantised_tensors():
    from perfpredict.runtime import build_executable
    from tests.perfpredict.primitives.single_op import plan_for

    graph = load_case(CASES[0])
    exe = build_executable(graph, plan_for(graph, "NHWC", "int8"))
    kinds = [c.kind for c in exe.conversions]
    assert kinds.count("quantize") == 1 and kinds.count("dequantize") == 1


def test_pooling_is_int8_capable_in_both_layouts():
    graph = load_case(CASES[0])
    assert [p.name for p in candidates(graph.nodes[0], "NHWC", "int8")] == ["maxpool.torch", "maxpool.dnnl"]
    assert [p.name for p in candidates(graph.nodes[0], "NCHW", "int8")] == ["maxpool.torch"]
