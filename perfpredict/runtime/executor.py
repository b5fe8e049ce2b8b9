"""Build an executable from a Graph, a Plan and the graph's weights, and run it on the CPU with torch.

:func:`build_executable` resolves the plan (defaults for nodes it does not name), validates it, prunes
the graph, calibrates int8 activations when the plan has int8 nodes, folds an activation that is the sole
reader of a Conv/Gemm/MatMul output into that node (a Relu/Clip, or a HardSwish, Sigmoid or swish pair where the
node's primitive applies it), and a residual ``Add`` (with the activation after it) into the Conv whose output it
adds where the Conv's primitive adds residuals (same precision only; :func:`plan_fusions`), then schedules the nodes:
each tensor is produced in its producer's layout and precision and, where a consumer runs in another
layout or precision, one conversion (``.contiguous(memory_format=...)``, quantise or dequantise) is
inserted and shared by every consumer that needs the same variant. Graph outputs come back as NCHW fp32.

The forward loop runs a precomputed list of steps over a register file of tensors; a tensor is dropped
as soon as its last reader has run. Layout matters only for 4-D tensors with more than one channel and
more than one pixel (a ``(N, C, 1, 1)`` tensor is both NCHW- and NHWC-contiguous), so no conversion is
inserted for the others.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, Sequence

import numpy as np
import torch

from perfpredict.errors import GraphError, PlanError
from perfpredict.graph import Graph, Node
from perfpredict.measure import torch_threads
from perfpredict.plan import Choice, Plan, default_plan, validate_plan
from perfpredict.primitives.registry import get_primitive
from perfpredict.runtime.kernel import BuildContext, QParams

FUSABLE_PRODUCERS = ("Conv", "Gemm", "MatMul")
"""Ops whose primitives apply a fused activation (``BuildContext.fused_activation``)."""

VIEW_OPS = ("Split", "Slice", "Flatten", "Reshape")
"""Ops whose output shares its input's storage (used by the memory estimate)."""

_MEMORY_ORDER = {"NCHW": (0, 1, 2, 3), "NHWC": (0, 2, 3, 1)}


def view_is_dense(node: Node, layout: str) -> bool:
    """Whether the output of view ``node`` (a Split or Slice of a 4-D tensor) is one dense block of its input's
    storage in ``layout``: every dimension before a sliced one in memory order has size 1 (a channel slice is
    dense in NCHW at batch 1, not in NHWC). Flatten and Reshape views, and views of other ranks, count as
    dense. Kernels treat a view that is not dense differently: a Conv copies it first, and an int8 channel
    Concat in NHWC goes through fp32 (the memory estimate counts both)."""
    if node.op not in ("Split", "Slice") or len(node.in_shape) != 4 or layout not in _MEMORY_ORDER:
        return True
    from perfpredict.primitives.tensor_ops import slice_plan

    shape = node.in_shape
    if node.op == "Split":
        axes: tuple[int, ...] = (int(node.attrs["axis"]),)
    else:
        plan = slice_plan(node)  # clamped as the kernel clamps them
        if any(step != 1 for *_, step in plan):
            return False
        axes = tuple(ax for ax, start, end, _ in plan if (start, end) != (0, shape[ax]))  # the axes actually cut
    order = _MEMORY_ORDER[layout]
    return all(shape[d] == 1 for ax in axes for d in order[:order.index(ax)])

_FORMATS = {"NCHW": torch.contiguous_format, "NHWC": torch.channels_last}


def layout_matters(shape: Sequence[int]) -> bool:
    """Whether NCHW and NHWC differ in memory for a tensor of ``shape`` (4-D, C > 1 and H*W > 1)."""
    return len(shape) == 4 and shape[1] > 1 and shape[2] * shape[3] > 1


def effective_layout(layout: str, shape: Sequence[int]) -> str:
    """``layout``, or ``"ANY"`` where the two layouts are the same memory for ``shape``."""
    return layout if layout_matters(shape) else "ANY"


@dataclass(frozen=True)
class Conversion:
    """A layout conversion or a (de)quantisation inserted in front of ``consumer`` for ``tensor``.

    ``kind`` is ``"layout"`` (source/target NCHW or NHWC), ``"quantize"`` or ``"dequantize"``
    (source/target fp32 or int8); ``consumer`` is the first node that reads the converted tensor
    (``"<output>"`` for a graph output).
    """

    tensor: str
    consumer: str
    kind: str
    source: str
    target: str


