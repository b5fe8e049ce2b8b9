"""Pooling primitives on torch: MaxPool, AveragePool, GlobalAveragePool, ReduceMean (``<op>.torch``).

All run in NCHW and NHWC and at fp32 and int8 (torch's quantised pooling keeps the input's scale). ONNX
pooling semantics differ from torch's only at the edges: asymmetric pads, pads wider than half the
kernel, and ``ceil_mode`` windows that hang past the padded input. Those cases pad explicitly (with
``-inf`` for max; for average, a sum pool divided by a precomputed count map that follows ONNX's
``count_include_pad`` rule), so results match ONNX Runtime exactly; torch's own call is used whenever it
gives the same output shape and semantics.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from perfpredict.graph import Node
from perfpredict.primitives.elementwise import BOTH_LAYOUTS, FP32_INT8, RANK, dequantized_fallback
from perfpredict.primitives.registry import Primitive, register
from perfpredict.runtime.kernel import BuildContext, Kernel


def _is_2d(node: Node) -> bool:
    return len(node.attrs.get("kernel", ())) == 2 and len(node.in_shape) == 4


def _avg_applies(node: Node) -> bool:
    return _is_2d(node) and tuple(node.attrs.get("dilation", (1, 1))) == (1, 1)


def _torch_out(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    """torch's pooling output length (ceil mode drops a window that starts in the right padding)."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def _native_padding(node: Node) -> tuple[int, int] | None:
    """Symmetric padding torch can take directly, if torch's output shape equals the node's; else None."""
    k, s, d, pads = node.attrs["kernel"], node.attrs["stride"], node.attrs["dilation"], node.attrs["pads"]
    if tuple(pads[:2]) != tuple(pads[2:]):
        return None
    ceil = bool(node.attrs.get("ceil_mode", 0))
    for axis in range(2):
        if pads[axis] > k[axis] // 2:  # torch's limit (on the undilated kernel)
            return None
        if _torch_out(node.in_shape[2 + axis], k[axis], s[axis], pads[axis], d[axis], ceil) != \
                node.out_shape[2 + axis]:
            return None
    return int(pads[0]), int(pads[1])


def _explicit_pads(node: Node) -> tuple[list[int], list[int]]:
    """(begin, end) pads per spatial axis such that a floor-mode pool yields the node's output shape.

    ``end`` includes the extra columns that ONNX's ceil mode reads past the padded input.
    """
    k, s, d, pads = node.attrs["kernel"], node.attrs["stride"], node.attrs["dilation"], node.attrs["pads"]
    begin, end = [], []
    for axis in range(2):
        size, out = node.in_shape[2 + axis], node.out_shape[2 + axis]
        need = (out - 1) * s[axis] + d[axis] * (k[axis] - 1) + 1
        begin.append(int(pads[axis]))
        end.append(max(int(pads[2 + axis]), need - size - int(pads[axis])))
    return begin, end


