"""mul.dnnl: oneDNN's product of a tensor and a per-channel gate, against ONNX Runtime (fp32) and against torch's
quantised mul (int8), alone and inside a network with a squeeze-excite block."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perfpredict.errors import PlanError
from perfpredict.plan import Choice, Plan, default_plan
from perfpredict.primitives import candidates, get_primitive
from perfpredict.primitives.dnnl_binary import gate_operand
from perfpredict.runtime import build_executable
from perfpredict.runtime.kernel import BuildContext, QParams
from tests.perfpredict.primitives.single_op import case_inputs, load_case, ort_outputs, rel_err, single
from tests.perfpredict.runtime.nets import residual_se_graph

GATE_LAST = single("gate_last", "Mul", ("x", "g"), (1, 24, 7, 9), extra_inputs={"g": (1, 24, 1, 1)})
GATE_FIRST = single("gate_first", "Mul", ("g", "x"), (1, 16, 5, 5), extra_inputs={"g": (1, 16, 1, 1)})
SAME_SHAPE = single("same_shape", "Mul", ("x", "y"), (1, 8, 6, 6), extra_inputs={"y": (1, 8, 6, 6)})
CHANNEL_ONLY = single("per_channel_3d", "Mul", ("x", "g"), (1, 8, 6), extra_inputs={"g": (1, 8, 1)})


def _run(case, layout: str, precision: str, primitive: str = "mul.dnnl") -> np.ndarray:
    graph = load_case(case)
    feeds = case_inputs(case)
    xs = tuple(feeds[n] for n in graph.inputs)
    plan = Plan({graph.nodes[0].name: Choice(primitive, layout, precision)})
    return build_executable(graph, plan, calibration=[xs] if precision == "int8" else None).run(*xs)


@pytest.mark.parametrize("case", [GATE_LAST, GATE_FIRST], ids=lambda c: c.id)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_fp32_matches_onnxruntime(case, layout):
    assert rel_err(_run(case, layout, "fp32"), ort_outputs(case, case_inputs(case))[0]) < 1e-6


@pytest.mark.parametrize("case", [GATE_LAST, GATE_FIRST], ids=lambda c: c.id)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_int8_is_torch_quantised_mul_within_one_step(case, layout):
    # the same product requantised to the same calibrated grid; the per-channel multiplier and offset are rounded
    # once more in float, so a value may land one quantisation step away
    ours, ref = _run(case, layout, "int8"), _run(case, layout, "int8", "mul.torch")
    scale = np.max(np.abs(ref)) / 127
    assert np.max(np.abs(ours - ref)) <= 1.01 * scale
    assert np.mean(ours != ref) < 0.05


def test_offered_only_for_a_per_channel_gate():
    assert gate_operand(load_case(GATE_LAST).nodes[0]) == 1
    assert gate_operand(load_case(GATE_FIRST).nodes[0]) == 0
    for case in (SAME_SHAPE, CHANNEL_ONLY):
        node = load_case(case).nodes[0]
        assert gate_operand(node) is None
        assert "mul.dnnl" not in [p.name for p in candidates(node)]
        with pytest.raises(PlanError, match="gate"):
            get_primitive("mul.dnnl").build(node, {}, BuildContext())
    node = load_case(GATE_LAST).nodes[0]
    assert {"NCHW", "NHWC"} <= {lay for lay in get_primitive("mul.dnnl").layouts}
    assert "mul.dnnl" in [p.name for p in candidates(node, "NHWC", "int8")]


def test_kernel_keeps_the_layout_and_checks_its_operands():
    node = load_case(GATE_LAST).nodes[0]
    kernel = get_primitive("mul.dnnl").build(node, {}, BuildContext(layout="NHWC"))
    x = torch.randn(node.input_shapes[0]).contiguous(memory_format=torch.channels_last)
    g = torch.rand(node.input_shapes[1])
    assert kernel(x, g).is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(PlanError, match="float32"):
        kernel(x.double(), g)
    with pytest.raises(ValueError, match="qparams"):
        get_primitive("mul.dnnl").build(node, {}, BuildContext(layout="NHWC", precision="int8"))
    q8 = get_primitive("mul.dnnl").build(node, {}, BuildContext(layout="NHWC", precision="int8",
                                                                   out_qparams=QParams(0.02, 100)))
    y = q8(torch.quantize_per_tensor(x, 0.05, 128, torch.quint8), torch.quantize_per_tensor(g, 1 / 256, 0, torch.quint8))
    assert (y.q_scale(), y.q_zero_point()) == (0.02, 100)
    assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_squeeze_excite_network_with_the_gate_on_onednn(precision):
    # the gate product alone moves to mul.dnnl (the runtime converts its operands' layout and precision)
    graph = residual_se_graph()
    x = np.random.default_rng(0).standard_normal(graph.tensor_shapes[graph.inputs[0]]).astype(np.float32)
    calibration = [(x,)] if precision == "int8" else None

    def run(mul: str) -> np.ndarray:
        plan = default_plan(graph).with_choice("se_mul", Choice(mul, "NHWC", precision))
        return build_executable(graph, plan, calibration=calibration).run(x)

    assert rel_err(run("mul.dnnl"), run("mul.torch")) < (1e-6 if precision == "fp32" else 0.02)
