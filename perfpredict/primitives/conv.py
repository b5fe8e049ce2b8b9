"""fp32 convolution primitives: nine genuinely different implementations of a 2-D ``Conv`` node.

=================  ===========================================================================  ===========
name               algorithm                                                                    layouts
=================  ===========================================================================  ===========
conv.onednn        oneDNN (ideep) via ``aten::mkldnn_convolution``, always (default, rank 0)     NCHW, NHWC
conv.onednn_packed oneDNN with weights reordered once at build, activation as a post-op          NHWC
conv.native        ATen's own path with oneDNN disabled (THNN slow_conv2d: im2col + BLAS)        NCHW
conv.im2col        ``F.unfold`` + one (batched over groups) BLAS GEMM, written here              NCHW
conv.winograd      Winograd F(2x2, 3x3): 16 batched GEMMs over channels, written here            NCHW
conv.fft           FFT correlation (rfft2 / complex batched GEMM over frequencies / irfft2)      NCHW
conv.gemm1x1       a 1x1 stride-1 unpadded conv as one GEMM                                     NCHW, NHWC
conv.depthwise     per-channel multiply-accumulate of kh*kw shifted strided views               NCHW, NHWC
conv.reference     plain C direct loops at -O2, single-threaded (the vanilla baseline)          NCHW
=================  ===========================================================================  ===========

Why conv.onednn calls ``aten::mkldnn_convolution`` rather than ``F.conv2d``: with oneDNN enabled,
``F.conv2d`` still dispatches 1x1 stride-1 convolutions at batch 1 on one thread, and small inputs, to
ATen's THNN path, so it would be the same code as conv.native exactly where the choice matters. The op
called here is the one ``F.conv2d`` dispatches to when it does pick oneDNN.

conv.onednn_packed is what an inference engine does with oneDNN: the weights are reordered once, when the
kernel is built, into the blocked format oneDNN picks for this input shape
(``torch._C._nn.mkldnn_reorder_conv2d_weight``), and each call runs ``mkldnn::_convolution_pointwise`` with
a relu or clamp (``hardtanh``) fused as a oneDNN post-op. conv.onednn reorders the plain weights on every
call, which costs most in deep layers with few pixels and many channels. With packed weights oneDNN
writes channels-last output whatever the input's format, so this primitive runs in NHWC only.

A tenth, conv.dnnl (:mod:`perfpredict.primitives.dnnl`), runs the same oneDNN convolution through oneDNN's C
API instead of torch, without torch's per-call overhead; its int8 twin, conv.dnnl_int8, lives there too.

Every kernel takes the logically-NCHW input in the layout's memory format and returns its output in the
same format, with the bias added and ``ctx.fused_activation`` applied. Channel counts come from the
weights (which may be pruned), geometry from the node. ``workspace_bytes`` is a call's peak of temporary
memory less its input, output and original weights (transformed weights included), fitted to torch's
allocator: where the peak comes before the output is allocated, the output's size is subtracted from it, so
that the peak-memory estimate, which holds the output for the whole step, adds up to the measured peak. It is
computed from the node's shapes.
"""

from __future__ import annotations

import ctypes
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F

from perfpredict.errors import PlanError
from perfpredict.graph import Node
from perfpredict.primitives.epilogue import ELTWISE, Clamp, parse_activation, split_activation
from perfpredict.primitives.reference import library
from perfpredict.primitives.registry import Primitive, register
from perfpredict.runtime.kernel import BuildContext, Kernel

_F32 = 4
_C64 = 8