@dataclass(frozen=True)
class Slot:
    """One tensor variant in the register file: a graph tensor in one layout and precision.

    ``alias_of`` is the slot whose storage this one shares (views), or None when it owns its memory.
    """

    tensor: str
    shape: tuple[int, ...]
    layout: str
    precision: str
    alias_of: int | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor (1 per element at int8, 4 at fp32)."""
        n = int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1
        return n * (1 if self.precision == "int8" else 4)


@dataclass(frozen=True)
class ScheduledOp:
    """One step of the schedule: a node's kernel or a conversion.

    ``kind`` is ``"node"``, ``"layout"``, ``"quantize"`` or ``"dequantize"``; ``name`` the node name or
    the converted tensor; ``frees`` the slots dropped after this step.
    """

    kind: str
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    frees: tuple[int, ...] = ()
    fused_activation: str | None = None
    fused_node: str | None = None
    fused_residual: bool = False


@dataclass(frozen=True)
class Schedule:
    """The execution order of a (pruned) graph under resolved choices, before any kernel is built."""

    graph: Graph
    choices: Mapping[str, Choice]
    ops: tuple[ScheduledOp, ...]
    slots: tuple[Slot, ...]
    input_slots: tuple[int, ...]
    output_slots: tuple[int, ...]
    conversions: tuple[Conversion, ...]
    fused: Mapping[str, str]
    tensor_slots: Mapping[str, int] = field(default_factory=dict)


def fused_activation_of(node: Node) -> str | None:
    """The ``fused_activation`` spec of a one-node activation (Relu, Clip, HardSwish, Sigmoid), or None for other
    ops."""
    if node.op == "Relu":
        return "relu"
    if node.op == "HardSwish":
        return "hardswish"
    if node.op == "Sigmoid":
        return "sigmoid"
    if node.op == "Clip":
        lo, hi = float(node.attrs.get("min", -np.inf)), float(node.attrs.get("max", np.inf))
        if lo == 0.0 and hi == np.inf:
            return "relu"
        if lo == 0.0 and hi == 6.0:
            return "relu6"
        return f"clip:{lo}:{hi}"
    return None


FUSION_REVISION = 3
"""The revision of the runtime's fusion rules, written into each measurement (``extra_json``
``fusion_revision``; none before revision 2). 1: Relu/Clip into Conv/Gemm/MatMul. 2: also swish (Sigmoid + Mul),
HardSwish and Sigmoid into the primitives whose ``epilogues`` list them. 3: also a residual Add (and the
activation after it) into the Conv primitives whose ``epilogues`` list ``"residual"``."""


DISPATCH_REVISION = 6
"""How the forward pass runs the schedule's steps, written into each model measurement (``extra_json``
``dispatch_revision``; none before revision 2). 1: one Python call per step. 2: runs of consecutive steps oneDNN
can run in one C call each (:mod:`perfpredict.runtime.chain`), the others one Python call per step. 3: as 2, and the
chains also run the schedule's quantisations, dequantisations and changes of layout of floats (oneDNN reorders).
4: as 3, with each run cut into the fewest chains and steps that stay within the schedule's peak plus 1%
(:data:`~perfpredict.runtime.chain.PEAK_SLACK`; 3 cut greedily from the left within the peak), each chain's arena
searched harder where that lets it fit, the bytes of a chain's inputs reused once it has read them, and a stem (a
convolution of at most 4 input channels into a max pool) run in its chain from the planar input through oneDNN's
blocked format. 5: as 4, with a GlobalAveragePool of an fp32 convolution's output whose swish is our own pass
(AVX-512) computed in that pass (:func:`~perfpredict.runtime.chain._mean_folds`), that pass in 17 vector
instructions per 16 values instead of 21, and a gate product that reads its input for the last time writing over it
(:func:`~perfpredict.runtime.chain._in_place`). 6: as 5, with a chain's own fp32 tensors run in oneDNN's blocked
format where that makes its channel concats free (:func:`~perfpredict.runtime.chain._on_blocks`: squeezenet1_1's)
or drops a stem's reorder out of blocks, stems without a max pool through blocks too (mobilenets, efficientnet), the
other concats in chains copied by ``_dnnl.c`` instead of oneDNN's concat, and int8 max pools by ``_dnnl.c``'s own
AVX-512 BW loop."""


@dataclass(frozen=True)
class Fusion:
    """``nodes`` (in graph order) that ``producer``'s kernel applies: with ``residual`` (the tensor it adds), first
    an ``Add`` of the producer's output and that tensor; then an activation applied as ``activation`` (a
    ``fused_activation`` spec, None for none). The last node's outputs become the producer's."""

    producer: str
    nodes: tuple[str, ...]
    activation: str | None
    residual: str | None = None

    @property
    def revision(self) -> int:
        """The :data:`FUSION_REVISION` since which the runtime applies this fusion."""
        from perfpredict.primitives.epilogue import ELTWISE

        return 3 if self.residual is not None else 2 if self.activation in ELTWISE else 1


def fusion_patterns(graph: Graph) -> list[Fusion]:
    """The structurally foldable nodes of ``graph``, whatever the plan: a Relu/Clip/HardSwish/Sigmoid that is the
    only reader of a Conv/Gemm/MatMul output; a swish, ``Mul(x, Sigmoid(x))`` whose Sigmoid and Mul are the only
    readers of the producer's output ``x`` and the Mul the only reader of the Sigmoid's; or a residual
    ``Add(x, r)`` that is the only reader of a Conv's output ``x``, where ``r`` has ``x``'s shape and is a graph
    input or the output of a node before the Conv, with the activation that is the Add's only reader if there is
    one. No tensor but the last one a graph output."""
    readers: dict[str, list[Node]] = {}
    made_at: dict[str, int] = {t: -1 for t in graph.inputs}
    for i, n in enumerate(graph.nodes):
        for t in n.activation_inputs:
            readers.setdefault(t, []).append(n)
        for t in n.outputs:
            made_at[t] = i
    outputs = set(graph.outputs)
    out: list[Fusion] = []
    for i, p in enumerate(graph.nodes):
        if p.op not in FUSABLE_PRODUCERS or len(p.outputs) != 1 or p.outputs[0] in outputs:
            continue
        x = p.outputs[0]
        rd = readers.get(x, [])
        if len(rd) == 1 and len(rd[0].activation_inputs) == 1 and (spec := fused_activation_of(rd[0])):
            out.append(Fusion(p.name, (rd[0].name,), spec))
        elif p.op == "Conv" and len(rd) == 1 and (f := _residual_pattern(graph, p, rd[0], i, made_at, readers)):
            out.append(f)
        elif len(rd) == 2 and {n.op for n in rd} == {"Sigmoid", "Mul"}:
            sig = next(n for n in rd if n.op == "Sigmoid")
            mul = next(n for n in rd if n.op == "Mul")
            s = sig.outputs[0] if len(sig.outputs) == 1 else None
            if (s is not None and s not in outputs and [n.name for n in readers.get(s, [])] == [mul.name]
                    and sorted(mul.activation_inputs) == sorted((x, s)) and not mul.params):
                out.append(Fusion(p.name, (sig.name, mul.name), "swish"))
    return out


def _residual_pattern(graph: Graph, conv: Node, add: Node, at: int, made_at: Mapping[str, int],
                      readers: Mapping[str, list[Node]]) -> Fusion | None:
    x = conv.outputs[0]
    ins = add.activation_inputs
    if add.op != "Add" or add.params or len(ins) != 2 or ins.count(x) != 1 or len(add.outputs) != 1:
        return None
    r = ins[1] if ins[0] == x else ins[0]
    shapes = graph.tensor_shapes
    if made_at.get(r, at) >= at or tuple(shapes.get(r, ())) != tuple(shapes.get(x, ())) or len(shapes[x]) != 4:
        return None
    y = add.outputs[0]
    rd = readers.get(y, [])
    if y not in graph.outputs and len(rd) == 1 and len(rd[0].activation_inputs) == 1 \
            and (spec := fused_activation_of(rd[0])):
        return Fusion(conv.name, (add.name, rd[0].name), spec, r)
    return Fusion(conv.name, (add.name,), None, r)


def fusion_allowed(f: Fusion, choices: Mapping[str, Choice]) -> bool:
    """Whether the runtime applies ``f`` under ``choices`` (name -> choice, at least of ``f``'s nodes): its nodes
    all run at the producer's precision and the producer's primitive applies the activation and the residual
    (:meth:`~perfpredict.primitives.registry.Primitive.folds`)."""
    c = choices[f.producer]
    return all(choices[a].precision == c.precision for a in f.nodes) \
        and get_primitive(c.primitive).folds(f.activation, residual=f.residual is not None)


def plan_fusions(graph: Graph, choices: Mapping[str, Choice], revision: int = FUSION_REVISION) -> dict[str, Fusion]:
    """Producer node -> the :class:`Fusion` the runtime applies under ``choices`` (one per node): the folded
    nodes all run at the producer's precision, and an eltwise activation (swish, hardswish, sigmoid) or a residual
    only into a primitive whose ``epilogues`` list it. ``revision`` keeps the fusions of that
    :data:`FUSION_REVISION` and earlier (to run a plan as an earlier runtime did)."""
    return {f.producer: f for f in fusion_patterns(graph) if f.revision <= revision and fusion_allowed(f, choices)}


def find_fusions(graph: Graph, choices: Mapping[str, Choice]) -> dict[str, str]:
    """Folded node -> producer node it folds into under ``choices`` (see :func:`plan_fusions`)."""
    return {a: f.producer for f in plan_fusions(graph, choices).values() for a in f.nodes}


def make_schedule(graph: Graph, choices: Mapping[str, Choice], *, fuse: bool = True,
                  fusion_revision: int = FUSION_REVISION) -> Schedule:
    """Schedule ``graph`` (already pruned) under ``choices`` (one per node): slots, steps, conversions; the fusions
    of :func:`plan_fusions` at ``fusion_revision`` when ``fuse``."""
    fusions = plan_fusions(graph, choices, fusion_revision) if fuse else {}
    fused = {a: f.producer for f in fusions.values() for a in f.nodes}
    nodes_by_name = {n.name: n for n in graph.nodes}
    slots: list[Slot] = []
    variant: dict[tuple[str, str, str], int] = {}  # (tensor, effective layout, precision) -> slot
    primary: dict[str, int] = {}  # tensor -> slot its producer writes
    ops: list[ScheduledOp] = []
    conversions: list[Conversion] = []

    def new_slot(tensor: str, layout: str, precision: str, alias_of: int | None = None) -> int:
        shape = tuple(graph.tensor_shapes.get(tensor, ()))
        slots.append(Slot(tensor, shape, layout, precision, alias_of))
        k = len(slots) - 1
        variant[(tensor, effective_layout(layout, shape), precision)] = k
        return k

    def fetch(tensor: str, layout: str, precision: str, consumer: str) -> int:
        if tensor not in primary:
            raise GraphError(f"graph '{graph.name}': tensor '{tensor}' read by '{consumer}' has no producer")
        shape = slots[primary[tensor]].shape
        key = (tensor, effective_layout(layout, shape), precision)
        if key in variant:
            return variant[key]
        cur = primary[tensor]
        src = slots[cur]
        differs = effective_layout(src.layout, shape) != effective_layout(layout, shape)
        for kind, lay, prec in conversion_path(src.layout, src.precision, layout, precision, differs):
            cur = _convert(cur, kind, lay, prec, consumer)
        return cur

    def _convert(cur: int, kind: str, layout: str, precision: str, consumer: str) -> int:
        tensor = slots[cur].tensor
        key = (tensor, effective_layout(layout, slots[cur].shape), precision)
        if key in variant:
            return variant[key]
        source, target = (slots[cur].layout, layout) if kind == "layout" else (slots[cur].precision, precision)
        out = new_slot(tensor, layout, precision)
        ops.append(ScheduledOp(kind, tensor, (cur,), (out,)))
        conversions.append(Conversion(tensor, consumer, kind, source, target))
        return out

    input_slots = []
    for t in graph.inputs:
        k = new_slot(t, "NCHW", "fp32")
        primary[t] = k
        input_slots.append(k)

    for node in graph.nodes:
        if node.name in fused:
            continue
        c = choices[node.name]
        fusion = fusions.get(node.name)
        reads = node.activation_inputs + ((fusion.residual,) if fusion is not None and fusion.residual else ())
        ins = tuple(fetch(t, c.layout, c.precision, node.name) for t in reads)
        out_names = nodes_by_name[fusion.nodes[-1]].outputs if fusion is not None else node.outputs
        is_view = node.op in VIEW_OPS and len(ins) == 1
        outs = []
        for t in out_names:
            k = new_slot(t, c.layout, c.precision, alias_of=ins[0] if is_view else None)
            primary[t] = k
            outs.append(k)
        ops.append(ScheduledOp("node", node.name, ins, tuple(outs),
                               fused_activation=fusion.activation if fusion else None,
                               fused_node=fusion.nodes[-1] if fusion else None,
                               fused_residual=fusion is not None and fusion.residual is not None))

    output_slots = tuple(fetch(t, "NCHW", "fp32", "<output>") for t in graph.outputs)
    ops = _with_frees(ops, input_slots, output_slots)
    return Schedule(graph=graph, choices=dict(choices), ops=tuple(ops), slots=tuple(slots),
                    input_slots=tuple(input_slots), output_slots=output_slots, conversions=tuple(conversions),
                    fused=fused, tensor_slots=dict(primary))


def _with_frees(ops: list[ScheduledOp], input_slots: list[int], output_slots: tuple[int, ...]) -> list[ScheduledOp]:
    frees = free_points([(op.inputs, op.outputs) for op in ops], set(output_slots), input_slots)
    return [dataclasses.replace(op, frees=tuple(sorted(frees[i]))) for i, op in enumerate(ops)]


def conversion_path(src_layout: Any, src_precision: str, layout: Any, precision: str,
                    layout_differs: bool) -> list[tuple[str, Any, str]]:
    """The conversions that make a tensor stored as (``src_layout``, ``src_precision``) readable as (``layout``,
    ``precision``), in order, as (kind, layout, precision) after each: layout changes run in fp32, so a
    dequantisation comes before one and a quantisation after one. Empty when nothing differs."""
    relayout = [("layout", layout, "fp32" if src_precision != precision else precision)] if layout_differs else []
    if src_precision == precision:
        return relayout
    if precision == "fp32":
        return [("dequantize", src_layout, "fp32")] + relayout
    return relayout + [("quantize", layout, precision)]


def free_points(steps: Sequence[tuple[Sequence[int], Sequence[int]]], keep: Collection[int],
                held: Sequence[int] = ()) -> list[list[int]]:
    """For steps given as (input slots, output slots): the slots to free after each step, at their last read
    (a slot never read: right after the step writing it; a ``held`` slot never read: after the first step);
    ``keep`` slots are never freed."""
    last: dict[int, int] = {}
    for i, (ins, outs) in enumerate(steps):
        for s in outs:
            last.setdefault(s, i)
        for s in ins:
            last[s] = i
    for s in held:
        last.setdefault(s, 0)
    frees: list[list[int]] = [[] for _ in steps]
    for s, i in last.items():
        if s not in keep and i < len(frees):
            frees[i].append(s)
    return frees


# --------------------------------------------------------------------------------------------- building


def resolve_plan(graph: Graph, plan: Plan | None) -> Plan:
    """``plan`` validated against ``graph`` with every node's choice filled in (defaults for the rest)."""
    if plan is None:
        return default_plan(graph)
    validate_plan(graph, plan)
    return Plan(plan.resolve(graph), plan.name, plan.graph_id or graph.graph_id)


def node_weights(graph: Graph, node: Node) -> dict[str, np.ndarray]:
    """The weights a primitive's build receives: initialisers by name, plus ``weight``/``bias`` roles for
    Conv, Gemm and MatMul."""
    w = {p: graph.initializers[p] for p in node.params}
    if node.op in FUSABLE_PRODUCERS:
        if len(node.inputs) > 1 and node.inputs[1] in w:
            w["weight"] = w[node.inputs[1]]
        if len(node.inputs) > 2 and node.inputs[2] in w:
            w["bias"] = w[node.inputs[2]]
    return w


@dataclass(frozen=True)
class StepTime:
    """The median time of one scheduled step (:meth:`Executable.step_times`): a node's kernel (``primitive``,
    ``precision``, ``layout`` of its choice, ``fused_activation`` folded into it) or a conversion (``kind``
    ``"layout"``, ``"quantize"`` or ``"dequantize"``; ``name`` the converted tensor)."""

    kind: str
    name: str
    ms: float
    primitive: str | None = None
    precision: str | None = None
    layout: str | None = None
    fused_activation: str | None = None

    @property
    def group(self) -> str:
        """What the step is, for a breakdown: ``"conv.dnnl_int8 int8 NHWC"`` or the conversion kind."""
        return f"{self.primitive} {self.precision} {self.layout}" if self.kind == "node" else self.kind


def breakdown(steps: Sequence[StepTime]) -> list[dict[str, Any]]:
    """Step times summed by :attr:`StepTime.group`, largest first: group, steps, ms, share (of the sum)."""
    total = sum(st.ms for st in steps) or 1.0
    groups: dict[str, list[StepTime]] = {}
    for st in steps:
        groups.setdefault(st.group, []).append(st)
    rows = [{"group": g, "steps": len(v), "ms": sum(st.ms for st in v), "share": sum(st.ms for st in v) / total}
            for g, v in groups.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def step_groups(schedule: Schedule, steps: Sequence[StepTime]) -> list[tuple[float, tuple[str, ...]]]:
    """The node steps of :meth:`Executable.step_times` as (ms, graph nodes) groups, in schedule order: each node's
    kernel with the activations folded into it (``schedule.fused``) and the conversions of its inputs that it is
    the first to read (as the featuriser prices a conversion at its first reader). A conversion no node reads (the
    final one to NCHW fp32) belongs to no group."""
    if len(steps) != len(schedule.ops):
        raise GraphError(f"step_groups needs one time per scheduled step: {len(steps)} times, "
                         f"{len(schedule.ops)} steps")
    folded: dict[str, list[str]] = {}
    for act, prod in schedule.fused.items():
        folded.setdefault(prod, []).append(act)
    pending: dict[int, float] = {}  # slot written by a conversion -> its time, until a node reads it
    out = []
    for op, st in zip(schedule.ops, steps):
        if op.kind != "node":
            for slot in op.outputs:
                pending[slot] = pending.get(slot, 0.0) + st.ms
            continue
        ms = st.ms + sum(pending.pop(slot, 0.0) for slot in op.inputs)
        out.append((ms, (op.name, *folded.get(op.name, ()))))
    return out


class Executable:
    """A built network: run it with :meth:`run` (numpy in, numpy out) or :meth:`forward` (torch tensors).

    Attributes: ``plan`` (resolved: a choice for every node), ``graph`` (the pruned graph that runs),
    ``source_graph``, ``schedule``, ``conversions`` (layout conversions and (de)quantisations inserted),
    ``fused`` (activation node -> the node it was folded into), ``threads``, ``calibration``.
    """

    def __init__(self, schedule: Schedule, steps: list[tuple[Callable[..., Any], tuple[int, ...], tuple[int, ...],
                                                             tuple[int, ...]]],
                 plan: Plan, source_graph: Graph, threads: int | None, calibration: Any,
                 fast_steps: list | None = None) -> None:
        self.schedule = schedule
        self.plan = plan
        self.graph = schedule.graph
        self.source_graph = source_graph
        self.threads = threads
        self.calibration = calibration
        self.conversions: list[Conversion] = list(schedule.conversions)
        self.fused: dict[str, str] = dict(schedule.fused)
        self._steps = steps
        self._fast_steps = steps if fast_steps is None else fast_steps
        self._n_slots = len(schedule.slots)
        self._inputs = schedule.input_slots
        self._outputs = schedule.output_slots
        self._input_shapes = [tuple(schedule.graph.tensor_shapes[t]) for t in schedule.graph.inputs]

    # ----------------------------------------------------------------- inputs

    def prepare_input(self, *xs: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The inputs as contiguous float32 torch tensors of the graph's input shapes (for :meth:`forward`)."""
        if len(xs) != len(self._input_shapes):
            raise GraphError(f"graph '{self.graph.name}' takes {len(self._input_shapes)} input(s), got {len(xs)}")
        out = []
        for x, shape in zip(xs, self._input_shapes):
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) \
                else x.detach().to(torch.float32).contiguous()
            if tuple(t.shape) != shape:
                raise GraphError(f"graph '{self.graph.name}' expects an input of shape {list(shape)}, "
                                 f"got {list(t.shape)}")
            out.append(t)
        return tuple(out)

    # ----------------------------------------------------------------- running

    def forward(self, *xs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Run on prepared tensors (see :meth:`prepare_input`); the output tensor (a tuple if several)."""
        regs = self._execute(xs, keep_all=False)
        outs = tuple(regs[s] for s in self._outputs)
        return outs[0] if len(outs) == 1 else outs

    def run(self, *xs: np.ndarray | torch.Tensor) -> np.ndarray | tuple[np.ndarray, ...]:
        """Run on numpy arrays (or tensors); the output as a C-contiguous float32 numpy array (a tuple if several)."""
        out = self.forward(*self.prepare_input(*xs))
        outs = out if isinstance(out, tuple) else (out,)
        arrays = tuple(np.ascontiguousarray(o.numpy()) for o in outs)
        return arrays[0] if len(arrays) == 1 else arrays

    __call__ = run

    def trace(self, *xs: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """Run keeping every tensor: graph tensor name -> the value its producer wrote (calibration, debugging)."""
        regs = self._execute(self.prepare_input(*xs), keep_all=True)
        return {t: regs[s] for t, s in self.schedule.tensor_slots.items() if regs[s] is not None}

    def step_times(self, *xs: np.ndarray | torch.Tensor, repeats: int = 30, warmup: int = 5) -> list[StepTime]:
        """Where a forward pass spends its time: each scheduled step (kernel or conversion) timed on its own
        with ``time.perf_counter`` over ``repeats`` passes after ``warmup`` untimed ones; the median of each.

        The steps run back to back, one Python call per op, so each time includes the step's own dispatch (the
        Python call, the allocation of its output); the sum leaves out the executor's loop between steps. Where the
        executable chains runs of oneDNN calls (``build_executable``'s ``chain``), its forward pass makes fewer
        Python calls than the steps timed here, and can take less than their sum."""
        if repeats < 1 or warmup < 0:
            raise GraphError(f"step_times needs repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
        inputs = self.prepare_input(*xs)
        times = np.zeros((repeats, len(self._steps)))
        for r in range(warmup + repeats):
            row: list[float] = []
            self._execute(inputs, keep_all=False, times=row)
            if r >= warmup:
                times[r - warmup] = row
        med = np.median(times, axis=0) * 1e3
        out = []
        for op, ms in zip(self.schedule.ops, med.tolist()):
            c = self.plan.choices.get(op.name) if op.kind == "node" else None
            out.append(StepTime(op.kind, op.name, ms, c.primitive if c else None, c.precision if c else None,
                                c.layout if c else None, op.fused_activation))
        return out

    def _execute(self, xs: Sequence[torch.Tensor], keep_all: bool, times: list[float] | None = None) -> list[Any]:
        regs: list[Any] = [None] * self._n_slots
        for s, x in zip(self._inputs, xs):
            regs[s] = x
        before = torch.get_num_threads()
        change = self.threads is not None and self.threads != before
        if change:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                for fn, ins, outs, frees in self._fast_steps if times is None and not keep_all else self._steps:
                    if times is None:
                        y = fn(*[regs[i] for i in ins])
                    else:
                        t0 = time.perf_counter()
                        y = fn(*[regs[i] for i in ins])
                        times.append(time.perf_counter() - t0)
                    if len(outs) == 1:
                        regs[outs[0]] = y
                    else:
                        for k, s in enumerate(outs):
                            regs[s] = y[k]
                    y = None  # the register file alone holds the outputs, so that a free frees them
                    if not keep_all:
                        for s in frees:
                            regs[s] = None
        finally:
            if change:
                torch.set_num_threads(before)
        return regs

    @property
    def chains(self) -> list[int]:
        """How many calls (oneDNN's, and the conversions') each chain of the forward pass makes in its one C call
        (``build_executable``'s ``chain``; :mod:`perfpredict.runtime.chain`), in order; empty when nothing is
        chained."""
        return [len(fn.primitives) for fn, *_ in self._fast_steps if hasattr(fn, "primitives")]

    @property
    def forward_steps(self) -> int:
        """Python steps of the forward pass: one per op of the schedule, less what the chains run in C."""
        return len(self._fast_steps)

    def __repr__(self) -> str:
        n_nodes = sum(1 for op in self.schedule.ops if op.kind == "node")
        return (f"Executable({self.graph.name!r}, {n_nodes} kernels, {len(self.conversions)} conversions, "
                f"{len(self.fused)} fused, {len(self.chains)} chains, threads={self.threads})")


def _layout_fn(layout: str) -> Callable[[torch.Tensor], torch.Tensor]:
    fmt = _FORMATS[layout]
    return lambda x: x.contiguous(memory_format=fmt)


def _quantize_fn(qp: QParams) -> Callable[[torch.Tensor], torch.Tensor]:
    from perfpredict.primitives.quantized import quantize_activation

    return lambda x: quantize_activation(x, qp)


def _dequantize(x: torch.Tensor) -> torch.Tensor:
    return x.dequantize()


def concat_ties(schedule: Schedule) -> dict[str, str]:
    """Tensor -> the int8 channel Concat output whose grid it takes: each input of an int8 Concat that nothing else
    reads (and that is no graph output) is quantised on the Concat's own grid, as TFLite's int8 scheme has it, so
    that the Concat joins its inputs by a copy instead of requantising them (a second rounding)."""
    nodes = {n.name: n for n in schedule.graph.nodes}
    reads: dict[str, int] = {}
    for op in schedule.ops:
        for k in op.inputs:
            reads[schedule.slots[k].tensor] = reads.get(schedule.slots[k].tensor, 0) + 1
    outputs = set(schedule.graph.outputs)
    ties = {}
    for op in schedule.ops:
        node = nodes.get(op.name) if op.kind == "node" else None
        if node is None or node.op != "Concat" or schedule.choices[op.name].precision != "int8" \
                or int(node.attrs.get("axis", 0)) not in (1, -3):
            continue
        out = schedule.slots[op.outputs[0]].tensor
        for k in op.inputs:
            t = schedule.slots[k].tensor
            if reads.get(t) == 1 and t not in outputs and schedule.slots[k].precision == "int8":
                ties[t] = out
    return ties


def build_executable(graph: Graph, plan: Plan | None = None, *, threads: int | None = None,
                     calibration: Any = None, fuse: bool = True,
                     fusion_revision: int = FUSION_REVISION, chain: bool = True) -> Executable:
    """Build ``graph`` under ``plan`` (default plan when None) into an :class:`Executable`.

    ``threads`` sets torch's intra-op threads while the kernels are built and while the executable runs (restored
    afterwards): oneDNN packs weights for the thread count it will run with.
    ``calibration`` is used when the plan has int8 nodes: a :class:`~perfpredict.runtime.calibration.Calibration`,
    or calibration input arrays (one array or a sequence); None calibrates on seeded random inputs.
    ``fuse`` folds activations into the Conv/Gemm they follow (:func:`plan_fusions`), as the runtime of
    ``fusion_revision`` did (default: this one's, :data:`FUSION_REVISION`). ``chain`` makes the forward pass run
    each run of consecutive steps oneDNN can run (and the conversions between them) in one C call
    (:mod:`perfpredict.runtime.chain`); ``step_times`` and ``trace`` run one step per op either way. Raises
    :class:`PlanError` for an illegal plan.
    """
    from perfpredict.runtime.calibration import Calibration, calibrate
    from perfpredict.runtime.pruning import prune_graph

    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise PlanError(f"threads must be a positive integer or None, got {threads!r}")
    resolved = resolve_plan(graph, plan)
    choices = dict(resolved.choices)
    ratios = {n: c.prune for n, c in choices.items() if c.prune > 0}
    run_graph = prune_graph(graph, ratios).graph if ratios else graph
    schedule = make_schedule(run_graph, choices, fuse=fuse, fusion_revision=fusion_revision)

    needs_int8 = any(c.precision == "int8" for c in choices.values())
    calib: Calibration | None = None
    if needs_int8:
        if isinstance(calibration, Calibration):
            calib = calibration
        else:
            calib = calibrate(graph, resolved, inputs=calibration)

    ties = concat_ties(schedule) if needs_int8 else {}

    def qp(tensor: str) -> QParams:
        assert calib is not None
        return calib.qparams(ties.get(tensor, tensor))

    # kernels are built at the thread count they run with: oneDNN picks its implementation, and so the blocked
    # format that conv.onednn_packed reorders the weights into, by thread count; weights packed for another count
    # are reordered again on every call
    with torch_threads(threads):
        steps = _build_steps(schedule, qp)
    fast = None
    if chain:
        from perfpredict.runtime.chain import chain_steps

        fast = chain_steps(schedule, steps, qp if calib is not None else None)
    return Executable(schedule, steps, resolved, graph, threads, calib, fast)


def _build_steps(schedule: Schedule, qp: Callable[[str], QParams]) -> list:
    """One (kernel, input slots, output slots, freed slots) step per op of ``schedule``; ``qp`` gives a tensor's
    int8 quantisation parameters."""
    run_graph, choices = schedule.graph, schedule.choices
    nodes = {n.name: n for n in run_graph.nodes}
    steps = []
    for op in schedule.ops:
        if op.kind == "node":
            node = nodes[op.name]
            c = choices[op.name]
            ctx = BuildContext(layout=c.layout, precision=c.precision, fused_activation=op.fused_activation,
                               fused_residual=op.fused_residual)
            if c.precision == "int8":  # the node's inputs, then any residual; the last folded node's output
                ctx = dataclasses.replace(ctx, in_qparams=tuple(qp(schedule.slots[k].tensor) for k in op.inputs),
                                          out_qparams=qp(schedule.slots[op.outputs[0]].tensor))
                if op.fused_activation is not None and not op.fused_residual and node.outputs:
                    # the node's own output before the activation (calibration traces the graph unfused; a
                    # calibration given without that tensor leaves the activation to the kernel's post-op)
                    try:
                        ctx = dataclasses.replace(ctx, pre_activation_qparams=qp(node.outputs[0]))
                    except PlanError:
                        pass
            try:
                fn = get_primitive(c.primitive).build(node, node_weights(run_graph, node), ctx)
            except PlanError:
                raise
            except Exception as exc:
                raise PlanError(f"node '{node.name}' ({node.op}): primitive '{c.primitive}' failed to build at "
                                f"{c.layout}/{c.precision}: {type(exc).__name__}: {str(exc).splitlines()[0]}") \
                    from exc
        elif op.kind == "layout":
            fn = _layout_fn(schedule.slots[op.outputs[0]].layout)
        elif op.kind == "quantize":
            fn = _quantize_fn(qp(op.name))
        else:
            fn = _dequantize
        steps.append((fn, op.inputs, op.outputs, op.frees))
    return steps
