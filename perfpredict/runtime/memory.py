"""Analytical peak-memory estimate of a graph under a plan, from the runtime's own schedule.

``weights``: parameters as the plan deploys them: fp32 at 4 bytes per element; a Conv/Gemm/MatMul at
int8 stores its weight at 1 byte per element plus a per-output-channel scale and zero point (8 bytes per
channel) and keeps its bias in fp32; pruning shrinks every sliced tensor.

``activations``: the schedule of :func:`perfpredict.runtime.executor.make_schedule` is replayed: at each
step, the tensors still alive plus the step's outputs, by storage (a view from Split/Slice/Flatten/Reshape
shares its input's storage), at 4 bytes per element for fp32 tensors and 1 for int8; the peak is the largest
such sum. The graph inputs are the caller's buffers, not memory the inference allocates, and count nothing
(as in the allocator measurement of :mod:`perfpredict.runtime.measurement`); copies made of them (a layout
or precision conversion) count like any other tensor.

``workspace``: the largest :attr:`Primitive.workspace_bytes` over the nodes (one kernel runs at a time).

``total``: weights plus the largest sum, over the steps, of the activations alive at the step and the step's own
workspace (a kernel's temporaries exist only while it runs, so the largest workspace and the largest live set
add up only where they fall on the same step); at most ``weights + activations + workspace``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from perfpredict.graph import Graph, Node
from perfpredict.plan import Choice, Plan
from perfpredict.primitives.registry import get_primitive
from perfpredict.runtime.executor import FUSABLE_PRODUCERS, Schedule, make_schedule, resolve_plan, view_is_dense

_WEIGHT_OPS = ("Conv", "Gemm", "MatMul", "BatchNormalization", "Add", "Mul")
INT8_CHANNEL_BYTES = 8
"""Bytes per output channel of an int8 weight: a float32 scale and an int32 zero point."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak memory in bytes: ``total`` = weights + the largest (live activations + workspace) of any
    step; ``activations`` and ``workspace`` are the largest of each alone (see the module docstring).

    ``peak_step`` names the step (node or converted tensor) at which the activations peak.
    """

    weights: int
    activations: int
    workspace: int
    total: int
    peak_step: str = ""


def weight_bytes(graph: Graph, choices: dict[str, Choice]) -> int:
    """Bytes of every node's parameters as deployed under ``choices`` (graph already pruned)."""
    total = 0
    for node in graph.nodes:
        if node.op not in _WEIGHT_OPS:
            continue
        c = choices.get(node.name)
        arrays = [graph.initializers[p] for p in node.params]
        if c is not None and c.precision == "int8" and node.op in FUSABLE_PRODUCERS and arrays:
            w = arrays[0]
            total += int(w.size) + INT8_CHANNEL_BYTES * _out_channels(node, w)
            total += sum(4 * int(a.size) for a in arrays[1:])
        else:
            total += sum(4 * int(a.size) for a in arrays)
    return total


def _out_channels(node: Node, w: np.ndarray) -> int:
    if node.op == "Conv":
        return int(w.shape[0])
    return int(node.out_shape[-1])


def replay_peaks(steps: Iterable[tuple[Sequence[int], Sequence[int], float]], size: Sequence[float],
                 root: Sequence[int], held: Sequence[int] = (),
                 before: list[float] | None = None) -> tuple[float, int, float]:
    """Replay steps given as (output slots, slots freed after the step, workspace bytes) over slots whose
    storage belongs to slot ``root[s]`` of ``size[root[s]]`` bytes (a view's root is the slot it shares; a
    caller-owned buffer has size 0), the ``held`` slots alive from the start: (peak live bytes, the step
    first reaching it or -1, peak of the live bytes plus the step's workspace). ``before``, when given, gets the
    live bytes before each step."""
    refs = [0] * len(size)
    live = 0.0
    for s in held:
        if not refs[root[s]]:
            live += size[root[s]]
        refs[root[s]] += 1
    peak = step_peak = live
    where = -1
    for i, (outs, frees, ws) in enumerate(steps):
        if before is not None:
            before.append(live)
        for s in outs:
            r = root[s]
            if not refs[r]:
                live += size[r]
            refs[r] += 1
        if live > peak:
            peak, where = live, i
        if live + ws > step_peak:
            step_peak = live + ws
        for s in frees:
            r = root[s]
            refs[r] -= 1
            if not refs[r]:
                live -= size[r]
    return peak, where, step_peak


