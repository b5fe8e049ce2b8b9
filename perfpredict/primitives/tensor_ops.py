"""Data-movement primitives on torch: Concat, Split, Slice, Flatten, Reshape, Transpose, Pad, Softmax.

Concat, Split, Slice and Pad keep the memory format of their input, so they run in NCHW and NHWC. Split
and Slice return views (no copy), as torch does. Flatten, Reshape, Transpose and Softmax reinterpret the
logical NCHW order, so they declare NCHW only (the runtime hands them contiguous tensors); Transpose
returns a contiguous copy so its consumers see an NCHW-contiguous tensor. int8 runs wherever torch
has a quantised path (quantized::cat with a calibrated output scale; views and reshapes of quint8
tensors; constant zero padding); Softmax is fp32 only.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from perfpredict.graph import Node
from perfpredict.primitives.elementwise import BOTH_LAYOUTS, FP32_INT8, RANK, dequantized_fallback
from perfpredict.primitives.registry import Primitive, register
from perfpredict.runtime.kernel import BuildContext, Kernel

NCHW_ONLY = ("NCHW",)


def _build_concat(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    axis = int(node.attrs["axis"])
    if ctx.precision == "int8":
        if ctx.out_qparams is None:
            raise ValueError(f"node '{node.name}' (Concat) runs at int8 but has no output qparams")
        scale, zp = ctx.out_qparams.scale, ctx.out_qparams.zero_point
        op = torch.ops.quantized.cat
        return lambda *xs: op(list(xs), axis, scale, zp)
    return lambda *xs: torch.cat(xs, axis)


def int8_concat_direct(node: Node, layout: str) -> bool:
    """Whether quantized::cat joins ``node``'s inputs directly (channels-last inputs joined along the channels),
    given that every input is dense; otherwise it holds :func:`int8_concat_fallback_bytes`. An input that is a
    view but not a dense block (a channel split in NHWC) sends it the fp32 way as well; the memory estimate
    checks that, since the workspace of a node cannot see its inputs."""
    return layout == "NHWC" and int(node.attrs["axis"]) in (1, -3)


def int8_concat_fallback_bytes(node: Node) -> int:
    """What quantized::cat holds when it goes through fp32: it dequantises every input, joins them in fp32 and
    quantises the result, holding the fp32 inputs and the fp32 output at once (8 bytes per output element;
    measured with torch's allocator)."""
    return 8 * int(np.prod(node.out_shape))


def _ws_concat(node: Node, precision: str, layout: str) -> int:
    if precision != "int8" or int8_concat_direct(node, layout):
        return 0
    return int8_concat_fallback_bytes(node)


def _build_split(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    axis = int(node.attrs["axis"])
    sizes = [int(s) for s in node.attrs["split"]]
    return lambda x: torch.split(x, sizes, axis)


def slice_plan(node: Node) -> list[tuple[int, int, int, int]]:
    """(axis, start, end, step) per sliced axis, clamped the way ONNX clamps them."""
    out = []
    shape = node.in_shape
    for axis, start, end, step in zip(node.attrs["axes"], node.attrs["starts"], node.attrs["ends"],
                                      node.attrs["steps"]):
        dim = shape[axis]
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        out.append((int(axis), int(start), int(end), int(step)))
    return out


def _build_slice(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    plan = slice_plan(node)
    if all(step > 0 for _, _, _, step in plan):
        index: list[slice] = [slice(None)] * len(node.in_shape)
        for axis, start, end, step in plan:
            index[axis] = slice(start, end, step)
        key = tuple(index)
        return lambda x: x[key]
    picks = [(axis, torch.arange(start, end, step)) for axis, start, end, step in plan]

    def gather(x: torch.Tensor) -> torch.Tensor:
        for axis, idx in picks:
            x = x.index_select(axis, idx)
        return x

    if ctx.precision == "int8":
        return dequantized_fallback(gather, None)
    return gather


def _build_flatten(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    shape = tuple(node.out_shape)
    return lambda x: x.reshape(shape)


def _build_reshape(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    shape = tuple(int(s) for s in node.attrs["shape"])
    return lambda x: x.reshape(shape)


def _build_transpose(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    perm = tuple(int(p) for p in node.attrs["perm"])
    return lambda x: x.permute(perm).contiguous()


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _torch_pads(node: Node) -> tuple[int, ...]:
    pads = list(node.attrs["pads"])
    rank = len(node.in_shape)
    out: list[int] = []
    for axis in reversed(range(rank)):
        out += [pads[axis], pads[rank + axis]]
    while len(out) > 2 and out[-1] == 0 and out[-2] == 0:  # drop untouched leading axes
        out = out[:-2]
    return tuple(out)


def _pad_applies(node: Node) -> bool:
    mode = node.attrs.get("mode", "constant")
    if mode not in _PAD_MODES:
        return False
    if mode == "constant":
        return True
    rank = len(node.in_shape)
    pads = node.attrs["pads"]
    outer = [pads[a] for a in range(rank - 2)] + [pads[rank + a] for a in range(rank - 2)]
    return rank in (3, 4, 5) and not any(outer)


def _build_pad(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    pads = _torch_pads(node)
    mode = _PAD_MODES[node.attrs.get("mode", "constant")]
    value = float(node.attrs.get("value", 0.0))
    if mode == "constant":
        def pad(x: torch.Tensor) -> torch.Tensor:
            return F.pad(x, pads, value=value)
        if ctx.precision == "int8" and value != 0.0:
            return dequantized_fallback(pad, ctx.out_qparams)
        return pad if value != 0.0 else (lambda x: F.pad(x, pads))

    def pad_mode(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, pads, mode=mode)

    if ctx.precision == "int8":
        return dequantized_fallback(pad_mode, None)
    return pad_mode


def _build_softmax(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    axis = int(node.attrs["axis"])
    return lambda x: F.softmax(x, axis)


def _register(op: str, build, layouts: tuple[str, ...], precisions: tuple[str, ...] = FP32_INT8,  # noqa: ANN001
              applies=None, workspace_bytes=None, description: str = "") -> Primitive:  # noqa: ANN001
    extra = {"applies": applies} if applies is not None else {}
    if workspace_bytes is not None:
        extra["workspace_bytes"] = workspace_bytes
    return register(Primitive(name=f"{op.lower()}.torch", ops=(op,), layouts=layouts, precisions=precisions,
                              build=build, rank=RANK, description=description, tunable=False, **extra))


CONCAT = _register("Concat", _build_concat, BOTH_LAYOUTS, workspace_bytes=_ws_concat,
                   description="torch.cat (int8: quantized::cat)")
SPLIT = _register("Split", _build_split, BOTH_LAYOUTS, description="torch.split (views)")
SLICE = _register("Slice", _build_slice, BOTH_LAYOUTS, description="basic indexing (views; negative steps gather)")
FLATTEN = _register("Flatten", _build_flatten, NCHW_ONLY, description="Tensor.reshape to 2-D")
RESHAPE = _register("Reshape", _build_reshape, NCHW_ONLY, description="Tensor.reshape to the static shape")
TRANSPOSE = _register("Transpose", _build_transpose, NCHW_ONLY, description="permute + contiguous copy")
PAD = _register("Pad", _build_pad, BOTH_LAYOUTS, applies=_pad_applies,
                description="F.pad (constant, reflect, edge, wrap)")
SOFTMAX = _register("Softmax", _build_softmax, NCHW_ONLY, ("fp32",), description="F.softmax along the axis")
