"""fp32 conv primitives against ONNX Runtime, honest applies(), registration, layouts and fused activations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from perfpredict.errors import PlanError
from perfpredict.primitives import candidates, default_primitive, get_primitive
from perfpredict.primitives.conv import ConvGeometry, mkldnn_disabled, winograd_weight_transform
from perfpredict.primitives.epilogue import parse_activation
from perfpredict.runtime.kernel import BuildContext
from tests.perfpredict.primitives.onnx_layers import conv_layer, rel_err

FP32_CONV = {"conv.onednn", "conv.onednn_packed", "conv.dnnl", "conv.native", "conv.im2col", "conv.winograd",
             "conv.winograd4", "conv.fft", "conv.gemm1x1", "conv.depthwise", "conv.reference"}
GENERAL = {"conv.onednn", "conv.onednn_packed", "conv.dnnl", "conv.native", "conv.im2col", "conv.reference"}
WINOGRAD = {"conv.winograd", "conv.winograd4", "conv.fft"}

# (id, conv_layer kwargs, the fp32 primitives that must apply, exactly)
CASES = [
    ("3x3s1", dict(cin=8, cout=16), GENERAL | WINOGRAD),
    ("3x3s1-batch2-nobias", dict(cin=6, cout=5, batch=2, hw=(9, 11), bias=False),
     GENERAL | WINOGRAD),
    ("3x3s1-valid-odd", dict(cin=4, cout=7, pads=(0, 0, 0, 0), hw=(10, 9)), GENERAL | WINOGRAD),
    ("3x3s1-pad2", dict(cin=3, cout=4, pads=(2, 2, 2, 2), hw=(7, 7)), GENERAL | WINOGRAD),
    ("3x3s2", dict(cin=8, cout=16, stride=(2, 2), hw=(13, 13)), GENERAL | {"conv.fft"}),
    ("3x3s2-asym-pads", dict(cin=8, cout=8, stride=(2, 2), pads=(0, 0, 1, 1), hw=(12, 12)), GENERAL | {"conv.fft"}),
    ("1x1", dict(cin=16, cout=8, k=1, pads=(0, 0, 0, 0), hw=(10, 10)), GENERAL | {"conv.gemm1x1"}),
    ("1x1-batch2", dict(cin=12, cout=8, k=1, pads=(0, 0, 0, 0), hw=(5, 6), batch=2),
     GENERAL | {"conv.gemm1x1"}),
    ("1x1s2", dict(cin=16, cout=8, k=1, stride=(2, 2), pads=(0, 0, 0, 0), hw=(10, 10)), GENERAL),
    ("5x5", dict(cin=4, cout=6, k=5, pads=(2, 2, 2, 2), hw=(11, 11)), GENERAL | {"conv.fft"}),
    ("1x7-rect", dict(cin=4, cout=6, k=(1, 7), pads=(0, 3, 0, 3), hw=(8, 12)), GENERAL | {"conv.fft"}),
    ("3x3-dilated", dict(cin=4, cout=6, dilation=(2, 2), pads=(2, 2, 2, 2), hw=(12, 12)), GENERAL),
    ("grouped", dict(cin=8, cout=12, groups=2, hw=(9, 9)), GENERAL),
    ("depthwise", dict(cin=16, cout=16, groups=16, hw=(12, 12)), GENERAL | {"conv.depthwise"}),
    ("depthwise-s2", dict(cin=8, cout=8, groups=8, stride=(2, 2), hw=(13, 13)), GENERAL | {"conv.depthwise"}),
    ("depthwise-5x5-dil", dict(cin=8, cout=8, groups=8, k=5, dilation=(2, 2), pads=(4, 4, 4, 4), hw=(10, 10)),
     GENERAL | {"conv.depthwise"}),
    ("depthwise-asym", dict(cin=8, cout=8, groups=8, stride=(2, 2), pads=(0, 0, 1, 1), hw=(10, 10)),
     GENERAL | {"conv.depthwise"}),
]


def _run(name, layer, layout="NCHW", act=None):
    prim = get_primitive(name)
    kernel = prim.build(layer.node, layer.weights, BuildContext(layout=layout, fused_activation=act))
    x = torch.from_numpy(layer.x)
    if layout == "NHWC":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y = kernel(x)
    return y


def _build_and_call(prim, layer, weights):
    """``prim`` built with ``weights`` in its first layout, called on the layer's input in that layout."""
    layout = prim.layouts[0]
    x = torch.from_numpy(layer.x).contiguous(memory_format=torch.channels_last if layout == "NHWC"
                                             else torch.contiguous_format)
    with torch.inference_mode():
        return prim.build(layer.node, weights, BuildContext(layout=layout))(x)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_applicable_primitive_matches_onnxruntime(case):
    _, kwargs, expected = case
    layer = conv_layer(**kwargs)
    fp32 = {p.name for p in candidates(layer.node, precision="fp32")}
    assert fp32 == expected, "applies() must accept exactly the configurations the algorithm handles"
    assert default_primitive(layer.node).name == "conv.onednn"
    for name in sorted(fp32):
        for layout in get_primitive(name).layouts:
            y = _run(name, layer, layout)
            assert tuple(y.shape) == layer.node.out_shape, (name, layout)
            assert y.dtype == torch.float32
            fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
            assert y.is_contiguous(memory_format=fmt), (name, layout)
            err = rel_err(y.numpy(), layer.expected)
            assert err <= 1e-4, f"{name} {layout}: relative error {err:.2e}"


