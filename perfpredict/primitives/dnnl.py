"""conv.dnnl and conv.dnnl_int8: oneDNN's convolution called through oneDNN's own C API, not through torch.

conv.onednn_packed runs the same oneDNN convolution through ``mkldnn::_convolution_pointwise``, and about
25 us of every call there is torch's and ideep's bookkeeping around 2-3 us of oneDNN work on small layers
(benchmarks/bench_dispatch.py). Here ``_dnnl.c`` builds the primitive once per input shape, when the kernel is
built (channels-last source and destination, weights reordered into the blocked format oneDNN picks, bias, an
activation post-op, asymmetric pads natively), and each call is one ctypes call that points the primitive
at the input and output buffers and executes it. A residual Add the runtime folds into the node
(``BuildContext.fused_residual``) is a binary-add post-op before the activation: the kernel takes the residual
tensor as a second input and oneDNN adds it as it writes the output, instead of a separate pass over both.

oneDNN comes from the ``onednn-cpu-gomp`` wheel (headers from ``onednn-devel-cpu-gomp``), built for GNU
OpenMP: in a process that has imported torch it shares torch's libgomp, so both run on one thread pool and
``torch.set_num_threads`` governs both. ``_dnnl.c`` is compiled on first use by
:mod:`perfpredict.primitives.cbuild` and cached. The per-call scratchpad is allocated by torch, so torch's
allocator sees it as it does for the other oneDNN primitives.

conv.dnnl_int8 is the same call at int8, in the runtime's quantisation scheme (that of conv.int8, so the two
mix in one plan): quint8 activations with a per-tensor scale and zero point (the input's read from the tensor
at each call, the output's calibrated), weights quantised per output channel to symmetric qint8, the bias in
float. oneDNN runs u8 x s8 on the CPU's int8 instructions (AMX or VNNI where present, :func:`conv_impl`
names the kernel it picked), with the residual added and the activation applied in float before the output is
requantised (the u8 residual, on its own calibrated grid, is added between two linear post-ops). Unlike
fbgemm it has fast depthwise kernels for any channel count, and takes asymmetric pads. oneDNN 3.2's int8 1x1
AMX kernel is never used: it writes past the end of small outputs (see ``_dnnl.c``).

A swish is the exception, where the CPU has AVX-512 VBMI and the executor gives the calibrated grid of the
convolution's own output (``BuildContext.pre_activation_qparams``): computed in float per value, oneDNN's swish
post-op cost the int8 convolutions of efficientnet_b0 more than their own work (``benchmarks/bench_epilogue.py``),
so the primitive writes the value before the swish on that grid, and each call maps the 256 codes through a table
of the swish onto the output's grid, in place (:func:`swish_table`; ``pp_table_u8`` in ``_dnnl.c``). It rounds
twice, as TFLite's int8 swish does. At fp32, on a CPU with AVX-512, a swish runs as our own pass over the output
after the call (``pp_swish_f32``: a polynomial exp and a refined reciprocal, about 3e-7 relative error), which costs
0.13-0.14 ns per value on the AMX Xeon VM (``benchmarks/results/epilogue_xeon2_swish17.json``) where oneDNN 3.2's
post-op cost 0.15-0.27; a chain computes a GlobalAveragePool of such an output in the same pass
(``pp_dnnl_conv_run_mean``).
"""

from __future__ import annotations

import ctypes
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from perfpredict.errors import PerfPredictError, PlanError
from perfpredict.graph import Node
from perfpredict.primitives.cbuild import CompilerError, load_library
from perfpredict.primitives.conv import (ConvGeometry, _check_layout, _onednn_applies, _onednn_scratch, _post_op,
                                         conv_weights)
from perfpredict.primitives.epilogue import ELTWISE, RESIDUAL
from perfpredict.primitives.quantized import quantize_activation, quantize_weight_per_channel
from perfpredict.primitives.registry import Primitive, register
from perfpredict.runtime.kernel import BuildContext, Kernel, QParams

