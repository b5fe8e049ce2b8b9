"""int8 conv and fully-connected primitives on fbgemm (``conv.int8``, ``gemm.int8``), and activation quantisation.

Scheme (fbgemm's defaults, as ``torch.ao.quantization.get_default_qconfig("fbgemm")``):

* weights: per-output-channel symmetric qint8 (zero point 0), quantised and prepacked at build;
* activations: per-tensor affine quint8 with **reduce_range** (quantised values in [0, 127]; fbgemm's
  u8 x s8 multiply-adds accumulate pairs in int16 and would saturate on CPUs without VNNI otherwise);
* bias stays float (fbgemm quantises it internally with input_scale * weight_scale).

Kernels take and return quint8 tensors; the output uses ``ctx.out_qparams`` (calibrated by the runtime).
``relu`` is fused in the op (conv2d_relu / linear_relu); other clamps run on the quantised output.
``conv.dnnl_int8`` (:mod:`perfpredict.primitives.dnnl`) runs int8 convolutions on oneDNN in this same scheme.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping

import numpy as np
import torch
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

from perfpredict.errors import PerfPredictError, PlanError
from perfpredict.graph import Graph, Node
from perfpredict.primitives.conv import ConvGeometry, conv_weights, is_conv2d, memory_format
from perfpredict.primitives.epilogue import Clamp, parse_activation
from perfpredict.primitives.gemm import b_is_initializer, gemm_operands
from perfpredict.primitives.registry import Primitive, register
from perfpredict.runtime.kernel import BuildContext, Kernel, QParams

if TYPE_CHECKING:
    from perfpredict.plan import Plan

ENGINE = "fbgemm"
ACTIVATION_QMIN, ACTIVATION_QMAX = 0, 127
"""Quantised activation range: quint8 with fbgemm's reduce_range (7 bits)."""


# --------------------------------------------------------------------------------------------- activations


def choose_qparams(min_val: float, max_val: float) -> QParams:
    """Asymmetric quint8 parameters covering [min_val, max_val] (and 0) in fbgemm's reduced range [0, 127]."""
    if not (math.isfinite(min_val) and math.isfinite(max_val)) or min_val > max_val:
        raise PerfPredictError(f"choose_qparams: need finite min <= max, got min={min_val}, max={max_val}")
    obs = MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine,
                         quant_min=ACTIVATION_QMIN, quant_max=ACTIVATION_QMAX)
    obs(torch.tensor([min_val, max_val], dtype=torch.float32))
    scale, zero_point = obs.calculate_qparams()
    return QParams(float(scale), int(zero_point))