@pytest.mark.parametrize("act", ["relu", "relu6", "clip:-0.5:0.25"])
def test_fused_activation_in_every_kernel(act):
    clamp = parse_activation(act)
    hi = None if clamp.hi == math.inf else clamp.hi
    for kwargs in (dict(cin=4, cout=8, hw=(8, 8)), dict(cin=8, cout=8, k=1, pads=(0, 0, 0, 0), hw=(6, 6)),
                   dict(cin=8, cout=8, groups=8, hw=(8, 8))):
        layer = conv_layer(**kwargs, seed=3)
        want = np.clip(layer.expected * 4, clamp.lo, hi)  # scaled so relu6 and the clip bounds bite
        layer = type(layer)(layer.node, {k: v * 4 for k, v in layer.weights.items()}, layer.x, layer.expected)
        for prim in candidates(layer.node, precision="fp32"):
            for layout in prim.layouts:
                y = _run(prim.name, layer, layout, act).numpy()
                assert rel_err(y, want) <= 1e-4, (prim.name, layout, act)


def test_applies_rejects_what_the_algorithm_cannot_run():
    dense_s2 = conv_layer(cin=4, cout=4, stride=(2, 2)).node
    dense_3x3 = conv_layer(cin=4, cout=4).node
    grouped = conv_layer(cin=4, cout=4, groups=2).node
    dilated = conv_layer(cin=4, cout=4, dilation=(2, 2), pads=(2, 2, 2, 2)).node
    assert not get_primitive("conv.winograd").applies(dense_s2)
    assert not get_primitive("conv.winograd").applies(grouped)
    assert not get_primitive("conv.winograd4").applies(dense_s2)
    assert not get_primitive("conv.winograd4").applies(grouped)
    assert not get_primitive("conv.winograd4").applies(dilated)
    assert not get_primitive("conv.gemm1x1").applies(dense_3x3)
    assert not get_primitive("conv.depthwise").applies(dense_3x3)
    assert not get_primitive("conv.depthwise").applies(grouped)
    assert not get_primitive("conv.fft").applies(grouped)
    assert not get_primitive("conv.fft").applies(dilated)
    with pytest.raises(PlanError, match="winograd"):
        get_primitive("conv.winograd").build(dense_s2, {"weight": np.zeros((4, 4, 3, 3), np.float32)},
                                             BuildContext())


