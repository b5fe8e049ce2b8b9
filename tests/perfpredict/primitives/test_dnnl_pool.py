"""maxpool.dnnl: oneDNN's max pool against ONNX Runtime (fp32) and against maxpool.torch (int8), on the ONNX edge
cases of test_pooling (asymmetric pads, ceil mode, dilation, auto_pad)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from perfpredict.errors import PlanError
from perfpredict.plan import Choice, Plan
from perfpredict.primitives import candidates, get_primitive
from perfpredict.runtime import build_executable
from perfpredict.runtime.kernel import BuildContext
from tests.perfpredict.primitives.single_op import case_inputs, load_case, ort_outputs, rel_err, single
from tests.perfpredict.primitives.test_pooling import CASES

MAX_CASES = [c for c in CASES if c.id.startswith("max")]


def _run(case, primitive: str, precision: str) -> np.ndarray:
    graph = load_case(case)
    feeds = case_inputs(case)
    plan = Plan({graph.nodes[0].name: Choice(primitive, "NHWC", precision)})
    calibration = [(feeds["x"],)] if precision == "int8" else None
    return build_executable(graph, plan, calibration=calibration).run(feeds["x"])


@pytest.mark.parametrize("case", MAX_CASES, ids=lambda c: c.id)
def test_fp32_matches_onnxruntime_exactly(case):
    ours = _run(case, "maxpool.dnnl", "fp32")
    assert rel_err(ours, ort_outputs(case, case_inputs(case))[0]) == 0.0


@pytest.mark.parametrize("case", MAX_CASES, ids=lambda c: c.id)
def test_int8_equals_the_torch_quantised_max_pool(case):
    # both keep the input's scale and zero point, and a max of quantised values is exact
    np.testing.assert_array_equal(_run(case, "maxpool.dnnl", "int8"), _run(case, "maxpool.torch", "int8"))


def test_offered_in_nhwc_only_and_refuses_nchw():
    node = load_case(MAX_CASES[0]).nodes[0]
    assert "maxpool.dnnl" in [p.name for p in candidates(node, "NHWC", "fp32")]
    assert "maxpool.dnnl" not in [p.name for p in candidates(node, "NCHW", "fp32")]
    with pytest.raises(PlanError, match="NHWC"):
        get_primitive("maxpool.dnnl").build(node, {}, BuildContext(layout="NCHW"))


def test_keeps_channels_last_and_declares_no_workspace():
    node = load_case(MAX_CASES[0]).nodes[0]
    kernel = get_primitive("maxpool.dnnl").build(node, {}, BuildContext(layout="NHWC"))
    x = torch.randn(node.in_shape).contiguous(memory_format=torch.channels_last)
    assert kernel(x).is_contiguous(memory_format=torch.channels_last)
    assert get_primitive("maxpool.dnnl").workspace_bytes(node, "fp32", "NHWC") == 0
    with pytest.raises(PlanError, match="float32"):
        kernel(x.to(torch.float64))


@pytest.mark.parametrize("shape", [(1, 64, 15, 15), (2, 100, 9, 9)], ids=["64ch", "100ch-batch2"])
def test_an_int8_pool_of_many_channels_equals_torchs_whichever_loop_runs_it(shape):
    # with AVX-512 BW our own loop runs it (64 channels at a time, the last part masked), else oneDNN's kernel
    case = single("max_ceil_wide", "MaxPool", shape=shape, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1],
                  ceil_mode=1)
    np.testing.assert_array_equal(_run(case, "maxpool.dnnl", "int8"), _run(case, "maxpool.torch", "int8"))
    graph = load_case(case)
    exe = build_executable(graph, Plan({graph.nodes[0].name: Choice("maxpool.dnnl", "NHWC", "int8")}),
                           calibration=[(case_inputs(case)["x"],)])
    [step] = [fn for fn, *_ in exe._fast_steps if getattr(fn, "link", None) is not None]
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    assert (step.link.primitive.impl == "perfpredict:avx512bw") == (" avx512bw" in flags and " avx512f" in flags)
