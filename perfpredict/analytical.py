"""An analytical roofline cost model: latency and peak memory of a plan from device throughput figures.

Each node costs ``overhead + max(compute time, memory time)`` (the roofline): compute time is the work
(MACs, or FLOPs for non-MAC ops) over the device's peak (fp32 or int8) times the primitive's efficiency;
memory time is the bytes moved (activations in and out, weights, and extra traffic such as im2col's
column buffer or Winograd's transformed tiles) over the memory bandwidth. Per-primitive factors live in
a registry of :class:`KernelTraits` (:func:`register_traits`), so new primitives can add theirs.
Where neighbouring choices disagree, layout conversions (NCHW<->NHWC) and quantise/dequantise
(fp32<->int8) cost memory traffic on the data-flow edge between them.

Pruning a dense Conv/Gemm by ``r`` keeps ``1 - r`` of its output channels, which shrinks the work of the
nodes downstream up to the next dense Conv/Gemm (see :func:`perfpredict.predictor.channel_sources`).
The model is exactly additive (:class:`perfpredict.predictor.NodeCostModel`): a plan's latency is the
sum of per-node terms and pairwise terms (data-flow edges and channel-source pairs); ``predict`` and
``node_costs``/``edge_costs`` evaluate the same tables, so an exact solver on those tables finds the
true minimum of ``predict``. Two simplifications make it so, both documented here: a node fed by several
pruned sources (a Concat and its consumer) is costed as the channel-weighted mean of its cost under each
source's keep factor, and an edge's conversion traffic uses the producer's own keep factor (a
pass-through producer, e.g. a Relu after a pruned Conv, is costed at full size). Conversions are charged
per data-flow edge (the runtime shares one conversion between consumers that need the same variant, so
a tensor read by several converting consumers is over-charged). An activation the runtime folds into the
Conv/Gemm it reads costs nothing when both run at one precision (a swish, HardSwish or Sigmoid: and the
producer's primitive applies it).

Peak memory follows the runtime's estimate (:func:`perfpredict.runtime.estimate_peak_memory`): weights
as deployed (int8: 1 byte per weight plus a scale and zero point per channel) + the largest set of live
activations + the largest declared workspace, vectorised over plans (the runtime's estimate builds the
schedule of each plan and is too slow for a search); conversion temporaries are not counted.

Device figures (:func:`device_rates`) come from the DeviceSpec: ``peak_gflops_fp32``,
``peak_gops_int8`` and ``mem_bw_triad_gbs`` (or ``mem_bw_copy_gbs``) when measured; otherwise defaults:

* fp32 peak = cores x clock (``freq_mhz_max``, else ``freq_mhz_base``, else 2.0 GHz on x86 and 1.5 GHz
  elsewhere) x FLOPs per cycle (64 with avx512f, 32 with avx2+fma, 16 with avx or 64-bit NEON, 8
  otherwise) x 0.7 sustained; heterogeneous ``clusters`` add up per cluster;
* int8 peak = fp32 peak x 4 with a dot-product ISA (avx512_vnni, avx_vnni, asimddp), x 2 otherwise;
* bandwidth = cores x 6 GB/s on x86, x 3 GB/s elsewhere, clamped to [2, 200] GB/s;
* GPUs (kind "gpu") use ``gpu_tflops_fp32`` and ``gpu_mem_bandwidth_gbs``.

A measured fp32 peak below 1/25 of the ISA estimate (a measurement on a busy machine) is replaced by the
estimate. A board with neither a measured peak nor a core count raises :class:`BoardError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from perfpredict.errors import BoardError
from perfpredict.graph import Graph, Node
from perfpredict.plan import Choice, Plan, default_choice, is_prunable
from perfpredict.predictor import Prediction, channel_sources, interaction_pairs
from perfpredict.primitives.conv import blocked_as, onednn_block
from perfpredict.primitives.quantized import DEPTHWISE_FALLBACK_SHARE, depthwise_fallback
from perfpredict.primitives.registry import get_primitive
from perfpredict.primitives.tensor_ops import int8_concat_direct

if TYPE_CHECKING:
    from perfpredict.devices import DeviceSpec
    from perfpredict.runtime.executor import Fusion

__all__ = ["DeviceRates", "KERNEL_FACTORS", "KernelTraits", "RooflineModel", "device_rates", "fusable_activations",
           "kernel_factors", "register_traits",
           "traits_for"]

_SUSTAINED = 0.7
_CONVERSION_OVERHEAD_MS = 0.003
_TRANSPOSE_EFF = 0.5


# ------------------------------------------------------------------------------------------- device


@dataclass(frozen=True)
class DeviceRates:
    """Throughput figures the roofline uses; ``defaulted`` names those not read from the board."""

    gflops_fp32: float
    gops_int8: float
    bandwidth_gbs: float
    cores: int
    defaulted: tuple[str, ...] = ()


def _flops_per_cycle(device: "DeviceSpec") -> float:
    isa = set(device.isa_features)
    arch = (device.arch or "").lower()
    if "avx512f" in isa:
        return 64.0
    if "avx2" in isa and "fma" in isa:
        return 32.0
    if "avx" in isa or "neon" in isa or arch in ("aarch64", "arm64"):
        return 16.0
    return 8.0


def _default_freq_mhz(device: "DeviceSpec") -> float:
    arch = (device.arch or "").lower()
    return 2000.0 if arch in ("x86_64", "amd64", "i686", "x86") else 1500.0


def _is_x86(device: "DeviceSpec") -> bool:
    return (device.arch or "").lower() in ("x86_64", "amd64", "i686", "x86") or any(
        f.startswith(("avx", "sse")) for f in device.isa_features)


_IMPLAUSIBLE = 25.0  # a measured peak below 1/25 of the ISA estimate is not trusted


def _derived_gflops(device: "DeviceSpec", cores: int) -> float:
    fpc = _flops_per_cycle(device)
    if device.clusters:
        base = device.freq_mhz_max or device.freq_mhz_base or _default_freq_mhz(device)
        return sum(c.count * (c.freq_mhz_max or base) for c in device.clusters) * fpc * _SUSTAINED / 1000
    freq = device.freq_mhz_max or device.freq_mhz_base or _default_freq_mhz(device)
    return cores * freq * fpc * _SUSTAINED / 1000


def device_rates(device: "DeviceSpec", threads: int | None = None) -> DeviceRates:
    """Peak fp32 GFLOP/s, int8 GOP/s and bandwidth of ``device`` (measured, else the documented defaults).

    ``threads`` scales the compute peak to that many cores (bandwidth saturates at half the cores).
    """
    defaulted: list[str] = []
    cores = device.cores or (sum(c.count for c in device.clusters) if device.clusters else None) or device.threads
    if device.kind == "gpu":
        gflops = device.peak_gflops_fp32 or (device.gpu_tflops_fp32 * 1000 if device.gpu_tflops_fp32 else None)
        bw = device.gpu_mem_bandwidth_gbs or device.mem_bw_triad_gbs or device.mem_bw_copy_gbs
        if gflops is None or bw is None:
            raise BoardError(f"board '{device.name}': the roofline model needs gpu_tflops_fp32 (or peak_gflops_fp32) "
                             "and gpu_mem_bandwidth_gbs for a gpu board")
        int8 = device.peak_gops_int8 or 4 * gflops
        return DeviceRates(gflops, int8, bw, device.gpu_sm_count or 1,
                           () if device.peak_gops_int8 else ("peak_gops_int8",))
    gflops = device.peak_gflops_fp32
    measured_threads = device.threads_used
    if gflops is not None and cores and gflops < _derived_gflops(device, cores) / _IMPLAUSIBLE:
        # a measurement taken on a busy machine (or a quick one): fall back to the ISA estimate
        gflops = None
        defaulted.append("peak_gflops_fp32 (measured value implausibly low)")
    if gflops is None:
        if not cores:
            raise BoardError(f"board '{device.name}': the roofline model needs peak_gflops_fp32 or a core count "
                             "(cores, threads or clusters) to estimate throughput; the board has none of them")
        gflops = _derived_gflops(device, cores)
        if not any(d.startswith("peak_gflops_fp32") for d in defaulted):
            defaulted.append("peak_gflops_fp32")
        measured_threads = cores
    int8 = device.peak_gops_int8
    if int8 is None:
        dot = {"avx512_vnni", "avx_vnni", "asimddp"} & set(device.isa_features)
        int8 = gflops * (4.0 if dot else 2.0)
        defaulted.append("peak_gops_int8")
    bw = device.mem_bw_triad_gbs or device.mem_bw_copy_gbs
    if bw is None:
        if not cores:
            raise BoardError(f"board '{device.name}': the roofline model needs mem_bw_triad_gbs or a core count to "
                             "estimate memory bandwidth; the board has neither")
        bw = min(200.0, max(2.0, cores * (6.0 if _is_x86(device) else 3.0)))
        defaulted.append("mem_bw_triad_gbs")
    cores = int(cores or 1)
    if threads:
        ref = measured_threads or cores
        scale = min(threads, cores) / max(1, min(ref, cores))
        gflops *= scale
        int8 *= scale
        bw *= min(1.0, 2.0 * min(threads, cores) / cores)
    return DeviceRates(float(gflops), float(int8), float(bw), cores, tuple(defaulted))


# ------------------------------------------------------------------------------------------- kernels


def _no_traffic(node: Node) -> float:
    return 0.0


@dataclass(frozen=True)
class KernelTraits:
    """How a primitive uses the machine, relative to the roofline.

    ``compute_eff``: fraction of the peak (fp32, or int8 at int8 precision) reached on MAC work;
    ``memory_eff``: fraction of bandwidth reached; ``mac_factor``: arithmetic done per nominal MAC
    (Winograd F(2x2,3x3): 1/2.25); ``extra_traffic(node)``: extra bytes moved at fp32 and full
    channels (im2col column buffer, transformed tiles); ``work(node)``: replaces MACs when the
    algorithm does different work (FFT); ``overhead_ms``: fixed dispatch cost; ``single_thread``: runs
    on one core; ``layout_eff``: multiplier on ``compute_eff`` per layout; ``depthwise_eff``:
    multiplier for depthwise/grouped convs the kernel is not specialised for; ``slow_path(node, keep_in)``:
    whether the kernel runs ``node`` (with ``keep_in`` of its input channels) on a slow path, which reaches
    ``slow_path_eff`` of the peak instead of the factors above.
    """

    compute_eff: float
    memory_eff: float = 0.8
    mac_factor: float = 1.0
    extra_traffic: Callable[[Node], float] = _no_traffic
    work: Callable[[Node], float] | None = None
    overhead_ms: float = 0.004
    single_thread: bool = False
    layout_eff: Mapping[str, float] = field(default_factory=dict)
    depthwise_eff: float = 0.25
    slow_path: Callable[[Node, float], bool] | None = None
    slow_path_eff: float = 1.0


def _out_spatial(node: Node) -> int:
    s = node.out_shape
    return int(np.prod(s[2:])) * s[0] if len(s) > 2 else int(np.prod(s))


def _im2col_bytes(node: Node) -> float:
    a = node.attrs
    cols = a["in_channels"] // a["groups"] * int(np.prod(a["kernel"])) * _out_spatial(node) * a["groups"]
    return 2.0 * 4 * cols  # the column buffer is written then read


def _winograd_bytes(node: Node) -> float:
    # F(2x2,3x3): 4x4 input tiles per 2x2 output block: transformed input and output are ~4x their tensors
    return 4.0 * (node.bytes_in + node.bytes_out)


def _winograd4_bytes(node: Node) -> float:
    # F(4x4,3x3): 6x6 input tiles per 4x4 output block: the transformed input and the products are 2.25x their
    # tensors, each written once and read once; the transformed weights are 4x the weights
    return 2 * 2.25 * (node.bytes_in + node.bytes_out) + 3.0 * 4 * node.param_count


def _fft_size(node: Node) -> tuple[int, int]:
    h, w = node.in_shape[2], node.in_shape[3]
    kh, kw = node.attrs["kernel"]
    pads = node.attrs["pads"]
    return h + pads[0] + pads[2] + kh - 1, w + pads[1] + pads[3] + kw - 1


def _fft_work(node: Node) -> float:
    """MAC-equivalents of an FFT convolution: transforms of every input and output channel plus the
    complex products over half the spectrum (real FFT), computed at stride 1 then subsampled."""
    a = node.attrs
    hp, wp = _fft_size(node)
    n = hp * wp
    batch = node.in_shape[0]
    transforms = batch * (a["in_channels"] + a["out_channels"]) * 2.5 * n * math.log2(max(n, 2))
    products = batch * 4.0 * a["in_channels"] * a["out_channels"] * n / 2 / a["groups"]
    return (transforms + 2 * products) / 2.0


def _fft_bytes(node: Node) -> float:
    """Spectra moved by an FFT convolution: every input and output channel's (written then read) plus the
    precomputed weight spectra (read once per call)."""
    a = node.attrs
    hp, wp = _fft_size(node)
    bins = 8.0 * hp * (wp // 2 + 1)
    return 2.0 * bins * node.in_shape[0] * (a["in_channels"] + a["out_channels"]) \
        + bins * a["in_channels"] * a["out_channels"] / a["groups"]


_TRAITS: dict[str, KernelTraits] = {}


def _int8_depthwise_fallback(node: Node, keep_in: float) -> bool:
    return depthwise_fallback(node, round(node.attrs["in_channels"] * keep_in))


def register_traits(primitive: str, traits: KernelTraits) -> None:
    """Register (or replace) the roofline factors of the primitive called ``primitive``."""
    _TRAITS[primitive] = traits


def traits_for(primitive: str) -> KernelTraits:
    """The factors of ``primitive``: registered, else by name pattern (``*.reference``, ``*.int8``,
    ``*.torch`` and other memory-bound ops), else a generic kernel at 30% of peak."""
    if primitive in _TRAITS:
        return _TRAITS[primitive]
    if primitive.endswith(".reference"):
        return _TRAITS["conv.reference"]
    if primitive.endswith(".int8"):
        return KernelTraits(compute_eff=0.3, memory_eff=0.7)
    return KernelTraits(compute_eff=0.3, memory_eff=0.6, overhead_ms=0.003)


# Factors relative to the roofline, set against the runtime's kernels measured one-threaded on an x86
# AVX-512 host (64x56x56 3x3, 256->64 1x1 at 56x56, 96-channel depthwise at 56x56, 256x14x14 3x3 and the
# 7x7 stem): e.g. Winograd measured 1.1-1.35x and FFT 8-37x the time of oneDNN there, int8 0.25-0.9x.
register_traits("conv.onednn", KernelTraits(0.65, layout_eff={"NHWC": 0.9}))
# packed weights: on average 0.58-0.61x the time of conv.onednn in NHWC over the 315 conv configurations of
# datasets/xeon.db at 1 and 2 threads (benchmarks/bench_conv_pair.py), most in deep layers where reordering
# the weights every call dominates
register_traits("conv.onednn_packed", KernelTraits(0.85))
# the same oneDNN convolution through oneDNN's C API: 2-3 us per call instead of ~30 (benchmarks/bench_dispatch.py);
# not fitted, a prior only
register_traits("conv.dnnl", KernelTraits(0.85, overhead_ms=0.003))
register_traits("conv.native", KernelTraits(0.45, memory_eff=0.7, overhead_ms=0.005, depthwise_eff=0.05))
register_traits("conv.im2col", KernelTraits(0.3, memory_eff=0.4, extra_traffic=_im2col_bytes, overhead_ms=0.01,
                                            depthwise_eff=0.1))
register_traits("conv.winograd", KernelTraits(0.22, memory_eff=0.6, mac_factor=1 / 2.25,
                                              extra_traffic=_winograd_bytes, overhead_ms=0.01))
register_traits("conv.winograd4", KernelTraits(0.35, memory_eff=0.5, mac_factor=1 / 4,
                                                   extra_traffic=_winograd4_bytes, overhead_ms=0.01))
register_traits("conv.fft", KernelTraits(0.08, memory_eff=0.4, work=_fft_work, extra_traffic=_fft_bytes,
                                         overhead_ms=0.05))
register_traits("conv.gemm1x1", KernelTraits(0.7, layout_eff={"NHWC": 1.0}))
register_traits("conv.depthwise", KernelTraits(0.3, memory_eff=0.35, depthwise_eff=1.0))
register_traits("conv.reference", KernelTraits(0.09, memory_eff=0.3, single_thread=True, overhead_ms=0.001,
                                               depthwise_eff=1.0))
register_traits("conv.int8", KernelTraits(0.45, memory_eff=0.7, layout_eff={"NHWC": 1.0}, overhead_ms=0.006,
                                          depthwise_eff=0.1, slow_path=_int8_depthwise_fallback,
                                          slow_path_eff=DEPTHWISE_FALLBACK_SHARE))
# oneDNN int8 through its C API: AMX or VNNI kernels for any channel count, depthwise included. On the
# AMX Xeon of datasets/xeon2.db it took a median 0.27x (1 thread) / 0.33x (2 threads) the time of conv.int8
# (fbgemm) over 358/355 int8 NHWC configurations (benchmarks/bench_conv_pair.py). Its dense layer records there
# reach 0.64 / 0.42 of the int8 peak at the 90th percentile (1 / 2 threads), where conv.dnnl's reach 0.75 / 0.66
# of the fp32 peak for a factor of 0.85: scaled alike, 0.73 / 0.54, hence 0.6
register_traits("conv.dnnl_int8", KernelTraits(0.6, memory_eff=0.7, overhead_ms=0.003, depthwise_eff=0.15))
register_traits("gemm.blas", KernelTraits(0.5))
register_traits("gemm.dnnl", KernelTraits(0.5))  # no records yet: priced as gemm.blas until measured
register_traits("gemm.reference", KernelTraits(0.09, memory_eff=0.3, single_thread=True, overhead_ms=0.001))
register_traits("gemm.int8", KernelTraits(0.35, memory_eff=0.7, overhead_ms=0.006))

_LAYOUTS = ("NCHW", "NHWC")
_PRECISION_BYTES = {"fp32": 4, "int8": 1}


def _is_dense(node: Node) -> bool:
    """Whether the node resets channels (its output channel count is its own)."""
    if node.op in ("Gemm", "MatMul"):
        return True
    if node.op != "Conv":
        return False
    a = node.attrs
    return not (a["groups"] > 1 and a["groups"] == a["in_channels"] == a["out_channels"])


def _is_depthwise_like(node: Node) -> bool:
    return node.op == "Conv" and node.attrs["groups"] > 1


KERNEL_FACTORS: tuple[str, ...] = ("work_per_op", "compute_eff", "extra_bytes", "memory_eff", "overhead_ms",
                                   "single_thread")
"""The columns of :func:`kernel_factors`."""


# Activation bytes an int8 node moves per element, relative to fp32's 4, for the ops whose int8 kernels do not run at
# one byte per element: torch's quantised Add, Mul and batch norm dequantise, compute in float and requantise to
# their calibrated output scale, and quantized::cat requantises its inputs to one scale (through fp32 buffers where
# it cannot join them directly, int8_concat_direct). On the layer records of datasets/xeon2.db and amd.db (1 and 2
# threads) these ops at int8 took 0.6-1.5x their fp32 time (HardSwish 0.5x, Concat 1-2x), where one byte per element
# prices them at 0.25x; Relu, Clip, the pools and the views keep their input's scale and do run at about 0.25x.
INT8_ACTIVATION_SCALE: Mapping[str, float] = {"Add": 1.0, "Mul": 1.0, "BatchNormalization": 1.0, "Concat": 1.0,
                                              "HardSwish": 0.5}
INT8_CONCAT_FALLBACK_SCALE = 2.0
"""quantized::cat through fp32: dequantised inputs and the fp32 result are written and read once more."""

# torch runs a max pool on an NCHW tensor (at::native's contiguous kernel; quantized::max_pool2d at int8) one output
# element at a time, loading each element of its window in scalar code; on channels-last tensors it vectorises over
# channels, as oneDNN's pooling does. Bytes over bandwidth then price the NCHW pool far too low, and more so the more
# window elements it loads per byte: on the layer records of five stores of other machines than the Zen 3 VM (xeon,
# xeon2, amd, zen5, proxy; fp32 and int8, 1 and 2 threads) the measured time less the prior's other terms was a
# median 8-72x the bytes over the bandwidth for 2x2 windows at stride 2 (per store, precision and threads), more for
# 3x3 windows at stride 2 in every such group, and 32-119x for 3x3 at stride 1. benchmarks/pool_prior.py fits
# slowdown = per_byte + per_window_byte x the window elements per byte moved to each store, precision and thread
# count; the medians over the fits are below.


@dataclass(frozen=True)
class MemoryCost:
    """How long a kernel takes to move its data, in units of bytes at the full bandwidth: ``per_byte`` for each byte
    it reads and writes, plus ``per_window_byte`` for each byte of every window element it loads (a pool's output
    elements times its kernel area, at the element's size)."""

    per_byte: float = 1.0
    per_window_byte: float = 0.0


MEMORY_COSTS: Mapping[tuple[str, str], MemoryCost] = {("maxpool.torch", "NCHW"): MemoryCost(6.8, 11.4)}
"""(primitive, layout) -> its :class:`MemoryCost`, where it is far from moving bytes at the bandwidth: the GNN's
analytical priors (``features``, schema 13) price the kernel's memory time by it."""


def memory_cost(primitive: str, layout: str) -> MemoryCost:
    """The :class:`MemoryCost` of ``primitive`` in ``layout`` (:data:`MEMORY_COSTS`; else bytes at the bandwidth)."""
    return MEMORY_COSTS.get((primitive, layout), MemoryCost())


def int8_activation_scale(node: Node, layout: str) -> float:
    """Bytes ``node`` moves per activation element at int8 in ``layout``, relative to fp32: 0.25 (one byte) unless
    its int8 kernel computes in float (:data:`INT8_ACTIVATION_SCALE`, :data:`INT8_CONCAT_FALLBACK_SCALE`).

    The GNN prices the nodes it does not correct with it (``features.PlanFeatures.fallback_ms``). The roofline
    (:class:`RooflineModel`) keeps one byte per element: with it, its ranking of the plans of each model on
    ``xeon2.db``'s beaconed campaign fell (Kendall 0.695 to 0.663 over 96 held-out model groups), its int8
    convolutions being priced far lower than they run."""
    if node.op == "Concat" and not int8_concat_direct(node, layout):
        return INT8_CONCAT_FALLBACK_SCALE
    return INT8_ACTIVATION_SCALE.get(node.op, _PRECISION_BYTES["int8"] / 4.0)


def kernel_factors(node: Node, primitive: str, layout: str) -> tuple[float, float, float, float, float, float]:
    """How ``primitive``'s traits scale the roofline of ``node`` in ``layout``, at full channels and off any slow
    path (:data:`KERNEL_FACTORS`): the work done per nominal operation (Winograd's ``mac_factor``, or an FFT's
    work over the node's MACs), the share of the peak reached (with the layout's and depthwise factors), the extra
    bytes moved at fp32, the share of the bandwidth reached, the fixed cost per call (ms), and 1.0 if it runs on one
    core. :meth:`RooflineModel` prices a node from these; the GNN's features read them too."""
    t = traits_for(primitive)
    work = t.work(node) / node.macs if t.work is not None and node.macs else t.mac_factor
    eff = t.compute_eff * t.layout_eff.get(layout, 1.0)
    if _is_depthwise_like(node):
        eff *= t.depthwise_eff
    return work, min(eff, 1.0), float(t.extra_traffic(node)), t.memory_eff, t.overhead_ms, float(t.single_thread)


# ------------------------------------------------------------------------------------------- tables


class _GraphCosts:
    """Cost tables of one graph on one device: per-node and per-pair terms over growing choice lists."""

    def __init__(self, graph: Graph, rates: DeviceRates, fuse_activations: bool):
        self.graph = graph
        self.rates = rates
        self.names = [n.name for n in graph.nodes]
        self.pos = {n: i for i, n in enumerate(self.names)}
        self.sources = channel_sources(graph)
        self.pairs = interaction_pairs(graph)
        self.dense = [_is_dense(n) for n in graph.nodes]
        self.prunable = [is_prunable(graph, n) for n in graph.nodes]
        # bytes (fp32, full channels) flowing on each data-flow node pair
        self.prune_scale = _prune_scale(graph)
        # bytes (fp32, full channels) flowing on each data-flow node pair; (bytes, of which layout-sensitive)
        self.edge_bytes: dict[tuple[int, int], tuple[float, float]] = {}
        for e in graph.edges:
            shape = graph.tensor_shapes.get(e.tensor, ())
            b, lb = self.edge_bytes.get((e.src, e.dst), (0.0, 0.0))
            nb = 4.0 * float(np.prod(shape))
            self.edge_bytes[(e.src, e.dst)] = (b + nb, lb + (nb if _layout_matters(shape) else 0.0))
        self.input_bytes = {i: (0.0, 0.0) for i in range(len(graph))}
        self.output_bytes = {i: (0.0, 0.0) for i in range(len(graph))}
        for i, n in enumerate(graph.nodes):
            for t in n.activation_inputs:
                if t in graph.inputs:
                    self.input_bytes[i] = _add_bytes(self.input_bytes[i], graph.tensor_shapes.get(t, ()))
            for t in n.outputs:
                if t in graph.outputs:
                    self.output_bytes[i] = _add_bytes(self.output_bytes[i], graph.tensor_shapes.get(t, ()))
        # a foldable node -> the producer it folds into (when both run at one precision and the producer's
        # primitive applies it), and the runtime's Fusion it belongs to
        self.fused_into: dict[int, int] = {}
        self.folded_as: dict[int, Fusion] = {}
        if fuse_activations:
            from perfpredict.runtime.executor import fusion_patterns

            for f in fusion_patterns(graph):
                # an activation after a folded residual Add is costed as a node of its own (its fold depends on
                # the Conv's primitive, which no pair term between it and the Add can see)
                for a in f.nodes[:1] if f.residual is not None else f.nodes:
                    self.fused_into[self.pos[a]] = self.pos[f.producer]
                    self.folded_as[self.pos[a]] = f
        self._f_memo: dict[tuple[int, Choice, float], float] = {}
        # growing choice lists for predict()
        self.choices: list[list[Choice]] = [[] for _ in graph.nodes]
        self.lookup: list[dict[Choice, int]] = [{} for _ in graph.nodes]
        self.unary: list[np.ndarray] = [np.zeros(0) for _ in graph.nodes]
        self.pair_tables: dict[tuple[int, int], np.ndarray] = {}
        self.pair_index = [(self.pos[s], self.pos[d]) for s, d in self.pairs]
        self.pairs_of: list[list[tuple[int, int]]] = [[] for _ in graph.nodes]
        for s, d in self.pair_index:
            self.pairs_of[s].append((s, d))
            self.pairs_of[d].append((s, d))

    # --- single-node latency
    def node_ms(self, i: int, choice: Choice, keep_in: float) -> float:
        """Latency of node ``i`` running ``choice`` with ``keep_in`` of its input channels."""
        key = (i, choice, keep_in)
        hit = self._f_memo.get(key)
        if hit is not None:
            return hit
        node = self.graph.nodes[i]
        t = traits_for(choice.primitive)
        r = self.rates
        el = _PRECISION_BYTES.get(choice.precision, 4) / 4.0
        keep_out = (1.0 - choice.prune * self.prune_scale[i]) if self.dense[i] else keep_in
        scale = keep_in * keep_out if self.dense[i] else keep_in
        if node.op in _VIEW_OPS:
            self._f_memo[key] = t.overhead_ms
            return t.overhead_ms
        work_per_op, eff, extra, memory_eff, overhead, single = kernel_factors(node, choice.primitive, choice.layout)
        ops = 2.0 * node.macs * work_per_op * scale if node.macs else float(node.flops) * keep_in
        peak = (r.gops_int8 if choice.precision == "int8" else r.gflops_fp32) * 1e9
        if single:
            peak /= max(1, r.cores)
        if t.slow_path is not None and t.slow_path(node, keep_in):
            eff = min(t.slow_path_eff, 1.0)
        compute_s = ops / (peak * eff)
        weights = node.param_count * 4.0 * el * (scale if node.op in ("Conv", "Gemm", "MatMul") else keep_in)
        traffic = (node.bytes_in * keep_in + node.bytes_out * keep_out) * el + weights + extra * scale * el
        memory_s = traffic / (r.bandwidth_gbs * 1e9 * memory_eff)
        ms = overhead + 1e3 * max(compute_s, memory_s)
        self._f_memo[key] = ms
        return ms

    def convert_ms(self, nbytes: tuple[float, float], a: tuple[str, str], b: tuple[str, str],
                   keep: float = 1.0) -> float:
        """Conversion time between interfaces a=(layout, precision) and b for tensors of ``nbytes`` =
        (fp32 bytes, of which layout-sensitive: 4-D with C > 1 and H*W > 1), scaled by ``keep``."""
        if a == b or nbytes[0] <= 0:
            return 0.0
        bw = self.rates.bandwidth_gbs * 1e9
        ms = 0.0
        if a[1] != b[1]:  # quantise reads 4 B and writes 1 B per element; dequantise the reverse
            ms += _CONVERSION_OVERHEAD_MS + 1e3 * nbytes[0] * keep * 1.25 / (bw * 0.6)
        if a[0] != b[0] and nbytes[1] > 0:  # the runtime transposes in fp32 unless both sides are int8
            el = 0.25 if a[1] == b[1] == "int8" else 1.0
            ms += _CONVERSION_OVERHEAD_MS + 1e3 * 2 * nbytes[1] * keep * el / (bw * _TRANSPOSE_EFF)
        return ms

    # --- tables over arbitrary option lists
    def unary_table(self, i: int, options: Sequence[Choice]) -> np.ndarray:
        """Per-option terms of node ``i``: its cost on its unpruned input share plus graph-boundary conversions."""
        rest = 1.0 - sum(self.sources[self.names[i]].values())
        out = np.empty(len(options))
        for k, c in enumerate(options):
            if i in self.fused_into:  # costed on the pair with its producer
                out[k] = 0.0
                continue
            v = rest * self.node_ms(i, c, 1.0) if rest > 1e-12 else 0.0
            iface = (c.layout, c.precision)
            v += self.convert_ms(self.input_bytes[i], ("NCHW", "fp32"), iface)
            v += self.convert_ms(self.output_bytes[i], iface, ("NCHW", "fp32"), self._keep_out(i, c))
            out[k] = v
        return out

    def _keep_out(self, i: int, c: Choice) -> float:
        return 1.0 - c.prune * self.prune_scale[i] if self.dense[i] else 1.0

    def _fused_pair(self, s: int, d: int, src_opts: Sequence[Choice], dst_opts: Sequence[Choice]) -> np.ndarray:
        """Producer ``s`` and its foldable node ``d``: free at one precision (for swish, hardswish, sigmoid and a
        residual Add, when the producer's primitive applies them), else a separate node (at the producer's keep when
        it is pruned) plus the conversions between them."""
        m = np.zeros((len(src_opts), len(dst_opts)))
        nbytes = self.edge_bytes.get((s, d), (0.0, 0.0))
        src_pruned = self.names[s] in self.sources[self.names[d]]
        for a, ca in enumerate(src_opts):
            keep = self._keep_out(s, ca) if src_pruned else 1.0
            f = self.folded_as[d]
            folds = get_primitive(ca.primitive).folds(None if f.residual else f.activation, f.residual is not None)
            for b, cb in enumerate(dst_opts):
                if folds and ca.precision == cb.precision:
                    continue
                m[a, b] = self.node_ms(d, cb, keep) + self.convert_ms(
                    nbytes, (ca.layout, ca.precision), (cb.layout, cb.precision), self._keep_out(s, ca))
        return m

    def pair_table(self, s: int, d: int, src_opts: Sequence[Choice], dst_opts: Sequence[Choice]) -> np.ndarray:
        """Pairwise terms: conversions on the data-flow edge s->d and d's cost share under s's pruning."""
        if self.fused_into.get(d) == s:
            return self._fused_pair(s, d, src_opts, dst_opts)
        m = np.zeros((len(src_opts), len(dst_opts)))
        if d in self.fused_into and self.fused_into.get(s) == self.fused_into[d]:
            return m  # a foldable node's terms within its fusion are on the pair with its producer
        nbytes = self.edge_bytes.get((s, d), (0.0, 0.0))
        w = self.sources[self.names[d]].get(self.names[s], 0.0)
        for a, ca in enumerate(src_opts):
            ia = (ca.layout, ca.precision)
            ka = self._keep_out(s, ca)
            keep_in = 1.0 - ca.prune * self.prune_scale[s]
            for b, cb in enumerate(dst_opts):
                v = 0.0
                if nbytes[0]:
                    v += self.convert_ms(nbytes, ia, (cb.layout, cb.precision), ka)
                if w:
                    v += w * self.node_ms(d, cb, keep_in)
                m[a, b] = v
        return m

    # --- growing tables for predict()
    def index(self, plans: Sequence[Plan]) -> np.ndarray:
        """Plans as a (plans x nodes) matrix of choice indices, registering choices seen for the first time."""
        idx = np.empty((len(plans), len(self.names)), dtype=np.int64)
        defaults: list[Choice | None] = [None] * len(self.names)
        grown: set[int] = set()
        for p, plan in enumerate(plans):
            ch = plan.choices
            for i, name in enumerate(self.names):
                c = ch.get(name)
                if c is None:
                    c = defaults[i]
                    if c is None:
                        c = defaults[i] = default_choice(self.graph.nodes[i])
                k = self.lookup[i].get(c)
                if k is None:
                    k = self.lookup[i][c] = len(self.choices[i])
                    self.choices[i].append(c)
                    grown.add(i)
                idx[p, i] = k
        if grown:
            for i in grown:
                self.unary[i] = self.unary_table(i, self.choices[i])
            for pair in {pp for i in grown for pp in self.pairs_of[i]}:
                s, d = pair
                self.pair_tables[pair] = self.pair_table(s, d, self.choices[s], self.choices[d])
        return idx

    def latency(self, idx: np.ndarray) -> np.ndarray:
        """Total latency (ms) of each row of ``idx``."""
        total = np.zeros(len(idx))
        for i in range(idx.shape[1]):
            total += self.unary[i][idx[:, i]]
        for (s, d), m in self.pair_tables.items():
            total += m[idx[:, s], idx[:, d]]
        return total

    def peak_memory(self, idx: np.ndarray) -> np.ndarray:
        """Peak bytes of each row of ``idx``: weights + the largest live activations + the largest workspace, an
        upper bound of the runtime's estimate (which adds a step's workspace to that step's live activations
        only; the bound keeps the exact solver's additive memory sweep tight). Conversion temporaries are not
        counted."""
        g = self.graph
        n_plans, n_nodes = idx.shape
        prune = [np.array([c.prune * self.prune_scale[i] for c in self.choices[i]]) for i in range(n_nodes)]
        el = [np.array([_PRECISION_BYTES.get(c.precision, 4) for c in self.choices[i]], dtype=float)
              for i in range(n_nodes)]
        weights = np.zeros(n_plans)
        ws = np.zeros((n_plans, n_nodes))
        out_bytes = np.zeros((n_plans, n_nodes))
        for i, node in enumerate(g.nodes):
            k_in = np.ones(n_plans)
            for src, w in self.sources[node.name].items():
                k_in += w * (-prune[self.pos[src]][idx[:, self.pos[src]]])
            r_i = prune[i][idx[:, i]]
            e_i = el[i][idx[:, i]]
            k_out = (1.0 - r_i) if self.dense[i] else k_in
            scale = k_in * k_out if self.dense[i] else k_in
            if node.param_count:
                wb = np.array([_weight_bytes(node, c.precision) for c in self.choices[i]])[idx[:, i]]
                channels = float(node.out_shape[1]) if len(node.out_shape) > 1 else 1.0
                weights += node.param_count * wb[:, 0] * scale + channels * k_out * wb[:, 1]
            out_bytes[:, i] = sum(float(np.prod(s)) for s in node.output_shapes) * e_i * k_out
            wtab = np.array([_workspace(get_primitive(c.primitive), node, c) for c in self.choices[i]])
            ws[:, i] = wtab[idx[:, i]] * scale  # workspaces shrink roughly with the pruned weights
        last = _last_use(g)
        steps = np.arange(n_nodes)
        start = steps.copy()
        for a, p in self.fused_into.items():  # a folded activation writes its producer's output in place
            start[a] = p
            out_bytes[:, p] = 0.0
        live_mask = (steps[None, :] >= start[:, None]) & (steps[None, :] <= np.array(last)[:, None])  # (tensor, step)
        live = out_bytes @ live_mask.astype(float)
        live += sum(4.0 * float(np.prod(g.tensor_shapes.get(t, ()))) * (steps <= _input_last_use(g, t))
                    for t in g.inputs)[None, :]
        return weights + live.max(axis=1) + ws.max(axis=1)


_VIEW_OPS = ("Split", "Slice", "Flatten", "Reshape")


def _layout_matters(shape: Sequence[int]) -> bool:
    """NCHW and NHWC differ in memory only for 4-D tensors with C > 1 and H*W > 1 (as in the runtime)."""
    return len(shape) == 4 and shape[1] > 1 and shape[2] * shape[3] > 1


def _add_bytes(acc: tuple[float, float], shape: Sequence[int]) -> tuple[float, float]:
    nb = 4.0 * float(np.prod(shape))
    return acc[0] + nb, acc[1] + (nb if _layout_matters(shape) else 0.0)


def fusable_activations(graph: Graph) -> dict[str, str]:
    """Nodes the runtime can fold into the Conv/Gemm/MatMul they follow, whatever the plan (activations, residual
    Adds; :func:`perfpredict.runtime.executor.fusion_patterns`): node name -> producer name."""
    from perfpredict.runtime.executor import fusion_patterns

    return {a: f.producer for f in fusion_patterns(graph) for a in f.nodes}


def _prune_scale(graph: Graph) -> list[float]:
    """Share of each node's output channels a prune ratio applies to (coupled fixed channels stay)."""
    scale = [1.0] * len(graph)
    try:
        from perfpredict.runtime.pruning import prune_groups
    except ImportError:
        return scale
    pos = {n.name: i for i, n in enumerate(graph.nodes)}
    for g in prune_groups(graph):
        total = g.channels + g.fixed_channels
        for m in g.members:
            scale[pos[m]] = g.channels / total if total else 0.0
    return scale


def _workspace(prim, node: Node, c: Choice) -> float:  # noqa: ANN001 - Primitive
    """Workspace bytes the primitive declares for the node (as the runtime's memory estimate counts them)."""
    return float(prim.workspace_bytes(node, c.precision, c.layout)) if prim.supports(node) else 0.0


_INT8_CHANNEL_BYTES = 8  # per output channel of an int8 weight: a float32 scale and an int32 zero point


def _weight_bytes(node: Node, precision: str) -> tuple[float, float]:
    """(bytes per parameter, bytes per output channel) of the node's weights at ``precision``."""
    if precision == "int8" and node.op in ("Conv", "Gemm", "MatMul") and node.param_count:
        # int8 weights; a float32 bias stays float32 (3 bytes more per channel) plus scale and zero point
        return 1.0, (3.0 if node.attrs.get("bias", True) else 0.0) + _INT8_CHANNEL_BYTES
    return 4.0, 0.0


def _last_use(g: Graph) -> list[int]:
    """Step at which each node's outputs are last read (the end for graph outputs)."""
    last = list(range(len(g)))
    for e in g.edges:
        last[e.src] = max(last[e.src], e.dst)
    for i, n in enumerate(g.nodes):
        if any(o in g.outputs for o in n.outputs):
            last[i] = len(g) - 1
    return last


def _input_last_use(g: Graph, tensor: str) -> int:
    steps = [i for i, n in enumerate(g.nodes) if tensor in n.activation_inputs]
    return max(steps) if steps else -1


# ------------------------------------------------------------------------------------------- model


class RooflineModel:
    """The analytical roofline predictor; implements both Predictor and NodeCostModel.

    ``threads`` predicts for that many threads (default: every core of the device);
    ``fuse_activations`` costs an activation that follows a Conv/Gemm as folded into it where the runtime
    folds it (:func:`perfpredict.runtime.executor.plan_fusions`).
    """

    name = "roofline"

    def __init__(self, threads: int | None = None, fuse_activations: bool = True):
        self.threads = threads
        self.fuse_activations = fuse_activations
        self._cache: dict[tuple[int, str], _GraphCosts] = {}

    def _costs(self, graph: Graph, device: "DeviceSpec") -> _GraphCosts:
        key = (id(graph), device.to_json(indent=None))
        gc = self._cache.get(key)
        if gc is None or gc.graph is not graph:
            if len(self._cache) > 32:
                self._cache.clear()
            gc = self._cache[key] = _GraphCosts(graph, device_rates(device, self.threads), self.fuse_activations)
        return gc

    def rates(self, device: "DeviceSpec") -> DeviceRates:
        """The device figures this model uses (see :func:`device_rates`)."""
        return device_rates(device, self.threads)

    # --- Predictor
    def predict(self, graphs: Graph | Sequence[Graph], plans: Sequence[Plan], device: "DeviceSpec") -> Prediction:
        """Predicted latency (ms) and peak memory (bytes) of each plan, batched per graph."""
        plans = list(plans)
        if isinstance(graphs, Graph):
            groups = {id(graphs): (graphs, list(range(len(plans))))}
        else:
            graphs = list(graphs)
            if len(graphs) != len(plans):
                raise ValueError(f"predict: {len(graphs)} graphs for {len(plans)} plans; pass one graph or one per plan")
            groups = {}
            for k, g in enumerate(graphs):
                groups.setdefault(id(g), (g, []))[1].append(k)
        lat = np.zeros(len(plans))
        mem = np.zeros(len(plans))
        for g, members in groups.values():
            gc = self._costs(g, device)
            idx = gc.index([plans[k] for k in members])
            lat[members] = gc.latency(idx)
            with blocked_as(onednn_block(device.isa_features)):  # oneDNN's buffers at the device's block
                mem[members] = gc.peak_memory(idx)
        return Prediction(latency_ms=lat, peak_mem_bytes=mem)

    # --- NodeCostModel
    def node_costs(self, graph: Graph, device: "DeviceSpec",
                   options: Mapping[str, Sequence[Choice]]) -> dict[str, np.ndarray]:
        """Per-option latency terms (ms) of each node named in ``options``."""
        gc = self._costs(graph, device)
        return {name: gc.unary_table(gc.pos[name], opts) for name, opts in options.items()}

    def edge_costs(self, graph: Graph, device: "DeviceSpec", src_node: str, dst_node: str,
                   src_options: Sequence[Choice], dst_options: Sequence[Choice]) -> np.ndarray:
        """Pairwise latency terms (ms) of (src option, dst option)."""
        gc = self._costs(graph, device)
        return gc.pair_table(gc.pos[src_node], gc.pos[dst_node], src_options, dst_options)

    def node_memory(self, graph: Graph, device: "DeviceSpec",
                    options: Mapping[str, Sequence[Choice]]) -> dict[str, np.ndarray]:
        """Weight plus workspace bytes of each option (own pruning only; upstream pruning ignored)."""
        gc = self._costs(graph, device)
        out = {}
        with blocked_as(onednn_block(device.isa_features)):  # oneDNN's buffers at the device's block
            for name, opts in options.items():
                node = graph.node(name)
                i = gc.pos[name]
                vals = []
                channels = float(node.out_shape[1]) if len(node.out_shape) > 1 else 1.0
                for c in opts:
                    keep = gc._keep_out(i, c)
                    per_param, per_channel = _weight_bytes(node, c.precision)
                    vals.append((node.param_count * per_param + channels * per_channel) * keep
                                + _workspace(get_primitive(c.primitive), node, c))
                out[name] = np.array(vals, dtype=float)
        return out

    def cost_pairs(self, graph: Graph) -> list[tuple[str, str]]:
        """Data-flow and channel-source pairs (see :func:`perfpredict.predictor.interaction_pairs`)."""
        return interaction_pairs(graph)
