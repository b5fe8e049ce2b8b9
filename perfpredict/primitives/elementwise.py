"""Elementwise primitives on torch: Relu, Clip, Sigmoid, HardSigmoid, HardSwish, Mul, Add, BatchNormalization.

Every primitive is named ``<op>.torch``, runs in NCHW and NHWC (torch keeps the memory format of an
elementwise op's input) and, where torch has a quantised kernel, at int8 too. At int8 a kernel takes and
returns ``torch.quint8`` tensors; ops that re-scale their output (Add, Mul, HardSwish, the BN affine)
quantise it with ``ctx.out_qparams`` from calibration, the others (Relu, Clip) keep their input's scale and
Sigmoid/HardSigmoid use torch's fixed [0, 1] scale. The rare int8 case torch has no kernel for (a Mul/Add
with a constant operand, a HardSigmoid other than ``x/6 + 1/2``) dequantises, computes in fp32 and
quantises again inside the kernel (:func:`dequantized_fallback`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from perfpredict.graph import Node
from perfpredict.primitives.registry import Primitive, register
from perfpredict.runtime.kernel import BuildContext, Kernel, QParams

BOTH_LAYOUTS = ("NCHW", "NHWC")
FP32_INT8 = ("fp32", "int8")
RANK = 10
"""Rank of every ``<op>.torch`` primitive (each op has exactly one, so it is the default)."""


def quantize(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    """``x`` (fp32) quantised per tensor to quint8 with ``qp``."""
    return torch.quantize_per_tensor(x, qp.scale, qp.zero_point, torch.quint8)


def dequantized_fallback(fn: Callable[..., torch.Tensor], out_qparams: QParams | None) -> Kernel:
    """An int8 kernel computing ``fn`` in fp32: dequantise the inputs, run ``fn``, quantise the result.

    The output uses ``out_qparams``, or the first input's scale when none is given.
    """

    def kernel(*xs: torch.Tensor) -> torch.Tensor:
        y = fn(*(x.dequantize() for x in xs))
        qp = out_qparams or QParams(xs[0].q_scale(), xs[0].q_zero_point())
        return quantize(y, qp)

    return kernel


def _out_qparams(node: Node, ctx: BuildContext) -> QParams:
    if ctx.out_qparams is None:
        raise ValueError(f"node '{node.name}' ({node.op}) runs at int8 but has no output qparams; "
                         "the runtime must calibrate before building int8 kernels")
    return ctx.out_qparams


# --------------------------------------------------------------------------------------------- unary


def _build_relu(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    return torch.relu


def _clip_bounds(node: Node) -> tuple[float | None, float | None]:
    lo, hi = node.attrs.get("min", -math.inf), node.attrs.get("max", math.inf)
    return (None if lo == -math.inf else float(lo)), (None if hi == math.inf else float(hi))


def _build_clip(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    lo, hi = _clip_bounds(node)
    if lo is None and hi is None:
        return lambda x: x
    if lo == 0.0 and hi is None:
        return torch.relu
    return lambda x: torch.clamp(x, lo, hi)


def _build_sigmoid(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    return torch.sigmoid


def _is_torch_hardsigmoid(node: Node) -> bool:
    return abs(node.attrs.get("alpha", 0.2) - 1 / 6) < 1e-6 and abs(node.attrs.get("beta", 0.5) - 0.5) < 1e-6


def _build_hardsigmoid(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    if _is_torch_hardsigmoid(node):
        return F.hardsigmoid
    alpha, beta = float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))

    def general(x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x * alpha + beta, 0.0, 1.0)

    if ctx.precision == "int8":
        return dequantized_fallback(general, QParams(1.0 / 256, 0))
    return general


def _build_hardswish(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    if ctx.precision == "int8":
        qp = _out_qparams(node, ctx)
        op = torch.ops.quantized.hardswish
        return lambda x: op(x, qp.scale, qp.zero_point)
    return F.hardswish


# --------------------------------------------------------------------------------------------- binary


def _constant_operands(node: Node, weights: Mapping[str, np.ndarray]) -> tuple[list[Any], list[int]]:
    """The node's operands in ONNX order: constants as fp32 tensors, activations as None (with positions)."""
    operands: list[Any] = []
    slots: list[int] = []
    for k, name in enumerate(i for i in node.inputs if i):
        if name in node.params:
            operands.append(torch.from_numpy(np.ascontiguousarray(weights[name], dtype=np.float32)))
        else:
            operands.append(None)
            slots.append(k)
    return operands, slots