def test_every_conv_primitive_is_registered_with_honest_metadata():
    layer = conv_layer(cin=8, cout=8, groups=8)
    names = {p.name for p in candidates(layer.node)}
    assert {"conv.depthwise", "conv.int8"} <= names
    for name in FP32_CONV | {"conv.int8"}:
        p = get_primitive(name)
        assert p.ops == ("Conv",) and p.description
    assert get_primitive("conv.onednn").rank == 0
    assert get_primitive("conv.native").layouts == ("NCHW",)
    assert get_primitive("conv.onednn_packed").layouts == ("NHWC",)  # packed weights give channels-last output
    with pytest.raises(PlanError, match="runs in layouts"):
        get_primitive("conv.native").build(layer.node, layer.weights, BuildContext(layout="NHWC"))


def test_workspace_bytes_reflect_the_algorithm():
    layer = conv_layer(cin=16, cout=32, hw=(20, 20))
    node = layer.node
    ws = {p.name: p.workspace_bytes(node, "fp32", p.layouts[0]) for p in candidates(node, precision="fp32")}
    assert ws["conv.reference"] == 0
    # weights packed at build, symmetric pads need no padded copy: only oneDNN's scratchpad
    assert 0 < ws["conv.onednn_packed"] <= 16 * 1024
    assert ws["conv.im2col"] == 16 * 9 * 20 * 20 * 4  # the column buffer
    assert ws["conv.fft"] > ws["conv.im2col"] / 4
    assert all(v >= 0 for v in ws.values())
    one = conv_layer(cin=16, cout=8, k=1, pads=(0, 0, 0, 0)).node
    assert get_primitive("conv.gemm1x1").workspace_bytes(one, "fp32", "NCHW") == 0
    # oneDNN from NCHW works in 16-channel blocks; in NHWC it only reorders the weights
    onednn = get_primitive("conv.onednn")
    assert onednn.workspace_bytes(node, "fp32", "NHWC") < onednn.workspace_bytes(node, "fp32", "NCHW")


# (primitive, layout, conv_layer kwargs): dense 3x3, a stem with 3 input channels, 1x1 expansions, depthwise
_WS_CASES = [(name, layout, kw) for name in ("conv.onednn", "conv.onednn_packed", "conv.dnnl", "conv.im2col",
                                             "conv.winograd", "conv.winograd4", "conv.fft", "conv.native",
                                             "conv.depthwise",
                                             "conv.gemm1x1")
             for layout in get_primitive(name).layouts
             for kw in (dict(cin=32, cout=32, hw=(24, 24)), dict(cin=3, cout=16, stride=(2, 2), hw=(48, 48)),
                        dict(cin=16, cout=64, k=1, pads=(0, 0, 0, 0), hw=(20, 20)),
                        dict(cin=64, cout=16, k=1, pads=(0, 0, 0, 0), hw=(20, 20)),
                        dict(cin=32, cout=32, groups=32, hw=(24, 24)), dict(cin=16, cout=16, hw=(15, 15)),
                        dict(cin=32, cout=32, groups=32, stride=(2, 2), hw=(24, 24)),
                        dict(cin=32, cout=64, stride=(2, 2), hw=(24, 24)),
                        dict(cin=3, cout=64, stride=(2, 2), hw=(64, 64)),
                        dict(cin=8, cout=8, stride=(2, 2), pads=(0, 0, 1, 1), hw=(12, 12)),
                        dict(cin=32, cout=32, groups=2, hw=(12, 12)), dict(cin=16, cout=16, hw=(15, 15), batch=2))
             if get_primitive(name).applies(conv_layer(**kw).node)]


@pytest.mark.parametrize("name,layout,kw", _WS_CASES,
                         ids=[f"{n}-{lay}-{kw['cin']}to{kw['cout']}g{kw.get('groups', 1)}" for n, lay, kw in _WS_CASES])
def test_declared_workspace_against_the_allocator(name, layout, kw):
    from perfpredict.measure import allocated_peak_of

    layer = conv_layer(**kw)
    prim = get_primitive(name)
    kernel = prim.build(layer.node, layer.weights, BuildContext(layout=layout))
    x = torch.from_numpy(layer.x).contiguous(memory_format=torch.channels_last if layout == "NHWC"
                                             else torch.contiguous_format)
    with torch.inference_mode():
        y = kernel(x)
        extra = allocated_peak_of(lambda: kernel(x)) - y.numel() * 4  # beyond the output
    declared = prim.workspace_bytes(layer.node, "fp32", layout)
    # what the kernel holds beside its input and output, within 10% and 8 KiB
    assert abs(declared - extra) <= 0.1 * extra + 8 * 1024, (declared, extra)


