"""Featurisation of (graph, plan, device) triples, shared by training and prediction.

Three parts, each a plain array so that many plans of one graph are featurised in one vectorised pass:

* :class:`GraphTemplate` holds everything plan-independent about a graph, computed once per graph
  (cached by ``graph_id``): the static node features, data-flow edges, per-input producers, channel
  bookkeeping for pruning, the tensors each node reads and writes (replayed for the memory estimate), fusion
  flags.
* :func:`plan_node_features` adds the plan's choice for every node (primitive, layout, precision, prune,
  the effective MACs/bytes after pruning and precision, and the layout/precision conversions the runtime
  inserts where neighbours disagree) plus the node's roofline latency prior on the device.
* :func:`device_vector` turns a :class:`~perfpredict.devices.DeviceSpec` (and the thread count used) into
  the graph-level device input.

Static node columns (:data:`STATIC_COLUMNS` after the op one-hot): op one-hot over
:attr:`FeatureSpace.ops` plus a final ``other`` bucket (an op the featuriser has not seen goes there, with
a :class:`FeatureWarning`), ``log1p`` of input/output C, H, W, kernel, stride, groups, padding, MACs, FLOPs,
parameters, bytes in/out, arithmetic intensity, fan-in/fan-out, flags (depthwise, pointwise, dilated,
reads the graph input, writes a graph output, fusable into its producer, has a fusable activation,
prunable), and the op's category one-hot (:data:`OP_CATEGORIES`: conv, matmul, pool, unary, binary, concat,
view, transpose, softmax), shared by the ops of one kind. An op the training data never had keeps only its
category: :class:`Normaliser` pins every column that never varied in training.

Plan columns (:data:`PLAN_COLUMNS` after the primitive one-hot): primitive one-hot over
:attr:`FeatureSpace.primitives` plus ``other``; layout and precision one-hots; prune ratio; the kept share
of input and output channels (pruning follows the runtime's coupled prune groups, so every tensor that
carries pruned channels shrinks);
``log1p`` effective MACs, FLOPs, bytes in/out and parameter bytes (int8 tensors count one byte per element);
the number of inputs that need a layout / precision conversion and the bytes converted; whether the
output must be converted back to fp32 NCHW; and ``log`` of the node's roofline prior (ms)::

    prior_i = eff_flops_i / rate(device, precision_i) + (eff_bytes_i + 2 conv_bytes_i) / bandwidth + overhead

(``rate`` is the device's fp32 or int8 rate (:func:`device_rates`: the speed its fingerprint's 3x3 convolution
shows, where the board has one, else the measured matmul peak); a depthwise Conv that ``conv.int8`` runs on fbgemm's generic path,
its kept channels not a multiple of 8, gets the int8 peak times
:data:`~perfpredict.primitives.quantized.DEPTHWISE_FALLBACK_SHARE`, the share that path reaches.)
That prior is the same for every primitive of a node, so a network reading it prices a primitive from its one-hot
alone: a new or algorithmically different one (Winograd's quarter of the multiplications, an FFT) is learned only
from the records that run it. Schema 9 adds ``log_traits_prior_ms``, the prior priced by the node's primitive
through its kernel traits (:func:`~perfpredict.analytical.kernel_factors`: work per operation, share of the rate
and of the bandwidth, extra bytes moved, fixed cost, one core or all), on the same rates, as the roofline takes
the larger of compute and memory time::

    traits_prior_i = overhead_p + max(ops_i w_p / (rate eff_p), (eff_bytes_i + extra_p) / (bandwidth mem_p))
                     + 2 conv_bytes_i / bandwidth

(views and folded nodes keep the first prior). A schema-8 checkpoint is featurised without it.

Schema 10 adds ``slow_path``: 1 where the node runs its primitive's slow path (today ``conv.int8`` on fbgemm's
generic depthwise path), else 0. Both priors price that path by a share of the peak measured on one machine, which
misses on others by a factor unlike the fast path's (on the stores' int8 depthwise layer records the measured time
is 8-13x the prior on the fast path and 0.1-0.6x on the slow one), and nothing else tells the network which path a
node takes (misalignment to 8 channels is not a function of ``log_in_c``): without the flag the network applies
the fast path's correction to the slow path. A schema-9 checkpoint is featurised without it.

Schema 11 adds ``chained``: 1 where the forward pass runs the node inside a oneDNN chain
(:mod:`perfpredict.runtime.chain`: a run of consecutive oneDNN steps in one C call, no Python step of its own), and
prices each conversion step that no chain runs at the per-node fixed cost (``overhead``) besides its bytes, in both
priors. Plans that mix primitives make two to three times the Python steps of a plan on one primitive, most of them
conversions, and on the stores' beacon records (AMX Xeon VM) the held-out random plans were predicted 4% too fast
against the same models' other plans, the more so the more steps they take; plans that chain were predicted too
slow. With both, leave-one-family-out accuracy stayed within what the seed moves (benchmarks/README.md, *Steps and
chains,
priced*). A schema-10 checkpoint is featurised without either.

Schema 12 featurises an op of :data:`OP_ALIASES` with another op's one-hot, and a primitive of
:data:`PRIMITIVE_ALIASES` with another primitive's: a ``Clip`` (ReLU6) run by ``clip.torch`` is a clamp like a
``Relu`` run by ``relu.torch``, at the same cost, fused into its producer or alone. With columns of their own the
network tied a ReLU6 to the training networks that had one: held out, mobilenet_v2's int8 NHWC plans came out 16%
too slow, though its kernels run as fast per MAC as those of mnasnet, whose blocks differ from its own mainly in a
Relu where it has a Clip; read as Relus in both one-hots, the same trained network priced them near their
measured time (benchmarks/README.md, *One clamp, two columns*). Only the one-hots are aliased: the priors, fusion and
workspace
tables still index the primitive itself. A schema-11 checkpoint is featurised with the Clip columns.

Schema 13 prices the memory time of a node, in both priors, by its primitive's cost of moving data in its layout
(:func:`~perfpredict.analytical.memory_cost`): torch's max pool on an NCHW tensor loads each window element in
scalar code, and on the layer records of five other machines it took 8-72x its bytes' time at the bandwidth with
2x2 windows at stride 2, more with 3x3 ones and 32-119x with 3x3 at stride 1, where on channels-last tensors it
runs near it. Without the cost the prior is blind to the primitive and the network carries a 12-25x correction of
its own, learnt on 3x3 pools: held out, vgg's 2x2 pools came out 1.4x their measured time (benchmarks/README.md,
*Where vgg's
error lies*). A schema-12 checkpoint is featurised at the bytes' time.

Schema 15 counts the conversions the runtime's schedule makes, node by node (:func:`_shared_conversions`): a
conversion of two steps (relayout then quantise, dequantise then relayout) passes through an fp32 variant that
another reader of the tensor reuses, and a reader whose path passes through a variant already made adds only its
last step; and a folded residual Add's conversion is counted, and priced, at the producer that reads the residual
(up to schema 13 it sat on the folded Add, whose prior is 2% of the overhead, so no prior priced it). Up to schema
13 densenet's plans (twenty of the tests' ``random_plan`` and two int8 ones) counted 9% more conversion steps than
their schedules make (its Concats read tensors that earlier Concats converted), googlenet's and efficientnet's 3%.
(Schema 14, conversions priced by kind, was tried and taken out: benchmarks/README.md, *Conversions priced by kind*.)
A schema-13
checkpoint is featurised as before.

Beside the features, :attr:`PlanFeatures.fallback_ms` is the prior with the bytes each int8 kernel really moves
(:func:`~perfpredict.analytical.int8_activation_scale`: torch's quantised Add, Mul, batch norm and cat compute in
float and requantise, so their int8 time is near their fp32 time, 0.6-2x on the stores' layer records, not a
quarter of it). The network reads the one-byte prior and corrects it per op; ``fallback_ms`` is the price of a node
it does not correct, one whose op the training data never had (:mod:`perfpredict.gnn_predictor`): densenet's int8
batch norm, held out of training, was priced at 0.4x its layer records by the one-byte prior.

The rules follow :mod:`perfpredict.runtime.executor`: the nodes of
:func:`~perfpredict.runtime.executor.fusion_patterns` (a Relu/Clip/HardSwish/Sigmoid that is the only reader of a
Conv/Gemm/MatMul output, not a graph output, a swish's Sigmoid + Mul pair, or a residual Add of a Conv's output with
the activation after it) are folded into that node's epilogue when they run at its precision and, for swish,
hardswish, sigmoid and the residual, its primitive lists the epilogue (``fused_now`` columns; a fused node costs
almost nothing, its prior is 2% of the per-node overhead; the producer reads a folded Add's residual, converted to
its own layout and precision); a tensor read in another layout or precision than its producer wrote it is converted
once per variant and shared by every reader of that variant (from schema 15, also of a variant its conversion passes
through); layout matters only for 4-D tensors with C > 1 and H*W > 1; graph inputs arrive as fp32 NCHW and graph
outputs are returned as fp32 NCHW.

``FEATURE_SCHEMA_VERSION`` changes whenever the columns or their meaning change; a checkpoint trained with
another version cannot be used (see :mod:`perfpredict.gnn_predictor`).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from perfpredict.analytical import int8_activation_scale, kernel_factors, memory_cost, traits_for
from perfpredict.devices import REFERENCE_LAYERS, DeviceSpec
from perfpredict.errors import FeatureError, FeatureWarning, PlanError
from perfpredict.graph import SUPPORTED_OPS, Graph, Node
from perfpredict.plan import Choice, Plan, default_choice
from perfpredict.primitives import LAYOUTS, PRECISIONS
from perfpredict.primitives.conv import blocked_as, onednn_block
from perfpredict.primitives.epilogue import ELTWISE, RESIDUAL
from perfpredict.primitives.quantized import DEPTHWISE_FALLBACK_SHARE, fbgemm_depthwise, misaligned
from perfpredict.primitives.registry import get_primitive
from perfpredict.primitives.tensor_ops import int8_concat_direct
from perfpredict.runtime.executor import Fusion, conversion_path, free_points, fusion_patterns, view_is_dense
from perfpredict.runtime.memory import replay_peaks

FEATURE_SCHEMA_VERSION = 15  # 15: conversions as the runtime's schedule makes them (14: a reverted attempt)
READABLE_SCHEMA_VERSIONS: tuple[int, ...] = (8, 9, 10, 11, 12, 13, 15)
"""Feature schemas this code featurises: a checkpoint of one of them loads (8 lacks ``log_traits_prior_ms``, 8 and 9
lack ``slow_path``, 8 to 10 lack ``chained`` and price conversions by their bytes alone, 8 to 11 give a Clip its
own one-hots, 8 to 12 price every kernel's bytes at the full bandwidth, 8 to 13 share a conversion only between
readers of the same variant and leave a folded Add's conversion on the Add)."""

ONEDNN_BLOCKS: tuple[int, ...] = (8, 16)
"""oneDNN's channels per block with AVX2 and with AVX-512: the workspace tables hold both, and a plan's memory is
featurised at its device's (:func:`~perfpredict.primitives.conv.onednn_block`)."""

OP_ALIASES: Mapping[str, str] = {"Clip": "Relu"}
"""Op -> the op whose one-hot it takes from schema 12: the same work at the same cost (a Clip is a clamp, as a Relu
is). The aliased op keeps its column, never set."""

PRIMITIVE_ALIASES: Mapping[str, str] = {"clip.torch": "relu.torch"}
"""Primitive -> the primitive whose one-hot it takes from schema 12 (the kernels of :data:`OP_ALIASES`' ops). Only
the one-hot: priors, fusion and workspace tables index the primitive itself. The aliased one keeps its column."""

FIXED_PRIMITIVES: tuple[str, ...] = (
    "conv.onednn", "conv.native", "conv.im2col", "conv.winograd", "conv.fft", "conv.gemm1x1", "conv.depthwise",
    "conv.reference", "conv.int8", "gemm.blas", "gemm.reference", "gemm.int8",
)  # fmt: skip
"""Primitive names fixed by the project; always part of the vocabulary, registered or not."""

OTHER = "other"

OP_CATEGORY_NAMES: tuple[str, ...] = ("conv", "matmul", "pool", "unary", "binary", "concat", "view", "transpose",
                                      "softmax")
"""The op kinds of the static ``category_*`` columns (:data:`OP_CATEGORIES` maps each op to one)."""

STATIC_COLUMNS: tuple[str, ...] = (
    "log_in_c", "log_in_h", "log_in_w", "log_out_c", "log_out_h", "log_out_w",
    "log_kernel_h", "log_kernel_w", "log_stride", "log_groups", "log_pad", "dilated", "depthwise", "pointwise",
    "log_macs", "log_flops", "log_params", "log_bytes_in", "log_bytes_out", "log_intensity",
    "log_fan_in", "log_fan_out", "reads_graph_input", "writes_graph_output", "fusable_into_producer",
    "has_fusable_activation", "prunable",
) + tuple(f"category_{c}" for c in OP_CATEGORY_NAMES)  # fmt: skip
"""Static numeric columns that follow the op one-hot."""

PLAN_COLUMNS: tuple[str, ...] = (
    "layout_nchw", "layout_nhwc", "prec_fp32", "prec_int8", "prune", "keep_in", "keep_out",
    "log_eff_macs", "log_eff_flops", "log_eff_bytes_in", "log_eff_bytes_out", "log_eff_param_bytes",
    "layout_conversions_in", "precision_conversions_in", "log_conversion_bytes", "output_conversion",
    "fused_now", "has_fused_now", "log_prior_ms", "log_traits_prior_ms", "slow_path", "chained",
)  # fmt: skip
"""Plan-dependent numeric columns that follow the primitive one-hot (schema 11; schema 10 ends at ``slow_path``,
schema 9 at ``log_traits_prior_ms``, schema 8 at ``log_prior_ms``)."""


_PLAN_COLUMN_SINCE: dict[str, int] = {"log_traits_prior_ms": 9, "slow_path": 10, "chained": 11}
"""The schema that added each plan column after schema 8."""


def plan_columns(schema_version: int = FEATURE_SCHEMA_VERSION) -> tuple[str, ...]:
    """The plan columns of a feature schema: :data:`PLAN_COLUMNS` without those a later schema added."""
    return tuple(c for c in PLAN_COLUMNS if _PLAN_COLUMN_SINCE.get(c, 8) <= schema_version)

DEVICE_COLUMNS: tuple[str, ...] = (
    "log_threads", "log_cores", "log_freq_ghz", "log_l1d_kb", "log_l2_kb", "log_l3_kb", "log_gflops_fp32",
    "log_gops_int8", "log_bw_gbs", "isa_avx2", "isa_avx512f", "isa_vnni", "isa_neon", "isa_dotprod",
    "measured",
) + tuple(f"log_fp_{name}" for name in REFERENCE_LAYERS)  # fmt: skip
"""Device vector columns; fingerprint entries are NaN when the board has none (imputed by the normaliser)."""

GRAPH_MEMORY_COLUMNS: tuple[str, ...] = ("log_weight_bytes", "log_peak_activation_bytes", "log_workspace_bytes",
                                         "log_memory_prior")
"""Graph-level analytical memory facts given to the memory head."""

OP_CATEGORIES: Mapping[str, str] = {
    "Conv": "conv", "Gemm": "matmul", "MatMul": "matmul", "MaxPool": "pool", "AveragePool": "pool",
    "GlobalAveragePool": "pool", "ReduceMean": "pool", "Relu": "unary", "Clip": "unary", "Sigmoid": "unary",
    "HardSigmoid": "unary", "HardSwish": "unary", "BatchNormalization": "unary", "Pad": "unary", "Mul": "binary",
    "Add": "binary", "Concat": "concat", "Split": "view", "Slice": "view", "Flatten": "view", "Reshape": "view",
    "Identity": "view", "Dropout": "view", "Transpose": "transpose", "Softmax": "softmax",
}  # fmt: skip
"""The kind of work each op does: the static ``category_*`` columns, shared by the ops of one kind so that an op
no training graph had (Sigmoid when EfficientNet is held out) borrows from the others of its kind."""

_FUSE_PRODUCERS = ("Conv", "Gemm", "MatMul")
_VIEW_OPS = ("Split", "Slice", "Flatten", "Reshape")  # outputs share their input's storage (runtime.executor)
_FUSED_PRIOR_SHARE = 0.02
_EXTERNAL_GRAPH_INPUT = -1  # producer index of a graph input: fp32 NCHW, converted if the consumer differs
_EXTERNAL_MATCHED = -2  # producer outside a sub-graph, already in the consumer's layout and precision
_PRECISION_NAMES = ("fp32", "int8")  # by the replay's int8 flag


def _warn(message: str) -> None:
    # the warnings module's default filter shows each message once per call site
    warnings.warn(message, FeatureWarning, stacklevel=3)


# ------------------------------------------------------------------------------------------ vocabulary


@dataclass(frozen=True)
class FeatureSpace:
    """The vocabularies that fix the column layout: ops, primitives, layouts, precisions.

    Stored in every checkpoint; names outside a vocabulary map to its trailing ``other`` bucket.
    """

    ops: tuple[str, ...]
    primitives: tuple[str, ...]
    layouts: tuple[str, ...] = LAYOUTS
    precisions: tuple[str, ...] = PRECISIONS
    schema_version: int = FEATURE_SCHEMA_VERSION

    @classmethod
    def current(cls) -> "FeatureSpace":
        """The vocabulary of this installation: every supported op, the fixed and registered primitives."""
        from perfpredict.primitives import all_primitives

        prims = sorted(set(FIXED_PRIMITIVES) | {p.name for p in all_primitives()})
        return cls(ops=tuple(SUPPORTED_OPS), primitives=tuple(prims))

    @property
    def op_dim(self) -> int:
        """Width of the op one-hot (with ``other``): the leading static columns."""
        return len(self.ops) + 1

    @property
    def static_dim(self) -> int:
        """Number of static node columns (op one-hot with ``other`` + :data:`STATIC_COLUMNS`)."""
        return self.op_dim + len(STATIC_COLUMNS)

    @property
    def plan_columns(self) -> tuple[str, ...]:
        """The numeric plan columns of this space's schema (:func:`plan_columns`)."""
        return plan_columns(self.schema_version)

    @property
    def plan_dim(self) -> int:
        """Number of plan columns (primitive one-hot with ``other`` + :attr:`plan_columns`)."""
        return len(self.primitives) + 1 + len(self.plan_columns)

    @property
    def node_dim(self) -> int:
        """Width of a node feature row."""
        return self.static_dim + self.plan_dim

    def column_names(self) -> list[str]:
        """Names of every node column, in order."""
        return ([f"op={o}" for o in self.ops] + [f"op={OTHER}"] + list(STATIC_COLUMNS)
                + [f"prim={p}" for p in self.primitives] + [f"prim={OTHER}"] + list(self.plan_columns))

    def op_index(self, op: str) -> int:
        """One-hot index of ``op`` (its :data:`OP_ALIASES` entry's from schema 12; the ``other`` bucket, with a
        warning, when unknown)."""
        if self.schema_version >= 12:
            op = OP_ALIASES.get(op, op)
        try:
            return self.ops.index(op)
        except ValueError:
            _warn(f"op '{op}' is not in the predictor's op vocabulary; featurised as '{OTHER}' "
                       "(predictions for it are extrapolated)")
            return len(self.ops)

    def primitive_lookup(self) -> dict[str, int]:
        """Map from primitive name to its index (``other``: ``len(primitives)``)."""
        return {p: i for i, p in enumerate(self.primitives)}

    def primitive_columns(self) -> np.ndarray:
        """Primitive index -> its one-hot column: itself, or its :data:`PRIMITIVE_ALIASES` entry's from schema 12."""
        cols = np.arange(len(self.primitives) + 1)
        if self.schema_version >= 12:
            for p, alias in PRIMITIVE_ALIASES.items():
                if p in self.primitives and alias in self.primitives:
                    cols[self.primitives.index(p)] = self.primitives.index(alias)
        return cols

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"schema_version": self.schema_version, "ops": list(self.ops), "primitives": list(self.primitives),
                "layouts": list(self.layouts), "precisions": list(self.precisions)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FeatureSpace":
        """Parse :meth:`to_dict` output."""
        return cls(tuple(d["ops"]), tuple(d["primitives"]), tuple(d["layouts"]), tuple(d["precisions"]),
                   int(d["schema_version"]))


# ------------------------------------------------------------------------------------------ fusion


EPILOGUE_CODES: tuple[str, ...] = ("clamp", *ELTWISE, RESIDUAL)
"""The epilogue codes of :func:`fused_activations`: a clamp (every primitive applies it), the eltwise activations
and the residual add (only primitives whose ``epilogues`` list them)."""


def fused_activations(graph: Graph, fusions: Sequence[Fusion] | None = None) -> dict[int, tuple[int, int]]:
    """Folded node index -> (index of the Conv/Gemm/MatMul whose epilogue can absorb it, its index in
    :data:`EPILOGUE_CODES`: 0 a clamp, then swish, hardswish, sigmoid, and a residual ``Add``), from the runtime's
    :func:`~perfpredict.runtime.executor.fusion_patterns` (see the module docstring for when it does; ``fusions``:
    those patterns, when already found)."""
    pos = {nd.name: i for i, nd in enumerate(graph.nodes)}
    out: dict[int, tuple[int, int]] = {}
    for f in fusion_patterns(graph) if fusions is None else fusions:
        nodes = f.nodes
        if f.residual is not None:
            out[pos[nodes[0]]] = (pos[f.producer], EPILOGUE_CODES.index(RESIDUAL))
            nodes = nodes[1:]
        code = EPILOGUE_CODES.index(f.activation) if f.activation in ELTWISE else 0
        out.update({pos[a]: (pos[f.producer], code) for a in nodes})
    return out


@functools.lru_cache(maxsize=8)
def _epilogue_table(space: FeatureSpace) -> np.ndarray:
    """[len(primitives) + 1, len(EPILOGUE_CODES)]: whether each primitive of ``space`` (the last row the ``other``
    bucket) applies each epilogue code of :func:`fused_activations` (a clamp: every primitive)."""
    table = np.zeros((len(space.primitives) + 1, len(EPILOGUE_CODES)), bool)
    table[:, 0] = True
    for k, name in enumerate(space.primitives):
        try:
            prim = get_primitive(name)
        except PlanError:
            continue
        table[k, 1:] = [prim.folds(e) for e in ELTWISE] + [prim.folds(None, residual=True)]
    return table


@functools.lru_cache(maxsize=32)
def _memory_cost_table(space: FeatureSpace) -> np.ndarray:
    """[len(primitives) + 1, 2, 2]: per primitive of ``space`` (the last row the ``other`` bucket) and layout (NCHW,
    NHWC) its cost per byte and per window byte (:func:`~perfpredict.analytical.memory_cost`; 1 and 0 before
    schema 13)."""
    table = np.zeros((len(space.primitives) + 1, 2, 2))
    table[..., 0] = 1.0
    if space.schema_version >= 13:
        for k, name in enumerate(space.primitives):
            for j, layout in enumerate(("NCHW", "NHWC")):
                cost = memory_cost(name, layout)
                table[k, j] = cost.per_byte, cost.per_window_byte
    return table


def _internal_inputs(tpl: "GraphTemplate") -> np.ndarray:
    """[len(in_node)] whether each input entry of a foldable node comes from within its fusion (its producer or an
    earlier node folded with it): read from the producer's output when the fusion applies. A folded Add's residual
    is not: the producer reads it, converted to its own layout and precision."""
    group = -np.ones(tpl.n_nodes, np.int64)
    group[tpl.fuse_act] = tpl.fuse_prod
    group[tpl.fuse_prod] = tpl.fuse_prod
    src = tpl.in_src
    mine = group[tpl.in_node]
    return (mine >= 0) & (src >= 0) & (group[np.maximum(src, 0)] == mine) & np.isin(tpl.in_node, tpl.fuse_act)


# ------------------------------------------------------------------------------------------ templates


def _chw(shape: tuple[int, ...]) -> tuple[float, float, float]:
    if not shape:
        return 1.0, 1.0, 1.0
    if len(shape) == 4:
        return float(shape[1]), float(shape[2]), float(shape[3])
    if len(shape) == 3:
        return float(shape[1]), float(shape[2]), 1.0
    return float(np.prod(shape[1:])) if len(shape) > 1 else float(shape[0]), 1.0, 1.0


def _layout_matters(shape: Sequence[int]) -> bool:
    return len(shape) == 4 and shape[1] > 1 and shape[2] * shape[3] > 1


@dataclass
class GraphTemplate:
    """Plan-independent arrays of one graph (see the module docstring); build with :func:`template_for`.

    Activation inputs are listed flat (``in_*`` arrays, one entry per (consumer, input)): the consumer
    node, the producer node (``-1`` a graph input, ``-2`` a producer outside a sub-graph whose tensor
    arrives already converted), a tensor id, fp32 bytes and whether layout matters for it.
    ``in_dup`` pairs (entry, earlier entry of the same tensor) let a conversion be shared by readers.
    ``chan_kind`` per node: 0 dense Conv, Gemm, MatMul (work scales with kept input and output channels),
    1 passes its input's channels through, 2 concatenates channels, 3 a grouped (not depthwise) Conv.
    ``fuse_act``/``fuse_prod``/``fuse_code`` list the structurally fusable (activation, producer, epilogue code of
    :func:`fused_activations`) triples; the activations of one producer fold together or not at all. ``fusions``
    are the runtime's patterns themselves (:func:`~perfpredict.runtime.executor.fusion_patterns`).
    Pruning follows :mod:`perfpredict.runtime.pruning`: coupled producers form groups sharing the largest
    ratio of their members; ``comp_in``/``comp_out`` say which share of a tensor's channels belongs to each
    group's free channel classes, so a plan's kept share of every tensor is one matrix product.
    """

    name: str
    graph_id: str
    node_names: tuple[str, ...]
    ops: tuple[str, ...]
    static_raw: np.ndarray  # [n, len(STATIC_COLUMNS)]
    edge_index: np.ndarray  # [2, E] unique data-flow edges
    in_node: np.ndarray
    in_src: np.ndarray
    in_tensor: np.ndarray
    in_bytes: np.ndarray
    in_layout_matters: np.ndarray
    in_dup: np.ndarray  # [2, Q]
    chan_kind: np.ndarray
    macs: np.ndarray
    flops: np.ndarray
    bytes_in: np.ndarray
    bytes_out: np.ndarray
    param_bytes: np.ndarray
    bias_bytes: np.ndarray
    prunable: np.ndarray
    is_view: np.ndarray
    writes_output: np.ndarray
    out_layout_matters: np.ndarray
    fuse_act: np.ndarray
    fuse_prod: np.ndarray
    fuse_code: np.ndarray
    group_members: tuple[np.ndarray, ...]  # node indices of each prune group (they share the largest ratio)
    group_free: np.ndarray  # [G] free channel classes of each group
    comp_in: np.ndarray  # [G, n] share of each node's first input channels in each group's free classes
    comp_out: np.ndarray  # [G, n] the same for its first output
    default_choices: tuple[Choice, ...]
    # primitive -> [n, 2, 2, 2] workspace bytes at fp32 / int8, NCHW / NHWC, oneDNN blocks of ONEDNN_BLOCKS
    workspace: Mapping[str, np.ndarray]
    ws_nodes: Mapping[int, Node] = field(default_factory=dict)  # nodes some primitive declares workspace for
    # per node, (tensor id, fp32 bytes, whether layout matters) of each output; the tensors the inference
    # returns (kept to the end, converted to NCHW fp32 when ``convert_final``, as a whole graph's outputs are)
    out_tensors: tuple[tuple[tuple[int, float, bool], ...], ...] = ()
    final_tensors: tuple[int, ...] = ()
    convert_final: bool = True
    # per node, the channels of a depthwise Conv as fbgemm counts them (quantized.fbgemm_depthwise), else 0
    dw_channels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # per node, for the memory replay: whether its output, if a view, is a dense block in NCHW / NHWC
    # (runtime.executor.view_is_dense), and whether it is a Concat that quantized::cat joins directly in NHWC
    view_dense: np.ndarray = field(default_factory=lambda: np.ones((0, 2), bool))
    concat_direct: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    # [n, 2]: bytes per activation element at int8 relative to fp32, in NCHW and NHWC (analytical.int8_activation_scale)
    int8_act: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    fusions: tuple[Fusion, ...] = ()
    # primitive -> [n, 2, len(KERNEL_FACTORS)]: its analytical.kernel_factors per node and layout (NCHW, NHWC)
    kernel_factors: Mapping[str, np.ndarray] = field(default_factory=dict)
    _space_cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.node_names)

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return len(self.node_names)

    def static_features(self, space: FeatureSpace) -> np.ndarray:
        """[n, space.static_dim] float32: op one-hot then :data:`STATIC_COLUMNS`."""
        key = ("static", space)
        if key not in self._space_cache:
            onehot = np.zeros((self.n_nodes, space.op_dim), np.float32)
            idx = np.array([space.op_index(o) for o in self.ops], np.int64)
            onehot[np.arange(self.n_nodes), idx] = 1.0
            self._space_cache[key] = np.concatenate([onehot, self.static_raw.astype(np.float32)], axis=1)
        return self._space_cache[key]

    def cached(self, key: str, compute: Any) -> Any:
        """A derived array computed once per template."""
        if key not in self._space_cache:
            self._space_cache[key] = compute()
        return self._space_cache[key]

    def workspace_table(self, space: FeatureSpace, block: int) -> np.ndarray:
        """[n, len(primitives) + 1, 2, 2] workspace bytes per node, primitive, precision (fp32, int8) and
        layout (NCHW, NHWC) on a CPU whose oneDNN works in ``block``-channel blocks (one of ONEDNN_BLOCKS)."""
        key = ("ws", space, block)
        if key not in self._space_cache:
            table = np.zeros((self.n_nodes, len(space.primitives) + 1, 2, 2))
            for k, p in enumerate(space.primitives):
                if p in self.workspace:
                    table[:, k] = self.workspace[p][..., ONEDNN_BLOCKS.index(block)]
            self._space_cache[key] = table
        return self._space_cache[key]

    def traits_table(self, space: FeatureSpace) -> np.ndarray:
        """[n, len(primitives) + 1, 2, len(KERNEL_FACTORS)] the kernel factors per node, primitive (the last: a
        primitive outside the space, priced by generic traits) and layout (NCHW, NHWC)."""
        key = ("traits", space)
        if key not in self._space_cache:
            generic = _generic_factors()
            table = np.broadcast_to(generic, (self.n_nodes, len(space.primitives) + 1, 2, len(generic))).copy()
            for k, p in enumerate(space.primitives):
                if p in self.kernel_factors:
                    table[:, k] = self.kernel_factors[p]
            self._space_cache[key] = table
        return self._space_cache[key]

    def subset(self, indices: Sequence[int]) -> "GraphTemplate":
        """The sub-graph of the given nodes as measured alone: inputs from outside arrive already in the
        consumer's layout and precision; outputs are not converted back."""
        idx = np.asarray(sorted(set(int(i) for i in indices)), np.int64)
        kept = {self.node_names[i] for i in idx}
        n = len(idx)
        remap = -np.ones(self.n_nodes, np.int64)
        remap[idx] = np.arange(n)
        keep = np.isin(self.in_node, idx)
        old_pos = np.flatnonzero(keep)
        pos_map = -np.ones(len(self.in_node), np.int64)
        pos_map[old_pos] = np.arange(len(old_pos))
        src_old = self.in_src[keep]
        inside = np.where(src_old >= 0, remap[np.maximum(src_old, 0)], -1)
        in_src = np.where(inside >= 0, inside, _EXTERNAL_MATCHED)
        in_node = remap[self.in_node[keep]]
        dup = self.in_dup[:, keep[self.in_dup[0]] & keep[self.in_dup[1]]] if self.in_dup.size else self.in_dup
        dup = pos_map[dup] if dup.size else dup.reshape(2, 0)
        e_keep = np.isin(self.edge_index[0], idx) & np.isin(self.edge_index[1], idx)
        f_keep = np.isin(self.fuse_act, idx) & np.isin(self.fuse_prod, idx)
        f_act, f_prod = remap[self.fuse_act[f_keep]], remap[self.fuse_prod[f_keep]]
        f_code = self.fuse_code[f_keep]
        unread_to_end = np.array([not (in_src == t).any() for t in range(n)], bool)
        # a node measured alone is pruned by its own ratio: its output channels only (profile campaigns
        # pre-slice the lone node), passed through by the sub-graph's channel-keeping readers
        prunable = np.flatnonzero(self.prunable[idx])
        sub_members = tuple(np.array([k], np.int64) for k in prunable)
        out_c = np.expm1(self.static_raw[idx, STATIC_COLUMNS.index("log_out_c")].astype(np.float64))
        free = np.array([max(round(out_c[k]), 1) for k in prunable], np.float64)
        comp_in, comp_out = np.zeros((len(prunable), n)), np.zeros((len(prunable), n))
        for g, k in enumerate(prunable):
            comp_out[g, k] = 1.0
            frontier = [k]
            while frontier:
                src = frontier.pop()
                for dst in in_node[(in_src == src)]:
                    if comp_in[g, dst] == 0.0:
                        comp_in[g, dst] = 1.0
                        if self.chan_kind[idx[dst]] == 1:
                            comp_out[g, dst] = 1.0
                            frontier.append(int(dst))
        return GraphTemplate(
            name=f"{self.name}[{','.join(self.node_names[i] for i in idx)}]", graph_id=self.graph_id,
            node_names=tuple(self.node_names[i] for i in idx), ops=tuple(self.ops[i] for i in idx),
            static_raw=self.static_raw[idx].copy(), edge_index=remap[self.edge_index[:, e_keep]],
            in_node=in_node, in_src=in_src, in_tensor=self.in_tensor[keep], in_bytes=self.in_bytes[keep],
            in_layout_matters=self.in_layout_matters[keep], in_dup=dup,
            chan_kind=self.chan_kind[idx], macs=self.macs[idx], flops=self.flops[idx], bytes_in=self.bytes_in[idx],
            bytes_out=self.bytes_out[idx], param_bytes=self.param_bytes[idx], bias_bytes=self.bias_bytes[idx],
            prunable=self.prunable[idx], is_view=self.is_view[idx], writes_output=np.zeros(n, bool),
            out_layout_matters=self.out_layout_matters[idx], fuse_act=f_act, fuse_prod=f_prod,
            fuse_code=f_code, group_members=sub_members, group_free=free, comp_in=comp_in, comp_out=comp_out,
            default_choices=tuple(self.default_choices[i] for i in idx),
            workspace={k: v[idx] for k, v in self.workspace.items()},
            ws_nodes={j: self.ws_nodes[int(i)] for j, i in enumerate(idx) if int(i) in self.ws_nodes},
            out_tensors=(outs := tuple(self.out_tensors[i] for i in idx)),
            final_tensors=tuple(t for o, unread in zip(outs, unread_to_end) if unread for t, *_ in o),
            convert_final=False, dw_channels=self.dw_channels[idx], view_dense=self.view_dense[idx],
            concat_direct=self.concat_direct[idx], int8_act=self.int8_act[idx],
            fusions=tuple(f for f in self.fusions if kept.issuperset((f.producer, *f.nodes))),
            kernel_factors={k: v[idx] for k, v in self.kernel_factors.items()})