def _build_maxpool(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    k, s, d = tuple(node.attrs["kernel"]), tuple(node.attrs["stride"]), tuple(node.attrs["dilation"])
    native = _native_padding(node)
    if native is not None:
        ceil = bool(node.attrs.get("ceil_mode", 0))
        return lambda x: F.max_pool2d(x, k, s, native, d, ceil)
    begin, end = _explicit_pads(node)
    torch_pads = (begin[1], end[1], begin[0], end[0])

    def padded(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(x, torch_pads, value=-math.inf), k, s, 0, d)

    if ctx.precision == "int8":
        return dequantized_fallback(padded, None)
    return padded


def _avg_count_map(node: Node, begin: list[int], end: list[int]) -> torch.Tensor:
    """Per output position, how many elements ONNX divides by (1 x 1 x OH x OW)."""
    h, w = node.in_shape[2], node.in_shape[3]
    pads = node.attrs["pads"]
    include = bool(node.attrs.get("count_include_pad", 0))
    mask = torch.zeros(1, 1, begin[0] + h + end[0], begin[1] + w + end[1])
    if include:  # the declared pads count, the extra ceil-mode columns do not
        mask[:, :, :begin[0] + h + pads[2], :begin[1] + w + pads[3]] = 1.0
    else:
        mask[:, :, begin[0]:begin[0] + h, begin[1]:begin[1] + w] = 1.0
    counts = F.avg_pool2d(mask, tuple(node.attrs["kernel"]), tuple(node.attrs["stride"]), 0, divisor_override=1)
    return counts.clamp_(min=1.0)


def _build_avgpool(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    k, s = tuple(node.attrs["kernel"]), tuple(node.attrs["stride"])
    include = bool(node.attrs.get("count_include_pad", 0))
    ceil = bool(node.attrs.get("ceil_mode", 0))
    native = _native_padding(node)
    if native is not None and not (ceil and include):
        return lambda x: F.avg_pool2d(x, k, s, native, ceil, include)
    begin, end = _explicit_pads(node)
    torch_pads = (begin[1], end[1], begin[0], end[0])
    counts = _avg_count_map(node, begin, end)

    def exact(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(x, torch_pads), k, s, 0, divisor_override=1) / counts

    if ctx.precision == "int8":
        return dequantized_fallback(exact, None)
    return exact


def _build_global_avgpool(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    if len(node.in_shape) == 4:
        return lambda x: F.adaptive_avg_pool2d(x, 1)
    axes = tuple(range(2, len(node.in_shape)))
    if ctx.precision == "int8":
        return dequantized_fallback(lambda x: x.mean(axes, keepdim=True), None)
    return lambda x: x.mean(axes, keepdim=True)


def _build_reducemean(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    axes = tuple(node.attrs["axes"])
    keep = bool(node.attrs.get("keepdims", 1))
    if len(node.in_shape) == 4 and axes == (2, 3):
        if keep:
            return lambda x: F.adaptive_avg_pool2d(x, 1)
        if ctx.precision == "fp32":
            return lambda x: x.mean((2, 3))
        return lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1)
    if ctx.precision == "int8":
        return dequantized_fallback(lambda x: x.mean(axes, keepdim=keep), ctx.out_qparams)
    return lambda x: x.mean(axes, keepdim=keep)


def _ws_maxpool(node: Node, precision: str, layout: str) -> int:
    # fp32: F.max_pool2d also computes the argmax indices (int64, 8 bytes per output element) and, with pads it
    # cannot take natively, pads a copy of the input; the quantised max pool computes no indices
    if precision == "int8":
        return 0
    padded = 0
    if _native_padding(node) is None:
        begin, end = _explicit_pads(node)
        n, c, h, w = node.in_shape
        padded = n * c * (h + begin[0] + end[0]) * (w + begin[1] + end[1]) * 4
    return 8 * int(np.prod(node.out_shape)) + padded


def _register(op: str, build, applies=None, description: str = "", workspace=None) -> Primitive:  # noqa: ANN001
    extra = {"applies": applies} if applies is not None else {}
    if workspace is not None:
        extra["workspace_bytes"] = workspace
    return register(Primitive(name=f"{op.lower()}.torch", ops=(op,), layouts=BOTH_LAYOUTS, precisions=FP32_INT8,
                              build=build, rank=RANK, description=description, tunable=False, **extra))


MAXPOOL = _register("MaxPool", _build_maxpool, _is_2d, "F.max_pool2d (int8: quantised max pool)", _ws_maxpool)
AVGPOOL = _register("AveragePool", _build_avgpool, _avg_applies, "F.avg_pool2d (int8: quantised avg pool)")
GLOBALAVGPOOL = _register("GlobalAveragePool", _build_global_avgpool,
                          description="F.adaptive_avg_pool2d(x, 1) (int8: quantised adaptive pool)")
REDUCEMEAN = _register("ReduceMean", _build_reducemean,
                       description="Tensor.mean; spatial means as adaptive_avg_pool2d (int8 quantised)")