def test_pruned_weights_set_the_channel_counts():
    layer = conv_layer(cin=8, cout=16)
    keep = np.arange(0, 16, 2)  # half of the output channels pruned away
    weights = {"weight": layer.weights["weight"][keep], "bias": layer.weights["bias"][keep]}
    for prim in candidates(layer.node, precision="fp32"):
        y = _build_and_call(prim, layer, weights).numpy()
        assert rel_err(y, layer.expected[:, keep]) <= 1e-4, prim.name
    dw = conv_layer(cin=8, cout=8, groups=8)  # a depthwise conv whose producer was pruned stays depthwise
    geo = ConvGeometry.of(dw.node, (4, 1, 3, 3))
    assert geo.groups == 4 and geo.in_channels == 4 and geo.is_depthwise


def test_native_takes_aten_own_path_and_restores_the_flag():
    before = torch.backends.mkldnn.enabled
    with mkldnn_disabled():
        assert not torch.backends.mkldnn.enabled
    assert torch.backends.mkldnn.enabled == before
    select = getattr(torch._C, "_select_conv_backend", None)
    if select is None:
        pytest.skip("this torch has no _select_conv_backend")
    x, w = torch.zeros(1, 64, 56, 56), torch.zeros(64, 64, 3, 3)
    args = (x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, None)
    with mkldnn_disabled():
        assert "Mkldnn" not in str(select(*args))


def test_winograd_weight_transform_matches_definition():
    g = np.random.default_rng(0).standard_normal((2, 3, 3, 3)).astype(np.float32)
    u = winograd_weight_transform(g).numpy().reshape(4, 4, 2, 3)
    G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    np.testing.assert_allclose(u[:, :, 1, 2], G @ g[1, 2] @ G.T, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spec", ["tanh", "clip:1", "clip:2:1", "clip:a:b"])
def test_bad_fused_activation_is_a_plan_error(spec):
    with pytest.raises(PlanError):
        parse_activation(spec)


def test_non_contiguous_weight_arrays_are_copied_in_c_order():
    layer = conv_layer(cin=4, cout=6, hw=(7, 7))
    weights = {"weight": np.asfortranarray(layer.weights["weight"]), "bias": layer.weights["bias"]}
    for prim in candidates(layer.node, precision="fp32"):
        y = _build_and_call(prim, layer, weights)
        assert rel_err(y.numpy(), layer.expected) <= 1e-4, prim.name


@pytest.mark.parametrize("kw", [dict(cin=20, cout=36, hw=(28, 28)), dict(cin=17, cout=17, hw=(28, 28)),
                                dict(cin=16, cout=7, hw=(28, 28)), dict(cin=24, cout=24, groups=24, hw=(28, 28)),
                                dict(cin=8, cout=8, groups=8, hw=(28, 28)), dict(cin=32, cout=32, hw=(28, 28))],
                         ids=lambda kw: f"{kw['cin']}to{kw['cout']}g{kw.get('groups', 1)}")
def test_onednn_nchw_workspace_with_the_channel_counts_pruning_leaves(kw):
    # oneDNN pads odd channel counts to its 16-channel blocks: blocked input, weights and output at once
    from perfpredict.measure import allocated_peak_of

    layer = conv_layer(**kw)
    prim = get_primitive("conv.onednn")
    kernel = prim.build(layer.node, layer.weights, BuildContext(layout="NCHW"))
    x = torch.from_numpy(layer.x).contiguous()
    with torch.inference_mode():
        y = kernel(x)
        extra = allocated_peak_of(lambda: kernel(x)) - y.numel() * 4
    assert abs(prim.workspace_bytes(layer.node, "fp32", "NCHW") - extra) <= 0.02 * extra + 2048