SOURCE = Path(__file__).with_name("_dnnl.c")
CFLAGS: tuple[str, ...] = ("-O2", "-std=c99", "-fPIC", "-shared")
OPENMP: tuple[str, ...] = ("-fopenmp",)
"""For ``_dnnl.c``'s (de)quantisation loops, which split large tensors over the OpenMP threads (with gcc, the libgomp
that torch and oneDNN share); a compiler without OpenMP builds them to run on one thread."""
DISTRIBUTIONS = ("onednn-cpu-gomp", "onednn-devel-cpu-gomp")
"""The wheels that provide oneDNN's library and its headers."""

_ACTIVATIONS = {"none": 0, "relu": 1, "hardtanh": 2, "swish": 3, "hardswish": 4, "sigmoid": 5}


class DnnlUnavailable(PerfPredictError):
    """oneDNN's library or headers are not installed where conv.dnnl looks for them."""


def _installed_file(distribution: str, name: str) -> Path:
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        raise DnnlUnavailable(f"conv.dnnl needs the '{distribution}' package, which is not installed; "
                              f"pip install {' '.join(f'{d}==2023.2.0' for d in DISTRIBUTIONS)}") from None
    found = sorted((Path(str(f.locate())).resolve() for f in files if f.name == name), key=lambda p: len(p.parts))
    for path in found:  # the shortest: include/dnnl.h, not include/oneapi/dnnl/dnnl.h
        if path.is_file():
            return path
    raise DnnlUnavailable(f"conv.dnnl: '{distribution}' is installed but holds no {name}; reinstall it")


@lru_cache(maxsize=1)
def dnnl_paths() -> tuple[Path, Path]:
    """(the directory holding ``dnnl.h``, the path of ``libdnnl.so.3``) of the installed oneDNN wheels."""
    return (_installed_file("onednn-devel-cpu-gomp", "dnnl.h").parent,
            _installed_file("onednn-cpu-gomp", "libdnnl.so.3"))


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """``_dnnl.c`` compiled against the installed oneDNN and loaded (once per process)."""
    include, lib_path = dnnl_paths()
    link = (str(lib_path), f"-Wl,-rpath,{lib_path.parent}", "-lm")
    try:
        lib = load_library(SOURCE, (*CFLAGS, *OPENMP, f"-I{include}"), link=link, purpose="conv.dnnl")
    except CompilerError:  # e.g. clang without libomp
        lib = load_library(SOURCE, (*CFLAGS, f"-I{include}"), link=link, purpose="conv.dnnl")
    i, f, p, n, s, status = ctypes.c_int, ctypes.c_float, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, \
        ctypes.POINTER(ctypes.c_int)
    signatures = {  # name: (argument types, result type)
        "pp_dnnl_conv_create": ([i] * 18 + [p, p, i, f, f, ctypes.POINTER(_Quant), i, f, i, i, i, status], p),
        "pp_dnnl_conv_run": ([p, p, p, p, f, i, p], i),
        "pp_dnnl_conv_run_mean": ([p, p, p, p, p], i),
        "pp_dnnl_conv_own_swish": ([p], i),
        "pp_swish_mean_f32": ([i, p, n, n, p], i),
        "pp_dnnl_conv_run_chain": ([i, p, p, p, p, p, p, p], i),
        "pp_dnnl_pool_create": ([i] * 19 + [status], p),
        "pp_dnnl_pool_run": ([p, p, p, p], i),
        "pp_dnnl_binary_create": ([i] * 6 + [status], p),
        "pp_dnnl_binary_run": ([p] * 5 + [f, i, f, i, f, i], i),
        "pp_dnnl_concat_create": ([i] * 6 + [status], p),
        "pp_dnnl_reorder_create": ([i] * 8 + [status], p),
        "pp_dnnl_reorder_run": ([p] * 4 + [f, i], i),
        "pp_quant_isa": ([], i),
        "pp_table_isa": ([], i),
        "pp_swish_f32": ([i, p, n], None),
        "pp_table_u8": ([i, p, n, p], None),
        "pp_dnnl_conv_set_table": ([p, p], i),
        "pp_quantize_u8": ([i, p, p, n, f, i], None),
        "pp_dequantize_u8": ([i, p, p, n, f, i], None),
        "pp_dnnl_chain_run": ([i] + [p] * 11, i),
        "pp_dnnl_version": ([], i),
        "pp_dnnl_status": ([i], s),
    }
    for kind in ("conv", "pool", "binary", "concat", "reorder"):
        signatures.update({f"pp_dnnl_{kind}_scratch_bytes": ([p], n), f"pp_dnnl_{kind}_impl": ([p], s),
                           f"pp_dnnl_{kind}_destroy": ([p], None)})
    for name, (args, result) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, result
    return lib