def build_template(graph: Graph) -> GraphTemplate:
    """Compute the :class:`GraphTemplate` of ``graph`` (prefer the cached :func:`template_for`)."""
    nodes = graph.nodes
    n = len(nodes)
    producer: dict[str, int] = {}
    for i, nd in enumerate(nodes):
        for o in nd.outputs:
            producer[o] = i
    graph_inputs = set(graph.inputs)
    graph_outputs = set(graph.outputs)
    fusions = tuple(fusion_patterns(graph))
    fused = fused_activations(graph, fusions)
    has_fused = {p for p, _ in fused.values()}
    pairs = sorted({(e.src, e.dst) for e in graph.edges})
    fan_out = np.bincount(np.array([s for s, _ in pairs], np.int64), minlength=n).astype(float) if pairs \
        else np.zeros(n)

    in_node, in_src, in_tensor, in_bytes, in_lm = [], [], [], [], []
    out_tensors: list[tuple[tuple[int, float, bool], ...]] = []
    tensor_ids: dict[str, int] = {}
    static = np.zeros((n, len(STATIC_COLUMNS)))
    chan_kind = np.ones(n, np.int64)
    prunable = np.zeros(n, bool)
    is_view = np.zeros(n, bool)
    writes_output = np.zeros(n, bool)
    out_lm = np.zeros(n, bool)
    param_bytes = np.zeros(n)
    bias_bytes = np.zeros(n)
    dw_channels = np.zeros(n, np.int64)
    last_reader = np.full(n + 1, -1, np.int64)  # per tensor group; n = graph inputs

    for i, nd in enumerate(nodes):
        a = nd.attrs
        acts = nd.activation_inputs
        reads_input = False
        for t, shp in zip(acts, nd.input_shapes):
            src = producer.get(t)
            if src is None:
                src = _EXTERNAL_GRAPH_INPUT if t in graph_inputs else _EXTERNAL_MATCHED
                reads_input = reads_input or t in graph_inputs
                last_reader[n] = i
            else:
                last_reader[src] = max(last_reader[src], i)
            in_node.append(i)
            in_src.append(src)
            in_tensor.append(tensor_ids.setdefault(t, len(tensor_ids)))
            in_bytes.append(4.0 * float(np.prod(shp)) if shp else 4.0)
            in_lm.append(_layout_matters(shp))
        out_tensors.append(tuple((tensor_ids.setdefault(t, len(tensor_ids)), 4.0 * float(np.prod(shp)) if shp else 4.0,
                                  _layout_matters(shp)) for t, shp in zip(nd.outputs, nd.output_shapes)))
        ic, ih, iw = _chw(nd.input_shapes[0] if nd.input_shapes else ())
        oc, oh, ow = _chw(nd.output_shapes[0] if nd.output_shapes else ())
        kh = kw = 1.0
        stride = groups = 1.0
        pad = dil = dw = pw = 0.0
        if nd.op == "Conv":
            k = a["kernel"]
            kh, kw = float(k[0]), float(k[-1])
            stride = float(max(a["stride"]))
            groups = float(a["groups"])
            pad = float(sum(a["pads"]))
            dil = float(max(a["dilation"]) > 1)
            dw = float(a["groups"] > 1 and a["groups"] == a["in_channels"] == a["out_channels"])
            pw = float(kh == 1 and kw == 1)
            chan_kind[i] = 0 if a["groups"] == 1 else (1 if dw else 3)
            dw_channels[i] = a["groups"] if fbgemm_depthwise(nd) else 0
            bias_bytes[i] = 4.0 * a["out_channels"] if a.get("bias") else 0.0
        elif nd.op in ("MaxPool", "AveragePool"):
            k = a["kernel"]
            kh, kw = float(k[0]), float(k[-1])
            stride = float(max(a["stride"]))
            pad = float(sum(a["pads"]))
        elif nd.op in ("Gemm", "MatMul"):
            chan_kind[i] = 0
            if nd.op == "Gemm" and len(nd.params) > 1:
                bias_bytes[i] = 4.0 * a.get("out_features", oc)
        elif nd.op == "Concat":
            chan_kind[i] = 2 if a.get("axis") == 1 else 1
        param_bytes[i] = 4.0 * nd.param_count
        is_view[i] = nd.op in _VIEW_OPS and len(acts) == 1
        writes_output[i] = bool(graph_outputs.intersection(nd.outputs))
        out_lm[i] = _layout_matters(nd.output_shapes[0]) if nd.output_shapes else False
        total_bytes = nd.bytes_in + nd.bytes_out + 4.0 * nd.param_count
        static[i] = [
            np.log1p(ic), np.log1p(ih), np.log1p(iw), np.log1p(oc), np.log1p(oh), np.log1p(ow),
            np.log1p(kh), np.log1p(kw), np.log1p(stride), np.log1p(groups), np.log1p(pad), dil, dw, pw,
            np.log1p(nd.macs), np.log1p(nd.flops), np.log1p(nd.param_count), np.log1p(nd.bytes_in),
            np.log1p(nd.bytes_out), np.log1p(nd.flops / total_bytes if total_bytes else 0.0),
            np.log1p(len(acts)), np.log1p(fan_out[i]), float(reads_input), float(writes_output[i]),
            float(i in fused), float(i in has_fused), float(prunable[i]),
        ] + [float(OP_CATEGORIES.get(nd.op) == c) for c in OP_CATEGORY_NAMES]  # fmt: skip
    acts_fused = sorted(fused)
    first_seen: dict[int, list[int]] = {}
    dup = []
    for e, t in enumerate(in_tensor):
        dup.extend((e, earlier) for earlier in first_seen.get(t, ()))
        first_seen.setdefault(t, []).append(e)

    members, free, comp_in, comp_out = _prune_composition(graph)
    prunable[:] = False
    for m in members:
        prunable[m] = True
    static[:, STATIC_COLUMNS.index("prunable")] = prunable
    defaults = []
    for nd in nodes:
        try:
            defaults.append(default_choice(nd))
        except PlanError:
            defaults.append(Choice("", "NCHW", "fp32", 0.0))
    return GraphTemplate(
        name=graph.name, graph_id=graph.graph_id, node_names=tuple(nd.name for nd in nodes),
        ops=tuple(nd.op for nd in nodes), static_raw=static.astype(np.float32),
        edge_index=np.array(pairs, np.int64).reshape(-1, 2).T.copy(), in_node=np.array(in_node, np.int64),
        in_src=np.array(in_src, np.int64), in_tensor=np.array(in_tensor, np.int64), in_bytes=np.array(in_bytes),
        in_layout_matters=np.array(in_lm, bool),
        in_dup=np.array(dup, np.int64).reshape(-1, 2).T.copy(), chan_kind=chan_kind,
        macs=np.array([float(nd.macs) for nd in nodes]), flops=np.array([float(nd.flops) for nd in nodes]),
        bytes_in=np.array([float(nd.bytes_in) for nd in nodes]), bytes_out=np.array([float(nd.bytes_out) for nd in nodes]),
        param_bytes=param_bytes, bias_bytes=bias_bytes, prunable=prunable, is_view=is_view,
        writes_output=writes_output, out_layout_matters=out_lm, fuse_act=np.array(acts_fused, np.int64),
        fuse_prod=np.array([fused[a][0] for a in acts_fused], np.int64),
        fuse_code=np.array([fused[a][1] for a in acts_fused], np.int64), group_members=members, group_free=free,
        comp_in=comp_in, comp_out=comp_out,
        default_choices=tuple(defaults), workspace=(ws := _workspace_bytes(nodes)),
        ws_nodes={i: nodes[i] for i in sorted({int(i) for col in ws.values()
                                               for i in np.flatnonzero(col.any(axis=(1, 2, 3)))})},
        out_tensors=tuple(out_tensors), final_tensors=tuple(tensor_ids[t] for t in graph.outputs if t in tensor_ids),
        dw_channels=dw_channels,
        view_dense=np.array([[view_is_dense(nd, lay) for lay in LAYOUTS] for nd in nodes], bool).reshape(-1, 2),
        concat_direct=np.array([nd.op == "Concat" and int8_concat_direct(nd, "NHWC") for nd in nodes], bool),
        int8_act=np.array([[int8_activation_scale(nd, lay) for lay in LAYOUTS] for nd in nodes]).reshape(-1, 2),
        fusions=fusions, kernel_factors=_kernel_factor_table(nodes))