def quantize_activation(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    """``x`` (float) as a per-tensor affine quint8 tensor with ``qp``; the memory format is kept."""
    return torch.quantize_per_tensor(x, qp.scale, qp.zero_point, torch.quint8)


def dequantize(x: torch.Tensor) -> torch.Tensor:
    """A quantised tensor back to float32 (a float tensor is returned unchanged)."""
    return x.dequantize() if x.is_quantized else x


def quantize_weight_per_channel(w: torch.Tensor) -> torch.Tensor:
    """``w`` (float, output channels first) as per-channel symmetric qint8, fbgemm's default weight scheme."""
    obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    obs(w)
    scales, zero_points = obs.calculate_qparams()
    return torch.quantize_per_channel(w, scales.to(torch.float64), zero_points.to(torch.int64), 0, torch.qint8)


def _use_engine() -> None:
    if ENGINE not in torch.backends.quantized.supported_engines:
        raise PerfPredictError(f"int8 primitives need torch's '{ENGINE}' quantised engine, which this build lacks "
                               f"(it has {torch.backends.quantized.supported_engines})")
    torch.backends.quantized.engine = ENGINE


def _check_ctx(name: str, ctx: BuildContext, layouts: tuple[str, ...], node: Node) -> QParams:
    if ctx.precision != "int8" or ctx.layout not in layouts:
        raise PlanError(f"{name} runs at int8 in layouts {list(layouts)}, not {ctx.layout} at {ctx.precision}")
    if ctx.out_qparams is None:
        raise PlanError(f"{name}: node '{node.name}' needs calibrated output qparams (ctx.out_qparams)")
    return ctx.out_qparams


def _epilogue(act: Clamp):
    """(use the relu-fused op, clamp still to apply to the quantised output or None)."""
    fuse_relu = act.lo == 0.0
    rest_lo = None if (fuse_relu or act.lo == -math.inf) else act.lo
    rest_hi = None if act.hi == math.inf else act.hi
    return fuse_relu, (None if rest_lo is None and rest_hi is None else (rest_lo, rest_hi))


def _check_input(name: str, x: torch.Tensor) -> None:
    if x.dtype != torch.quint8:
        raise PlanError(f"{name} takes quint8 activations (see quantize_activation), got {x.dtype}")


# --------------------------------------------------------------------------------------------- conv.int8

DEPTHWISE_FAST_CHANNELS = 8
"""fbgemm runs a depthwise convolution on its specialised kernels only when the channel count is a multiple
of this; any other count takes its generic grouped path (one small GEMM per channel)."""

DEPTHWISE_FALLBACK_SHARE = 1.3e-4
"""Throughput of that generic path as a share of the device's int8 peak (``peak_gops_int8``): the median over
60 synthetic depthwise layers (channels 58-244, kernels 3/5/7, strides 1/2, 1 and 2 threads) on the 2-vCPU
Xeon host was 1.28e-4 (range 1.0e-4 to 1.5e-4), 17-128x the time of the nearby multiple of 8
(``benchmarks/bench_int8_depthwise.py``, ``benchmarks/results/int8_depthwise.md``). The path does a near
constant amount of work per multiply-add, so the cost models scale it with the int8 peak."""


def fbgemm_depthwise(node: Node) -> bool:
    """Whether fbgemm treats ``node`` as a depthwise Conv: 2-D, one input channel per group, one or two
    output channels per group."""
    if node.op != "Conv" or len(node.in_shape) != 4:
        return False
    a = node.attrs
    g = a["groups"]
    return g > 1 and a["in_channels"] == g and a["out_channels"] in (g, 2 * g)


def depthwise_fallback(node: Node, channels: int | None = None) -> bool:
    """Whether ``conv.int8`` runs ``node`` on fbgemm's slow generic path: a depthwise Conv whose channel
    count (``channels``, the count it runs with after pruning; default the node's own) is not a multiple of
    :data:`DEPTHWISE_FAST_CHANNELS`. ``benchmarks/bench_int8_depthwise.py`` measures both paths."""
    return fbgemm_depthwise(node) and bool(misaligned(node.attrs["groups"] if channels is None else channels))


def misaligned(channels: int | np.ndarray) -> bool | np.ndarray:
    """Whether a depthwise channel count (or each of an array of them) misses fbgemm's fast kernels."""
    return np.asarray(channels).astype(np.int64) % DEPTHWISE_FAST_CHANNELS != 0


def depthwise_fallback_nodes(graph: Graph, plan: Plan) -> list[tuple[str, int]]:
    """(node name, channels it runs with) of every depthwise Conv that ``plan`` runs with ``conv.int8`` on
    fbgemm's slow generic path (:func:`depthwise_fallback`), after the plan's pruning."""
    int8 = [n for n in graph.nodes if (c := plan.choices.get(n.name)) is not None and c.primitive == "conv.int8"
            and fbgemm_depthwise(n)]
    if not int8:
        return []
    from perfpredict.runtime.pruning import prune_graph

    ratios = {k: c.prune for k, c in plan.choices.items() if c.prune}
    pruned = prune_graph(graph, ratios).graph if ratios else graph
    kept = [(n.name, pruned.node(n.name).attrs["groups"]) for n in int8]
    return [(name, c) for name, c in kept if misaligned(c)]



def _conv_applies(node: Node) -> bool:
    if not is_conv2d(node):
        return False
    pt, pl, pb, pr = node.attrs["pads"]
    return (pt, pl) == (pb, pr)


def _build_conv(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    out_qp = _check_ctx("conv.int8", ctx, ("NCHW", "NHWC"), node)
    if not _conv_applies(node):
        raise PlanError(f"conv.int8 needs symmetric padding; node '{node.name}' has pads {node.attrs['pads']}")
    _use_engine()
    w, b = conv_weights(weights)
    geo = ConvGeometry.of(node, tuple(w.shape))
    qw = quantize_weight_per_channel(w)
    packed = torch.ops.quantized.conv2d_prepack(qw, b, list(geo.stride), list(geo.pads[:2]), list(geo.dilation),
                                                geo.groups)
    fuse_relu, clamp = _epilogue(parse_activation(ctx.fused_activation))
    op = torch.ops.quantized.conv2d_relu if fuse_relu else torch.ops.quantized.conv2d
    scale, zp = float(out_qp.scale), int(out_qp.zero_point)
    fmt = memory_format(ctx.layout)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        _check_input("conv.int8", x)
        # fbgemm computes in NHWC: an NCHW input is converted inside the op, the NHWC output converted back here
        y = op(x, packed, scale, zp)
        if clamp is not None:
            y = torch.clamp(y, *clamp)
        return y.contiguous(memory_format=fmt)

    return kernel


def _ws_conv(node: Node, precision: str, layout: str) -> int:
    # measured with torch's allocator: fbgemm's int32 accumulators of the whole output, plus, from NCHW, its
    # channels-last copy of the (quint8) input; the int8 weights are packed once, at build, and the im2col it
    # needs is blocked (no whole-layer buffer)
    n, c, h, w = node.in_shape
    return 4 * int(np.prod(node.out_shape)) + (n * c * h * w if layout == "NCHW" else 0)


# --------------------------------------------------------------------------------------------- gemm.int8


def _gemm_applies(node: Node) -> bool:
    return b_is_initializer(node) and (node.op == "MatMul" or not node.attrs.get("trans_a", 0))


def _build_gemm(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    out_qp = _check_ctx("gemm.int8", ctx, ("NCHW",), node)
    if not _gemm_applies(node):
        raise PlanError(f"gemm.int8 needs a weight (initialiser) B operand and no transA; node '{node.name}'")
    _use_engine()
    b_np, c_np = gemm_operands(node, weights)
    if b_np is None or np.ndim(b_np) != 2:
        raise PlanError(f"gemm.int8: node '{node.name}' needs a 2-D weight B")
    at = node.attrs if node.op == "Gemm" else {}
    alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
    b_np = np.asarray(b_np, dtype=np.float32)
    wmat = b_np if at.get("trans_b", 0) else b_np.T  # (N, K), as a linear layer's weight
    n_out = wmat.shape[0]
    bias = None
    if c_np is not None and beta != 0.0:
        c_arr = np.asarray(c_np, dtype=np.float32)
        if c_arr.size not in (1, n_out) or (c_arr.ndim == 2 and c_arr.shape[0] != 1):
            raise PlanError(f"gemm.int8: node '{node.name}' has a bias C of shape {c_arr.shape}; only a scalar or "
                            f"per-output vector (N,) / (1, N) with N={n_out} can be fused")
        bias = torch.from_numpy(np.array(np.broadcast_to(beta * c_arr.reshape(-1), (n_out,)), dtype=np.float32,
                                         order="C"))
    w = torch.from_numpy(np.ascontiguousarray(alpha * wmat, dtype=np.float32))
    packed = torch.ops.quantized.linear_prepack(quantize_weight_per_channel(w), bias)
    fuse_relu, clamp = _epilogue(parse_activation(ctx.fused_activation))
    op = torch.ops.quantized.linear_relu if fuse_relu else torch.ops.quantized.linear
    scale, zp = float(out_qp.scale), int(out_qp.zero_point)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        _check_input("gemm.int8", x)
        y = op(x, packed, scale, zp)
        return y if clamp is None else torch.clamp(y, *clamp)

    return kernel


def _ws_gemm(node: Node, precision: str, layout: str) -> int:
    # estimate: int32 accumulators of the output (the int8 weights are packed once, at build)
    m = int(np.prod(node.out_shape[:-1]))
    n = int(node.out_shape[-1])
    return 4 * m * n


register(Primitive(
    name="conv.int8", ops=("Conv",), layouts=("NCHW", "NHWC"), precisions=("int8",), build=_build_conv,
    applies=_conv_applies, workspace_bytes=_ws_conv, rank=50,
    description="fbgemm int8 convolution (quint8 activations with reduce_range, per-channel qint8 weights, "
                "float bias); groups and depthwise included; symmetric padding only"))
register(Primitive(
    name="gemm.int8", ops=("Gemm", "MatMul"), layouts=("NCHW",), precisions=("int8",), build=_build_gemm,
    applies=_gemm_applies, workspace_bytes=_ws_gemm, rank=50,
    description="fbgemm int8 fully-connected layer (quantized::linear; per-channel qint8 weights, float bias); "
                "B must be a weight, no transA"))

__all__ = ["ACTIVATION_QMAX", "ACTIVATION_QMIN", "ENGINE", "choose_qparams", "dequantize", "quantize_activation",
           "quantize_weight_per_channel"]
