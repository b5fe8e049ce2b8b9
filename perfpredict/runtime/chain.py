"""Runs of oneDNN convolutions that a forward pass makes in one C call instead of one Python step each.

Every step of :class:`~perfpredict.runtime.executor.Executable`'s forward loop is a Python call around the kernel,
and after a oneDNN call the interpreter's own state is out of cache: the forward pass of a plan costs more than its
oneDNN calls back to back, most at int8, where each step also makes a quantised output tensor and reads its input's
scale back (``benchmarks/bench_sequence.py`` times both). :func:`chain_steps` replaces runs of consecutive
``conv.dnnl`` / ``conv.dnnl_int8`` steps whose kernels carry a :class:`~perfpredict.primitives.dnnl.ChainLink` by
one step each that runs the whole run in one call of ``pp_dnnl_chain_run``.

A chain's own tensors, those that no step after it reads, live in one buffer allocated through torch at each call
(with the scratchpad at its end) and laid out at build by their lifetimes (:func:`layout_arena`); the tensors that
outlive the run are allocated as the kernels allocate them and handed back to the register file. Because a chain
holds its inputs to its end and allocates its outputs at its start, a run is cut where chaining it whole would hold
more than the schedule ever has alive, so the pass's peak memory is that of one step per op. The int8 scale and zero
point of a chain's own tensor are its producer's calibrated grid, known at build; those of its inputs are read from
the tensors at each call, as the kernels read them.

The per-step path stays: :meth:`~perfpredict.runtime.executor.Executable.step_times` and ``trace`` run it, and
``build_executable(..., chain=False)`` keeps it for the forward pass as well. A chain's table of buffers is shared
by its calls: an executable runs one forward pass at a time.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from perfpredict.errors import PlanError
from perfpredict.runtime.kernel import QParams

ALIGN = 64
"""Byte alignment of every tensor in a chain's arena (a cache line; oneDNN's own alignment)."""

_NO_RESIDUAL = -(2 ** 63)  # PP_NO_RESIDUAL in _dnnl.c

Step = tuple[Callable[..., Any], tuple[int, ...], tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True)
class ArenaLayout:
    """Offsets (bytes) of a chain's own tensors in its arena, and the arena's size."""

    offsets: dict[int, int]
    size: int


def layout_arena(sizes: dict[int, int], lifetimes: dict[int, tuple[int, int]]) -> ArenaLayout:
    """Offsets for tensors of ``sizes`` (bytes, by slot) alive over the inclusive step ranges ``lifetimes``: each at
    the lowest :data:`ALIGN`-aligned offset that overlaps no tensor placed before it and alive at the same time,
    placed largest first or in the order they are made, whichever arena is smaller."""
    by_size = _first_fit(sizes, lifetimes, sorted(sizes, key=lambda s: (-sizes[s], lifetimes[s][0], s)))
    in_order = _first_fit(sizes, lifetimes, sorted(sizes, key=lambda s: (lifetimes[s][0], s)))
    return min(by_size, in_order, key=lambda a: a.size)


def _first_fit(sizes: dict[int, int], lifetimes: dict[int, tuple[int, int]], order: list[int]) -> ArenaLayout:
    placed: list[tuple[int, int, int, int]] = []  # offset, end, first step, last step
    offsets: dict[int, int] = {}
    for slot in order:
        size = -(-sizes[slot] // ALIGN) * ALIGN
        first, last = lifetimes[slot]
        busy = sorted((o, e) for o, e, f, la in placed if f <= last and first <= la)
        offset = 0
        for o, e in busy:
            if offset + size <= o:
                break
            offset = max(offset, -(-e // ALIGN) * ALIGN)
        offsets[slot] = offset
        placed.append((offset, offset + size, first, last))
    return ArenaLayout(offsets, max((e for _, e, _, _ in placed), default=0))


def _link(step: Step) -> Any:
    return getattr(step[0], "link", None)


def chain_steps(schedule: Any, steps: Sequence[Step], *, min_length: int = 2) -> list[Step]:
    """``steps`` (one per op of ``schedule``, in order) with runs of at least ``min_length`` consecutive chainable
    steps replaced by one step each that runs the run in one C call (same inputs, outputs and frees as the run,
    seen from outside it).

    A chain holds its inputs until it ends and allocates its outputs and its arena when it starts, where single
    steps free and allocate as they go; so a run is cut where chaining it whole would hold more than the most the
    schedule ever has alive, and the pass's peak memory stays that of one step per op."""
    live, peak = _live_profile(schedule)
    out: list[Step] = []
    i = 0
    while i < len(steps):
        j = i
        while j < len(steps) and _chainable(schedule, steps[j]):
            j += 1
        a = i
        while a < j:
            b, fit = a + min_length, None  # the longest chain from a that stays within the peak
            while b <= j:
                layout = _plan(schedule, steps[a:b])
                if layout is None or live[a] + layout.held > peak:
                    break
                fit = (b, layout)
                b += 1
            if fit is None:
                out.append(steps[a])
                a += 1
            else:
                out.append(_chain(schedule, steps[a:fit[0]], [op.name for op in schedule.ops[a:fit[0]]], fit[1]))
                a = fit[0]
        if j == i:
            out.append(steps[i])
            j += 1
        i = j
    return out