def _prune_composition(graph: Graph) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray, np.ndarray]:
    """Prune groups and the channel composition of every node's first input and output (see GraphTemplate).

    Uses the runtime's channel flow (:mod:`perfpredict.runtime.pruning`), so the features prune exactly
    the tensors the runtime prunes.
    """
    from perfpredict.runtime.pruning import _ChannelFlow

    n = len(graph.nodes)
    index = {nd.name: i for i, nd in enumerate(graph.nodes)}
    flow = _ChannelFlow(graph)
    groups, _ = flow.groups()
    owned = flow.owned()
    root_group: dict[int, int] = {}
    for g, grp in enumerate(groups):
        for m in grp.members:
            for i in owned.get(m, ()):
                r = flow.find(i)
                if r not in flow.reason:
                    root_group[r] = g
    G = len(groups)
    comp_in, comp_out = np.zeros((G, n)), np.zeros((G, n))
    share: dict[str, np.ndarray] = {}

    def composition(tensor: str) -> np.ndarray:
        got = share.get(tensor)
        if got is None:
            got = np.zeros(G)
            ids = flow.chan.get(tensor)
            if ids is not None and len(ids):
                for i in ids.tolist():
                    g = root_group.get(flow.find(i))
                    if g is not None:
                        got[g] += 1.0
                got /= len(ids)
            share[tensor] = got
        return got

    for i, nd in enumerate(graph.nodes):
        if nd.activation_inputs:
            comp_in[:, i] = composition(nd.activation_inputs[0])
        comp_out[:, i] = composition(nd.outputs[0])
    members = tuple(np.array(sorted(index[m] for m in grp.members), np.int64) for grp in groups)
    free = np.array([max(grp.channels, 1) for grp in groups], np.float64)
    return members, free, comp_in, comp_out


