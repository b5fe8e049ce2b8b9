"""Elementwise primitives (relu/clip/sigmoid/hardsigmoid/hardswish/add/mul/BN affine .torch) against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perfpredict.graph import SUPPORTED_OPS
from perfpredict.primitives import all_primitives, candidates, get_primitive
from tests.perfpredict.primitives.single_op import kernel_output, load_case, rel_err, run_case, single

RNG = np.random.default_rng(7)
C = 8

CASES = [
    single("relu", "Relu"),
    single("clip06", "Clip", ("x", "lo", "hi"), consts={"lo": np.float32(0.0), "hi": np.float32(6.0)}),
    single("clip_neg", "Clip", ("x", "lo", "hi"), consts={"lo": np.float32(-0.5), "hi": np.float32(0.7)}),
    single("clip_min_only", "Clip", ("x", "lo"), consts={"lo": np.float32(-0.25)}),
    single("sigmoid", "Sigmoid"),
    single("hardsigmoid_onnx", "HardSigmoid"),
    single("hardsigmoid_torch", "HardSigmoid", alpha=1 / 6, beta=0.5),
    single("hardswish", "HardSwish"),
    single("add", "Add", ("x", "y"), extra_inputs={"y": (1, C, 6, 6)}),
    single("add_bcast", "Add", ("x", "y"), extra_inputs={"y": (1, C, 1, 1)}),
    single("add_const", "Add", ("x", "k"), consts={"k": RNG.standard_normal((1, C, 1, 1)).astype(np.float32)}),
    single("add_const_first", "Add", ("k", "x"), consts={"k": RNG.standard_normal((C, 1, 1)).astype(np.float32)}),
    single("mul", "Mul", ("x", "y"), extra_inputs={"y": (1, C, 6, 6)}),
    single("mul_bcast", "Mul", ("x", "y"), extra_inputs={"y": (1, C, 1, 1)}),
    single("mul_scalar", "Mul", ("x", "k"), consts={"k": np.float32(1.7)}),
    single("mul_2d", "Mul", ("x", "y"), shape=(2, 10), extra_inputs={"y": (2, 10)}),
    single("batchnorm", "BatchNormalization", ("x", "s", "b", "m", "v"), consts={
        "s": RNG.uniform(0.5, 1.5, C).astype(np.float32), "b": RNG.standard_normal(C).astype(np.float32),
        "m": RNG.standard_normal(C).astype(np.float32), "v": RNG.uniform(0.5, 2, C).astype(np.float32)}),
]
INT8 = {"relu", "clip06", "clip_neg", "clip_min_only", "sigmoid", "hardsigmoid_onnx", "hardsigmoid_torch", "hardswish",
        "add", "add_bcast", "add_const", "mul", "mul_bcast", "mul_scalar", "batchnorm"}


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_fp32_matches_onnxruntime(case, layout):
    ours, ref = run_case(case, layout)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        assert rel_err(a, b) <= 1e-4


@pytest.mark.parametrize("case", [c for c in CASES if c.id in INT8], ids=lambda c: c.id)
def test_int8_close_to_fp32(case):
    for layout in ("NCHW", "NHWC"):
        ours, ref = run_case(case, layout, "int8")
        # 7-bit activations (fbgemm reduce_range): a few quantisation steps of the output range
        assert rel_err(ours[0], ref[0]) < 0.06, layout


@pytest.mark.parametrize("case", [c for c in CASES if len(c.inputs["x"]) == 4], ids=lambda c: c.id)
def test_nhwc_kernel_keeps_channels_last(case):
    y = kernel_output(case, "NHWC")
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_batchnorm_runs_as_its_own_affine_node():
    graph = load_case(next(c for c in CASES if c.id == "batchnorm"))
    assert [n.op for n in graph.nodes] == ["BatchNormalization"]
    assert get_primitive("batchnormalization.torch").supports(graph.nodes[0], "NHWC", "int8")


def test_every_non_conv_op_has_a_torch_primitive():
    names = {p.name for p in all_primitives()}
    for op in SUPPORTED_OPS:
        if op in ("Conv", "Gemm", "MatMul", "Dropout", "Identity"):
            continue
        assert f"{op.lower()}.torch" in names, op


def test_torch_primitives_are_the_only_candidates_of_their_op():
    graph = load_case(CASES[0])
    assert [p.name for p in candidates(graph.nodes[0])] == ["relu.torch"]
    assert [p.name for p in candidates(graph.nodes[0], precision="int8")] == ["relu.torch"]
