"""mul.dnnl: a squeeze-excite gate, ``Mul(x, g)`` with ``x`` of shape (N, C, H, W) and ``g`` of shape (N, C, 1, 1),
run by oneDNN's binary primitive through its C API (``_dnnl.c``, loaded by :func:`perfpredict.primitives.dnnl.library`),
in NCHW or NHWC at fp32 and int8.

At int8 torch's ``quantized::mul`` broadcasts the gate slowly (on EfficientNet-B0 it was a fifth of an all-int8
plan's time). Here the product and its requantisation are one pass over ``x``: the kernel turns the gate's
C quantised values and the three tensors' scales and zero points into a per-channel multiplier ``G`` and offset
``B`` (in C, at each call), and oneDNN writes ``saturate_u8(round(x_q * G + B))`` - the quantised product on the
output's calibrated grid. The primitive is made once per input shape when the kernel is built; each call is one
ctypes call.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from typing import Mapping

import numpy as np
import torch

from perfpredict.errors import PlanError
from perfpredict.graph import Node
from perfpredict.primitives.dnnl import ChainLink, DnnlUnavailable, _adopt, _status, library
from perfpredict.primitives.registry import Primitive, register
from perfpredict.runtime.kernel import BuildContext, Kernel


def gate_operand(node: Node) -> int | None:
    """Which of the two activation operands of a Mul is a per-channel gate (0 or 1): a 4-D ``(N, C, 1, 1)``
    tensor multiplying a ``(N, C, H, W)`` one; None when the node is not such a product."""
    if node.op != "Mul" or node.params or len(node.activation_inputs) != 2 or len(node.input_shapes) != 2:
        return None
    a, b = (tuple(s) for s in node.input_shapes)
    if len(a) != 4 or len(b) != 4:
        return None
    for gate, full in ((1, (a, b)), (0, (b, a))):
        x, g = full
        if g == (x[0], x[1], 1, 1) and x[2:] != (1, 1):
            return gate
    return None


class _Binary:
    """One created oneDNN gate product (for one input shape, layout and precision); destroyed with this object."""

    def __init__(self, name: str, x_shape: tuple[int, ...], nhwc: bool, int8: bool) -> None:
        lib = library()
        n, c, h, w = x_shape
        status = ctypes.c_int(0)
        handle = lib.pp_dnnl_binary_create(n, c, h, w, int(nhwc), int(int8), ctypes.byref(status))
        if not handle:
            raise PlanError(f"mul.dnnl cannot run node '{name}' on input {list(x_shape)}: oneDNN says "
                            f"{_status(status.value)}")
        self.name = name
        _adopt(self, "binary", handle)
        self._run = lib.pp_dnnl_binary_run

    def execute(self, x: torch.Tensor, g: torch.Tensor, y: torch.Tensor, q: tuple = (1.0, 0, 1.0, 0, 1.0, 0)) -> None:
        """One call: ``y = x * g`` (``q``: the scales and zero points of x, g and y at int8)."""
        scratch = torch.empty(self.scratch_bytes, dtype=torch.uint8) if self.scratch_bytes else None
        code = self._run(self.handle, x.data_ptr(), g.data_ptr(), y.data_ptr(),
                         None if scratch is None else scratch.data_ptr(), *q)
        if code:
            raise PlanError(f"mul.dnnl failed on node '{self.name}': oneDNN says {_status(code)}")


def _build(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    gate = gate_operand(node)
    if gate is None:
        raise PlanError(f"mul.dnnl runs a Mul of a (N, C, H, W) tensor by a (N, C, 1, 1) gate; node '{node.name}' "
                        f"multiplies {[list(s) for s in node.input_shapes]}")
    int8 = ctx.precision == "int8"
    if int8 and ctx.out_qparams is None:
        raise ValueError(f"node '{node.name}' (Mul) runs at int8 but has no output qparams; "
                         "the runtime must calibrate before building int8 kernels")
    nhwc = ctx.layout == "NHWC"
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    x_shape = tuple(node.input_shapes[1 - gate])
    made: dict[tuple[int, ...], _Binary] = {}

    def binary(shape: tuple[int, ...]) -> _Binary:
        b = made.get(shape)
        if b is None:
            if len(shape) != 4 or shape[1:] != x_shape[1:]:
                raise PlanError(f"mul.dnnl node '{node.name}' takes (N, {x_shape[1]}, {x_shape[2]}, {x_shape[3]}) "
                                f"input, got {list(shape)}")
            b = made[shape] = _Binary(node.name, shape, nhwc, int8)
        return b

    binary(x_shape)  # made now, not on the first call
    dtype = torch.quint8 if int8 else torch.float32

    def kernel(*operands: torch.Tensor) -> torch.Tensor:
        g, x = operands[gate], operands[1 - gate]
        if x.dtype != dtype or g.dtype != dtype:
            raise PlanError(f"mul.dnnl at {ctx.precision} takes {dtype} operands, got {x.dtype} and {g.dtype}")
        x = x.contiguous(memory_format=fmt)
        g = g.contiguous()  # (N, C, 1, 1): the same bytes in either layout
        b = binary(tuple(x.shape))
        if g.shape != (x.shape[0], x.shape[1], 1, 1):
            raise PlanError(f"mul.dnnl node '{node.name}': gate {list(g.shape)} does not match input "
                            f"{list(x.shape)}")
        if int8:
            qp = ctx.out_qparams
            y = torch._empty_affine_quantized(x.shape, scale=qp.scale, zero_point=qp.zero_point, dtype=torch.quint8,
                                              memory_format=fmt)
            b.execute(x, g, y, (x.q_scale(), x.q_zero_point(), g.q_scale(), g.q_zero_point(), qp.scale,
                                qp.zero_point))
        else:
            y = torch.empty(x.shape, memory_format=fmt)
            b.execute(x, g, y)
        return y

    if nhwc:  # in a chain: the gate is the call's second operand, the gate's index in the step's inputs is `gate`
        kernel.link = ChainLink(binary(x_shape), int8, ctx.out_qparams if int8 else None, None,  # type: ignore
                                kind=3, gate=gate)
    return kernel


@lru_cache(maxsize=4096)
def _probe_shape(x_shape: tuple[int, ...], nhwc: bool, int8: bool) -> tuple[str, int] | None:
    try:
        b = _Binary("probe", x_shape, nhwc, int8)
    except (PlanError, DnnlUnavailable):
        return None
    return b.impl, b.scratch_bytes


def _probe(node: Node, layout: str, int8: bool) -> tuple[str, int] | None:
    """(implementation name, scratchpad bytes) of the product oneDNN creates for ``node``, None if it refuses it."""
    gate = gate_operand(node)
    if gate is None:
        return None
    return _probe_shape(tuple(node.input_shapes[1 - gate]), layout == "NHWC", int8)


def _applies(node: Node) -> bool:
    return gate_operand(node) is not None and _probe(node, "NHWC", False) is not None


def _workspace(node: Node, precision: str, layout: str) -> int:
    probe = _probe(node, layout, precision == "int8")
    return probe[1] if probe else 0


MUL_DNNL = register(Primitive(
    name="mul.dnnl", ops=("Mul",), layouts=("NCHW", "NHWC"), precisions=("fp32", "int8"), build=_build,
    applies=_applies, workspace_bytes=_workspace, rank=11,
    description="oneDNN binary product of a (N,C,H,W) tensor and a (N,C,1,1) gate (int8: requantised in the "
                "same pass); squeeze-excite gates"))

__all__ = ["MUL_DNNL", "gate_operand"]