def _workspace_bytes(nodes: Sequence[Node]) -> dict[str, np.ndarray]:
    """Primitive -> [n, 2, 2, len(ONEDNN_BLOCKS)] the workspace each declares per node, precision, layout and oneDNN
    block (the primitives with none left out)."""
    from perfpredict.primitives import all_primitives

    out: dict[str, np.ndarray] = {}
    for p in all_primitives():
        col = np.zeros((len(nodes), 2, 2, len(ONEDNN_BLOCKS)))
        for i, nd in enumerate(nodes):
            if not p.supports(nd):
                continue
            for j, prec in enumerate(PRECISIONS):
                for k, layout in enumerate(LAYOUTS):
                    if prec in p.precisions and layout in p.layouts:
                        for b, block in enumerate(ONEDNN_BLOCKS):
                            try:
                                with blocked_as(block):
                                    col[i, j, k, b] = float(p.workspace_bytes(nd, prec, layout))
                            except Exception:  # a primitive's estimate failing must not stop featurisation
                                col[i, j, k, b] = 0.0
        if col.any():
            out[p.name] = col
    return out


def _generic_factors() -> np.ndarray:
    """The kernel factors of a primitive with no registered traits (:func:`~perfpredict.analytical.traits_for`'s
    generic kernel) on a node it does not specialise for."""
    t = traits_for(OTHER)
    return np.array([t.mac_factor, min(t.compute_eff, 1.0), 0.0, t.memory_eff, t.overhead_ms, float(t.single_thread)])


def _kernel_factor_table(nodes: Sequence[Node]) -> dict[str, np.ndarray]:
    """Every registered primitive's :func:`~perfpredict.analytical.kernel_factors` on the nodes it runs, per layout
    (generic factors where it does not run the node)."""
    from perfpredict.primitives import all_primitives

    generic = _generic_factors()
    out: dict[str, np.ndarray] = {}
    for p in all_primitives():
        col = np.broadcast_to(generic, (len(nodes), 2, len(generic))).copy()
        for i, nd in enumerate(nodes):
            if not p.supports(nd):
                continue
            for j, layout in enumerate(LAYOUTS):
                try:
                    col[i, j] = kernel_factors(nd, p.name, layout)
                except Exception:  # a primitive's traits failing on a node must not stop featurisation
                    pass
        out[p.name] = col
    return out


def _with_channels(node: Node, cin: int, cout: int) -> Node:
    """``node`` with its first input holding ``cin`` channels and its output ``cout`` (as pruning leaves it)."""
    from perfpredict.runtime.pruning import with_shapes

    def chan(shape: tuple[int, ...], c: int) -> tuple[int, ...]:
        if len(shape) == 4:
            return (shape[0], c, *shape[2:])
        return (*shape[:-1], c) if shape else shape

    return with_shapes(node, (chan(node.input_shapes[0], cin),) + tuple(node.input_shapes[1:]),
                       (chan(node.output_shapes[0], cout),) + tuple(node.output_shapes[1:]))


