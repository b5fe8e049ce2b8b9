"""conv.winograd4: Winograd F(4x4, 3x3) in C (correctness against ONNX Runtime for the
shared cases is in test_conv.py with the others)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perfpredict.errors import PlanError
from perfpredict.primitives import get_primitive
from perfpredict.primitives.winograd4 import winograd_weights
from perfpredict.runtime.kernel import BuildContext
from tests.perfpredict.primitives.onnx_layers import conv_layer, rel_err

NAME = "conv.winograd4"


def _nhwc(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kw", [dict(cin=20, cout=36, hw=(13, 17)),  # channels past one 16-wide pass, cut tiles
                                dict(cin=64, cout=64, hw=(16, 16), batch=2),
                                dict(cin=3, cout=5, pads=(0, 1, 2, 1), hw=(6, 9)),  # asymmetric pads
                                dict(cin=64, cout=100, hw=(10, 11))])  # transformed weights > 1 MiB: not blocked
def test_it_matches_onnxruntime_on_cut_tiles_and_channel_remainders(kw):
    from perfpredict.measure import allocated_peak_of

    layer = conv_layer(**kw)
    prim = get_primitive(NAME)
    kernel = prim.build(layer.node, layer.weights, BuildContext(layout="NHWC"))
    x = _nhwc(layer.x)
    y = kernel(x)
    assert tuple(y.shape) == layer.node.out_shape and y.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(y.numpy(), layer.expected) <= 1e-5
    # the declared scratch is what a call takes from torch's allocator beside its output, in either mode
    assert prim.workspace_bytes(layer.node, "fp32", "NHWC") == allocated_peak_of(lambda: kernel(x)) - y.numel() * 4


@pytest.mark.parametrize("act,lo,hi", [(None, -np.inf, np.inf), ("relu", 0.0, np.inf), ("relu6", 0.0, 6.0)])
def test_a_folded_residual_is_added_before_the_clamp(act, lo, hi):
    layer = conv_layer(cin=24, cout=24, hw=(10, 10), seed=5)
    r = np.random.default_rng(1).standard_normal(layer.expected.shape).astype(np.float32) * 4
    prim = get_primitive(NAME)
    assert prim.folds(act, residual=True) and not prim.folds("swish")
    kernel = prim.build(layer.node, layer.weights, BuildContext(layout="NHWC", fused_activation=act,
                                                               fused_residual=True))
    y = kernel(_nhwc(layer.x), _nhwc(r)).numpy()
    assert rel_err(y, np.clip(layer.expected + r, lo, hi)) <= 1e-5


def test_transformed_weights_reproduce_the_kernel_through_the_interpolation_points():
    # G g G^T evaluated back at the F(4x4, 3x3) points: for a kernel of ones every transformed position is the
    # product of the row and column sums of G, so the transform is a separable outer product
    w = np.random.default_rng(0).standard_normal((2, 3, 3, 3)).astype(np.float32)
    u = winograd_weights(w)
    assert u.shape == (36, 3, 2)
    assert np.allclose(u[0], w[:, :, 0, 0].T / 16, atol=1e-6)  # position (0, 0): g[0, 0] / 4 / 4
    assert np.allclose(u[35], w[:, :, 2, 2].T, atol=1e-6)  # position (5, 5): g[2, 2]


def test_bad_layout_precision_shape_and_residual_are_plan_errors():
    layer = conv_layer(cin=4, cout=4)
    prim = get_primitive(NAME)
    with pytest.raises(PlanError, match="runs in layouts"):
        prim.build(layer.node, layer.weights, BuildContext(layout="NCHW"))
    with pytest.raises(PlanError, match="at fp32, not NHWC at int8"):
        prim.build(layer.node, layer.weights, BuildContext(layout="NHWC", precision="int8"))
    s2 = conv_layer(cin=4, cout=4, stride=(2, 2)).node
    with pytest.raises(PlanError, match="3x3 stride-1"):
        prim.build(s2, layer.weights, BuildContext(layout="NHWC"))
    kernel = prim.build(layer.node, layer.weights, BuildContext(layout="NHWC"))
    with pytest.raises(PlanError, match="float32 input"):
        kernel(_nhwc(layer.x).double())
    with pytest.raises(PlanError, match=r"takes \(N, 4, H, W\) input, got \[1, 5, 12, 12\]"):
        kernel(_nhwc(np.zeros((1, 5, 12, 12), np.float32)))
    valid = conv_layer(cin=4, cout=4, pads=(0, 0, 0, 0))
    with pytest.raises(PlanError, match="smaller than its padded 3x3 kernel"):
        prim.build(valid.node, valid.weights, BuildContext(layout="NHWC"))(_nhwc(np.zeros((1, 4, 2, 2), np.float32)))
    with pytest.raises(PlanError, match="a residual was passed to a kernel built without one"):
        kernel(_nhwc(layer.x), _nhwc(layer.expected))
