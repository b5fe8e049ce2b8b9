"""conv.winograd4: a 3x3 stride-1 convolution as Winograd F(4x4, 3x3) on channels-last tensors, in C.

Every 4x4 block of outputs is computed from a 6x6 block of inputs with 36 multiplies per channel pair instead
of 144: the input tiles are transformed, the 36 transformed positions are 36 independent products over the
channels, and the products are transformed back with the bias, a folded residual and the clamp applied as the
output is written (``_winograd4.c``: vectorised transforms, register-blocked products, OpenMP threads on
torch's libgomp). The transformed weights (``G g G^T``, 4x the weights) are made once at build. The transforms
and the larger weights cost memory traffic a direct convolution does not pay, so whether it beats oneDNN's
direct kernels depends on the layer's map size and channels: a per-layer choice for the optimiser, priced by
the predictor from measurements.

The numbers differ from a direct convolution's by float rounding only (about 1e-5 of the output's magnitude
on the layers of the tests). ``conv.winograd`` is the F(2x2, 3x3) variant on torch's batched matmul in NCHW.
``_winograd4.c`` is compiled on first use with the vector extensions this CPU has (AVX-512, else AVX2 and FMA)
and cached.
"""

from __future__ import annotations

import ctypes
import weakref
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from perfpredict.devices import _cpuinfo
from perfpredict.errors import PlanError
from perfpredict.graph import Node
from perfpredict.primitives.cbuild import load_library
from perfpredict.primitives.conv import ConvGeometry, _check_layout, _winograd_applies, conv_weights
from perfpredict.primitives.dnnl import _primitives, _residual
from perfpredict.primitives.epilogue import RESIDUAL, parse_activation
from perfpredict.primitives.registry import Primitive, register
from perfpredict.runtime.kernel import BuildContext, Kernel, QParams

SOURCE = Path(__file__).with_name("_winograd4.c")
CFLAGS: tuple[str, ...] = ("-O3", "-std=gnu11", "-ffp-contract=fast", "-fPIC", "-shared", "-fopenmp")

_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
"""F(4x4, 3x3)'s weight transform G (6x3): a 3x3 kernel g becomes the 6x6 G g G^T."""


def vector_flags() -> tuple[str, ...]:
    """The compiler's vector flags for this CPU: AVX-512 where it has it, else AVX2 and FMA, else none."""
    have = set(_cpuinfo()["isa_features"])
    if {"avx512f", "avx512dq", "avx2", "fma"} <= have:
        return ("-mavx512f", "-mavx512dq", "-mavx2", "-mfma", "-mprefer-vector-width=512")
    if {"avx2", "fma"} <= have:
        return ("-mavx2", "-mfma")
    return ()


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """``_winograd4.c`` compiled for this CPU and loaded (once per process)."""
    lib = load_library(SOURCE, (*CFLAGS, *vector_flags()), purpose="conv.winograd4")
    i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    lib.pp_wino_create.argtypes = [i] * 9 + [p, p, f, f, i]
    lib.pp_wino_create.restype = p
    lib.pp_wino_run.argtypes = [p] * 5 + [i]
    lib.pp_wino_run.restype = None
    lib.pp_wino_scratch_bytes.argtypes = [p, i]
    lib.pp_wino_scratch_bytes.restype = ctypes.c_size_t
    lib.pp_wino_scratch_for.argtypes = [i] * 6
    lib.pp_wino_scratch_for.restype = ctypes.c_size_t
    lib.pp_wino_destroy.argtypes = [p]
    lib.pp_wino_destroy.restype = None
    return lib


def winograd_weights(w: np.ndarray) -> np.ndarray:
    """(K, C, 3, 3) weights as F(4x4, 3x3)'s transformed weights, 36 x C x K (position-major), float32."""
    u = np.einsum("ai,kcij,bj->abck", _G, np.asarray(w, np.float64), _G)
    return np.ascontiguousarray(u.reshape(36, w.shape[1], w.shape[0]), dtype=np.float32)