def _pruned_workspace(tpl: GraphTemplate, space: FeatureSpace, arrays: PlanArrays, int8: np.ndarray,
                      nhwc: np.ndarray, keep_in: np.ndarray, keep_out: np.ndarray, ws: np.ndarray,
                      block: int) -> None:
    """Replace, in place, the workspace of pruned nodes ([P, n] ``ws`` from the unpruned table) by what the
    primitive declares at the kept channel counts (workspaces are not proportional to channels: oneDNN works in
    ``block``-channel blocks). Each distinct (node, choice, channels, block) is computed once per template."""
    from perfpredict.primitives import get_primitive

    cols = np.fromiter(tpl.ws_nodes, np.int64, len(tpl.ws_nodes))
    if not len(cols):
        return
    sub_in, sub_out = keep_in[:, cols], keep_out[:, cols]
    p_idx, c_idx = np.nonzero((sub_in < 1.0) | (sub_out < 1.0))
    if not len(p_idx):
        return
    n_idx = cols[c_idx]
    chans = tpl.cached("ws_channels", lambda: np.array(
        [[_channels(tpl.ws_nodes[int(i)].input_shapes[0]), _channels(tpl.ws_nodes[int(i)].output_shapes[0])]
         for i in cols], np.float64))
    cin = np.maximum(np.rint(chans[c_idx, 0] * sub_in[p_idx, c_idx]), 1).astype(np.int64)
    # depthwise, pooling, grouped: the output keeps the input's channels; dense and concatenation: its own
    follows = (tpl.chan_kind[n_idx] == 1) | (tpl.chan_kind[n_idx] == 3)
    cout = np.where(follows, cin, np.maximum(np.rint(chans[c_idx, 1] * sub_out[p_idx, c_idx]), 1)).astype(np.int64)
    keys = np.stack([n_idx, arrays.primitive[p_idx, n_idx], int8[p_idx, n_idx], nhwc[p_idx, n_idx], cin, cout], 1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    cache = tpl.cached("pruned_ws", dict)
    values = np.empty(len(uniq))
    names = space.primitives
    for u, (i, k, q, lay, ci, co) in enumerate(uniq.tolist()):
        key = (i, names[k] if k < len(names) else "", q, lay, ci, co, block)
        if key not in cache:
            cache[key] = 0.0
            if k < len(names):
                try:
                    with blocked_as(block):
                        cache[key] = float(get_primitive(names[k]).workspace_bytes(
                            _with_channels(tpl.ws_nodes[i], ci, co), PRECISIONS[q], LAYOUTS[lay]))
                except Exception:  # an unknown primitive or a failing estimate: no workspace, as in the table
                    cache[key] = 0.0
        values[u] = cache[key]
    ws[p_idx, n_idx] = values[inverse.reshape(-1)]


@dataclass(frozen=True)
class _Skeleton:
    """The plan-independent part of :func:`_replay_memory`, indexed by node and by tensor id: each node's
    reads (tensor, producer) and output tensors; each tensor's producer (-1: none), fp32 bytes and whether
    layout matters for it; the activation each fusable producer can fold in (-1: none)."""

    reads: tuple[tuple[tuple[int, int], ...], ...]
    outputs: tuple[tuple[int, ...], ...]
    producer: list[int]
    nbytes: list[float]
    layout_matters: list[bool]
    act_of: list[int]
    residual_of: list[tuple[int, int, int] | None]  # per producer: (the folded Add, its residual's tensor, producer)
    views: list[bool]  # per node: its output shares its (single) input's storage
    view_dense: list[tuple[bool, bool]]  # per node: its view output is a dense block in (NCHW, NHWC)
    kind: list[int]  # per node: 1 Conv (copies an input view that is not dense), 2 Concat joined directly at int8 in
    # NHWC (goes through fp32 when an input view is not dense), 0 anything else


def _skeleton(tpl: GraphTemplate) -> _Skeleton:
    n = tpl.n_nodes
    n_tensors = 1 + max([int(tpl.in_tensor.max()) if len(tpl.in_tensor) else -1]
                        + [t for outs in tpl.out_tensors for t, *_ in outs])
    reads: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    producer, nbytes, lm = [-1] * n_tensors, [0.0] * n_tensors, [False] * n_tensors
    for i, outs in enumerate(tpl.out_tensors):
        for t, b, matters in outs:
            producer[t], nbytes[t], lm[t] = i, b, matters
    for e in range(len(tpl.in_node)):
        t, src = int(tpl.in_tensor[e]), int(tpl.in_src[e])
        reads[int(tpl.in_node[e])].append((t, src))
        if producer[t] < 0:
            nbytes[t], lm[t] = float(tpl.in_bytes[e]), bool(tpl.in_layout_matters[e])
    act_of = [-1] * n
    for a, p in zip(tpl.fuse_act.tolist(), tpl.fuse_prod.tolist()):
        act_of[p] = max(act_of[p], a)  # the last node folded (a swish's Mul) gives the producer's outputs
    residual_of: list[tuple[int, int, int] | None] = [None] * n
    for k, a, p in zip(*(c.tolist() for c in tpl.cached("residual_entries", lambda: _residual_entries(tpl)))):
        residual_of[p] = (a, int(tpl.in_tensor[k]), int(tpl.in_src[k]))
    kind = [1 if op == "Conv" else 2 if direct else 0 for op, direct in zip(tpl.ops, tpl.concat_direct.tolist())]
    return _Skeleton(tuple(tuple(r) for r in reads), tuple(tuple(t for t, *_ in o) for o in tpl.out_tensors),
                     producer, nbytes, lm, act_of, residual_of, tpl.is_view.tolist(),
                     [tuple(v) for v in tpl.view_dense.tolist()], kind)


def _replay_memory(tpl: GraphTemplate, int8: np.ndarray, nhwc: np.ndarray, fused_now: np.ndarray,
                   keep_out: np.ndarray, ws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peak live activation bytes, peak (live activations + the step's workspace) and the largest step
    workspace (with what kernels do to views that are not dense blocks) of each plan, [P] each,
    from a replay of the runtime's schedule (:func:`perfpredict.runtime.executor.make_schedule`) on the
    template, with the runtime's own pieces: conversions in front of their reader in the order of
    :func:`~perfpredict.runtime.executor.conversion_path`, shared by readers of the same variant; buffers freed
    by :func:`~perfpredict.runtime.executor.free_points`; the peaks of
    :func:`~perfpredict.runtime.memory.replay_peaks`; views sharing their input's storage; graph inputs owned by
    the caller."""
    sk = tpl.cached("replay_skeleton", lambda: _skeleton(tpl))
    P = int8.shape[0]
    peak_act, step_peak, step_ws = np.zeros(P), np.zeros(P), np.zeros(P)
    for p in range(P):
        peak_act[p], step_peak[p], step_ws[p] = _replay_plan(tpl, sk, int8[p].tolist(), nhwc[p].tolist(),
                                                             fused_now[p].tolist(), keep_out[p].tolist(),
                                                             ws[p].tolist())
    return peak_act, step_peak, step_ws


@functools.lru_cache(maxsize=None)
def _conversion_steps(src_nhwc: bool, src_int8: bool, nhwc: bool, int8: bool,
                      layout_differs: bool) -> tuple[tuple[bool, bool], ...]:
    """:func:`~perfpredict.runtime.executor.conversion_path` as (nhwc, int8) after each step."""
    path = conversion_path(src_nhwc, _PRECISION_NAMES[src_int8], nhwc, _PRECISION_NAMES[int8], layout_differs)
    return tuple((lay, prec == "int8") for _, lay, prec in path)


def _replay_plan(tpl: GraphTemplate, sk: _Skeleton, int8: list, nhwc: list, fused: list, keep: list,
                 ws: list) -> tuple[float, float, float]:
    lm, producer, nbytes = sk.layout_matters, sk.producer, sk.nbytes
    size: list[float] = []  # bytes of each slot's storage (0 for views and caller-owned buffers)
    root: list[int] = []  # the slot owning each slot's storage
    fmt: list[tuple[bool, bool]] = []  # (nhwc, int8) of each slot
    variant: dict[tuple[int, int, bool], int] = {}  # (tensor, effective layout, int8) -> slot
    primary: dict[int, int] = {}  # tensor -> the slot its producer wrote
    ios: list[tuple[list[int], list[int]]] = []  # (input slots, output slots) of each step
    step_ws: list[float] = []

    def new(t: int, lay: bool, q: bool, nb: float, alias: int = -1) -> int:
        k = len(size)
        size.append(nb if alias < 0 else 0.0)
        root.append(k if alias < 0 else root[alias])
        fmt.append((lay, q))
        variant[(t, lay if lm[t] else 2, q)] = k
        return k

    def fetch(t: int, lay: bool, q: bool) -> int:
        cur = primary[t]
        src_lay, src_q = fmt[cur]
        for to_lay, to_q in _conversion_steps(src_lay, src_q, lay, q, lm[t] and src_lay != lay):
            got = variant.get((t, to_lay if lm[t] else 2, to_q))
            if got is None:
                nb = nbytes[t] * (keep[producer[t]] if producer[t] >= 0 else 1.0)
                got = new(t, to_lay, to_q, 0.25 * nb if to_q else nb)
                ios.append(([cur], [got]))
                step_ws.append(0.0)
            cur = got
        return cur

    for i, outs_of in enumerate(sk.outputs):
        if fused[i]:
            continue
        lay, q = bool(nhwc[i]), bool(int8[i])
        ins = []
        reads = sk.reads[i]
        res = sk.residual_of[i]
        if res is not None and fused[res[0]]:
            reads = reads + (res[1:],)  # the folded Add's residual, read by the producer
        for t, src in reads:
            got = variant.get((t, lay if lm[t] else 2, q))
            if got is None:
                if t not in primary:  # from outside: a graph input (fp32 NCHW) or a tensor already in this format
                    primary[t] = new(t, False, False, 0.0) if src == _EXTERNAL_GRAPH_INPUT else new(t, lay, q, 0.0)
                got = fetch(t, lay, q)
            ins.append(got)
        a = sk.act_of[i]
        if a >= 0 and fused[a]:
            outs_of = sk.outputs[a]
        outs = []
        for t in outs_of:
            if sk.views[i] and len(ins) == 1:
                k = new(t, lay, q, 0.0, ins[0])
            else:
                nb = nbytes[t] * keep[producer[t]]
                k = new(t, lay, q, 0.25 * nb if q else nb)
            primary[t] = k
            outs.append(k)
        ios.append((ins, outs))
        w = ws[i]
        if sk.kind[i]:
            # inputs read as views (a slot sharing another's storage) that are not dense blocks in their layout
            # (runtime.memory._step_workspace)
            sparse = [(t, k) for (t, _), k in zip(reads, ins)
                      if root[k] != k and not sk.view_dense[producer[t]][int(fmt[k][0])]]
            if sk.kind[i] == 1:
                w += sum(nbytes[t] * keep[producer[t]] * (0.25 if fmt[k][1] else 1.0) for t, k in sparse)
            elif sparse and q and lay:
                w = 2.0 * sum(nbytes[t] * keep[i] for t in outs_of)  # 8 bytes per output element
        step_ws.append(w)
    if tpl.convert_final:
        kept = set()
        for t in tpl.final_tensors:  # returned as fp32 NCHW
            got = variant.get((t, False if lm[t] else 2, False))
            kept.add(got if got is not None else fetch(t, False, False))
    else:
        kept = {primary[t] for t in tpl.final_tensors if t in primary}
    frees = free_points(ios, kept)
    peak, _, step = replay_peaks(zip((outs for _, outs in ios), frees, step_ws), size, root)
    return peak, step, max(step_ws, default=0.0)


def _channels(shape: tuple[int, ...]) -> int:
    return int(shape[1]) if len(shape) == 4 else int(shape[-1]) if shape else 1


_TEMPLATES: "OrderedDict[str, GraphTemplate]" = OrderedDict()
_TEMPLATE_CACHE_SIZE = 512


def template_for(graph: Graph) -> GraphTemplate:
    """The (cached, by ``graph_id`` and name) :class:`GraphTemplate` of ``graph``."""
    key = f"{graph.graph_id}:{graph.name}:{len(graph.nodes)}"
    tpl = _TEMPLATES.get(key)
    if tpl is None:
        tpl = build_template(graph)
        _TEMPLATES[key] = tpl
        while len(_TEMPLATES) > _TEMPLATE_CACHE_SIZE:
            _TEMPLATES.popitem(last=False)
    else:
        _TEMPLATES.move_to_end(key)
    return tpl


# ------------------------------------------------------------------------------------------ plans


@dataclass(frozen=True)
class PlanArrays:
    """Per-plan, per-node choice indices: ``primitive`` into the space's primitives (``len`` = other),
    ``layout`` into LAYOUTS, ``precision`` into PRECISIONS, ``prune`` ratios; all shaped [P, n]."""

    primitive: np.ndarray
    layout: np.ndarray
    precision: np.ndarray
    prune: np.ndarray

    def __len__(self) -> int:
        return self.primitive.shape[0]


def encode_plans(template: GraphTemplate, plans: Sequence[Plan | Mapping[str, Choice]],
                 space: FeatureSpace) -> PlanArrays:
    """Resolve every plan against the template (defaults fill unnamed nodes) into index arrays.

    A plan naming a node the graph lacks raises :class:`FeatureError`; an unknown primitive maps to the
    ``other`` bucket with a :class:`FeatureWarning`.
    """
    n = template.n_nodes
    P = len(plans)
    prim_idx = space.primitive_lookup()
    other = len(space.primitives)
    lay_idx = {x: i for i, x in enumerate(space.layouts)}
    prec_idx = {x: i for i, x in enumerate(space.precisions)}
    names = template.node_names
    defaults = template.default_choices

    def code(c: Choice) -> tuple[int, int, int, float]:
        pi = prim_idx.get(c.primitive)
        if pi is None:
            if c.primitive:
                _warn(f"primitive '{c.primitive}' is not in the predictor's "
                           f"vocabulary; featurised as '{OTHER}'")
            pi = other
        if c.layout not in lay_idx or c.precision not in prec_idx:
            raise FeatureError(f"choice {c.to_dict()}: layout must be one of {list(space.layouts)} and "
                               f"precision one of {list(space.precisions)}")
        return pi, lay_idx[c.layout], prec_idx[c.precision], float(c.prune)

    # every distinct (primitive, layout, precision, prune) gets an id; plans become an int matrix of ids,
    # decoded by table lookup (plain tuples hash much faster than Choice dataclasses)
    ids: dict[tuple[str, str, str, float], int] = {}
    default_ids = [ids.setdefault((c.primitive, c.layout, c.precision, c.prune), len(ids)) for c in defaults]
    id_mat = np.empty((P, n), np.int64)
    id_mat[:] = default_ids
    pos = {nm: i for i, nm in enumerate(names)}
    for p, plan in enumerate(plans):
        choices = plan.choices if isinstance(plan, Plan) else plan
        if len(choices) and not pos.keys() >= choices.keys():
            missing = sorted(set(choices) - pos.keys())[:3]
            raise FeatureError(f"plan names node(s) {missing} that graph '{template.name}' does not have")
        if 2 * len(choices) < n:  # a sparse plan (defaults elsewhere): set the named nodes only
            for nm, c in choices.items():
                id_mat[p, pos[nm]] = ids.setdefault((c.primitive, c.layout, c.precision, c.prune), len(ids))
        else:
            get = choices.get
            id_mat[p] = [ids.setdefault((c.primitive, c.layout, c.precision, c.prune), len(ids))
                         if (c := get(nm)) is not None else d for nm, d in zip(names, default_ids)]
    tab = np.array([code(Choice(*k)) for k in ids], np.float64).reshape(-1, 4)
    prim = tab[:, 0].astype(np.int64)[id_mat]
    lay = tab[:, 1].astype(np.int64)[id_mat]
    prec = tab[:, 2].astype(np.int64)[id_mat]
    prune = tab[:, 3][id_mat]
    return PlanArrays(prim, lay, prec, prune)


# ------------------------------------------------------------------------------------------ devices


@dataclass(frozen=True)
class DeviceRates:
    """Throughputs the roofline prior uses: GFLOP/s fp32, GOP/s int8, GB/s, per-node overhead (ms), cores used."""

    gflops_fp32: float
    gops_int8: float
    bandwidth_gbs: float
    overhead_ms: float
    cores: int = 1


def threads_of(device: DeviceSpec, threads: int | None = None) -> int:
    """Threads a run uses: ``threads`` if given, else the device's ``threads_used``, threads, cores, or 1."""
    return int(threads or device.threads_used or device.threads or device.cores or 1)


def _flops_per_cycle(device: DeviceSpec) -> float:
    isa = set(device.isa_features)
    if "avx512f" in isa:
        return 64.0
    if "avx2" in isa or "fma" in isa:
        return 32.0
    if "avx" in isa:
        return 16.0
    if "neon" in isa or (device.arch or "").startswith(("aarch64", "arm")):
        return 8.0
    return 4.0


FINGERPRINT_CONV = "conv3x3_64_56"
FINGERPRINT_CONV_FLOPS = 2 * 56 * 56 * 64 * 64 * 9
"""The fingerprint entry whose speed sets the prior's compute rates, and its FLOPs (a 3x3 convolution, 64 to 64
channels at 56x56, stride 1, padding 1)."""


def device_rates(device: DeviceSpec, threads: int | None = None) -> DeviceRates:
    """Throughputs for the roofline prior.

    Measured figures (``peak_gflops_fp32``, ``peak_gops_int8``, ``mem_bw_triad_gbs``/``copy``) are used when
    the board has them, scaled linearly by usable cores when ``threads`` differs from ``threads_used``;
    otherwise estimated: cores used x clock (GHz, default 2) x fp32 FLOPs per cycle from the ISA (64 with
    avx512f, 32 avx2/fma, 16 avx, 8 neon, else 4) x 0.5; int8 = 2 x fp32; bandwidth 12 GB/s (x86) or
    4 GB/s (other). Per-node overhead: 5 us at 2.5 GHz, scaled by clock.

    Where the board's fingerprint times its 3x3 convolution (``conv3x3_64_56``), the fp32 rate is the speed that
    convolution shows (its FLOPs / its time, scaled the same way) and the int8 rate keeps the board's int8 : fp32
    ratio: the matmul peak orders machines badly (of the VMs measured, one with 12% more matmul peak ran the zoo
    1.7x faster, another with 3% more 1.5x slower), the convolution far better.
    """
    t = threads_of(device, threads)
    cores = device.cores or t
    usable = max(1, min(t, cores))
    freq = (device.freq_mhz_max or device.freq_mhz_base or 2000.0) / 1000.0
    measured_with = max(1, min(device.threads_used or usable, cores))
    scale = usable / measured_with
    if device.peak_gflops_fp32:
        gflops = device.peak_gflops_fp32 * scale
    else:
        gflops = usable * freq * _flops_per_cycle(device) * 0.5
    gops = device.peak_gops_int8 * scale if device.peak_gops_int8 else 2.0 * gflops
    conv_ms = (device.fingerprint or {}).get(FINGERPRINT_CONV)
    if conv_ms:
        shown = FINGERPRINT_CONV_FLOPS / (conv_ms * 1e-3) / 1e9 * scale
        gops, gflops = gops * shown / gflops, shown
    bw = device.mem_bw_triad_gbs or device.mem_bw_copy_gbs
    if not bw:
        bw = 12.0 if (device.arch or "x86_64").startswith(("x86", "amd64")) else 4.0
    return DeviceRates(float(gflops), float(gops), float(bw), 0.005 * 2.5 / freq, usable)


def device_vector(device: DeviceSpec, threads: int | None = None) -> np.ndarray:
    """Raw device features (:data:`DEVICE_COLUMNS`); missing fingerprint entries are NaN."""
    t = threads_of(device, threads)
    rates = device_rates(device, t)
    isa = set(device.isa_features)
    freq = (device.freq_mhz_max or device.freq_mhz_base or 2000.0) / 1000.0
    fp = device.fingerprint or {}
    vals = [
        math.log(t), math.log(device.cores or t), math.log(freq), math.log1p(device.l1d_kb or 32.0),
        math.log1p(device.l2_kb or 1024.0), math.log1p(device.l3_kb or 0.0), math.log(rates.gflops_fp32),
        math.log(rates.gops_int8), math.log(rates.bandwidth_gbs), float("avx2" in isa), float("avx512f" in isa),
        float(bool({"avx512_vnni", "avx_vnni"} & isa)), float("neon" in isa), float("asimddp" in isa),
        float(device.peak_gflops_fp32 is not None),
    ] + [math.log(fp[name]) if fp.get(name) else float("nan") for name in REFERENCE_LAYERS]  # fmt: skip
    return np.array(vals, np.float64)


# ------------------------------------------------------------------------------------------ plan features


@dataclass(frozen=True)
class PlanFeatures:
    """Featurised plans of one template: the static node rows [n, static_dim] shared by every plan, the
    plan rows [P, n, plan_dim] (float32), latency priors [P, n] (ms), graph memory facts
    [P, len(GRAPH_MEMORY_COLUMNS)], the analytical memory prior [P] (bytes), each node's weight plus
    workspace bytes [P, n] and the fallback latency priors [P, n] (ms) of nodes no network corrects."""

    static: np.ndarray
    plan: np.ndarray
    prior_ms: np.ndarray
    memory: np.ndarray
    memory_prior: np.ndarray
    node_memory: np.ndarray  # [P, n] weight plus workspace bytes of each node's choice
    fallback_ms: np.ndarray | None = None  # [P, n] the prior with int8 kernels' real bytes (see the module docstring)

    def __len__(self) -> int:
        return self.plan.shape[0]

    def nodes(self) -> np.ndarray:
        """Full node rows [P, n, node_dim]: static columns then plan columns."""
        P, n, _ = self.plan.shape
        return np.concatenate([np.broadcast_to(self.static, (P, n, self.static.shape[1])), self.plan], axis=2)


def _incidence(tpl: GraphTemplate) -> np.ndarray:
    """[m, n] one-hot map from input entries to their consumer node."""
    inc = np.zeros((len(tpl.in_node), tpl.n_nodes))
    inc[np.arange(len(tpl.in_node)), tpl.in_node] = 1.0
    return inc


def _int8_channel_bytes(tpl: GraphTemplate) -> np.ndarray:
    """Per node: the scale and zero point an int8 Conv/Gemm/MatMul stores per output channel (8 bytes each)."""
    out_c = np.expm1(tpl.static_raw[:, STATIC_COLUMNS.index("log_out_c")].astype(np.float64))
    return np.where(np.isin(np.array(tpl.ops), _FUSE_PRODUCERS), 8.0 * np.round(out_c), 0.0)


def _keep_fractions(tpl: GraphTemplate, prune: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kept share of each node's first input and output channels, [P, n] each.

    A group removes ``round(ratio * free)`` of its free channel classes, ``ratio`` being the largest of
    its members' prune ratios; a tensor loses that share of the channels it holds from the group.
    """
    P, n = prune.shape
    G = len(tpl.group_members)
    if G == 0:
        return np.ones((P, n)), np.ones((P, n))
    removed = np.zeros((P, G))
    for g, members in enumerate(tpl.group_members):
        ratio = prune[:, members].max(axis=1)
        removed[:, g] = np.floor(ratio * tpl.group_free[g] + 0.5) / tpl.group_free[g]
    keep_in = 1.0 - removed @ tpl.comp_in
    keep_out = 1.0 - removed @ tpl.comp_out
    return np.clip(keep_in, 0.0, 1.0), np.clip(keep_out, 0.0, 1.0)


def _int8_depthwise_fallback(tpl: GraphTemplate, arrays: PlanArrays, space: FeatureSpace,
                             keep_in: np.ndarray) -> np.ndarray:
    """[P, n]: the nodes ``conv.int8`` runs on fbgemm's generic depthwise path (their kept channel count is
    not a multiple of 8; see :func:`perfpredict.primitives.quantized.depthwise_fallback`)."""
    if "conv.int8" not in space.primitives or not tpl.dw_channels.any():
        return np.zeros(arrays.primitive.shape, bool)
    return (arrays.primitive == space.primitives.index("conv.int8")) & (tpl.dw_channels > 0) \
        & misaligned(np.rint(tpl.dw_channels * keep_in))


def _traits_prior(tpl: GraphTemplate, arrays: PlanArrays, space: FeatureSpace, cores: int,
                  nhwc: np.ndarray, chan_scale: np.ndarray, eff_flops: np.ndarray,
                  eff_bytes: np.ndarray, act_scale: np.ndarray, rate: np.ndarray, slow: np.ndarray, bw: float,
                  conversions: np.ndarray, prior: np.ndarray, fused_now: np.ndarray) -> np.ndarray:
    """[P, n] the prior priced by each node's primitive (``log_traits_prior_ms``): its kernel factors
    (:func:`~perfpredict.analytical.kernel_factors`: work per operation, share of the compute rate and of the
    bandwidth, extra bytes, fixed cost, one core) on the same rates, the larger of compute and memory time as
    the roofline takes it, plus the conversions; views and folded nodes keep :func:`plan_node_features`' prior.
    ``eff_bytes``: each node's own data in bytes at the bandwidth (its primitive's memory cost from schema 13)."""
    n = tpl.n_nodes
    f = tpl.traits_table(space)[np.arange(n)[None, :], arrays.primitive, nhwc.astype(np.int64)]
    work, eff, extra, mem_eff, overhead, single = np.moveaxis(f, -1, 0)
    ops = np.where(tpl.macs > 0, 2.0 * tpl.macs * work * chan_scale, eff_flops)
    compute = ops / (rate * np.where(slow, 1.0, eff) / np.where(single > 0, cores, 1.0))
    memory = (eff_bytes + extra * chan_scale * act_scale) / (bw * mem_eff)
    traits = overhead + np.maximum(compute, memory) + conversions
    return np.where(fused_now | tpl.is_view, prior, traits)


_CHAIN_KERNELS: dict[str, tuple[str, tuple[bool, ...]]] = {
    "conv.dnnl": ("Conv", (False,)), "conv.dnnl_int8": ("Conv", (True,)), "maxpool.dnnl": ("MaxPool", (False, True)),
    "mul.dnnl": ("Mul", (False, True)), "globalaveragepool.torch": ("GlobalAveragePool", (False, True)),
    "concat.torch": ("Concat", (False, True)),
}
"""Primitive -> (op, precisions as int8 flags) of the steps a oneDNN chain runs (:func:`_chained`)."""


def _chain_table(tpl: GraphTemplate, space: FeatureSpace) -> np.ndarray:
    """[n, len(primitives) + 1, 2] whether node, primitive, precision (fp32, int8) in NHWC is a step a oneDNN chain
    can run (:data:`_CHAIN_KERNELS`; one output; a Mul of two tensors, a channel Concat of two, a pool of a 4-D
    tensor)."""
    def build() -> np.ndarray:
        n = tpl.n_nodes
        table = np.zeros((n, len(space.primitives) + 1, 2), bool)
        n_in = np.bincount(tpl.in_node, minlength=n)
        reads_4d = np.zeros(n, bool)
        np.logical_or.at(reads_4d, tpl.in_node, tpl.in_layout_matters)
        for prim, (op, precisions) in _CHAIN_KERNELS.items():
            if prim not in space.primitives:
                continue
            ok = np.array([o == op and len(outs) == 1 for o, outs in zip(tpl.ops, tpl.out_tensors)], bool)
            if op in ("Mul", "Concat"):
                ok &= n_in == 2
            if op == "Concat":
                ok &= tpl.chan_kind == 2
            if op == "GlobalAveragePool":
                ok &= reads_4d
            for q in precisions:
                table[:, space.primitives.index(prim), int(q)] = ok
        return table

    return tpl.cached(("chain_table", space), build)


def _chained(tpl: GraphTemplate, arrays: PlanArrays, space: FeatureSpace, nhwc: np.ndarray, int8: np.ndarray,
             fused_now: np.ndarray, need: np.ndarray) -> np.ndarray:
    """[P, n]: the nodes whose step the forward pass runs inside a oneDNN chain, as the plan tells it
    (:func:`perfpredict.runtime.chain.chain_steps`): a run of at least two consecutive steps (in the schedule's
    order, the graph's; folded nodes make no step) that oneDNN can run in channels-last (:func:`_chain_table`; a
    channel Concat only of two tensors such steps make, a conversion (``need``, per input entry) being one), the
    conversions between them counting for nothing. The chains' cuts at the schedule's peak memory and their stems
    are not modelled: a run is taken whole."""
    P, n = arrays.primitive.shape
    if n == 0:
        return np.zeros((P, n), bool)
    member = _chain_table(tpl, space)[np.arange(n)[None, :], arrays.primitive, int8.astype(np.int64)] \
        & nhwc & ~fused_now
    concat = tpl.cached("chain_concat_inputs", lambda: _concat_inputs(tpl))
    if concat:
        made = member.copy()  # a folded activation's output is made by its producer's step
        if len(tpl.fuse_act):
            made[:, tpl.fuse_act] = member[:, tpl.fuse_prod] & fused_now[:, tpl.fuse_act]
        for node, (a, b, ea, eb) in concat.items():
            member[:, node] &= (made[:, a] | need[:, ea]) & (made[:, b] | need[:, eb])
    step = ~fused_now
    ahead = np.zeros((P, n), np.int64)
    behind = np.zeros((P, n), np.int64)
    run = np.zeros(P, np.int64)
    for i in range(n):
        run = np.where(step[:, i], np.where(member[:, i], run + 1, 0), run)
        ahead[:, i] = run
    run[:] = 0
    for i in range(n - 1, -1, -1):
        run = np.where(step[:, i], np.where(member[:, i], run + 1, 0), run)
        behind[:, i] = run
    return member & (ahead + behind - 1 >= 2)


def _same_variant_earlier(tpl: GraphTemplate, need: np.ndarray, lay_dst: np.ndarray,
                          prec_dst: np.ndarray) -> np.ndarray:
    """[P, m]: the input entries whose variant (layout where it matters, precision) an earlier entry of the same
    tensor converted to: one conversion serves every reader of a variant."""
    out = np.zeros(need.shape, bool)
    if tpl.in_dup.size:
        e, earlier = tpl.in_dup
        variant = np.where(tpl.in_layout_matters, lay_dst, -1) * 2 + prec_dst
        np.logical_or.at(out, (slice(None), e), need[:, earlier] & (variant[:, e] == variant[:, earlier]))
    return out


def _shared_conversions(tpl: GraphTemplate, need_lay: np.ndarray, need_prec: np.ndarray, lay_src: np.ndarray,
                        lay_dst: np.ndarray, prec_src: np.ndarray, prec_dst: np.ndarray,
                        fp32: int) -> tuple[np.ndarray, np.ndarray]:
    """The conversion steps each input entry makes, [P, m] layout and precision flags, as the runtime's schedule
    makes them (:func:`~perfpredict.runtime.executor.make_schedule`): a step whose variant (layout where it matters,
    precision) an earlier reader of the same tensor already made, as its final variant or on the way to it, is not
    made again. A path of two steps (:func:`~perfpredict.runtime.executor.conversion_path`: relayout then quantise,
    or dequantise then relayout) passes through an fp32 variant: a reader of that variant reuses it, and a reader
    whose path passes through a variant already there makes only its last step."""
    if not tpl.in_dup.size:
        return need_lay, need_prec
    need = need_lay | need_prec
    two = need_lay & need_prec
    src_int8 = prec_src != fp32  # dequantise first (the source's layout), else relayout first (the reader's)
    lm = tpl.in_layout_matters
    final = np.where(lm, lay_dst, -1) * 2 + prec_dst
    mid = np.where(lm, np.where(src_int8, lay_src, lay_dst), -1) * 2 + fp32
    e, earlier = tpl.in_dup
    made_final, made_mid = need[:, earlier], two[:, earlier]

    def made(variant: np.ndarray) -> np.ndarray:
        hit = (made_final & (final[:, earlier] == variant[:, e])) | (made_mid & (mid[:, earlier] == variant[:, e]))
        out = np.zeros(need.shape, bool)
        np.logical_or.at(out, (slice(None), e), hit)
        return out

    new_final = need & ~made(final)
    new_mid = two & new_final & ~made(mid)
    lay = np.where(two, np.where(src_int8, new_final, new_mid), need_lay & new_final)
    prec = np.where(two, np.where(src_int8, new_mid, new_final), need_prec & new_final)
    return lay, prec


def _residual_entries(tpl: GraphTemplate) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input entry, Add, producer) of every residual Add a producer can fold: the entry reading the residual."""
    internal = tpl.cached("internal_inputs", lambda: _internal_inputs(tpl))
    res = tpl.fuse_code == EPILOGUE_CODES.index(RESIDUAL)
    rows = [(int(k), a, p) for a, p in zip(tpl.fuse_act[res].tolist(), tpl.fuse_prod[res].tolist())
            for k in np.flatnonzero((tpl.in_node == a) & ~internal)[:1]]
    return tuple(np.array(c, np.int64) for c in zip(*rows)) if rows else (np.zeros(0, np.int64),) * 3


def _to_producer(tpl: GraphTemplate, per_entry: np.ndarray, per_node: np.ndarray, fused_now: np.ndarray) -> None:
    """Move, in place, each folded residual Add's share of ``per_node`` (the sum of ``per_entry`` over a node's
    input entries) to the producer it folds into."""
    entry, add, producer = tpl.cached("residual_entries", lambda: _residual_entries(tpl))
    if not len(entry):
        return
    moved = np.where(fused_now[:, add], per_entry[:, entry], 0.0)
    np.add.at(per_node, (slice(None), producer), moved)
    np.add.at(per_node, (slice(None), add), -moved)


def _concat_inputs(tpl: GraphTemplate) -> dict[int, tuple[int, int, int, int]]:
    """Channel Concat of two produced tensors -> its two producers and its two input entries."""
    out = {}
    for i in np.flatnonzero(tpl.chan_kind == 2):
        entries = np.flatnonzero(tpl.in_node == i)
        src = tpl.in_src[entries]
        if len(src) == 2 and (src >= 0).all():
            out[int(i)] = (int(src[0]), int(src[1]), int(entries[0]), int(entries[1]))
    return out


def plan_node_features(tpl: GraphTemplate, arrays: PlanArrays, space: FeatureSpace, device: DeviceSpec,
                       threads: int | None = None) -> PlanFeatures:
    """Featurise the plans of ``arrays`` on ``device`` (see the module docstring for the columns)."""
    P, n = arrays.primitive.shape
    rates = device_rates(device, threads)
    nchw = space.layouts.index("NCHW") if "NCHW" in space.layouts else 0
    fp32 = space.precisions.index("fp32") if "fp32" in space.precisions else 0
    int8 = arrays.precision != fp32
    nhwc = arrays.layout != nchw
    act_scale = np.where(int8, 0.25, 1.0)
    keep_in, keep_out = _keep_fractions(tpl, arrays.prune)
    dense = tpl.chan_kind == 0
    chan_scale = np.where(dense, keep_in * keep_out, keep_in)
    eff_macs = tpl.macs * chan_scale
    eff_flops = tpl.flops * chan_scale
    eff_in = tpl.bytes_in * keep_in * act_scale
    eff_out = tpl.bytes_out * keep_out * act_scale
    # an int8 Conv/Gemm/MatMul stores its weight at 1 byte per element; every other parameter stays fp32
    quant_weight = int8 & tpl.cached("weight_producers", lambda: np.isin(np.array(tpl.ops), _FUSE_PRODUCERS))
    eff_params = (tpl.param_bytes - tpl.bias_bytes) * chan_scale * np.where(quant_weight, 0.25, 1.0) \
        + tpl.bias_bytes * keep_out
    eff_params += int8 * tpl.cached("int8_channel_bytes", lambda: _int8_channel_bytes(tpl)) * keep_out

    # fusion: a producer's foldable nodes fold into it when they all run at its precision and its primitive applies
    # their epilogue (swish, hardswish, sigmoid, residual: oneDNN post-ops only)
    fused_now = np.zeros((P, n), bool)
    has_fused_now = np.zeros((P, n), bool)
    out_layout = arrays.layout.copy()
    if len(tpl.fuse_act):
        ok = (arrays.precision[:, tpl.fuse_act] == arrays.precision[:, tpl.fuse_prod]) \
            & _epilogue_table(space)[arrays.primitive[:, tpl.fuse_prod], tpl.fuse_code]
        refused = np.zeros((P, n), bool)
        np.logical_or.at(refused, (slice(None), tpl.fuse_prod), ~ok)
        same = ~refused[:, tpl.fuse_prod]
        fused_now[:, tpl.fuse_act] = same
        has_fused_now[:, tpl.fuse_prod] = same
        out_layout[:, tpl.fuse_act] = np.where(same, arrays.layout[:, tpl.fuse_prod], arrays.layout[:, tpl.fuse_act])

    # conversions: a reader whose layout/precision differs from the tensor's producer; one per variant
    incidence = tpl.cached("incidence", lambda: _incidence(tpl))
    src = tpl.in_src
    has_src = src >= 0
    src_c = np.maximum(src, 0)
    lay_dst = out_layout[:, tpl.in_node]  # a folded node reads in its producer's layout
    prec_dst = arrays.precision[:, tpl.in_node]
    lay_src = np.where(has_src, out_layout[:, src_c], np.where(src == _EXTERNAL_GRAPH_INPUT, nchw, lay_dst))
    prec_src = np.where(has_src, arrays.precision[:, src_c], np.where(src == _EXTERNAL_GRAPH_INPUT, fp32, prec_dst))
    reader_fused = fused_now[:, tpl.in_node] & tpl.cached("internal_inputs", lambda: _internal_inputs(tpl))
    need_lay = (lay_src != lay_dst) & tpl.in_layout_matters & ~reader_fused
    need_prec = (prec_src != prec_dst) & ~reader_fused
    need = need_lay | need_prec
    # a reader of a variant an earlier reader had made (schema 13's sharing; what _chained reads at every schema)
    shared = _same_variant_earlier(tpl, need, lay_dst, prec_dst)
    chain_need = need & ~shared
    if space.schema_version >= 15:
        need_lay, need_prec = _shared_conversions(tpl, need_lay, need_prec, lay_src, lay_dst, prec_src, prec_dst,
                                                  fp32)
    else:
        need_lay, need_prec = need_lay & ~shared, need_prec & ~shared
    need = need_lay | need_prec
    src_keep = np.where(has_src, keep_out[:, src_c], 1.0)
    entry_bytes = need * tpl.in_bytes * src_keep
    conv_bytes = entry_bytes @ incidence
    out_conv = tpl.writes_output & ((nhwc & tpl.out_layout_matters) | int8)
    lay_in, prec_in = need_lay.astype(np.float64) @ incidence, need_prec.astype(np.float64) @ incidence
    if space.schema_version >= 15:  # a folded Add's residual is converted for (and read by) its producer
        for per_entry, per_node in ((entry_bytes, conv_bytes), (need_lay, lay_in), (need_prec, prec_in)):
            _to_producer(tpl, per_entry, per_node, fused_now)

    rate = np.where(int8, rates.gops_int8, rates.gflops_fp32) * 1e6  # operations per ms
    slow = _int8_depthwise_fallback(tpl, arrays, space, keep_in)
    rate = np.where(slow, rate * DEPTHWISE_FALLBACK_SHARE, rate)
    bw = rates.bandwidth_gbs * 1e6  # bytes per ms
    # a kernel's own data, in bytes at the bandwidth: its bytes, and its window elements' (a pool's) at its cost
    per_byte, per_window = np.moveaxis(_memory_cost_table(space)[arrays.primitive, nhwc.astype(np.int64)], -1, 0)
    own_bytes = per_byte * (eff_in + eff_out + eff_params) + per_window * eff_flops * 4.0 * act_scale
    conversions = (2.0 * conv_bytes + out_conv * 2.0 * eff_out) / bw
    chained = None
    if space.schema_version >= 11:  # each conversion is a step of its own, with a step's fixed cost, unless chained
        chained = _chained(tpl, arrays, space, nhwc, int8, fused_now, chain_need)
        steps = lay_in + prec_in + tpl.writes_output * ((nhwc & tpl.out_layout_matters).astype(np.float64) + int8)
        conversions = conversions + np.where(chained, 0.0, steps * rates.overhead_ms)
    prior = eff_flops / rate + own_bytes / bw + rates.overhead_ms + conversions
    prior = np.where(fused_now, _FUSED_PRIOR_SHARE * rates.overhead_ms, prior)
    # the price of a node no network corrects: the same, with the activation bytes each int8 kernel really moves
    fallback = prior
    if (tpl.int8_act != 0.25).any():
        scale = np.where(int8, tpl.int8_act[np.arange(n)[None, :], nhwc.astype(np.int64)], act_scale)
        fallback = prior + np.where(fused_now, 0.0, per_byte * (eff_in + eff_out) * (scale / act_scale - 1.0) / bw)
    columns = [prior]
    if space.schema_version >= 9:
        columns.append(_traits_prior(tpl, arrays, space, rates.cores, nhwc, chan_scale, eff_flops,
                                     own_bytes, act_scale, rate, slow, bw, conversions, prior, fused_now))

    K = len(space.primitives) + 1
    prim_onehot = np.zeros((P, n, K), np.float32)
    np.put_along_axis(prim_onehot, space.primitive_columns()[arrays.primitive][..., None], 1.0, axis=2)
    plan_cols = np.stack([
        (~nhwc).astype(np.float64), nhwc.astype(np.float64), (~int8).astype(np.float64), int8.astype(np.float64),
        arrays.prune, keep_in, keep_out, np.log1p(eff_macs), np.log1p(eff_flops), np.log1p(eff_in),
        np.log1p(eff_out), np.log1p(eff_params), lay_in, prec_in, np.log1p(conv_bytes), out_conv.astype(np.float64),
        fused_now.astype(np.float64), has_fused_now.astype(np.float64), *np.log(columns),
        *([slow.astype(np.float64)] if space.schema_version >= 10 else []),
        *([chained.astype(np.float64)] if chained is not None else []),
    ], axis=2).astype(np.float32)  # fmt: skip
    plan = np.concatenate([prim_onehot, plan_cols], axis=2)

    # analytical memory (as perfpredict.runtime.estimate_peak_memory): weights + the largest, over the steps, of
    # live activations + that step's workspace
    weights = eff_params.sum(axis=1)
    # oneDNN's blocked buffers: the device's block (AVX-512 or not), not the machine featurising
    block = onednn_block(device.isa_features)
    ws_table = tpl.workspace_table(space, block)
    ws = ws_table[np.arange(n)[None, :], arrays.primitive, int8.astype(np.int64), nhwc.astype(np.int64)]
    _pruned_workspace(tpl, space, arrays, int8.astype(np.int64), nhwc.astype(np.int64), keep_in, keep_out, ws,
                      block)
    peak_act, step_peak, step_ws = _replay_memory(tpl, int8, nhwc, fused_now, keep_out, ws)
    max_ws = np.maximum(ws.max(axis=1), step_ws) if n else np.zeros(P)
    mem_prior = weights + step_peak
    memory = np.stack([np.log1p(weights), np.log1p(peak_act), np.log1p(max_ws), np.log1p(mem_prior)], axis=1)
    return PlanFeatures(tpl.static_features(space), plan, prior, memory.astype(np.float32), mem_prior,
                        eff_params + ws, fallback)


def featurise(graph: Graph, plans: Sequence[Plan], device: DeviceSpec, space: FeatureSpace,
              threads: int | None = None) -> PlanFeatures:
    """Convenience: :func:`template_for` + :func:`encode_plans` + :func:`plan_node_features`."""
    tpl = template_for(graph)
    return plan_node_features(tpl, encode_plans(tpl, plans, space), space, device, threads)


# ------------------------------------------------------------------------------------------ normaliser


@dataclass(frozen=True)
class Normaliser:
    """Standardisation fitted on training data, stored in checkpoints.

    Node and memory columns: ``(x - mean) / std``. A node column that never varied in training (the one-hot
    of an op or primitive no training graph used) has ``std = inf``: it reads 0 at prediction too, instead of
    feeding weights that training never moved; such a node is described by its op category and numeric
    columns. Device columns: missing fingerprint entries are imputed
    as the training mean shifted by the device's log-GFLOP/s difference, then the vector is clipped to the
    training range (so the learned part never extrapolates; cross-device scaling comes from the roofline
    prior), then standardised.
    """

    node_mean: np.ndarray
    node_std: np.ndarray
    dev_mean: np.ndarray
    dev_std: np.ndarray
    dev_min: np.ndarray
    dev_max: np.ndarray
    mem_mean: np.ndarray
    mem_std: np.ndarray

    @classmethod
    def fit(cls, node_rows: np.ndarray, device_rows: np.ndarray, memory_rows: np.ndarray,
            layer_rows: np.ndarray | None = None) -> "Normaliser":
        """Fit on stacked node rows [N, d], raw device vectors [G, dd] and memory rows [G, dm]. ``layer_rows``
        [M, d], the node rows of layer records, standardise only the columns that never varied in ``node_rows``
        (an op that only a user's measured layers have, ``perfpredict profile layers --model``): the others keep
        the model rows' statistics."""
        def stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            x = np.asarray(x, np.float64)
            with warnings.catch_warnings():  # all-NaN columns (a board without fingerprint) are expected
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(x, axis=0) if len(x) else np.zeros(x.shape[1])
                std = np.nanstd(x, axis=0) if len(x) else np.ones(x.shape[1])
            mean = np.nan_to_num(mean)
            std = np.where(np.isfinite(std) & (std > 1e-6), std, 1.0)
            return mean, std

        nm, ns = stats(node_rows)
        if len(node_rows):
            ns = np.where(np.ptp(np.asarray(node_rows, np.float64), axis=0) > 0, ns, np.inf)
        if layer_rows is not None and len(layer_rows):
            lm, ls = stats(layer_rows)
            varies = np.ptp(np.asarray(layer_rows, np.float64), axis=0) > 0
            fill = np.isinf(ns) & varies if len(node_rows) else varies
            nm, ns = np.where(fill, lm, nm), np.where(fill, ls, ns)
        dev = np.asarray(device_rows, np.float64)
        dm, ds = stats(dev)
        dev_filled = np.where(np.isnan(dev), dm, dev)
        mm, ms = stats(memory_rows)
        return cls(nm, ns, dm, ds, dev_filled.min(axis=0), dev_filled.max(axis=0), mm, ms)

    def nodes(self, x: np.ndarray) -> np.ndarray:
        """Standardised node rows (float32)."""
        return ((x - self.node_mean) / self.node_std).astype(np.float32)

    def device(self, v: np.ndarray) -> np.ndarray:
        """Imputed, clipped, standardised device vector (float32)."""
        v = np.array(v, np.float64)
        gi = DEVICE_COLUMNS.index("log_gflops_fp32")
        shift = v[gi] - self.dev_mean[gi]
        fp = np.array([c.startswith("log_fp_") for c in DEVICE_COLUMNS])
        missing = np.isnan(v)
        v[missing & fp] = self.dev_mean[missing & fp] - shift
        v[missing & ~fp] = self.dev_mean[missing & ~fp]
        v = np.clip(v, self.dev_min, self.dev_max)
        return ((v - self.dev_mean) / self.dev_std).astype(np.float32)

    @functools.cached_property
    def pinned(self) -> np.ndarray:
        """Indices of the node columns that never varied in training (read as their training value)."""
        return np.flatnonzero(np.isinf(self.node_std))

    def unseen_columns(self, x: np.ndarray) -> np.ndarray:
        """Indices of the node columns of rows ``x`` (the leading columns of a node row) that never varied in
        training and take another value here: the facts a prediction for ``x`` leaves out."""
        p = self.pinned[self.pinned < x.shape[1]]
        return p[(x[:, p] != self.node_mean[p]).any(axis=0)] if p.size else p

    def memory(self, x: np.ndarray) -> np.ndarray:
        """Standardised graph memory facts (float32)."""
        return ((x - self.mem_mean) / self.mem_std).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON/torch-safe form (plain lists)."""
        return {k: np.asarray(getattr(self, k), np.float64).tolist() for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: Mapping[str, Iterable[float]]) -> "Normaliser":
        """Parse :meth:`to_dict` output."""
        return cls(**{k: np.asarray(d[k], np.float64) for k in cls.__dataclass_fields__})