def _live_profile(schedule: Any) -> tuple[list[int], int]:
    """(bytes of activations alive before each step runs, the schedule's peak of live activations), as
    :mod:`perfpredict.runtime.memory` replays the schedule. The peak leaves out workspaces: what a chain holds
    (its scratchpad included) stays within the live activations of some single step, so the pass's peak is that
    of one step per op whatever the steps' real workspaces are."""
    from perfpredict.runtime.memory import slot_storage

    root, size = slot_storage(schedule)
    refs = [0] * len(size)
    live = 0
    for s in schedule.input_slots:
        refs[root[s]] += 1
    before, peak = [], 0
    for op in schedule.ops:
        before.append(live)
        for s in op.outputs:
            if not refs[root[s]]:
                live += size[root[s]]
            refs[root[s]] += 1
        peak = max(peak, live)
        for s in op.frees:
            refs[root[s]] -= 1
            if not refs[root[s]]:
                live -= size[root[s]]
    return before, peak


@dataclass(frozen=True)
class _ChainPlan:
    """Where a run's tensors live: its inputs and the outputs it hands on (slots, in call order), the arena of the
    others, and the bytes the chain adds to what was alive before it (arena, outputs, scratchpad)."""

    inputs: tuple[int, ...]
    exported: tuple[int, ...]
    frees: tuple[int, ...]
    arena: ArenaLayout
    scratch: int
    held: int


def _plan(schedule: Any, run: Sequence[Step]) -> _ChainPlan | None:
    produced = {step[2][0]: i for i, step in enumerate(run)}
    freed = {s for step in run for s in step[3]}
    exported = tuple(s for s in produced if s not in freed)
    inputs: list[int] = []
    for _, ins, _, _ in run:
        inputs += [s for s in ins if s not in produced and s not in inputs]
    links = [_link(step) for step in run]
    for step, link in zip(run, links):  # an int8 residual made in the run must be on its consumer's grid
        if link.int8 and link.residual is not None and step[1][1] in produced \
                and links[produced[step[1][1]]].out_qparams != link.residual:
            return None
    internal = [s for s in produced if s in freed]
    last_read = {s: produced[s] for s in internal}
    for i, (_, ins, _, _) in enumerate(run):
        for s in ins:
            if s in last_read:
                last_read[s] = max(last_read[s], i)
    arena = layout_arena({s: schedule.slots[s].nbytes for s in internal},
                         {s: (produced[s], last_read[s]) for s in internal})
    scratch = max(link.primitive.scratch_bytes for link in links)
    held = arena.size + scratch + sum(schedule.slots[s].nbytes for s in exported)
    return _ChainPlan(tuple(inputs), exported, tuple(s for s in freed if s not in produced), arena, scratch, held)


def _chainable(schedule: Any, step: Step) -> bool:
    link = _link(step)
    if link is None:
        return False
    _, ins, outs, _ = step
    if len(outs) != 1 or len(ins) != (2 if link.residual is not None else 1):
        return False
    precision = "int8" if link.int8 else "fp32"
    slots = [schedule.slots[k] for k in (*ins, *outs)]
    return all(s.layout in ("NHWC", "ANY") and s.precision == precision and s.alias_of is None for s in slots) \
        and tuple(slots[-1].shape) == link.primitive.out_shape