def dnnl_version() -> str:
    """The version of the oneDNN library conv.dnnl runs on, e.g. ``3.2.0``."""
    v = library().pp_dnnl_version()
    return f"{v // 10000}.{v // 100 % 100}.{v % 100}"


def _status(code: int) -> str:
    """oneDNN's own name of a status code, in words ("invalid arguments")."""
    return library().pp_dnnl_status(code).decode().replace("_", " ")


def _adopt(obj: Any, kind: str, handle: int) -> None:
    """Give ``obj`` the C object ``handle`` that ``pp_dnnl_<kind>_create`` made: ``obj.handle``, ``obj.scratch_bytes``
    (the scratchpad a call needs), ``obj.impl`` (the implementation's name); destroyed when ``obj`` is."""
    lib = library()
    obj.handle = handle
    obj.scratch_bytes = int(getattr(lib, f"pp_dnnl_{kind}_scratch_bytes")(handle))
    obj.impl = getattr(lib, f"pp_dnnl_{kind}_impl")(handle).decode()
    obj._finalizer = weakref.finalize(obj, getattr(lib, f"pp_dnnl_{kind}_destroy"), handle)


NCHW, NHWC, BLOCKED = 0, 1, 2
"""Memory formats of ``_dnnl.c``'s create functions (``format_tag``): planar, channels-last, and oneDNN's channels in
blocks of 16 (nChw16c), which only a chain's own tensors take (:mod:`perfpredict.runtime.chain`)."""


class _Quant(ctypes.Structure):
    """``pp_dnnl_quant``: an int8 convolution's scales and zero points."""

    _fields_ = [("src_scale", ctypes.c_float), ("dst_scale", ctypes.c_float), ("src_zp", ctypes.c_int32),
                ("dst_zp", ctypes.c_int32), ("w_scales", ctypes.c_void_p)]