def slot_storage(schedule: Schedule) -> tuple[list[int], list[int]]:
    """(root, size): the slot owning each slot's storage (itself, or the slot a view shares) and the bytes each slot
    owns (0 for views and for the caller's input buffers)."""
    slots = schedule.slots
    root = [s.alias_of if s.alias_of is not None else k for k, s in enumerate(slots)]
    for k in range(len(root)):  # views of views: point every slot at the slot owning the storage
        while slots[root[k]].alias_of is not None:
            root[k] = slots[root[k]].alias_of
    caller_owned = {root[s] for s in schedule.input_slots}
    size = [0 if k in caller_owned or root[k] != k else s.nbytes for k, s in enumerate(slots)]
    return root, size


def live_profile(schedule: Schedule) -> tuple[list[int], int]:
    """(activation bytes alive before each step of ``schedule`` runs, the most ever alive), workspaces left out."""
    root, size = slot_storage(schedule)
    before: list[float] = []
    peak, _, _ = replay_peaks(((op.outputs, op.frees, 0) for op in schedule.ops), size, root, schedule.input_slots,
                              before)
    return [int(b) for b in before], int(peak)


def _replay(schedule: Schedule, workspace: list[int]) -> tuple[int, str, int]:
    """Replay the schedule: (peak live activations, its step, peak of live activations + the step's workspace)."""
    root, size = slot_storage(schedule)
    steps = [(op.outputs, op.frees, ws) for op, ws in zip(schedule.ops, workspace)]
    peak, where, step_peak = replay_peaks(steps, size, root, schedule.input_slots)
    return int(peak), schedule.ops[where].name if where >= 0 else "<input>", int(step_peak)


def _step_workspace(schedule: Schedule) -> list[int]:
    """The workspace each scheduled step declares (0 for conversions), with what a kernel does to an input that
    is a view but not a dense block in its layout (:func:`~perfpredict.runtime.executor.view_is_dense`): a Conv
    holds a dense copy of it, and an int8 channel Concat in NHWC goes through fp32."""
    from perfpredict.primitives.tensor_ops import int8_concat_direct, int8_concat_fallback_bytes

    nodes = {n.name: n for n in schedule.graph.nodes}
    producer = {t: n for n in schedule.graph.nodes for t in n.outputs}
    out = []
    for op in schedule.ops:
        if op.kind != "node":
            out.append(0)
            continue
        c = schedule.choices[op.name]
        node = nodes[op.name]
        ws = int(get_primitive(c.primitive).workspace_bytes(node, c.precision, c.layout))
        if node.op in ("Conv", "Concat"):
            sparse = [schedule.slots[s] for s in op.inputs if schedule.slots[s].alias_of is not None
                      and (v := producer.get(schedule.slots[s].tensor)) is not None
                      and not view_is_dense(v, schedule.slots[s].layout)]
            if node.op == "Conv":
                ws += sum(slot.nbytes for slot in sparse)
            elif sparse and c.precision == "int8" and int8_concat_direct(node, c.layout):
                ws = int8_concat_fallback_bytes(node)
        out.append(ws)
    return out


def estimate_peak_memory(graph: Graph, plan: Plan | None = None, *, fuse: bool = True) -> MemoryEstimate:
    """Analytical peak memory of ``graph`` under ``plan`` (default plan when None); see the module docstring."""
    from perfpredict.runtime.pruning import prune_graph

    resolved = resolve_plan(graph, plan)
    choices = dict(resolved.choices)
    ratios = {n: c.prune for n, c in choices.items() if c.prune > 0}
    run_graph = prune_graph(graph, ratios).graph if ratios else graph
    schedule = make_schedule(run_graph, choices, fuse=fuse)
    weights = weight_bytes(run_graph, choices)
    ws = _step_workspace(schedule)
    activations, where, step_peak = _replay(schedule, ws)
    return MemoryEstimate(weights, activations, max(ws, default=0), weights + step_peak, where)
