"""int8 conv (fbgemm and oneDNN) and gemm: accuracy against ONNX Runtime's fp32 output, qparams, layouts, applies()."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perfpredict.errors import PerfPredictError, PlanError
from perfpredict.primitives import candidates, get_primitive
from perfpredict.primitives.quantized import (ACTIVATION_QMAX, choose_qparams, dequantize, quantize_activation,
                                              quantize_weight_per_channel)
from perfpredict.runtime.kernel import BuildContext, QParams
from tests.perfpredict.primitives.onnx_layers import conv_layer, gemm_layer, sqnr_db

CONV_CASES = [
    ("3x3", dict(cin=16, cout=32, hw=(14, 14))),
    ("3x3s2", dict(cin=16, cout=16, stride=(2, 2), hw=(15, 15))),
    ("1x1", dict(cin=32, cout=16, k=1, pads=(0, 0, 0, 0), hw=(10, 10))),
    ("grouped", dict(cin=16, cout=16, groups=4, hw=(10, 10))),
    ("depthwise", dict(cin=32, cout=32, groups=32, hw=(12, 12))),
    ("depthwise-s2", dict(cin=16, cout=16, groups=16, stride=(2, 2), hw=(13, 13))),
]
# conv.dnnl_int8 takes what conv.int8 cannot: asymmetric pads, dilation, batches, depthwise off fbgemm's
# multiples of 8
DNNL_CASES = CONV_CASES + [
    ("3x3s2-asym-pads", dict(cin=8, cout=8, stride=(2, 2), pads=(0, 0, 1, 1), hw=(12, 12))),
    ("3x3-dilated-batch2", dict(cin=4, cout=6, dilation=(2, 2), pads=(2, 2, 2, 2), hw=(12, 12), batch=2)),
    ("depthwise-odd", dict(cin=122, cout=122, groups=122, hw=(9, 9))),
    ("stem", dict(cin=3, cout=16, stride=(2, 2), hw=(16, 16))),
]


def _qparams(a: np.ndarray) -> QParams:
    return choose_qparams(float(a.min()), float(a.max()))


def _run_int8(name, layer, layout="NCHW", act=None, expected=None):
    expected = layer.expected if expected is None else expected
    ctx = BuildContext(layout=layout, precision="int8", fused_activation=act,
                       in_qparams=(_qparams(layer.x),), out_qparams=_qparams(expected))
    kernel = get_primitive(name).build(layer.node, layer.weights, ctx)
    x = torch.from_numpy(layer.x)
    if layout == "NHWC":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return kernel(quantize_activation(x, ctx.in_qparams[0]))


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_int8_sqnr_against_fp32(case):
    layer = conv_layer(**case[1])
    assert "conv.int8" in {p.name for p in candidates(layer.node, precision="int8")}
    for layout in ("NCHW", "NHWC"):
        y = _run_int8("conv.int8", layer, layout)
        assert y.dtype == torch.quint8 and tuple(y.shape) == layer.node.out_shape
        fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
        assert y.is_contiguous(memory_format=fmt)
        db = sqnr_db(dequantize(y).numpy(), layer.expected)
        assert db > 20, f"{layout}: SQNR {db:.1f} dB"


@pytest.mark.parametrize("case", DNNL_CASES, ids=[c[0] for c in DNNL_CASES])
def test_conv_dnnl_int8_sqnr_against_fp32_and_fbgemm(case):
    layer = conv_layer(**case[1])
    assert "conv.dnnl_int8" in {p.name for p in candidates(layer.node, precision="int8")}
    y = _run_int8("conv.dnnl_int8", layer, "NHWC")
    assert y.dtype == torch.quint8 and tuple(y.shape) == layer.node.out_shape
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert y.q_scale() == _qparams(layer.expected).scale
    db = sqnr_db(dequantize(y).numpy(), layer.expected)
    assert db > 20, f"SQNR {db:.1f} dB"
    if get_primitive("conv.int8").applies(layer.node):
        # the same quantised operands and output grid: the two libraries agree to a step (rounding)
        ref = _run_int8("conv.int8", layer, "NHWC")
        diff = (y.int_repr().int() - ref.int_repr().int()).abs()
        assert int(diff.max()) <= 1


def test_conv_dnnl_int8_honours_a_nonzero_input_zero_point_in_the_padding():
    # an all-positive input quantised over [1, 3]: its zero point is nonzero, and the pads must read as 0.0,
    # not as the zero point's code (an input of 2.0 everywhere: border outputs differ from the centre)
    layer = conv_layer(cin=4, cout=4, hw=(6, 6), bias=False)
    x = np.full_like(layer.x, 2.0)
    w = layer.weights["weight"]
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1).numpy()
    in_qp = choose_qparams(-1.0, 3.0)
    assert in_qp.zero_point > 0
    ctx = BuildContext(layout="NHWC", precision="int8", out_qparams=_qparams(expected))
    kernel = get_primitive("conv.dnnl_int8").build(layer.node, layer.weights, ctx)
    xq = quantize_activation(torch.from_numpy(x).contiguous(memory_format=torch.channels_last), in_qp)
    y = dequantize(kernel(xq)).numpy()
    assert sqnr_db(y, expected) > 25


@pytest.mark.parametrize("name", ["conv.int8", "conv.dnnl_int8"])
@pytest.mark.parametrize("act,lo,hi", [("relu", 0, None), ("relu6", 0, 6), ("clip:-0.5:1", -0.5, 1)])
def test_conv_int8_fused_activation(name, act, lo, hi):
    layer = conv_layer(cin=16, cout=16, hw=(10, 10), seed=2)
    want = np.clip(layer.expected * 3, lo, hi)
    layer = type(layer)(layer.node, {k: v * 3 for k, v in layer.weights.items()}, layer.x, layer.expected * 3)
    q = _run_int8(name, layer, layout=get_primitive(name).layouts[-1], act=act, expected=want)
    y, step = dequantize(q).numpy(), q.q_scale()
    # the clamp runs on the quantised grid: its bounds are exact to half a step
    assert y.min() >= lo - step / 2 - 1e-6 and (hi is None or y.max() <= hi + step / 2 + 1e-6)
    assert sqnr_db(y, want) > 20


@pytest.mark.parametrize("act,fn", [("swish", torch.nn.functional.silu), ("hardswish", torch.nn.functional.hardswish),
                                    ("sigmoid", torch.sigmoid)])
def test_conv_dnnl_int8_applies_eltwise_activations_before_requantising(act, fn):
    layer = conv_layer(cin=16, cout=16, hw=(10, 10), seed=3)
    want = fn(torch.from_numpy(layer.expected * 3)).numpy()
    layer = type(layer)(layer.node, {k: v * 3 for k, v in layer.weights.items()}, layer.x, layer.expected * 3)
    q = _run_int8("conv.dnnl_int8", layer, layout="NHWC", act=act, expected=want)
    assert q.q_scale() == _qparams(want).scale  # the output grid is the activation's, not the convolution's
    assert sqnr_db(dequantize(q).numpy(), want) > 25


def test_eltwise_activations_are_refused_by_primitives_without_the_epilogue():
    layer = conv_layer(cin=16, cout=16, hw=(10, 10))
    with pytest.raises(PlanError, match="'swish' is not a clamp"):
        _run_int8("conv.int8", layer, layout="NHWC", act="swish")


@pytest.mark.parametrize("kwargs", [dict(m=4, k=64, n=10), dict(m=3, k=32, n=8, trans_b=0, alpha=0.5, beta=2.0),
                                    dict(m=2, k=16, n=6, op="MatMul"), dict(m=2, k=16, n=6, c_shape=None)])
def test_gemm_int8_sqnr_against_fp32(kwargs):
    layer = gemm_layer(**kwargs)
    assert [p.name for p in candidates(layer.node, precision="int8")] == ["gemm.int8"]
    y = _run_int8("gemm.int8", layer)
    assert y.dtype == torch.quint8 and tuple(y.shape) == layer.node.out_shape
    assert sqnr_db(dequantize(y).numpy(), layer.expected) > 20
    relu = dequantize(_run_int8("gemm.int8", layer, act="relu", expected=np.maximum(layer.expected, 0))).numpy()
    assert relu.min() >= 0 and sqnr_db(relu, np.maximum(layer.expected, 0)) > 20


def test_gemm_int8_rejects_a_full_bias_matrix():
    layer = gemm_layer(m=3, k=8, n=4, c_shape=("m", "n"))
    with pytest.raises(PlanError, match="bias C"):
        _run_int8("gemm.int8", layer)


def test_choose_qparams_uses_fbgemm_reduced_range():
    qp = choose_qparams(-1.0, 3.0)
    assert qp.scale == pytest.approx(4.0 / ACTIVATION_QMAX, rel=1e-6)
    assert 0 <= qp.zero_point <= ACTIVATION_QMAX
    x = torch.linspace(-1.0, 3.0, 101)
    q = quantize_activation(x, qp)
    assert q.dtype == torch.quint8 and int(q.int_repr().max()) <= ACTIVATION_QMAX
    assert torch.max(torch.abs(dequantize(q) - x)) <= qp.scale / 2 + 1e-6
    assert float(dequantize(quantize_activation(torch.zeros(1), qp))) == 0.0  # zero is exact
    positive = choose_qparams(0.5, 2.0)  # the range always includes zero
    assert positive.zero_point == 0 and positive.scale == pytest.approx(2.0 / ACTIVATION_QMAX, rel=1e-6)
    with pytest.raises(PerfPredictError):
        choose_qparams(1.0, -1.0)


def test_weight_quantisation_is_per_channel_symmetric():
    w = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 7).view(6, 1, 1, 1)
    q = quantize_weight_per_channel(w)
    assert q.dtype == torch.qint8 and q.q_per_channel_axis() == 0
    assert torch.all(q.q_per_channel_zero_points() == 0)  # symmetric
    amax = w.abs().amax(dim=(1, 2, 3)).double()
    torch.testing.assert_close(q.q_per_channel_scales(), amax / 127.5)  # full qint8 range [-128, 127]
    # half a step per channel; +amax maps to 127.5 and clamps to 127, so the bound is met with equality
    err = torch.abs(q.dequantize() - w).amax(dim=(1, 2, 3)).double()
    assert torch.all(err <= amax / 127.5 / 2 * (1 + 1e-5))


def test_int8_needs_calibration_and_quantised_input():
    layer = conv_layer(cin=4, cout=4)
    with pytest.raises(PlanError, match="out_qparams"):
        get_primitive("conv.int8").build(layer.node, layer.weights, BuildContext(precision="int8"))
    kernel = get_primitive("conv.int8").build(layer.node, layer.weights,
                                              BuildContext(precision="int8", out_qparams=QParams(0.1, 0)))
    with pytest.raises(PlanError, match="quint8"):
        kernel(torch.from_numpy(layer.x))


def test_conv_dnnl_int8_rejects_what_it_was_not_built_for():
    layer = conv_layer(cin=4, cout=4)
    prim = get_primitive("conv.dnnl_int8")
    with pytest.raises(PlanError, match=r"runs in layouts \['NHWC'\] at int8"):
        prim.build(layer.node, layer.weights, BuildContext(layout="NCHW", precision="int8",
                                                          in_qparams=(QParams(0.1, 0),), out_qparams=QParams(0.1, 0)))
    with pytest.raises(PlanError, match="calibrated output qparams"):
        prim.build(layer.node, layer.weights, BuildContext(layout="NHWC", precision="int8"))
    kernel = prim.build(layer.node, layer.weights, BuildContext(layout="NHWC", precision="int8",
                                                                in_qparams=(QParams(0.1, 3),),
                                                                out_qparams=QParams(0.1, 0)))
    x = torch.from_numpy(layer.x).contiguous(memory_format=torch.channels_last)
    with pytest.raises(PlanError, match="quint8"):
        kernel(x)
    with pytest.raises(PlanError, match=r"takes \(N, 4, H, W\) input"):
        kernel(quantize_activation(torch.zeros(1, 5, 12, 12).contiguous(memory_format=torch.channels_last),
                                   QParams(0.1, 3)))


@pytest.mark.parametrize("kw", [dict(cin=64, cout=64, hw=(14, 14)), dict(cin=32, cout=32, groups=32, hw=(14, 14)),
                                dict(cin=128, cout=256, k=1, stride=(2, 2), pads=(0, 0, 0, 0), hw=(14, 14)),
                                dict(cin=3, cout=32, stride=(2, 2), hw=(32, 32))])
def test_conv_dnnl_int8_workspace_against_the_allocator(kw):
    from perfpredict.measure import allocated_peak_of
    from perfpredict.primitives.dnnl import conv_impl

    layer = conv_layer(**kw)
    prim = get_primitive("conv.dnnl_int8")
    ctx = BuildContext(layout="NHWC", precision="int8", in_qparams=(_qparams(layer.x),),
                       out_qparams=_qparams(layer.expected))
    kernel = prim.build(layer.node, layer.weights, ctx)
    x = quantize_activation(torch.from_numpy(layer.x).contiguous(memory_format=torch.channels_last),
                            ctx.in_qparams[0])
    with torch.inference_mode():
        y = kernel(x)
        extra = allocated_peak_of(lambda: kernel(x)) - y.numel()  # beyond the (one byte per value) output
    declared = prim.workspace_bytes(layer.node, "int8", "NHWC")
    assert abs(declared - extra) <= 0.02 * extra + 1024, (declared, extra)
    assert conv_impl(layer.node, "int8")  # the kernel oneDNN chose, by name


def test_conv_int8_rejects_asymmetric_padding():
    layer = conv_layer(cin=4, cout=4, stride=(2, 2), pads=(0, 0, 1, 1))
    assert not get_primitive("conv.int8").applies(layer.node)


def test_depthwise_fallback_follows_fbgemm_channel_rule():
    from perfpredict.primitives.quantized import depthwise_fallback, fbgemm_depthwise

    assert depthwise_fallback(conv_layer(122, 122, groups=122).node)
    assert not depthwise_fallback(conv_layer(120, 120, groups=120).node)
    assert depthwise_fallback(conv_layer(60, 120, groups=60).node)  # channel multiplier 2
    # the count it runs with after pruning decides, not the node's own
    assert depthwise_fallback(conv_layer(128, 128, groups=128).node, channels=122)
    assert not depthwise_fallback(conv_layer(122, 122, groups=122).node, channels=120)
    dense, grouped = conv_layer(122, 122).node, conv_layer(122, 122, groups=61).node
    assert not fbgemm_depthwise(dense) and not depthwise_fallback(dense)
    assert not fbgemm_depthwise(grouped) and not depthwise_fallback(grouped)
