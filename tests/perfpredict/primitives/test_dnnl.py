"""conv.dnnl: oneDNN through its C API (correctness against ONNX Runtime is in test_conv.py with the others)."""

from __future__ import annotations

import gc
from importlib import metadata

import numpy as np
import pytest
import torch

from perfpredict.errors import PlanError
from perfpredict.primitives import dnnl, get_primitive
from perfpredict.primitives.quantized import choose_qparams, quantize_activation
from perfpredict.runtime.kernel import BuildContext
from tests.perfpredict.primitives.onnx_layers import conv_layer, rel_err


def _nhwc(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).contiguous(memory_format=torch.channels_last)


def test_it_runs_the_installed_onednn():
    assert dnnl.dnnl_version().startswith("3.")
    include, lib = dnnl.dnnl_paths()
    assert (include / "dnnl.h").is_file() and lib.name == "libdnnl.so.3"


@pytest.mark.parametrize("act,lo,hi", [("relu", 0.0, np.inf), ("relu6", 0.0, 6.0), ("clip:-0.5:0.25", -0.5, 0.25),
                                       ("clip:-1:inf", -1.0, np.inf)])
def test_fused_activations_match_a_clamp_after_the_convolution(act, lo, hi):
    layer = conv_layer(cin=8, cout=16, stride=(2, 2), hw=(11, 11))
    kernel = get_primitive("conv.dnnl").build(layer.node, layer.weights, BuildContext(layout="NHWC",
                                                                                        fused_activation=act))
    y = kernel(_nhwc(layer.x))
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(y.numpy(), np.clip(layer.expected, lo, hi)) <= 1e-5


@pytest.mark.parametrize("name", ["conv.dnnl", "conv.onednn_packed"])
@pytest.mark.parametrize("act,fn", [("swish", torch.nn.functional.silu), ("hardswish", torch.nn.functional.hardswish),
                                    ("sigmoid", torch.sigmoid)])
def test_eltwise_post_ops_match_the_activation_after_the_convolution(name, act, fn):
    layer = conv_layer(cin=8, cout=16, stride=(2, 2), hw=(11, 11), pads=(0, 0, 1, 1))
    prim = get_primitive(name)
    assert act in prim.epilogues
    kernel = prim.build(layer.node, layer.weights, BuildContext(layout="NHWC", fused_activation=act))
    y = kernel(_nhwc(layer.x)).numpy()
    assert rel_err(y, fn(torch.from_numpy(layer.expected)).numpy()) <= 1e-5


def test_an_input_of_another_shape_gets_its_own_primitive():
    # built for batch 1 (the node's shape); a batch of 3 of the same images gives three equal outputs
    layer = conv_layer(cin=16, cout=8, k=1, pads=(0, 0, 0, 0), hw=(6, 7))
    kernel = get_primitive("conv.dnnl").build(layer.node, layer.weights, BuildContext(layout="NHWC"))
    y1 = kernel(_nhwc(layer.x)).numpy()
    y3 = kernel(_nhwc(np.concatenate([layer.x] * 3))).numpy()
    assert y3.shape == (3, *y1.shape[1:])
    for i in range(3):
        np.testing.assert_allclose(y3[i], y1[0], rtol=1e-5, atol=1e-6)
    assert rel_err(y1, layer.expected) <= 1e-5


def test_an_int8_primitive_made_later_for_another_shape_keeps_the_weight_scales():
    # the per-channel weight scales reach C through a pointer: a primitive made for a new shape after build (and
    # after the builder's locals are gone and their memory reused) must read the same scales as the first
    layer = conv_layer(cin=16, cout=8, k=1, pads=(0, 0, 0, 0), hw=(6, 7))
    qx = choose_qparams(float(layer.x.min()), float(layer.x.max()))
    ctx = BuildContext(layout="NHWC", precision="int8", in_qparams=(qx,),
                       out_qparams=choose_qparams(float(layer.expected.min()), float(layer.expected.max())))
    kernel = get_primitive("conv.dnnl_int8").build(layer.node, layer.weights, ctx)
    y1 = kernel(quantize_activation(_nhwc(layer.x), qx)).int_repr().numpy()
    gc.collect()
    churn = [np.full(8, 1e30, dtype=np.float32) for _ in range(4096)]  # reuse freed small blocks
    y3 = kernel(quantize_activation(_nhwc(np.concatenate([layer.x] * 3)), qx)).int_repr().numpy()
    del churn
    for i in range(3):
        np.testing.assert_array_equal(y3[i], y1[0])