class _Primitive:
    """One created oneDNN convolution (for one input shape); destroyed with this object.

    ``w`` holds float32 weights, or int8 ones when ``quant`` (the int8 scales and zero points) is given;
    ``residual`` (a tensor of the output's shape added before the activation) is None or, at int8, the residual's
    quantisation parameters (fp32: any QParams)."""

    def __init__(self, node: Node, geo: ConvGeometry, x_shape: tuple[int, ...], w: np.ndarray,
                 b: np.ndarray | None, act: int, lo: float, hi: float, quant: _Quant | None = None,
                 residual: QParams | None = None, formats: tuple[int, int] = (NHWC, NHWC)) -> None:
        lib = library()
        n, c, h, wd = x_shape
        oh, ow = geo.out_hw(h, wd)
        (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.stride, geo.dilation
        pt, pl, pb, pr = geo.pads
        status = ctypes.c_int(0)
        handle = lib.pp_dnnl_conv_create(n, c, h, wd, geo.out_channels, oh, ow, kh, kw, sh, sw, pt, pl, pb, pr,
                                         dh, dw, geo.groups, w.ctypes.data, None if b is None else b.ctypes.data,
                                         act, lo, hi, None if quant is None else ctypes.byref(quant),
                                         int(residual is not None), residual.scale if residual else 1.0,
                                         residual.zero_point if residual else 0, *formats, ctypes.byref(status))
        if not handle:
            raise PlanError(f"conv.dnnl cannot run node '{node.name}' on input {list(x_shape)}: oneDNN says "
                            f"{_status(status.value)}")
        _adopt(self, "conv", handle)
        self.out_shape = (n, geo.out_channels, oh, ow)
        self.dense_window = geo.groups < c and (kh, kw) != (1, 1)  # neither pointwise nor depthwise
        self.formats = tuple(formats)
        self.own_swish = bool(lib.pp_dnnl_conv_own_swish(handle))  # a swish as our own pass after the call
        self._run = lib.pp_dnnl_conv_run

    def execute(self, name: str, node: Node, x: torch.Tensor, y: torch.Tensor, x_scale: float = 1.0,
                x_zp: int = 0, residual: torch.Tensor | None = None) -> None:
        """One call on channels-last ``x`` into ``y`` (``x_scale``/``x_zp`` quantise ``x`` at int8), adding the
        channels-last ``residual`` when the primitive was made with one, with a scratchpad from torch's
        allocator."""
        scratch = torch.empty(self.scratch_bytes, dtype=torch.uint8) if self.scratch_bytes else None
        code = self._run(self.handle, x.data_ptr(), y.data_ptr(), None if scratch is None else scratch.data_ptr(),
                         x_scale, x_zp, None if residual is None else residual.data_ptr())
        if code:
            raise PlanError(f"{name} failed on node '{node.name}': oneDNN says {_status(code)}")
        if _RECORDING:
            _RECORDING[-1].append((self, x, y, x_scale, x_zp, residual))


class ChannelConcat:
    """A concat of two channels-last tensors of ``shapes`` along the channels (u8 at int8: both on the output's
    grid), for a chain of oneDNN calls (:mod:`perfpredict.runtime.chain`); destroyed with this object. ``_dnnl.c``
    copies the parts itself (``pp_dnnl_concat_run``: 1.3-3x as fast as oneDNN 3.2's concat here)."""

    def __init__(self, shapes: tuple[tuple[int, ...], tuple[int, ...]], int8: bool) -> None:
        lib = library()
        (n, c0, h, w), (_, c1, _, _) = shapes
        status = ctypes.c_int(0)
        handle = lib.pp_dnnl_concat_create(n, c0, c1, h, w, int(int8), ctypes.byref(status))
        if not handle:
            raise PlanError(f"cannot concatenate {[list(s) for s in shapes]}: {_status(status.value)}")
        _adopt(self, "concat", handle)
        self.out_shape = (n, c0 + c1, h, w)


class Reorder:
    """A 4-D tensor of ``shape`` from one (precision, layout) to another, for a chain of oneDNN calls
    (:mod:`perfpredict.runtime.chain`): a quantisation (fp32 to int8, i.e. u8 on a per-tensor grid), a
    dequantisation (int8 to fp32) or a change of layout of floats (NCHW, NHWC); destroyed with this object.

    A (de)quantisation that keeps the layout runs ``_dnnl.c``'s own vector loops, bit for bit torch's (fbgemm's)
    arithmetic and faster than oneDNN 3.2's reorder with runtime scales; the others run oneDNN's reorder. ``impl``
    names which ("perfpredict:avx512f", "jit:uni", ...)."""

    def __init__(self, shape: tuple[int, ...], source: tuple[str, str], target: tuple[str, str]) -> None:
        lib = library()
        (sp, sl), (tp, tl) = source, target
        status = ctypes.c_int(0)
        fmt = {"NCHW": NCHW, "NHWC": NHWC, "nChw16c": BLOCKED}
        handle = lib.pp_dnnl_reorder_create(*shape, int(sp == "int8"), fmt[sl], int(tp == "int8"), fmt[tl],
                                            ctypes.byref(status))
        if not handle:
            raise PlanError(f"oneDNN cannot reorder a {list(shape)} tensor from {sp}/{sl} to {tp}/{tl}: it says "
                            f"{_status(status.value)}")
        _adopt(self, "reorder", handle)
        self.out_shape = tuple(shape)
        self.formats = (fmt[sl], fmt[tl])


_RECORDING: list[list[tuple]] = []  # the open recorders of calls, innermost last


@dataclass(frozen=True)
class ChainLink:
    """What the runtime needs to run a oneDNN kernel (``conv.dnnl``, ``conv.dnnl_int8``, ``maxpool.dnnl``) as one
    link of a chain of oneDNN calls made from C (:mod:`perfpredict.runtime.chain`) instead of through the kernel: the
    primitive made for the node's own input shape, whether it is int8, its output's grid at int8 (None at fp32, and
    for a pool, whose output is on its input's grid), and the grid of the residual it adds (at fp32 any QParams;
    None without a residual). Only kernels that do nothing after the oneDNN call carry one (no activation left to
    apply in torch, no clamp of an int8 output). ``kind`` is the C chain's: 0 a convolution, 1 a pool, 3 a gate
    product (``mul.dnnl``, whose gate is the step's input ``gate``)."""

    primitive: Any
    int8: bool
    out_qparams: QParams | None
    residual: QParams | None
    kind: int = 0
    gate: int = 1


@contextmanager
def recorded_calls() -> Iterator[list[tuple]]:
    """Within the block, every oneDNN convolution call a kernel makes (``conv.dnnl``, ``conv.dnnl_int8``,
    ``gemm.dnnl``) is appended, with the tensors it read and wrote, to the list this yields; :func:`call_chain`
    replays them. The calls a chain makes from C (:mod:`perfpredict.runtime.chain`) are not seen: record the pass of
    an executable built with ``chain=False``."""
    calls: list[tuple] = []
    _RECORDING.append(calls)
    try:
        yield calls
    finally:
        _RECORDING.remove(calls)


def call_chain(calls: list[tuple]) -> Callable[[], None]:
    """A function that runs the recorded ``calls`` (:func:`recorded_calls`) again, on the same tensors, back to
    back in one C call (``pp_dnnl_conv_run_chain``): oneDNN's own time for the sequence, with no Python between
    the calls. The tensors stay alive as long as the function does."""
    lib = library()
    n = len(calls)
    ptr = ctypes.c_void_p * n
    handles = ptr(*(c[0].handle for c in calls))
    srcs, dsts = ptr(*(c[1].data_ptr() for c in calls)), ptr(*(c[2].data_ptr() for c in calls))
    residuals = ptr(*(None if c[5] is None else c[5].data_ptr() for c in calls))
    scales = (ctypes.c_float * n)(*(c[3] for c in calls))
    zps = (ctypes.c_int * n)(*(c[4] for c in calls))
    scratch = torch.empty(max([c[0].scratch_bytes for c in calls] + [1]), dtype=torch.uint8)

    def run() -> None:
        code = lib.pp_dnnl_conv_run_chain(n, handles, srcs, dsts, residuals, scales, zps, scratch.data_ptr())
        if code:
            raise PlanError(f"a chain of {n} oneDNN convolutions failed: oneDNN says {_status(code)}")

    run.calls = calls  # type: ignore[attr-defined]  # keeps the primitives and tensors alive
    return run


def _residual(node: Node, p: _Primitive, r: torch.Tensor | None, res: QParams | None) -> torch.Tensor | None:
    """The residual tensor ``r`` as the primitive reads it: channels-last, of the output's shape and, at int8, on
    the grid the primitive was made for (requantised if it arrives on another); None without a residual."""
    if res is None:
        if r is not None:
            raise PlanError(f"node '{node.name}': a residual was passed to a kernel built without one")
        return None
    if r is None or tuple(r.shape) != p.out_shape:
        raise PlanError(f"node '{node.name}': the folded residual must have the output's shape {list(p.out_shape)}, "
                        f"got {None if r is None else list(r.shape)}")
    if r.dtype == torch.quint8 and (r.q_scale() != res.scale or r.q_zero_point() != res.zero_point):
        r = torch.quantize_per_tensor(r.dequantize(), res.scale, res.zero_point, torch.quint8)
    return r.contiguous(memory_format=torch.channels_last)


def _primitives(name: str, node: Node, geo: ConvGeometry,
                make: Callable[[tuple[int, ...]], _Primitive]) -> Callable[[tuple[int, ...]], _Primitive]:
    """A per-input-shape cache of primitives made by ``make(shape)``, checked against the weights' channels;
    the node's own input shape is made now, so the weights are reordered at build, not on the first call."""
    prims: dict[tuple[int, ...], _Primitive] = {}

    def primitive(shape: tuple[int, ...]) -> _Primitive:
        p = prims.get(shape)
        if p is None:
            if len(shape) != 4 or shape[1] != geo.in_channels:  # the weights fix the channels: never read past them
                raise PlanError(f"{name} node '{node.name}' takes (N, {geo.in_channels}, H, W) input, got "
                                f"{list(shape)}")
            p = prims[shape] = make(shape)
        return p

    n, _, h, wd = node.in_shape
    primitive((n, geo.in_channels, h, wd))
    return primitive


def _build_dnnl(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    _check_layout("conv.dnnl", ctx, ("NHWC",))
    w, b = conv_weights(weights)
    geo = ConvGeometry.of(node, tuple(w.shape))
    kind, scalars, rest = _post_op(ctx.fused_activation)
    lo, hi = (scalars + [0.0, 0.0])[:2]
    w_np = np.ascontiguousarray(w.numpy(), dtype=np.float32)
    b_np = None if b is None else np.ascontiguousarray(b.numpy(), dtype=np.float32)
    act = _ACTIVATIONS[kind]

    res = QParams(1.0, 0) if ctx.fused_residual else None

    def fp32(shape: tuple[int, ...]) -> _Primitive:
        return _Primitive(node, geo, shape, w_np, b_np, act, lo, hi, residual=res)

    primitive = _primitives("conv.dnnl", node, geo, fp32)
    cl = torch.channels_last

    def kernel(x: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
        if x.dtype != torch.float32:
            raise PlanError(f"conv.dnnl takes float32 input, got {x.dtype}")
        x = x.contiguous(memory_format=cl)
        p = primitive(tuple(x.shape))
        y = torch.empty(p.out_shape, memory_format=cl)
        p.execute("conv.dnnl", node, x, y, residual=_residual(node, p, r, res))
        return rest.apply_(y)

    if rest.is_identity:
        shape = (node.in_shape[0], geo.in_channels, *node.in_shape[2:])
        kernel.link = ChainLink(primitive(shape), False, None, res)  # type: ignore[attr-defined]
        # oneDNN's fast path for a convolution of few input channels (a stem) reads planar input and writes blocks
        kernel.planar_to_blocked = lambda: _Primitive(node, geo, shape, w_np, b_np, act, lo, hi,  # type: ignore
                                                      residual=res, formats=(NCHW, BLOCKED))
        # in blocks to blocks, for a chain whose own tensors run in them (chain._on_blocks)
        kernel.blocked = lambda: _Primitive(node, geo, shape, w_np, b_np, act, lo, hi,  # type: ignore
                                            residual=res, formats=(BLOCKED, BLOCKED))
    return kernel


def swish_table(ctx: BuildContext) -> np.ndarray | None:
    """The 256 output codes of a swish folded into an int8 convolution, one per code of the convolution's own
    output on its calibrated grid (``ctx.pre_activation_qparams``): code q stands for v = (q - zp) * scale, and maps
    to swish(v) = v * sigmoid(v) quantised onto the output's grid by the runtime's quantisation
    (:func:`~perfpredict.primitives.quantized.quantize_activation`). None (swish stays a oneDNN post-op, computed
    in float per value) where there is no such grid, a residual is folded too, or the CPU lacks AVX-512 VBMI,
    without which looking the codes up costs more than the post-op (``benchmarks/bench_epilogue.py``)."""
    pre, out = ctx.pre_activation_qparams, ctx.out_qparams
    if pre is None or out is None or ctx.fused_residual or library().pp_table_isa() != 1:
        return None
    v = (np.arange(256, dtype=np.float32) - np.float32(pre.zero_point)) * np.float32(pre.scale)
    with np.errstate(over="ignore"):  # exp(-v) of a large negative v is inf, and v / inf the swish's 0
        y = v / (np.float32(1.0) + np.exp(-v))
    return np.ascontiguousarray(quantize_activation(torch.from_numpy(y), out).int_repr().numpy())


def _build_dnnl_int8(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    if ctx.layout != "NHWC" or ctx.precision != "int8":
        raise PlanError(f"conv.dnnl_int8 runs in layouts ['NHWC'] at int8, not {ctx.layout} at {ctx.precision}")
    if ctx.out_qparams is None:
        raise PlanError(f"conv.dnnl_int8: node '{node.name}' needs calibrated output qparams (ctx.out_qparams)")
    out_qp = ctx.out_qparams
    in_qp = ctx.in_qparams[0] if ctx.in_qparams else QParams(1.0, 0)  # each call passes its input's own
    w, b = conv_weights(weights)
    geo = ConvGeometry.of(node, tuple(w.shape))
    kind, scalars, rest = _post_op(ctx.fused_activation)
    lo, hi = (scalars + [0.0, 0.0])[:2]
    qw = quantize_weight_per_channel(w)
    w_np = np.ascontiguousarray(qw.int_repr().numpy(), dtype=np.int8)
    w_scales = np.ascontiguousarray(qw.q_per_channel_scales().numpy(), dtype=np.float32)
    b_np = None if b is None else np.ascontiguousarray(b.numpy(), dtype=np.float32)
    table = swish_table(ctx) if kind == "swish" else None
    grid = out_qp if table is None else ctx.pre_activation_qparams  # the grid the primitive writes
    quant = _Quant(in_qp.scale, grid.scale, in_qp.zero_point, grid.zero_point, w_scales.ctypes.data)
    quant.keep = w_scales  # keeps the pointer above valid for the primitives made later, for other input shapes
    act = _ACTIVATIONS[kind] if table is None else 0
    clamp = None if rest.is_identity else (None if rest.lo == -np.inf else rest.lo,
                                            None if rest.hi == np.inf else rest.hi)

    res = None
    if ctx.fused_residual:
        if len(ctx.in_qparams) < 2:
            raise PlanError(f"conv.dnnl_int8: node '{node.name}' folds a residual but has no qparams for it "
                            "(the last of ctx.in_qparams)")
        res = QParams(float(ctx.in_qparams[-1].scale), int(ctx.in_qparams[-1].zero_point))

    def int8(shape: tuple[int, ...]) -> _Primitive:
        p = _Primitive(node, geo, shape, w_np, b_np, act, lo, hi, quant, res)
        if table is not None and library().pp_dnnl_conv_set_table(p.handle, table.ctypes.data):
            raise PlanError(f"conv.dnnl_int8: node '{node.name}': the activation table was refused")
        return p

    primitive = _primitives("conv.dnnl_int8", node, geo, int8)
    cl = torch.channels_last
    scale, zp = float(out_qp.scale), int(out_qp.zero_point)

    def kernel(x: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
        if x.dtype != torch.quint8:
            raise PlanError(f"conv.dnnl_int8 takes quint8 activations (see quantize_activation), got {x.dtype}")
        x = x.contiguous(memory_format=cl)
        p = primitive(tuple(x.shape))
        y = torch._empty_affine_quantized(p.out_shape, scale=scale, zero_point=zp, dtype=torch.quint8,
                                          memory_format=cl)
        p.execute("conv.dnnl_int8", node, x, y, x.q_scale(), x.q_zero_point(), _residual(node, p, r, res))
        return y if clamp is None else torch.clamp(y, *clamp)

    if clamp is None:
        shape = (node.in_shape[0], geo.in_channels, *node.in_shape[2:])
        kernel.link = ChainLink(primitive(shape), True, out_qp, res)  # type: ignore[attr-defined]
    return kernel


@lru_cache(maxsize=4096)
def _probe(geo: ConvGeometry, x_shape: tuple[int, ...], precision: str, threads: int) -> tuple[str, int]:
    """(implementation name, scratchpad bytes) of the primitive oneDNN creates on this CPU for this convolution
    (weights of ones, unit scales) with ``threads`` threads; the thread count is part of the key because oneDNN
    sizes per-thread buffers by it."""
    w_shape = (geo.out_channels, geo.in_channels // geo.groups, *geo.kernel)
    node = Node("probe", "Conv", (), (), (x_shape,), (), {})
    if precision == "int8":
        scales = np.ones(geo.out_channels, dtype=np.float32)
        p = _Primitive(node, geo, x_shape, np.ones(w_shape, dtype=np.int8), None, 0, 0.0, 0.0,
                       _Quant(1.0, 1.0, 0, 0, scales.ctypes.data))
    else:
        p = _Primitive(node, geo, x_shape, np.ones(w_shape, dtype=np.float32), None, 0, 0.0, 0.0)
    return p.impl, p.scratch_bytes


def _probe_node(node: Node, precision: str) -> tuple[str, int]:
    n, c, h, w = node.in_shape
    return _probe(ConvGeometry.of(node), (n, c, h, w), precision, torch.get_num_threads())


def conv_impl(node: Node, precision: str = "fp32") -> str:
    """The name of the implementation oneDNN picks for ``node`` on this CPU at ``precision`` ("fp32" or
    "int8") at the current torch thread count, e.g. ``jit:avx512_core_amx`` or ``jit_int8:avx512_core_vnni``."""
    return _probe_node(node, precision)[0]


def _ws_dnnl(node: Node, precision: str, layout: str) -> int:
    # the weights are reordered once at build (deployed weights); a call adds oneDNN's scratchpad only (pads,
    # asymmetric ones too, are oneDNN's own: no padded copy of the input). Its size, queried from oneDNN 3.2 at
    # 2 threads (4 KiB less at 1): 12 KiB for dense convolutions, 8 KiB depthwise, none for other grouped ones
    # with AVX-512 (12 KiB with AVX2) and for spatial kernels on at most 4 input channels (the stems), which oneDNN
    # runs another way
    geo = ConvGeometry.of(node)
    if geo.is_depthwise:
        return 8 * 1024 + 128
    if geo.groups == 1 and geo.in_channels <= 4 and geo.kernel != (1, 1):
        return 0
    return _onednn_scratch(geo)


register(Primitive(
    name="conv.dnnl", ops=("Conv",), layouts=("NHWC",), precisions=("fp32",), build=_build_dnnl,
    applies=_onednn_applies, workspace_bytes=_ws_dnnl, rank=3, epilogues=(*ELTWISE, RESIDUAL),
    description="oneDNN convolution through oneDNN's C API (one ctypes call per run, primitive and blocked "
                "weights made once at build, relu/clamp/swish/hardswish/sigmoid and residual-add post-ops, "
                "asymmetric pads native); any 2-D conv"))


def _ws_dnnl_int8(node: Node, precision: str, layout: str) -> int:
    # the s8 weights are reordered once at build; a call adds oneDNN's scratchpad only. Its size depends on the
    # kernel oneDNN picks for this CPU (AMX, VNNI) and on the thread count, from a few hundred bytes (depthwise)
    # to hundreds of KiB (AMX tiles and accumulators per thread), so it is queried from oneDNN itself (the size on
    # this machine)
    return _probe_node(node, "int8")[1]


register(Primitive(
    name="conv.dnnl_int8", ops=("Conv",), layouts=("NHWC",), precisions=("int8",), build=_build_dnnl_int8,
    applies=_onednn_applies, workspace_bytes=_ws_dnnl_int8, rank=40, epilogues=(*ELTWISE, RESIDUAL),
    description="oneDNN int8 convolution through oneDNN's C API (u8 activations with the calibrated scale and "
                "zero point, per-channel s8 weights, float bias, a residual added and the activation applied in "
                "float before the output is requantised, a swish through a table of codes where the CPU has AVX-512 "
                "VBMI; AMX/VNNI where the CPU has them); any 2-D conv"))

__all__ = ["ChainLink", "ChannelConcat", "DISTRIBUTIONS", "DnnlUnavailable", "Reorder", "call_chain", "conv_impl",
           "dnnl_paths", "dnnl_version", "library", "recorded_calls"]