def _chain(schedule: Any, run: Sequence[Step], names: Sequence[str], plan: _ChainPlan) -> Step:
    """One step for ``run`` (chainable steps of the ops ``names``) laid out as ``plan``."""
    from perfpredict.primitives.dnnl import _status, library

    produced = {step[2][0]: i for i, step in enumerate(run)}
    inputs, exported, arena = list(plan.inputs), list(plan.exported), plan.arena
    links = [_link(step) for step in run]
    grid = {i: link.out_qparams for i, link in enumerate(links)}

    def where(slot: int) -> int:
        if slot in arena.offsets:
            return arena.offsets[slot]
        return -1 - (inputs.index(slot) if slot in inputs else len(inputs) + exported.index(slot))

    n = len(run)
    src = (ctypes.c_int64 * n)(*(where(step[1][0]) for step in run))
    dst = (ctypes.c_int64 * n)(*(where(step[2][0]) for step in run))
    res = (ctypes.c_int64 * n)(*(where(step[1][1]) if len(step[1]) == 2 else _NO_RESIDUAL for step in run))
    scales = [1.0] * n
    zps = [0] * n
    read_scale: list[tuple[int, int]] = []  # (member, input index) whose src grid is read from the tensor per call
    res_grid: dict[int, QParams] = {}  # input index -> the grid an int8 residual input must be on
    for i, (step, link) in enumerate(zip(run, links)):
        if not link.int8:
            continue
        s = step[1][0]
        if s in produced:
            qp = grid[produced[s]]
            scales[i], zps[i] = float(qp.scale), int(qp.zero_point)
        else:
            read_scale.append((i, inputs.index(s)))
        if link.residual is not None and step[1][1] not in produced:
            res_grid[inputs.index(step[1][1])] = link.residual
    handles = (ctypes.c_void_p * n)(*(link.primitive.handle for link in links))
    scale_arr = (ctypes.c_float * n)(*scales)
    zp_arr = (ctypes.c_int * n)(*zps)
    out_specs = [(tuple(schedule.slots[s].shape), grid[produced[s]]) for s in exported]
    scratch_bytes = plan.scratch
    n_ext = len(inputs) + len(exported)
    chain_run = library().pp_dnnl_chain_run
    cl = torch.channels_last
    scratch_at = -(-arena.size // ALIGN) * ALIGN  # one buffer per call: the arena, then the scratchpad
    total = scratch_at + scratch_bytes
    ext = (ctypes.c_void_p * n_ext)()  # the call's buffers, filled at each call
    failed = ctypes.c_int(-1)
    failed_ref = ctypes.byref(failed)

    def kernel(*xs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        xs = tuple(x.contiguous(memory_format=cl) for x in xs)
        for k, qp in res_grid.items():  # an int8 residual on another grid: requantised, as the kernel does
            x = xs[k]
            if x.q_scale() != qp.scale or x.q_zero_point() != qp.zero_point:
                xs = (*xs[:k], torch.quantize_per_tensor(x.dequantize(), qp.scale, qp.zero_point, torch.quint8)
                      .contiguous(memory_format=cl), *xs[k + 1:])
        ys = [torch.empty(shape, memory_format=cl) if qp is None else
              torch._empty_affine_quantized(shape, scale=qp.scale, zero_point=qp.zero_point, dtype=torch.quint8,
                                            memory_format=cl) for shape, qp in out_specs]
        for k, t in enumerate((*xs, *ys)):
            ext[k] = t.data_ptr()
        sc, zp = scale_arr, zp_arr
        if read_scale:
            sc, zp = (ctypes.c_float * n).from_buffer_copy(scale_arr), (ctypes.c_int * n).from_buffer_copy(zp_arr)
            for i, k in read_scale:
                sc[i], zp[i] = xs[k].q_scale(), xs[k].q_zero_point()
        buf = torch.empty(total, dtype=torch.uint8)
        base = buf.data_ptr()
        code = chain_run(n, handles, src, dst, res, ext, base, sc, zp, base + scratch_at if scratch_bytes else None,
                         failed_ref)
        if code:
            raise PlanError(f"conv.dnnl failed on node '{names[failed.value]}' (in a chain of {n} oneDNN calls): "
                            f"oneDNN says {_status(code)}")
        return ys[0] if len(ys) == 1 else tuple(ys)

    kernel.links = links  # type: ignore[attr-defined]  # keeps the primitives alive
    kernel.arena = arena  # type: ignore[attr-defined]
    return kernel, plan.inputs, plan.exported, plan.frees