class _Handle:
    """One made Winograd convolution (for one input shape); freed with this object."""

    def __init__(self, node: Node, geo: ConvGeometry, x_shape: tuple[int, ...], u: np.ndarray,
                 b: np.ndarray | None, lo: float, hi: float, residual: bool) -> None:
        lib = library()
        n, c, h, w = x_shape
        oh, ow = geo.out_hw(h, w)
        if min(oh, ow) < 1:
            raise PlanError(f"conv.winograd4 cannot run node '{node.name}' on input {list(x_shape)}: smaller than "
                            "its padded 3x3 kernel")
        handle = lib.pp_wino_create(n, c, h, w, geo.out_channels, oh, ow, geo.pads[0], geo.pads[1],
                                    u.ctypes.data, None if b is None else b.ctypes.data, lo, hi, int(residual))
        if not handle:
            raise PlanError(f"conv.winograd4: out of memory making node '{node.name}' for input {list(x_shape)}")
        self.handle = handle
        self.out_shape = (n, geo.out_channels, oh, ow)
        self._scratch_bytes = lib.pp_wino_scratch_bytes
        self._run = lib.pp_wino_run
        self._finalizer = weakref.finalize(self, lib.pp_wino_destroy, handle)

    def scratch_bytes(self, threads: int) -> int:
        """Scratch bytes of one call on ``threads`` threads (the buffers of transformed tiles and products: one
        block's per thread, or one set for all the tiles), with 64 of slack to align it."""
        return int(self._scratch_bytes(self.handle, threads)) + 64

    def execute(self, x: torch.Tensor, y: torch.Tensor, residual: torch.Tensor | None) -> None:
        """One call on channels-last ``x`` into ``y`` (adding ``residual`` when made with one), on torch's thread
        count, with a scratch buffer from torch's allocator."""
        threads = torch.get_num_threads()
        scratch = torch.empty(self.scratch_bytes(threads), dtype=torch.uint8)
        at = scratch.data_ptr()
        self._run(self.handle, x.data_ptr(), y.data_ptr(), at + (-at) % 64,
                  None if residual is None else residual.data_ptr(), threads)


def _build(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    _check_layout("conv.winograd4", ctx, ("NHWC",))
    if not _winograd_applies(node):
        raise PlanError(f"conv.winograd4 needs a 3x3 stride-1 undilated dense conv; node '{node.name}' is not")
    w, b = conv_weights(weights)
    geo = ConvGeometry.of(node, tuple(w.shape))
    clamp = parse_activation(ctx.fused_activation)  # a clamp (relu, relu6, clip) or none: no eltwise epilogue
    u = winograd_weights(w.numpy())
    b_np = None if b is None else np.ascontiguousarray(b.numpy(), dtype=np.float32)
    res = QParams(1.0, 0) if ctx.fused_residual else None  # the residual is added as it comes (fp32)

    def make(shape: tuple[int, ...]) -> _Handle:
        return _Handle(node, geo, shape, u, b_np, clamp.lo, clamp.hi, res is not None)

    handle = _primitives("conv.winograd4", node, geo, make)  # the node's own shape laid out now, at build
    cl = torch.channels_last

    def kernel(x: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
        if x.dtype != torch.float32:
            raise PlanError(f"conv.winograd4 takes float32 input, got {x.dtype}")
        x = x.contiguous(memory_format=cl)
        hd = handle(tuple(x.shape))
        y = torch.empty(hd.out_shape, memory_format=cl)
        hd.execute(x, y, _residual(node, hd, r, res))
        return y

    return kernel


def _workspace(node: Node, precision: str, layout: str) -> int:
    # one call's scratch, from torch's allocator, as ``_winograd4.c`` sizes it for torch's thread count (buffers of
    # transformed tiles and their products: per thread a block of tiles where the transformed weights are small,
    # else one set for all the tiles), plus the alignment slack; the transformed weights are made once at build
    n, c, _, _ = node.in_shape
    _, k, oh, ow = node.out_shape
    return int(library().pp_wino_scratch_for(n, c, k, oh, ow, torch.get_num_threads())) + 64


CONV_WINOGRAD4 = register(Primitive(
    name="conv.winograd4", ops=("Conv",), layouts=("NHWC",), precisions=("fp32",), build=_build,
    applies=_winograd_applies, workspace_bytes=_workspace, rank=35, epilogues=(RESIDUAL,),
    description="Winograd F(4x4,3x3) in C on NHWC: vectorised input and output transforms, the 36 channel "
                "products register-blocked, OpenMP threads; transformed weights made once; bias, residual add "
                "and clamp applied on output; 3x3 stride 1, dilation 1, groups 1, any padding"))

__all__ = ["CONV_WINOGRAD4", "library", "vector_flags", "winograd_weights"]