def _binary(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext,
            fp32_op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
            q_op: Callable[..., torch.Tensor]) -> Kernel:
    operands, slots = _constant_operands(node, weights)
    if len(operands) != 2:
        raise ValueError(f"node '{node.name}' ({node.op}) must have two operands, has {len(operands)}")
    if len(slots) == 2:
        if ctx.precision == "int8":
            qp = _out_qparams(node, ctx)
            return lambda a, b: q_op(a, b, qp.scale, qp.zero_point)
        return fp32_op
    if len(slots) == 1:
        const = operands[1 - slots[0]]
        first = slots[0] == 0

        def with_constant(x: torch.Tensor) -> torch.Tensor:
            return fp32_op(x, const) if first else fp32_op(const, x)

        if ctx.precision == "int8":
            return dequantized_fallback(with_constant, _out_qparams(node, ctx))
        return with_constant
    raise ValueError(f"node '{node.name}' ({node.op}) has no activation input")


def _build_add(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    return _binary(node, weights, ctx, torch.add, torch.ops.quantized.add)


def _build_mul(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    return _binary(node, weights, ctx, torch.mul, torch.ops.quantized.mul)


# --------------------------------------------------------------------------------------------- affine


def _build_batchnorm(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    """BatchNormalization not folded into a Conv: a per-channel affine ``x * scale + shift`` on axis 1."""
    scale = np.asarray(weights[node.inputs[1]], dtype=np.float32)
    shift = np.asarray(weights[node.inputs[2]], dtype=np.float32)
    rank = len(node.in_shape)
    view = (1, -1) + (1,) * (rank - 2)
    if ctx.precision == "int8":
        if rank != 4:
            w4 = torch.from_numpy(scale.reshape(view).copy())
            b4 = torch.from_numpy(shift.reshape(view).copy())
            return dequantized_fallback(lambda x: torch.addcmul(b4, x, w4), _out_qparams(node, ctx))
        qp = _out_qparams(node, ctx)
        w, b = torch.from_numpy(scale.copy()), torch.from_numpy(shift.copy())
        mean, var = torch.zeros_like(w), torch.ones_like(w)
        op = torch.ops.quantized.batch_norm2d
        fmt = torch.channels_last if ctx.layout == "NHWC" else torch.contiguous_format

        def q_affine(x: torch.Tensor) -> torch.Tensor:
            # quantized::batch_norm2d always writes channels_last; give back the planned layout
            return op(x, w, b, mean, var, 0.0, qp.scale, qp.zero_point).contiguous(memory_format=fmt)

        return q_affine
    w = torch.from_numpy(scale.reshape(view).copy())
    b = torch.from_numpy(shift.reshape(view).copy())
    return lambda x: torch.addcmul(b, x, w)


# --------------------------------------------------------------------------------------------- registration


def _primitive(op: str, build: Callable[..., Kernel], precisions: tuple[str, ...] = FP32_INT8,
               applies: Callable[[Node], bool] | None = None, description: str = "") -> Primitive:
    kwargs: dict[str, Any] = {}
    if applies is not None:
        kwargs["applies"] = applies
    return register(Primitive(name=f"{op.lower()}.torch", ops=(op,), layouts=BOTH_LAYOUTS, precisions=precisions,
                              build=build, rank=RANK, description=description, tunable=False, **kwargs))


RELU = _primitive("Relu", _build_relu, description="torch.relu (int8: quantised relu, input scale kept)")
CLIP = _primitive("Clip", _build_clip, description="torch.clamp (int8: quantised clamp, input scale kept)")
SIGMOID = _primitive("Sigmoid", _build_sigmoid, description="torch.sigmoid (int8: quantised, fixed 1/256 scale)")
HARDSIGMOID = _primitive("HardSigmoid", _build_hardsigmoid,
                         description="F.hardsigmoid for alpha=1/6, beta=1/2, else clamp(alpha*x+beta, 0, 1)")
HARDSWISH = _primitive("HardSwish", _build_hardswish, description="F.hardswish (int8: quantized::hardswish)")
ADD = _primitive("Add", _build_add,
                 description="torch.add with broadcasting (int8: quantized::add, calibrated output scale)")
MUL = _primitive("Mul", _build_mul,
                 description="torch.mul with broadcasting (int8: quantized::mul, calibrated output scale)")
BATCHNORM = _primitive("BatchNormalization", _build_batchnorm,
                       description="per-channel affine x*scale+shift (int8: quantized::batch_norm2d)")
