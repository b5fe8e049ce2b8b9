"""maxpool.dnnl: ONNX MaxPool run by oneDNN's pooling primitive through its C API (``_dnnl.c``, loaded by
:func:`perfpredict.primitives.dnnl.library`), in NHWC at fp32 and int8.

torch's ``F.max_pool2d`` computes the argmax indices of every output even in inference (8 bytes per output
element, written and then dropped); oneDNN's forward-inference max pool computes none, and on this project's
machines runs ResNet's 3x3/2 stem pool about five times faster. The primitive is made once per input shape when
the kernel is built; each call is one ctypes call. ONNX's ceil-mode windows and asymmetric pads are oneDNN's
right-hand pads (padded positions never win a max). At int8 the quint8 output keeps the input's scale and zero
point, as torch's quantised max pool does.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from typing import Mapping

import numpy as np
import torch

from perfpredict.errors import PlanError
from perfpredict.graph import Node
from perfpredict.primitives.dnnl import BLOCKED, NHWC, ChainLink, DnnlUnavailable, _adopt, _status, library
from perfpredict.primitives.pooling import _explicit_pads, _is_2d
from perfpredict.primitives.registry import Primitive, register
from perfpredict.runtime.kernel import BuildContext, Kernel

_MAX, _AVG = 0, 1  # pp_dnnl_pool_create's alg (1: average counting padded positions; a global pool has none)


def _geometry(node: Node) -> tuple:
    """The node's pooling as oneDNN takes it, hashable: (output H, W), kernel, stride, dilation, and the pads
    (top, left, bottom, right) with ONNX's ceil-mode windows in the bottom and right ones."""
    a = node.attrs
    (pt, pl), (pb, pr) = _explicit_pads(node)
    return (tuple(node.out_shape[2:]), tuple(a["kernel"]), tuple(a["stride"]), tuple(a["dilation"]),
            (pt, pl, pb, pr))


class _Pool:
    """One created oneDNN max pool (average with ``alg`` _AVG) for one input shape, geometry and precision;
    destroyed with this object."""

    def __init__(self, name: str, x_shape: tuple[int, ...], geometry: tuple, int8: bool, alg: int = _MAX,
                 fmt: int = NHWC) -> None:
        lib = library()
        n, c, h, w = x_shape
        (oh, ow), (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = geometry
        status = ctypes.c_int(0)
        handle = lib.pp_dnnl_pool_create(n, c, h, w, oh, ow, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, alg, int(int8),
                                         fmt, ctypes.byref(status))
        if not handle:
            raise PlanError(f"maxpool.dnnl cannot run node '{name}' on input {list(x_shape)}: oneDNN says "
                            f"{_status(status.value)}")
        self.name = name
        _adopt(self, "pool", handle)
        self.out_shape = (n, c, oh, ow)
        self.formats = (fmt, fmt)
        self._run = lib.pp_dnnl_pool_run

    def execute(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One call on channels-last ``x`` into ``y``, with a scratchpad from torch's allocator."""
        scratch = torch.empty(self.scratch_bytes, dtype=torch.uint8) if self.scratch_bytes else None
        code = self._run(self.handle, x.data_ptr(), y.data_ptr(), None if scratch is None else scratch.data_ptr())
        if code:
            raise PlanError(f"maxpool.dnnl failed on node '{self.name}': oneDNN says {_status(code)}")


def _build(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    if ctx.layout != "NHWC":
        raise PlanError(f"maxpool.dnnl runs in layouts ['NHWC'], not {ctx.layout}")
    int8 = ctx.precision == "int8"
    geometry = _geometry(node)
    pools: dict[tuple[int, ...], _Pool] = {}

    def pool(shape: tuple[int, ...]) -> _Pool:
        p = pools.get(shape)
        if p is None:
            if len(shape) != 4 or shape[2:] != tuple(node.in_shape[2:]):  # the output shape is the node's
                raise PlanError(f"maxpool.dnnl node '{node.name}' takes (N, C, {node.in_shape[2]}, "
                                f"{node.in_shape[3]}) input, got {list(shape)}")
            p = pools[shape] = _Pool(node.name, shape, geometry, int8)
        return p

    pool(tuple(node.in_shape))  # made now, not on the first call
    cl = torch.channels_last

    def kernel(x: torch.Tensor) -> torch.Tensor:
        if x.dtype != (torch.quint8 if int8 else torch.float32):
            raise PlanError(f"maxpool.dnnl at {ctx.precision} takes {'quint8' if int8 else 'float32'} input, "
                            f"got {x.dtype}")
        x = x.contiguous(memory_format=cl)
        p = pool(tuple(x.shape))
        if int8:
            y = torch._empty_affine_quantized(p.out_shape, scale=x.q_scale(), zero_point=x.q_zero_point(),
                                              dtype=torch.quint8, memory_format=cl)
        else:
            y = torch.empty(p.out_shape, memory_format=cl)
        p.execute(x, y)
        return y

    kernel.link = ChainLink(pool(tuple(node.in_shape)), int8, None, None, kind=1)  # type: ignore[attr-defined]
    kernel.blocked = lambda: _Pool(node.name, tuple(node.in_shape), geometry, int8, fmt=BLOCKED)  # type: ignore
    return kernel


def global_average_pool(name: str, x_shape: tuple[int, ...], int8: bool, fmt: int = NHWC) -> _Pool:
    """oneDNN's average pool over the whole of each channel of an ``x_shape`` (N, C, H, W) tensor into
    (N, C, 1, 1), for a chain of oneDNN calls (:mod:`perfpredict.runtime.chain`): GlobalAveragePool. ``fmt``: the
    memory format of both (``dnnl.NHWC`` or ``dnnl.BLOCKED``). At int8 the output stays on the input's grid, as
    torch's quantised pool keeps it."""
    h, w = x_shape[2:]
    return _Pool(name, x_shape, ((1, 1), (h, w), (1, 1), (1, 1), (0, 0, 0, 0)), int8, _AVG, fmt)


@lru_cache(maxsize=4096)
def _probe_geometry(x_shape: tuple[int, ...], geometry: tuple, int8: bool) -> tuple[str, int] | None:
    try:
        p = _Pool("probe", x_shape, geometry, int8)
    except (PlanError, DnnlUnavailable):
        return None
    return p.impl, p.scratch_bytes


def _probe(node: Node, int8: bool) -> tuple[str, int] | None:
    """(implementation name, scratchpad bytes) of the pool oneDNN creates for ``node``, None if it refuses it."""
    return _probe_geometry(tuple(node.in_shape), _geometry(node), int8)


def _applies(node: Node) -> bool:
    return _is_2d(node) and _probe(node, False) is not None


def _workspace(node: Node, precision: str, layout: str) -> int:
    probe = _probe(node, precision == "int8")
    return probe[1] if probe else 0


MAXPOOL_DNNL = register(Primitive(
    name="maxpool.dnnl", ops=("MaxPool",), layouts=("NHWC",), precisions=("fp32", "int8"), build=_build,
    applies=_applies, workspace_bytes=_workspace, rank=11,
    description="oneDNN max pool through oneDNN's C API (no argmax indices; int8 keeps the input's scale); 2-D"))

__all__ = ["MAXPOOL_DNNL", "global_average_pool"]