@dataclass(frozen=True)
class ConvGeometry:
    """The geometry of a 2-D convolution: channels, kernel, stride, pads (top, left, bottom, right), dilation."""

    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int

    @classmethod
    def of(cls, node: Node, weight_shape: tuple[int, ...] | None = None) -> "ConvGeometry":
        """Geometry of ``node``; channel counts from ``weight_shape`` (pruned weights) when given.

        A depthwise node stays depthwise when its channels were pruned: its groups follow the weights.
        """
        a = node.attrs
        groups = int(a["groups"])
        depthwise = groups == a["in_channels"] == a["out_channels"]
        if weight_shape is None:
            k, c = int(a["out_channels"]), int(a["in_channels"])
        else:
            k = int(weight_shape[0])
            if depthwise:
                groups = k
            c = int(weight_shape[1]) * groups
        pt, pl, pb, pr = (tuple(a["pads"]) + (0, 0, 0, 0))[:4]
        return cls(c, k, tuple(a["kernel"]), tuple(a["stride"]), (pt, pl, pb, pr), tuple(a["dilation"]), groups)

    @property
    def symmetric_padding(self) -> tuple[int, int] | None:
        """(pad_h, pad_w) when top == bottom and left == right, else None."""
        pt, pl, pb, pr = self.pads
        return (pt, pl) if (pt, pl) == (pb, pr) else None

    @property
    def is_depthwise(self) -> bool:
        """groups == in_channels == out_channels."""
        return self.groups == self.in_channels == self.out_channels

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        """Output height and width for an ``h`` x ``w`` input."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        pt, pl, pb, pr = self.pads
        return ((h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1)


def is_conv2d(node: Node) -> bool:
    """A Conv node with a 2-D kernel on a 4-D input."""
    return node.op == "Conv" and len(node.attrs.get("kernel", ())) == 2 and len(node.in_shape) == 4


def _onednn_applies(node: Node) -> bool:
    return is_conv2d(node) and torch.backends.mkldnn.is_available()


def conv_weights(weights: Mapping[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Owned float32 torch copies of ``weights["weight"]`` and ``weights.get("bias")``."""
    if "weight" not in weights:
        raise PlanError(f"a Conv kernel needs a 'weight' array; got keys {sorted(weights)}")
    w = torch.from_numpy(np.array(weights["weight"], dtype=np.float32, order="C"))
    b = weights.get("bias")
    return w, (None if b is None else torch.from_numpy(np.array(b, dtype=np.float32, order="C")))


def memory_format(layout: str) -> torch.memory_format:
    """torch memory format of a layout name (NHWC = channels_last)."""
    return torch.channels_last if layout == "NHWC" else torch.contiguous_format


def _check_layout(name: str, ctx: BuildContext, layouts: tuple[str, ...]) -> None:
    if ctx.layout not in layouts or ctx.precision != "fp32":
        raise PlanError(f"{name} runs in layouts {list(layouts)} at fp32, not {ctx.layout} at {ctx.precision}")


def _pad_asymmetric(x: torch.Tensor, geo: ConvGeometry) -> torch.Tensor:
    pt, pl, pb, pr = geo.pads
    return F.pad(x, (pl, pr, pt, pb))