def test_bad_layout_precision_and_input_are_plan_errors():
    layer = conv_layer(cin=4, cout=4, pads=(0, 0, 0, 0))
    prim = get_primitive("conv.dnnl")
    with pytest.raises(PlanError, match="runs in layouts"):
        prim.build(layer.node, layer.weights, BuildContext(layout="NCHW"))
    kernel = prim.build(layer.node, layer.weights, BuildContext(layout="NHWC"))
    with pytest.raises(PlanError, match="float32 input"):
        kernel(_nhwc(layer.x).double())
    with pytest.raises(PlanError, match=r"takes \(N, 4, H, W\) input, got \[1, 5, 12, 12\]"):
        kernel(_nhwc(np.zeros((1, 5, 12, 12), np.float32)))  # 5 input channels for weights of 4
    with pytest.raises(PlanError, match="conv.dnnl cannot run node .* oneDNN says invalid arguments"):
        kernel(_nhwc(np.zeros((1, 4, 1, 1), np.float32)))  # smaller than the unpadded 3x3 kernel


def test_a_missing_onednn_wheel_names_the_package_to_install(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(dnnl.metadata, "distribution", missing)
    dnnl.dnnl_paths.cache_clear()
    try:
        with pytest.raises(dnnl.DnnlUnavailable, match="pip install onednn-cpu-gomp==2023.2.0"):
            dnnl.dnnl_paths()
    finally:
        dnnl.dnnl_paths.cache_clear()


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("kw", [dict(cin=512, cout=128, k=1, pads=(0, 0, 0, 0), hw=(6, 6)),
                                dict(cin=64, cout=96, k=1, pads=(0, 0, 0, 0), hw=(7, 5)),
                                dict(cin=32, cout=48, hw=(5, 5))])
def test_onednn_writes_nothing_past_the_output_or_the_scratchpad(precision, kw):
    # oneDNN 3.2's int8 1x1 AMX kernel wrote 1536 bytes past a 6x6x128 output; _dnnl.c skips it. Canary bytes
    # after each buffer must survive a call (on CPUs without AMX the kernel is never picked)
    node = conv_layer(**kw).node
    geo = dnnl.ConvGeometry.of(node)
    w_shape = (geo.out_channels, geo.in_channels // geo.groups, *geo.kernel)
    scales = np.ones(geo.out_channels, dtype=np.float32)
    if precision == "int8":
        p = dnnl._Primitive(node, geo, node.in_shape, np.ones(w_shape, np.int8), None, 0, 0.0, 0.0,
                            dnnl._Quant(1.0, 1.0, 3, 0, scales.ctypes.data))
        size = 1
    else:
        p = dnnl._Primitive(node, geo, node.in_shape, np.ones(w_shape, np.float32), None, 0, 0.0, 0.0)
        size = 4
    out_bytes, slack = int(np.prod(p.out_shape)) * size, 1 << 14
    x = torch.zeros(int(np.prod(node.in_shape)) * size, dtype=torch.uint8)
    y = torch.full((out_bytes + slack,), 77, dtype=torch.uint8)
    scratch = torch.full((p.scratch_bytes + slack,), 77, dtype=torch.uint8)
    assert dnnl.library().pp_dnnl_conv_run(p.handle, x.data_ptr(), y.data_ptr(), scratch.data_ptr(), 1.0, 3,
                                             None) == 0
    assert bool((y[out_bytes:] == 77).all()) and bool((scratch[p.scratch_bytes:] == 77).all()), p.impl
    assert p.impl != "jit_1x1:avx512_core_amx"


def test_recorded_calls_replay_back_to_back_into_the_same_outputs():
    layers = [conv_layer(cin=8, cout=16, stride=(2, 2), hw=(11, 11)), conv_layer(cin=16, cout=8, k=1,
                                                                                pads=(0, 0, 0, 0), hw=(6, 7))]
    kernels = [get_primitive("conv.dnnl").build(la.node, la.weights, BuildContext(layout="NHWC")) for la in layers]
    with dnnl.recorded_calls() as calls:
        ys = [k(_nhwc(la.x)) for k, la in zip(kernels, layers)]
    kernels[0](_nhwc(layers[0].x))  # outside the block: not recorded
    assert len(calls) == 2 and all(c[2] is y for c, y in zip(calls, ys))
    expected = [y.clone() for y in ys]
    for y in ys:
        y.zero_()
    chain = dnnl.call_chain(calls)
    chain()
    for y, e in zip(ys, expected):
        torch.testing.assert_close(y, e, rtol=0, atol=0)
    assert rel_err(ys[0].numpy(), layers[0].expected) <= 1e-5


def test_the_glue_builds_without_openmp_when_the_compiler_has_none(monkeypatch):
    # (a clang without libomp): the (de)quantisation loops then run on one thread, with the same values
    from perfpredict.primitives.cbuild import CompilerError

    real, flags_seen = dnnl.load_library, []

    def no_openmp(source, flags, **kwargs):
        flags_seen.append(tuple(flags))
        if "-fopenmp" in flags:
            raise CompilerError("compiling _dnnl.c with cc failed: omp.h: No such file or directory")
        return real(source, flags, **kwargs)

    monkeypatch.setattr(dnnl, "load_library", no_openmp)
    dnnl.library.cache_clear()
    try:
        lib = dnnl.library()
        assert len(flags_seen) == 2 and "-fopenmp" not in flags_seen[-1]
        x = torch.linspace(-9, 9, 70001)
        q = torch.empty(x.shape, dtype=torch.uint8)
        lib.pp_quantize_u8(lib.pp_quant_isa(), x.data_ptr(), q.data_ptr(), x.numel(), 0.05, 120)
        torch.testing.assert_close(q, torch.quantize_per_tensor(x, 0.05, 120, torch.quint8).int_repr(), rtol=0, atol=0)
    finally:
        dnnl.library.cache_clear()


VBMI = dnnl.library().pp_table_isa() == 1


def test_the_table_loops_map_every_byte_as_a_lookup_does():
    rng = np.random.default_rng(0)
    table = rng.integers(0, 256, 256, dtype=np.uint8)
    for n in (0, 1, 63, 64, 65, 1000, 70_001):  # tails, and a tensor the threads split
        x = rng.integers(0, 256, n, dtype=np.uint8)
        for isa in sorted({0, dnnl.library().pp_table_isa()}):
            y = x.copy()
            dnnl.library().pp_table_u8(isa, y.ctypes.data, n, table.ctypes.data)
            np.testing.assert_array_equal(y, table[x])


def _swish_layer():
    layer = conv_layer(cin=8, cout=16, stride=(1, 1), hw=(12, 12), pads=(1, 1, 1, 1))
    pre = choose_qparams(float(layer.expected.min()), float(layer.expected.max()))
    swish = torch.nn.functional.silu(torch.from_numpy(layer.expected)).numpy()
    post = choose_qparams(float(swish.min()), float(swish.max()))
    qx = choose_qparams(float(layer.x.min()), float(layer.x.max()))
    return layer, qx, pre, post, swish


def test_the_swish_table_gives_each_code_the_quantised_swish_of_its_value():
    _, _, pre, post, _ = _swish_layer()
    ctx = BuildContext(layout="NHWC", precision="int8", fused_activation="swish", out_qparams=post,
                       pre_activation_qparams=pre)
    table = dnnl.swish_table(ctx)
    if not VBMI:
        assert table is None  # without VBMI the post-op is cheaper than a byte-wise lookup
        return
    v = (np.arange(256) - pre.zero_point) * pre.scale
    want = np.clip(np.rint(v / (1 + np.exp(-v)) / post.scale + post.zero_point), 0, 255)
    assert table.dtype == np.uint8 and np.abs(table.astype(int) - want).max() <= 1
    assert dnnl.swish_table(BuildContext(layout="NHWC", precision="int8", fused_activation="swish",
                                         out_qparams=post)) is None  # no pre-activation grid: the post-op
    assert dnnl.swish_table(BuildContext(layout="NHWC", precision="int8", fused_activation="swish", out_qparams=post,
                                         pre_activation_qparams=pre, fused_residual=True)) is None


def test_an_int8_swish_through_the_table_stays_within_the_grids_of_the_post_op():
    # the table rounds twice (the convolution's value onto its own grid, its swish onto the output's): within a
    # step of each grid of the float swish, and close to the post-op's codes, which round once
    layer, qx, pre, post, swish = _swish_layer()
    prim = get_primitive("conv.dnnl_int8")
    x = quantize_activation(_nhwc(layer.x), qx)
    table = prim.build(layer.node, layer.weights, BuildContext(layout="NHWC", precision="int8", in_qparams=(qx,),
                                                               fused_activation="swish", out_qparams=post,
                                                               pre_activation_qparams=pre))(x)
    post_op = prim.build(layer.node, layer.weights, BuildContext(layout="NHWC", precision="int8", in_qparams=(qx,),
                                                                 fused_activation="swish", out_qparams=post))(x)
    assert (table.q_scale(), table.q_zero_point()) == (post.scale, post.zero_point)
    err = np.abs(table.dequantize().numpy() - swish).max()
    base = np.abs(post_op.dequantize().numpy() - swish).max()  # the input's and the output's rounding
    assert err <= base + 0.55 * 1.1 * pre.scale + 1e-6  # plus half a step of the value's grid (swish' <= 1.1)
    codes = np.abs(table.int_repr().numpy().astype(int) - post_op.int_repr().numpy().astype(int))
    assert codes.max() <= int(np.ceil(pre.scale / post.scale)) + 1 and np.median(codes) <= 1


def test_the_swish_pass_matches_torchs_silu_on_each_loop():
    rng = np.random.default_rng(0)
    for n in (0, 1, 15, 16, 17, 5000, 40_001):  # tails, and a tensor the threads split
        x = (rng.standard_normal(n) * 8).astype(np.float32)
        x[: min(n, 4)] = [-100.0, 100.0, 0.0, -1.278][: min(n, 4)]
        if n >= 5000:  # the clamp's edges, huge values, inf and NaN (silu(-inf), 0 * inf, is left undefined)
            x[4:13] = [-87.0, -87.5, -88.0, 88.0, 89.0, np.inf, np.nan, 1e30, -1e30]
        want = torch.nn.functional.silu(torch.from_numpy(x)).numpy()
        for isa in (0, 2) if dnnl.library().pp_quant_isa() == 2 else (0,):
            y = x.copy()
            dnnl.library().pp_swish_f32(isa, y.ctypes.data, n)
            np.testing.assert_allclose(y, want, rtol=2e-6, atol=1e-6)


def test_the_swish_pass_is_within_a_few_float_steps_of_the_exact_over_its_whole_range():
    x = np.linspace(-90.0, 90.0, 720_001, dtype=np.float32)
    exact = x.astype(np.float64) / (1.0 + np.exp(-x.astype(np.float64)))
    y = x.copy()
    dnnl.library().pp_swish_f32(dnnl.library().pp_quant_isa(), y.ctypes.data, len(y))
    big = np.abs(exact) > 1e-30  # below that the reciprocal of 1 + exp(-x) is no longer a normal float
    assert np.abs(y[big] - exact[big]).max() <= 6e-7 * np.abs(exact[big]).max()
    assert (np.abs(y[big] - exact[big]) / np.abs(exact[big])).max() < 1e-6


@pytest.mark.parametrize("pixels,channels", [(1, 16), (7, 40), (3000, 32), (900, 1000)])  # tails; threads split
def test_the_swish_pass_with_means_gives_the_swish_and_each_channels_mean(pixels, channels):
    x = (np.random.default_rng(pixels).standard_normal((pixels, channels)) * 4).astype(np.float32)
    want = torch.nn.functional.silu(torch.from_numpy(x)).numpy()
    for isa in (0, 2) if dnnl.library().pp_quant_isa() == 2 else (0,):
        y, mean = x.copy(), np.full(channels, np.nan, dtype=np.float32)
        assert dnnl.library().pp_swish_mean_f32(isa, y.ctypes.data, pixels, channels, mean.ctypes.data) == 0
        np.testing.assert_allclose(y, want, rtol=2e-6, atol=1e-6)
        np.testing.assert_allclose(mean, want.astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-6)