def _add_bias_(y: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return y if b is None else y.add_(b.view(1, -1, 1, 1))


def _shape(node: Node) -> tuple[int, int, int, int, int, int]:
    n, c, h, w = node.in_shape
    oh, ow = node.out_shape[2:]
    return n, c, h, w, oh, ow


def _prepad_bytes(node: Node, geo: ConvGeometry) -> int:
    if geo.symmetric_padding is not None:
        return 0
    n, c, h, w, _, _ = _shape(node)
    pt, pl, pb, pr = geo.pads
    return n * c * (h + pt + pb) * (w + pl + pr) * _F32


# --------------------------------------------------------------------------------------------- conv.onednn


def _onednn_args(geo: ConvGeometry) -> tuple[list[int], list[int], list[int], int]:
    """(padding, stride, dilation, groups) of a oneDNN call; asymmetric pads are applied to the input
    beforehand (:func:`_pad_asymmetric`), so the call gets none."""
    sym = geo.symmetric_padding
    return (list(sym) if sym is not None else [0, 0]), list(geo.stride), list(geo.dilation), geo.groups


def _build_onednn(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    _check_layout("conv.onednn", ctx, ("NCHW", "NHWC"))
    w, b = conv_weights(weights)
    geo = ConvGeometry.of(node, tuple(w.shape))
    fmt = memory_format(ctx.layout)
    w = w.contiguous(memory_format=fmt)
    sym = geo.symmetric_padding
    padding, stride, dilation, groups = _onednn_args(geo)
    act = parse_activation(ctx.fused_activation)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=fmt)
        if sym is None:
            x = _pad_asymmetric(x, geo)
        return act.apply_(torch.mkldnn_convolution(x, w, b, padding, stride, dilation, groups))

    return kernel


def _ws_onednn(node: Node, precision: str, layout: str) -> int:
    # measured with torch's allocator: every call reorders the plain weights into oneDNN's blocked layout. In
    # NHWC that and a small scratchpad are all. From NCHW oneDNN works in blocks of ONEDNN_BLOCK channels (16 with
    # AVX-512, 8 with AVX2): it reorders the input into them (dense convolutions with fewer input channels than a
    # block read it as it is) and the weights into
    # blocks, computes into a blocked output, frees the blocked input and copies the output back into the plain
    # one. Beside the plain output the call so holds the larger of (blocked input + weights + blocked output)
    # and (blocked output + plain output) less the plain output: with channel counts that fill whole blocks,
    # max(weights + blocked input, blocked output); with the odd counts pruning leaves, more (exact to a few
    # hundred bytes for dense and depthwise convolutions; grouped ones with a channel multiplier are rougher)
    geo = ConvGeometry.of(node)
    kh, kw = geo.kernel
    n, c, h, w, oh, ow = _shape(node)
    cin_group = geo.in_channels // geo.groups
    if layout == "NHWC":
        return geo.out_channels * cin_group * kh * kw * _F32 + _onednn_scratch(geo) + _prepad_bytes(node, geo)
    b = _BLOCK.get()
    padded_in = _blocks(cin_group) if geo.groups == 1 and cin_group >= b else cin_group
    weights = _blocks(geo.out_channels) * padded_in * kh * kw * _F32
    blocked_input = n * _blocks(c) * h * w * _F32 if c >= b or geo.groups > 1 else 0
    blocked_output = n * _blocks(geo.out_channels) * oh * ow * _F32
    plain_output = n * geo.out_channels * oh * ow * _F32
    held = max(blocked_input + weights + blocked_output, blocked_output + plain_output) - plain_output
    return held + _prepad_bytes(node, geo)


_ONEDNN_SCRATCH = 12 * 1024  # oneDNN's per-call scratchpad beside the reordered weights (12-24 KiB measured)


def _onednn_scratch(geo: ConvGeometry) -> int:
    """oneDNN's per-call scratchpad in NHWC (packed weights or not): none for depthwise convolutions, nor for other
    grouped ones with AVX-512 (its AVX2 kernels take one for them)."""
    depthwise = geo.groups > 1 and geo.groups == geo.in_channels
    return 0 if depthwise or (geo.groups > 1 and _BLOCK.get() == 16) else _ONEDNN_SCRATCH


ONEDNN_BLOCK = 16 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 8
"""Channels per block of oneDNN's blocked format on this CPU: 16 floats (nChw16c) with AVX-512, 8 (nChw8c) on an
AVX2-only CPU. The workspace estimates take it unless :func:`blocked_as` names another device's."""

_BLOCK: ContextVar[int] = ContextVar("onednn_block", default=ONEDNN_BLOCK)


def onednn_block(isa_features: Sequence[str]) -> int:
    """The block of oneDNN's blocked format on an x86 CPU with ``isa_features`` (16 with AVX-512, else 8); the
    machine at hand's (:data:`ONEDNN_BLOCK`) when the list is empty or names no x86 extension."""
    isa = set(isa_features)
    if "avx512f" in isa:
        return 16
    return 8 if isa & {"avx2", "avx", "sse4_2"} else ONEDNN_BLOCK


@contextmanager
def blocked_as(block: int) -> Iterator[None]:
    """Within the block, oneDNN workspace estimates (``workspace_bytes`` of ``conv.onednn`` and ``conv.dnnl``)
    take ``block`` channels per block: another device's, for predictions made on this machine."""
    token = _BLOCK.set(block)
    try:
        yield
    finally:
        _BLOCK.reset(token)


def _blocks(channels: int) -> int:
    b = _BLOCK.get()
    return -(-channels // b) * b


# --------------------------------------------------------------------------------------------- conv.onednn_packed


def _post_op(spec: str | None) -> tuple[str, list[float], Clamp]:
    """oneDNN post-op (name, scalars) for a fused activation spec, plus the clamp left to apply after the call."""
    eltwise, act = split_activation(spec)
    if eltwise is not None:
        return eltwise, [], Clamp()
    if act.is_identity:
        return "none", [], Clamp()
    if act.is_relu:
        return "relu", [], Clamp()
    if act.lo != -np.inf and act.hi != np.inf:
        return "hardtanh", [float(act.lo), float(act.hi)], Clamp()
    return "none", [], act  # a one-sided clamp other than relu: applied after the call


def _build_onednn_packed(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    _check_layout("conv.onednn_packed", ctx, ("NHWC",))
    w, b = conv_weights(weights)
    geo = ConvGeometry.of(node, tuple(w.shape))
    fmt = torch.channels_last
    sym = geo.symmetric_padding
    padding, stride, dilation, groups = _onednn_args(geo)
    n, _, h, wd = node.in_shape
    if sym is None:
        pt, pl, pb, pr = geo.pads
        h, wd = h + pt + pb, wd + pl + pr
    packed = torch._C._nn.mkldnn_reorder_conv2d_weight(w.to_mkldnn(), padding, stride, dilation, groups,
                                                       [n, geo.in_channels, h, wd])
    attr, scalars, rest = _post_op(ctx.fused_activation)
    conv = torch.ops.mkldnn._convolution_pointwise

    def kernel(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=fmt)
        if sym is None:
            x = _pad_asymmetric(x, geo)
        return rest.apply_(conv(x, packed, b, padding, stride, dilation, groups, attr, scalars, ""))

    return kernel


def _ws_onednn_packed(node: Node, precision: str, layout: str) -> int:
    # the weights are packed once at build (they are deployed weights, not per-call memory); what a call adds is
    # oneDNN's scratchpad and the padded copy of the input when the pads are asymmetric
    geo = ConvGeometry.of(node)
    return _onednn_scratch(geo) + _prepad_bytes(node, geo)


# --------------------------------------------------------------------------------------------- conv.native


@contextmanager
def mkldnn_disabled() -> Iterator[None]:
    """Disable oneDNN in ATen for the duration (restoring the previous setting), so ATen takes its own path."""
    prev = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = prev


def _build_native(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    _check_layout("conv.native", ctx, ("NCHW",))
    w, b = conv_weights(weights)
    geo = ConvGeometry.of(node, tuple(w.shape))
    sym = geo.symmetric_padding
    padding = sym if sym is not None else (0, 0)
    act = parse_activation(ctx.fused_activation)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        if sym is None:
            x = _pad_asymmetric(x, geo)
        with mkldnn_disabled():
            y = F.conv2d(x, w, b, geo.stride, padding, geo.dilation, geo.groups)
        return act.apply_(y)

    return kernel


def _ws_native(node: Node, precision: str, layout: str) -> int:
    # THNN's column buffer: per batch (all images) for slow_conv2d, per image for the dilated variant;
    # slow_conv2d skips it for unpadded stride-1 1x1 convolutions. Grouped convs hold, beside the output, the
    # larger of one group's columns and one output-sized buffer (measured with torch's allocator: the output
    # copy for depthwise convolutions, the columns for two groups of 16 channels).
    geo = ConvGeometry.of(node)
    n, c, _, _, oh, ow = _shape(node)
    kh, kw = geo.kernel
    cols = (c // geo.groups) * kh * kw * oh * ow * _F32
    grouped = n * geo.out_channels * oh * ow * _F32 if geo.groups > 1 else 0
    if geo.dilation != (1, 1):
        return cols + grouped + _prepad_bytes(node, geo)
    if (kh, kw) == (1, 1) and geo.stride == (1, 1) and not any(geo.pads):
        return grouped
    return max(n * cols, grouped) + _prepad_bytes(node, geo)


# --------------------------------------------------------------------------------------------- conv.im2col


def _build_im2col(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    _check_layout("conv.im2col", ctx, ("NCHW",))
    w, b = conv_weights(weights)
    geo = ConvGeometry.of(node, tuple(w.shape))
    g, k = geo.groups, geo.out_channels
    kh, kw = geo.kernel
    w3 = w.reshape(g, k // g, -1).contiguous()  # (G, K/G, C/G*kh*kw)
    w2 = w3[0] if g == 1 else None
    bias_col = None if b is None else b.view(k, 1)
    sym = geo.symmetric_padding
    padding = sym if sym is not None else (0, 0)
    act = parse_activation(ctx.fused_activation)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        if sym is None:
            x = _pad_asymmetric(x, geo)
        n, _, h, wd = x.shape
        ph, pw = padding
        oh = (h + 2 * ph - geo.dilation[0] * (kh - 1) - 1) // geo.stride[0] + 1
        ow = (wd + 2 * pw - geo.dilation[1] * (kw - 1) - 1) // geo.stride[1] + 1
        cols = F.unfold(x, (kh, kw), dilation=geo.dilation, padding=padding, stride=geo.stride)  # (N, C*kh*kw, L)
        if w2 is not None and n == 1:
            y = torch.mm(w2, cols[0]) if bias_col is None else torch.addmm(bias_col, w2, cols[0])
            return act.apply_(y.view(1, k, oh, ow))
        if w2 is not None:
            y = torch.matmul(w2, cols)
        else:
            y = torch.matmul(w3, cols.view(n, g, -1, cols.shape[-1]))  # (N, G, K/G, L)
        return act.apply_(_add_bias_(y.reshape(n, k, oh, ow), b))

    return kernel


def _ws_im2col(node: Node, precision: str, layout: str) -> int:
    # measured with torch's allocator: F.unfold allocates its result at the size of its input and then grows it
    # to the columns, so both exist for a moment when the columns are the larger (strided convolutions
    # especially), and the buffer stays input-sized when they are the smaller; the output comes after the columns
    geo = ConvGeometry.of(node)
    n, c, h, w, oh, ow = _shape(node)
    kh, kw = geo.kernel
    cols = n * c * kh * kw * oh * ow * _F32
    prepad = _prepad_bytes(node, geo)
    unfold_in = prepad or n * c * h * w * _F32
    out = n * geo.out_channels * oh * ow * _F32
    held = max(unfold_in + cols - out, cols) if cols > unfold_in else unfold_in
    return held + prepad


# --------------------------------------------------------------------------------------------- conv.winograd

# F(2x2, 3x3): Y = A^T [ (G g G^T) . (B^T d B) ] A on 4x4 input tiles taken with stride 2
_WINO_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def _winograd_applies(node: Node) -> bool:
    a = node.attrs
    return (is_conv2d(node) and tuple(a["kernel"]) == (3, 3) and tuple(a["stride"]) == (1, 1)
            and tuple(a["dilation"]) == (1, 1) and a["groups"] == 1)


def winograd_weight_transform(w: np.ndarray) -> torch.Tensor:
    """U = G g G^T for every (k, c) of a K x C x 3 x 3 weight, as a (16, K, C) float32 tensor (tile index i*4+j)."""
    u = np.einsum("ia,kcab,jb->ijkc", _WINO_G, w.astype(np.float64), _WINO_G)
    return torch.from_numpy(np.ascontiguousarray(u.reshape(16, w.shape[0], w.shape[1]), dtype=np.float32))


def _input_transform(d: torch.Tensor) -> torch.Tensor:
    """B^T d B for tiles d viewed as (4 rows, 4 cols, ...); returns a contiguous (4, 4, ...) tensor."""
    rest = d.shape[2:]
    r = torch.empty((4, 4, *rest), dtype=d.dtype)  # (col, row, ...): d B along columns first
    torch.sub(d[:, 0], d[:, 2], out=r[0])
    torch.add(d[:, 1], d[:, 2], out=r[1])
    torch.sub(d[:, 2], d[:, 1], out=r[2])
    torch.sub(d[:, 1], d[:, 3], out=r[3])
    v = torch.empty((4, 4, *rest), dtype=d.dtype)  # (row, col, ...): then B^T along rows
    torch.sub(r[:, 0], r[:, 2], out=v[0])
    torch.add(r[:, 1], r[:, 2], out=v[1])
    torch.sub(r[:, 2], r[:, 1], out=v[2])
    torch.sub(r[:, 1], r[:, 3], out=v[3])
    return v


def _output_transform(m: torch.Tensor, out: torch.Tensor) -> None:
    """A^T m A for m viewed as (4 rows, 4 cols, ...), written into ``out`` viewed as (2 rows, 2 cols, ...)."""
    s = torch.empty((2, 4, *m.shape[2:]), dtype=m.dtype)  # (col, row, ...)
    torch.add(m[:, 0], m[:, 1], out=s[0]).add_(m[:, 2])
    torch.sub(m[:, 1], m[:, 2], out=s[1]).sub_(m[:, 3])
    torch.add(s[:, 0], s[:, 1], out=out[0]).add_(s[:, 2])
    torch.sub(s[:, 1], s[:, 2], out=out[1]).sub_(s[:, 3])


def _build_winograd(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    _check_layout("conv.winograd", ctx, ("NCHW",))
    if not _winograd_applies(node):
        raise PlanError(f"conv.winograd needs a 3x3 stride-1 undilated dense conv; node '{node.name}' is not")
    w, b = conv_weights(weights)
    k = w.shape[0]
    u = winograd_weight_transform(w.numpy())
    pt, pl, pb, pr = ConvGeometry.of(node, tuple(w.shape)).pads
    act = parse_activation(ctx.fused_activation)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        n, c, h, wd = x.shape
        oh, ow = h + pt + pb - 2, wd + pl + pr - 2
        th, tw = (oh + 1) // 2, (ow + 1) // 2
        xp = F.pad(x.contiguous(), (pl, 2 * tw + 2 - wd - pl, pt, 2 * th + 2 - h - pt))
        d = xp.unfold(2, 4, 2).unfold(3, 4, 2).permute(4, 5, 1, 0, 2, 3)  # (4, 4, C, N, th, tw) view
        v = _input_transform(d).view(16, c, n * th * tw)
        m = torch.bmm(u, v).view(4, 4, k, n, th, tw)
        y = torch.empty((n, k, th, 2, tw, 2), dtype=x.dtype)
        _output_transform(m, y.permute(3, 5, 1, 0, 2, 4))
        y = y.view(n, k, 2 * th, 2 * tw)
        if (2 * th, 2 * tw) != (oh, ow):
            y = y[:, :, :oh, :ow].contiguous()
        return act.apply_(_add_bias_(y, b))

    return kernel


def _ws_winograd(node: Node, precision: str, layout: str) -> int:
    n, c, h, w, oh, ow = _shape(node)
    k = node.attrs["out_channels"]
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    p = n * th * tw
    padded = n * c * (2 * th + 2) * (2 * tw + 2)
    # the padded input lives throughout; beside it the two input-transform buffers, then the transformed input,
    # the products and the column-transformed products while the output transform writes the output (an
    # uncropped temporary when the output is cropped, the cropped copy made after the column buffer is freed);
    # the transformed weights are made once at build. Beside the output, which does not exist yet in the first
    # phase (nor in the second when it is cropped), exact against torch's allocator.
    out = n * k * oh * ow
    uncropped = 4 * k * p
    transform_in = 2 * 16 * c * p - out
    if (2 * th, 2 * tw) == (oh, ow):
        transform_out, crop = 16 * c * p + 24 * k * p, 0
    else:
        transform_out, crop = 16 * c * p + 24 * k * p + uncropped - out, 16 * c * p + 16 * k * p + uncropped
    return (padded + max(transform_in, transform_out, crop, 0)) * _F32


# --------------------------------------------------------------------------------------------- conv.fft


def _fft_applies(node: Node) -> bool:
    # A 1x1 kernel gains nothing from the frequency domain and its spectra cost ~200x the weights.
    a = node.attrs
    return (is_conv2d(node) and a["groups"] == 1 and tuple(a["dilation"]) == (1, 1)
            and max(a["kernel"]) >= 3)


def _fft_size(padded_hw: tuple[int, int]) -> tuple[int, int]:
    hp, wp = padded_hw
    return scipy.fft.next_fast_len(hp, real=True), scipy.fft.next_fast_len(wp, real=True)


def _build_fft(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    _check_layout("conv.fft", ctx, ("NCHW",))
    if not _fft_applies(node):
        raise PlanError(f"conv.fft needs an undilated conv with groups 1; node '{node.name}' is not")
    w, b = conv_weights(weights)
    geo = ConvGeometry.of(node, tuple(w.shape))
    k, c, kh, kw = w.shape
    pt, pl, pb, pr = geo.pads
    sh, sw = geo.stride
    _, _, h, wd = node.in_shape
    fh, fw = _fft_size((h + pt + pb, wd + pl + pr))
    # circular cross-correlation of size >= the padded input is exact on the valid outputs:
    # y = irfft2(X . conj(W)); the conjugate weight spectrum is laid out (frequency, K, C) for the batched GEMM
    wf = torch.conj(torch.fft.rfft2(w.double(), s=(fh, fw))).to(torch.complex64)
    wf = wf.permute(2, 3, 0, 1).reshape(-1, k, c).contiguous()
    act = parse_activation(ctx.fused_activation)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        n, _, hh, ww = x.shape
        if (hh, ww) != (h, wd):
            raise PlanError(f"conv.fft kernel of node '{node.name}' was built for {h}x{wd} inputs, got {hh}x{ww}")
        xp = F.pad(x.contiguous(), (pl, pr + fw - (wd + pl + pr), pt, pb + fh - (h + pt + pb)))
        xf = torch.fft.rfft2(xp)  # (N, C, fh, fw//2+1)
        xf = xf.permute(2, 3, 1, 0).reshape(-1, c, n)  # (F, C, N)
        yf = torch.bmm(wf, xf)  # (F, K, N)
        yf = yf.view(fh, fw // 2 + 1, k, n).permute(3, 2, 0, 1)
        full = torch.fft.irfft2(yf, s=(fh, fw))
        oh, ow = geo.out_hw(h, wd)
        y = full[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw].contiguous()
        return act.apply_(_add_bias_(y, b))

    return kernel


def _ws_fft(node: Node, precision: str, layout: str) -> int:
    # measured with torch's allocator: the padded input and its spectrum stay alive through the call; the batched
    # GEMM writes the output spectrum, which irfft2 copies before its destructive complex-to-real pass, while it
    # allocates the full inverse; the copy is freed before the strided output is cut from the inverse. So the call
    # holds, beside its output, the larger of (padded input + both spectra + the copy + inverse - output) and
    # (padded input + both spectra + inverse). The weight spectrum is made once at build, with the weights.
    geo = ConvGeometry.of(node)
    n, c, h, w, oh, ow = _shape(node)
    k = geo.out_channels
    pt, pl, pb, pr = geo.pads
    fh, fw = _fft_size((h + pt + pb, w + pl + pr))
    nf = fh * (fw // 2 + 1)
    kept = n * c * fh * fw * _F32 + n * c * nf * _C64 + n * k * nf * _C64 + n * k * fh * fw * _F32
    return kept + max(n * k * nf * _C64 - n * k * oh * ow * _F32, 0)


# --------------------------------------------------------------------------------------------- conv.gemm1x1


def _gemm1x1_applies(node: Node) -> bool:
    a = node.attrs
    return (is_conv2d(node) and tuple(a["kernel"]) == (1, 1) and tuple(a["stride"]) == (1, 1)
            and not any(a["pads"]) and a["groups"] == 1)


def _build_gemm1x1(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    _check_layout("conv.gemm1x1", ctx, ("NCHW", "NHWC"))
    if not _gemm1x1_applies(node):
        raise PlanError(f"conv.gemm1x1 needs a 1x1 stride-1 unpadded dense conv; node '{node.name}' is not")
    w, b = conv_weights(weights)
    k, c = w.shape[:2]
    act = parse_activation(ctx.fused_activation)
    if ctx.layout == "NCHW":
        w2 = w.reshape(k, c).contiguous()
        bias_col = None if b is None else b.view(k, 1)

        def kernel(x: torch.Tensor) -> torch.Tensor:
            n, _, h, wd = x.shape
            x = x.contiguous()
            if n == 1:
                xm = x.view(c, h * wd)
                y = torch.mm(w2, xm) if bias_col is None else torch.addmm(bias_col, w2, xm)
            else:
                y = torch.matmul(w2, x.view(n, c, h * wd))
                if bias_col is not None:
                    y.add_(bias_col)
            return act.apply_(y.view(n, k, h, wd))

        return kernel

    wt = w.reshape(k, c).t().contiguous()  # (C, K)

    def kernel_nhwc(x: torch.Tensor) -> torch.Tensor:
        n, _, h, wd = x.shape
        xm = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(n * h * wd, c)
        y = torch.mm(xm, wt) if b is None else torch.addmm(b, xm, wt)
        return act.apply_(y.view(n, h, wd, k).permute(0, 3, 1, 2))

    return kernel_nhwc


# --------------------------------------------------------------------------------------------- conv.depthwise


def _depthwise_applies(node: Node) -> bool:
    a = node.attrs
    return is_conv2d(node) and a["groups"] == a["in_channels"] == a["out_channels"]


def _build_depthwise(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    _check_layout("conv.depthwise", ctx, ("NCHW", "NHWC"))
    if not _depthwise_applies(node):
        raise PlanError(f"conv.depthwise needs groups == in == out channels; node '{node.name}' is not depthwise")
    w, b = conv_weights(weights)
    geo = ConvGeometry.of(node, tuple(w.shape))
    c = geo.out_channels
    kh, kw = geo.kernel
    (sh, sw), (dh, dw) = geo.stride, geo.dilation
    pt, pl, pb, pr = geo.pads
    fmt = memory_format(ctx.layout)
    taps = [(u, v, w[:, 0, u, v].reshape(1, c, 1, 1).contiguous()) for u in range(kh) for v in range(kw)]
    bias = None if b is None else b.view(1, c, 1, 1)
    act = parse_activation(ctx.fused_activation)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        n, _, h, wd = x.shape
        oh, ow = geo.out_hw(h, wd)
        x = x.contiguous(memory_format=fmt)
        xp = F.pad(x, (pl, pr, pt, pb)) if any(geo.pads) else x
        y = torch.empty((n, c, oh, ow), dtype=x.dtype).contiguous(memory_format=fmt)
        first = True
        for u, v, wuv in taps:
            r0, c0 = u * dh, v * dw
            view = xp[:, :, r0: r0 + (oh - 1) * sh + 1: sh, c0: c0 + (ow - 1) * sw + 1: sw]
            if first:
                torch.mul(view, wuv, out=y)
                first = False
            else:
                y.addcmul_(view, wuv)
        return act.apply_(y if bias is None else y.add_(bias))

    return kernel


def _ws_depthwise(node: Node, precision: str, layout: str) -> int:
    # the padded input; in NHWC the strided multiply-adds into the channels-last output also go through one
    # output-sized temporary (measured with torch's allocator)
    n, c, h, w, oh, ow = _shape(node)
    pt, pl, pb, pr = node.attrs["pads"]
    padded = n * c * (h + pt + pb) * (w + pl + pr) * _F32 if any(node.attrs["pads"]) else 0
    return padded + (n * c * oh * ow * _F32 if layout == "NHWC" else 0)


# --------------------------------------------------------------------------------------------- conv.reference


def _ptr(t: torch.Tensor | np.ndarray | None) -> ctypes.c_void_p | None:
    if t is None:
        return None
    return ctypes.c_void_p(t.data_ptr() if isinstance(t, torch.Tensor) else t.ctypes.data)


def c_bounds(act: Clamp) -> tuple[float, float]:
    """The clamp as float bounds for the C kernels (infinite when unbounded)."""
    return float(act.lo), float(act.hi)


def _build_reference(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    _check_layout("conv.reference", ctx, ("NCHW",))
    lib = library()
    w, b = conv_weights(weights)
    geo = ConvGeometry.of(node, tuple(w.shape))
    k, _, kh, kw = w.shape
    pt, pl, _, _ = geo.pads
    lo, hi = c_bounds(parse_activation(ctx.fused_activation))

    def kernel(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        if x.dtype != torch.float32:
            raise PlanError(f"conv.reference takes float32 input, got {x.dtype}")
        n, c, h, wd = x.shape
        oh, ow = geo.out_hw(h, wd)
        y = torch.empty((n, k, oh, ow), dtype=torch.float32)
        lib.pp_conv2d_nchw(_ptr(x), n, c, h, wd, _ptr(w), k, kh, kw, _ptr(b), geo.stride[0], geo.stride[1],
                           pt, pl, geo.dilation[0], geo.dilation[1], geo.groups, lo, hi, _ptr(y), oh, ow)
        return y

    return kernel


# --------------------------------------------------------------------------------------------- registration

_DENSE_NOTE = "any 2-D conv (stride, padding incl. asymmetric, dilation, groups)"

register(Primitive(
    name="conv.onednn", ops=("Conv",), layouts=("NCHW", "NHWC"), precisions=("fp32",), build=_build_onednn,
    applies=_onednn_applies, workspace_bytes=_ws_onednn, rank=0,
    description=f"oneDNN (ideep) convolution via aten::mkldnn_convolution; {_DENSE_NOTE}"))
register(Primitive(
    name="conv.onednn_packed", ops=("Conv",), layouts=("NHWC",), precisions=("fp32",),
    build=_build_onednn_packed, applies=_onednn_applies, workspace_bytes=_ws_onednn_packed, rank=2,
    epilogues=ELTWISE,
    description="oneDNN convolution with weights reordered once at build into its blocked format and the "
                "activation (relu/clamp/swish/hardswish/sigmoid) as a post-op (mkldnn::_convolution_pointwise); "
                f"{_DENSE_NOTE}"))
register(Primitive(
    name="conv.native", ops=("Conv",), layouts=("NCHW",), precisions=("fp32",), build=_build_native,
    applies=is_conv2d, workspace_bytes=_ws_native, rank=10,
    description=f"ATen's own convolution with oneDNN disabled (THNN slow_conv2d: im2col + BLAS); {_DENSE_NOTE}"))
register(Primitive(
    name="conv.im2col", ops=("Conv",), layouts=("NCHW",), precisions=("fp32",), build=_build_im2col,
    applies=is_conv2d, workspace_bytes=_ws_im2col, rank=20,
    description=f"F.unfold column buffer + one BLAS GEMM (batched over groups); {_DENSE_NOTE}"))
register(Primitive(
    name="conv.winograd", ops=("Conv",), layouts=("NCHW",), precisions=("fp32",), build=_build_winograd,
    applies=_winograd_applies, workspace_bytes=_ws_winograd, rank=30,
    description="Winograd F(2x2,3x3): transformed tiles, 16 batched GEMMs over channels; 3x3 stride 1, "
                "dilation 1, groups 1, any padding"))
register(Primitive(
    name="conv.fft", ops=("Conv",), layouts=("NCHW",), precisions=("fp32",), build=_build_fft,
    applies=_fft_applies, workspace_bytes=_ws_fft, rank=40,
    description="FFT cross-correlation: rfft2, complex GEMM per frequency over channels, irfft2, crop and "
                "subsample; groups 1, dilation 1, any kernel, stride and padding"))
register(Primitive(
    name="conv.gemm1x1", ops=("Conv",), layouts=("NCHW", "NHWC"), precisions=("fp32",), build=_build_gemm1x1,
    applies=_gemm1x1_applies, rank=5,
    description="1x1 stride-1 unpadded dense conv as one GEMM (NCHW: W @ X[C,HW]; NHWC: X[HW,C] @ W^T)"))
register(Primitive(
    name="conv.depthwise", ops=("Conv",), layouts=("NCHW", "NHWC"), precisions=("fp32",),
    build=_build_depthwise, applies=_depthwise_applies, workspace_bytes=_ws_depthwise, rank=15,
    description="depthwise conv (groups == in == out channels) as kh*kw per-channel multiply-adds of "
                "shifted strided views of the padded input"))
register(Primitive(
    name="conv.reference", ops=("Conv",), layouts=("NCHW",), precisions=("fp32",), build=_build_reference,
    applies=is_conv2d, rank=90,
    description="dependency-free C direct-loop convolution at -O2, single-threaded (the vanilla baseline)"))

__all__ = ["ConvGeometry", "c_bounds", "conv_weights", "is_conv2d", "memory_format", "mkldnn_disabled",
           "winograd_weight_transform"]
