"""Runs of oneDNN calls that a forward pass makes in one C call instead of one Python step each.

Every step of :class:`~perfpredict.runtime.executor.Executable`'s forward loop is a Python call around the kernel,
and after a oneDNN call the interpreter's own state is out of cache: the forward pass of a plan costs more than its
oneDNN calls back to back, most at int8, where each step also makes a quantised output tensor and reads its input's
scale back (``benchmarks/bench_sequence.py`` times both). :func:`chain_steps` replaces runs of consecutive steps
that oneDNN can run (convolutions, max pools and gate products whose kernels carry a
:class:`~perfpredict.primitives.dnnl.ChainLink`; global average pools and channel concats, and the quantisations,
dequantisations and changes of layout that the schedule inserts between nodes, which the chain runs with oneDNN
itself) by one step each that runs the whole run in one call of ``pp_dnnl_chain_run``. A plan that mixes int8 and
fp32 layers thus still runs as a few chains, not as one between each pair of conversions.

A chain's own tensors, those that no step after it reads, live in one buffer allocated through torch at each call
(with the scratchpad at its end) and laid out at build by their lifetimes (:func:`layout_arena`); the tensors that
outlive the run are allocated as the kernels allocate them and handed back to the register file. Because a chain
holds its inputs to its end (reusing the bytes of those it has read for the last time) and allocates its outputs at
its start, a run is cut where chaining it whole would hold more than the schedule ever has alive (plus
:data:`PEAK_SLACK`, 1%), so the pass's peak memory is within 1% of that of one step per op. The int8 scale and zero
point of a chain's own tensor are its producer's calibrated grid, known at build; those of its inputs are read from
the tensors at each call, as the kernels read them.

The per-step path stays: :meth:`~perfpredict.runtime.executor.Executable.step_times` and ``trace`` run it, and
``build_executable(..., chain=False)`` keeps it for the forward pass as well. A chain's table of buffers is shared
by its calls: an executable runs one forward pass at a time.
"""

from __future__ import annotations

import ctypes
import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable, NamedTuple, Sequence

import torch

from perfpredict.errors import PlanError
from perfpredict.runtime.executor import _FORMATS
from perfpredict.runtime.kernel import QParams
from perfpredict.runtime.memory import live_profile

ALIGN = 64
"""Byte alignment of every tensor in a chain's arena (a cache line; oneDNN's own alignment)."""

_NO_RESIDUAL = -(2 ** 63)  # PP_NO_RESIDUAL in _dnnl.c

PEAK_SLACK = 0.01
"""The share of the schedule's peak a chain may hold beyond it: a chain allocates its scratchpad and its small outputs
(a classifier's logits) when it starts, so with no slack a chain that starts at a model's busiest step is always a few
kilobytes over (mobilenet_v2's after its first expansion: 9 KB over 6.0 MB; chained whole it runs 5% faster)."""

ARENA_TRIES = 64
"""More orders :func:`layout_arena` tries for a chain whose first arena holds more than the schedule's peak allows
and whose tensors could fit (squeezenet1_1's run after its first max pool: 3.29 MB first, 3.10 MB in the best
order, which is the most its tensors have alive at once)."""



Step = tuple[Callable[..., Any], tuple[int, ...], tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True)
class ArenaLayout:
    """Offsets (bytes) of a chain's own tensors in its arena, and the arena's size; ``borrowed``: the tensors placed
    instead in the bytes of an input the chain no longer reads (slot -> (the input's slot, offset))."""

    offsets: dict[int, int]
    size: int
    borrowed: dict[int, tuple[int, int]] = field(default_factory=dict)


def layout_arena(sizes: dict[int, int], lifetimes: dict[int, tuple[int, int]], tries: int = 0,
                 spare: dict[int, tuple[int, int]] | None = None) -> ArenaLayout:
    """Offsets for tensors of ``sizes`` (bytes, by slot) alive over the inclusive step ranges ``lifetimes``: each at
    the lowest :data:`ALIGN`-aligned offset that overlaps no tensor placed before it and alive at the same time,
    placed largest first or in the order they are made, whichever arena is smaller. With ``tries`` > 0, as many
    more orders (seeded shuffles, so a build is repeatable) are tried while the arena is larger than the most bytes
    ever alive at once (:func:`arena_bound`): first fit in one order can leave gaps another order closes.

    ``spare`` (input slot -> (its bytes, the first step after its last read)) offers the bytes of inputs that are dead
    before the chain ends: a tensor made from that step on goes there first, where it fits, instead of the arena."""
    spare = spare or {}
    by_size = _first_fit(sizes, lifetimes, sorted(sizes, key=lambda s: (-sizes[s], lifetimes[s][0], s)), spare)
    in_order = _first_fit(sizes, lifetimes, sorted(sizes, key=lambda s: (lifetimes[s][0], s)), spare)
    best = min(by_size, in_order, key=lambda a: a.size)
    if tries > 0 and best.size > (bound := arena_bound(sizes, lifetimes, spare)):
        rng, order = random.Random(0), sorted(sizes)
        for _ in range(tries):
            rng.shuffle(order)
            other = _first_fit(sizes, lifetimes, order, spare)
            if other.size < best.size:
                best = other
                if best.size <= bound:
                    break
    return best


def _aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def arena_bound(sizes: dict[int, int], lifetimes: dict[int, tuple[int, int]],
                spare: dict[int, tuple[int, int]] | None = None) -> int:
    """The most bytes (each tensor rounded up to :data:`ALIGN`) alive at one step beyond the ``spare`` bytes free
    then (see :func:`layout_arena`): no arena is smaller."""
    delta: dict[int, int] = {}
    for slot, size in sizes.items():
        first, last = lifetimes[slot]
        delta[first] = delta.get(first, 0) + _aligned(size)
        delta[last + 1] = delta.get(last + 1, 0) - _aligned(size)
    for size, start in (spare or {}).values():
        delta[start] = delta.get(start, 0) - size // ALIGN * ALIGN
    alive, most = 0, 0
    for step in sorted(delta):
        alive += delta[step]
        most = max(most, alive)
    return most


def _first_fit(sizes: dict[int, int], lifetimes: dict[int, tuple[int, int]], order: list[int],
               spare: dict[int, tuple[int, int]]) -> ArenaLayout:
    placed: list[tuple[int, int, int, int]] = []  # offset, end, first step, last step
    lent: dict[int, list[tuple[int, int, int, int]]] = {k: [] for k in spare}
    offsets: dict[int, int] = {}
    borrowed: dict[int, tuple[int, int]] = {}
    for slot in order:
        size = _aligned(sizes[slot])
        first, last = lifetimes[slot]
        for k, (room, start) in spare.items():
            if first >= start and (offset := _lowest(lent[k], size, first, last)) + size <= room:
                borrowed[slot] = (k, offset)
                lent[k].append((offset, offset + size, first, last))
                break
        else:
            offsets[slot] = offset = _lowest(placed, size, first, last)
            placed.append((offset, offset + size, first, last))
    return ArenaLayout(offsets, max((e for _, e, _, _ in placed), default=0), borrowed)


def _lowest(placed: list[tuple[int, int, int, int]], size: int, first: int, last: int) -> int:
    """The lowest aligned offset where ``size`` bytes alive over steps ``first..last`` overlap nothing ``placed``."""
    offset = 0
    for o, e in sorted((o, e) for o, e, f, la in placed if f <= last and first <= la):
        if offset + size <= o:
            break
        offset = max(offset, _aligned(e))
    return offset


def _link(step: Step) -> Any:
    return getattr(step[0], "link", None)


def chain_steps(schedule: Any, steps: Sequence[Step], qparams: Callable[[str], QParams] | None = None, *,
                min_length: int = 2) -> list[Step]:
    """``steps`` (one per op of ``schedule``, in order) with runs of consecutive chainable steps replaced by one step
    each that runs the run in one C call (same inputs, outputs and frees as the run, seen from outside it). A run
    needs at least ``min_length`` steps besides conversions: a chain's own Python work (its outputs, its buffer, the
    call) costs about what it saves on two cheap steps, so conversions alone, or one kernel and its conversions, stay
    steps (``benchmarks/bench_chain_saving.py``). ``qparams`` gives a tensor's calibrated int8 grid (needed for int8
    concats).

    A chainable step is a oneDNN kernel that carries a :class:`~perfpredict.primitives.dnnl.ChainLink` (convolutions,
    max pools, gate products); a GlobalAveragePool (``globalaveragepool.torch`` of an NHWC tensor), which the chain
    runs as oneDNN's average pool; a quantisation, dequantisation or change of layout of floats of a 4-D tensor,
    which the chain runs as a :class:`~perfpredict.primitives.dnnl.Reorder` (bit for bit as torch's); or a channel
    Concat (``concat.torch`` in NHWC) of two outputs of such kernels made earlier in the same run and read by
    nothing else, which the chain joins by a copy of its own (:class:`~perfpredict.primitives.dnnl.ChannelConcat`;
    at int8 only when they are on the concat's grid, as :func:`~perfpredict.runtime.executor.concat_ties` puts
    them). The ops the chain runs itself compute what the plan's torch kernels compute; at int8 oneDNN's rounding
    of an average can differ from torch's by a step of the grid.

    A chain holds its inputs until it ends (it reuses the bytes of those it has read for the last time: see
    :func:`layout_arena`) and allocates its outputs and its arena when it starts, where single steps free and
    allocate as they go; so a run is cut where chaining it whole would hold more than the most the schedule ever has
    alive (plus :data:`PEAK_SLACK`), and the pass's peak memory stays within that share of one step per op's. Within
    that bound, each run is cut into the fewest pieces (chains and single steps, :func:`_partition`). A stem (a
    convolution of few input channels, into a max pool or not, :func:`_stems`) that a chain holds whole runs from the
    planar input through oneDNN's blocked format. A GlobalAveragePool of the output of an fp32 convolution whose
    swish is our own pass is computed in that pass (:func:`_mean_folds`): one call fewer, and the output read once. A
    gate product that reads its input for the last time writes over it (:func:`_in_place`). Where a chain's channel
    concats join parts whose channels fill whole blocks of 16, its own fp32 tensors run in oneDNN's blocked format and
    the concats are views, written in place by the convolutions that make their parts; after a stem, so do the
    pointwise and depthwise convolutions that spare its reorder (:func:`_on_blocks`)."""
    live, peak = live_profile(schedule)
    peak += int(peak * PEAK_SLACK)
    members = _members(schedule, steps)
    stems = _stems(schedule, steps, members)
    if stems:  # the stems rewritten to run from planar input through blocks, where each lands inside one chain
        extended, new_steps, new_members = _blocked_stems(schedule, steps, members, stems)
        out = _cut(extended, new_steps, new_members, qparams, live, peak, min_length)
        if out is not None:
            return out
    out = _cut(schedule, steps, members, qparams, live, peak, min_length)
    assert out is not None
    return out


def _cut(schedule: Any, steps: Sequence[Step], members: Sequence["_Member | None"], qparams: Any,
         live: Sequence[int], peak: int, min_length: int) -> list[Step] | None:
    """:func:`chain_steps`' cut of ``steps``; None where a step that only a chain can run (a rewritten stem's, whose
    function is None) would run on its own."""
    out: list[Step] = []
    i = 0
    while i < len(steps):
        j = i
        while j < len(steps) and members[j] is not None:
            j += 1
        layouts: dict[tuple[int, int], _ChainPlan] = {}

        def fits(a: int, b: int) -> bool:  # steps a:b as one chain that holds no more than the peak
            layout = _plan(schedule, steps[a:b], members[a:b], qparams, budget=peak - live[a])
            if layout is None or live[a] + layout.held > peak:
                return False
            layouts[a, b] = layout
            return True

        for a, b, chained in _partition(i, j, fits, lambda a, b: sum(m.kind != 4 for m in members[a:b]) >= min_length,
                                        max(min_length, 1)):
            layout = layouts.get((a, b)) if chained else None
            if layout is not None:
                try:
                    blocks = _on_blocks(schedule, steps[a:b], schedule.ops[a:b], members[a:b], qparams,
                                        peak - live[a])
                    out.append(_chain(*blocks) if blocks is not None else
                               _chain(schedule, steps[a:b], schedule.ops[a:b], members[a:b], layout))
                    continue
                except PlanError:  # a concat or pool the chain would make was refused: the steps run as they are
                    pass
            if any(step[0] is None for step in steps[a:b]):
                return None
            out.extend(steps[a:b])
        if j == i:
            out.append(steps[i])
            j += 1
        i = j
    return out


STEM_CHANNELS = 4
"""The most input channels of a convolution that a chain runs from planar input into oneDNN's blocks (a stem)."""


def _stems(schedule: Any, steps: Sequence[Step], members: Sequence["_Member | None"]) -> list[tuple[int, bool]]:
    """Where steps t, t+1 (and t+2 where ``pooled``) are a stem a chain can run through oneDNN's blocked format,
    as (t, pooled): the schedule's change of a float tensor of at most :data:`STEM_CHANNELS` channels from NCHW to
    NHWC, read only by a ``conv.dnnl`` at fp32 (no residual; output channels a multiple of 16), and, where pooled,
    that convolution's output read only by a ``maxpool.dnnl`` at fp32. oneDNN's fast path for such a convolution
    reads planar input and writes blocks (squeezenet1_1's stem: 144 against 361 us channels-last to channels-last;
    mobilenet_v2's 66 against 150 us and its input's layout change, ``_dnnl.c`` probes); the pool then runs on blocks
    too, and one reorder writes the pool's output, or the convolution's, channels-last."""
    readers = _readers(steps)
    found = []
    for t in range(len(steps) - 1):
        m = members[t:t + 2]
        if any(x is None for x in m) or [x.kind for x in m] != [4, 0] or any(x.int8 for x in m):
            continue
        (_, lin, lout, _), (cfn, cin, cout, _) = steps[t:t + 2]
        src, conv_out = schedule.slots[lin[0]], schedule.slots[cout[0]]
        if src.layout != "NCHW" or src.shape[1] > STEM_CHANNELS or conv_out.shape[1] % 16 \
                or tuple(cin) != tuple(lout) or m[1].link.residual is not None or readers.get(lout[0]) != 1 \
                or not hasattr(cfn, "planar_to_blocked"):
            continue
        pool = members[t + 2] if t + 2 < len(steps) else None
        pooled = pool is not None and pool.kind == 1 and not pool.int8 and pool.link is not None \
            and tuple(steps[t + 2][1]) == tuple(cout) and readers.get(cout[0]) == 1 \
            and hasattr(steps[t + 2][0], "blocked")
        found.append((t, pooled))
    return found


def _dense_window(member: _Member) -> bool:
    """Whether ``member`` is a convolution over a window (not 1x1) that is not depthwise."""
    return member.kind == 0 and getattr(member.link.primitive, "dense_window", False)


def _fast(primitive: Any) -> bool:
    """Whether oneDNN made ``primitive`` with one of its optimised kernels, not its reference one (``ref:any``, some
    hundred times slower), as it does for a format this CPU's kernels do not take (nChw16c without AVX-512)."""
    return not getattr(primitive, "impl", "").startswith("ref")


class _Extended:
    """A schedule with more slots: the blocked tensors of rewritten stems (:func:`_blocked_stems`) and chains
    (:func:`_on_blocks`)."""

    def __init__(self, schedule: Any, slots: list) -> None:
        self._schedule = schedule
        self.slots = slots

    def __getattr__(self, name: str) -> Any:
        return getattr(self._schedule, name)


def _blocked_stems(schedule: Any, steps: Sequence[Step], members: Sequence["_Member | None"],
                   stems: Sequence[tuple[int, bool]]) -> tuple[Any, list[Step], list["_Member | None"]]:
    """``steps`` and ``members`` with each stem (:func:`_stems`) rewritten as steps only a chain runs: the
    convolution from the planar input into blocks, where pooled the pool on blocks into a new blocked tensor, and a
    reorder of the last blocked tensor into its channels-last slot (the same step count, so the schedule's live
    profile still lines up). A stem for which oneDNN has only its reference kernel in blocks (:func:`_fast`) stays
    as it is."""
    from perfpredict.primitives.dnnl import ChainLink

    slots = list(schedule.slots)
    steps, members = list(steps), list(members)
    for t, pooled in stems:
        (_, lin, lout, lfree), (cfn, _, cout, cfree) = steps[t:t + 2]
        conv = cfn.planar_to_blocked()
        pool = steps[t + 2][0].blocked() if pooled else None
        if not _fast(conv) or (pooled and not _fast(pool)):
            continue
        last = steps[t + 2][2] if pooled else cout  # the channels-last slot the stem's reorder writes
        out = schedule.slots[last[0]]
        blocked = len(slots)
        slots.append(replace(out, tensor=f"{out.tensor}#nChw16c", layout="nChw16c", alias_of=None))
        frees = tuple(s for s in (*lfree, *cfree) if s != lout[0])
        if pooled:
            pfree = steps[t + 2][3]
            steps[t:t + 3] = [(None, tuple(lin), tuple(cout), frees), (None, tuple(cout), (blocked,), tuple(pfree)),
                              (None, (blocked,), tuple(last), (blocked,))]
            members[t:t + 3] = [_Member(0, ChainLink(conv, False, None, None), False),
                                _Member(1, ChainLink(pool, False, None, None, kind=1), False),
                                _Member(4, None, False)]
        else:
            steps[t:t + 2] = [(None, tuple(lin), (blocked,), frees), (None, (blocked,), tuple(cout), (blocked,))]
            members[t:t + 2] = [_Member(0, ChainLink(conv, False, None, None), False), _Member(4, None, False)]
    return _Extended(schedule, slots), steps, members


_BLOCKS = "nChw16c"


class _Op(NamedTuple):
    """A step :func:`_on_blocks` adds (a change of format), named for errors like the schedule's ops."""

    name: str


def _on_blocks(schedule: Any, run: Sequence[Step], ops: Sequence[Any], members: Sequence[_Member],
               qparams: Callable[[str], QParams] | None,
               budget: int) -> tuple[Any, list[Step], list[Any], list[_Member], _ChainPlan] | None:
    """``run`` (steps of ``ops``, as ``members``) rewritten so that its own fp32 tensors whose channels fill whole
    blocks of 16 run in oneDNN's blocked format (nChw16c), where that makes channel concats free: in blocks, at batch
    1, each part of such a concat is a contiguous range of the output, so the convolutions that make the parts write
    straight into it and the concat makes no call (a view, :func:`_viewed`). Convolutions (no residual), max pools
    and global average pools run on blocks (oneDNN's blocked kernels are as fast as its channels-last ones on
    squeezenet1_1's layers: ``benchmarks/bench_blocks.py``); a change of format (a oneDNN reorder) is added where a
    tensor made in blocks is read by a step that cannot run on them or outlives the chain, or the other way round; a
    stem's reorder out of blocks (:func:`_blocked_stems`) is dropped where only steps on blocks read its output. Only
    steps joined through blocked tensors to such a concat or to a stem run on blocks, and where there is no concat
    (blocks for a stem's sake: the mobilenets' first blocks) no convolution over a dense window, on which oneDNN's
    blocked kernels trail (vgg11, alexnet). A tensor of one value per channel is the same bytes in both formats.

    Returns (schedule with the new slots, steps, ops, members, chain plan), or None where there is neither a concat
    to make free nor a stem's reorder to drop, where the changes of format would copy as many bytes as that saves,
    where oneDNN has only its reference kernel for a step on blocks (:func:`_fast`), or where the chain would hold
    more than ``budget`` bytes."""
    from perfpredict.primitives.dnnl import BLOCKED, NHWC, ChainLink

    slots = schedule.slots
    means = _mean_folds(run, members)
    made = {step[2][0]: i for i, step in enumerate(run)}
    readers: dict[int, list[int]] = {}
    for i, (_, ins, _, _) in enumerate(run):
        for x in ins:
            readers.setdefault(x, []).append(i)
    freed = {x for step in run for x in step[3]}

    def even(slot: int) -> bool:  # floats whose channels fill whole blocks: as many bytes in either format
        t = slots[slot]
        return t.precision == "fp32" and t.alias_of is None and len(t.shape) == 4 and t.shape[1] % 16 == 0

    def flat(slot: int) -> bool:  # ... and one value per channel: the same bytes in either format
        return even(slot) and slots[slot].shape[2] * slots[slot].shape[3] == 1

    def formats(i: int) -> tuple[int, int] | None:  # (in, out) formats of a step as it stands
        m = members[i]
        if m.kind == 4:
            a, b = slots[run[i][1][0]], slots[run[i][2][0]]
            return BLOCKED if a.layout == _BLOCKS else NHWC, BLOCKED if b.layout == _BLOCKS else NHWC
        return getattr(m.link.primitive, "formats", None) if m.link is not None else None

    if not any(m.kind == 2 for m in members) and not any(BLOCKED in (formats(i) or ()) for i in range(len(run))):
        return None  # neither a concat to make a view nor a stem on blocks: nothing would join blocks (select)

    can = set()
    for i, ((fn, ins, outs, _), m) in enumerate(zip(run, members)):
        if m.int8 or i in means or i in means.values() or not all(even(x) for x in (*ins, *outs)):
            continue
        if m.kind in (0, 1) and m.link is not None:
            if formats(i) == (NHWC, NHWC) and hasattr(fn, "blocked") and m.link.residual is None:
                can.add(i)
        elif m.kind == 1 or (m.kind == 2 and slots[outs[0]].shape[0] == 1 and all(x in made for x in ins)):
            can.add(i)  # a global average pool; a concat at batch 1 of parts the run makes

    chosen: set[int] = set()

    def makes_blocks(i: int | None) -> bool:
        return i is not None and (i in chosen or (formats(i) or (NHWC, NHWC))[1] == BLOCKED)

    def reads_blocks(j: int) -> bool:
        return j in chosen or (formats(j) or (NHWC, NHWC))[0] == BLOCKED

    def unblocked_source(x: int) -> int | None:  # a tensor a reorder made from a blocked one: that one
        i = made.get(x)
        if i is not None and members[i].kind == 4 and formats(i) == (BLOCKED, NHWC) \
                and slots[run[i][1][0]].precision == slots[x].precision:
            return run[i][1][0]
        return None

    def select(candidates: set[int]) -> None:
        """``chosen``: of ``candidates``, the steps that run on blocks: concats whose parts are both made in blocks, steps with
        blocks on one side at least, and only those joined through blocked tensors to a concat made a view or to a
        step already on blocks (a stem)."""
        chosen.clear()
        chosen.update(candidates)
        changed = True
        while changed:
            changed = False
            for i in sorted(chosen):
                ins, out = run[i][1], run[i][2][0]
                if members[i].kind == 2:
                    drop = not all(makes_blocks(made.get(x)) for x in ins)
                else:  # neither a non-flat input made in blocks nor a non-flat output read in them
                    drop = not any(makes_blocks(made.get(x)) and not flat(x) for x in ins) \
                        and (flat(out) or not any(reads_blocks(j) for j in readers.get(out, ())))
                if drop:
                    chosen.discard(i)
                    changed = True
        edges: dict[int, set[int]] = {}
        for x, i in made.items():
            if flat(x) or not (makes_blocks(i) or unblocked_source(x) is not None):
                continue
            for j in readers.get(x, ()):
                if reads_blocks(j):
                    edges.setdefault(i, set()).add(j)
                    edges.setdefault(j, set()).add(i)
        seen = {i for i in chosen if members[i].kind == 2} | \
            {i for i in range(len(run)) if i not in chosen and BLOCKED in (formats(i) or ())}
        todo = list(seen)
        while todo:
            for j in edges.get(todo.pop(), ()):
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        chosen.intersection_update(seen)

    select(can)
    views = [i for i in chosen if members[i].kind == 2]
    if not views:  # blocks for a stem's sake alone: oneDNN's blocked kernels trail its channels-last ones on dense
        # windows of many channels (vgg11, alexnet: 3-5% slower), not on pointwise and depthwise ones (mobilenets)
        select({i for i in can if not _dense_window(members[i])})
    new_slots = list(slots)
    blocked_of: dict[int, int] = {}  # a tensor -> the slot of its blocked form
    after: dict[int, list[Step]] = {}  # run index -> reorders that follow it
    before: dict[int, list[Step]] = {}  # run index -> reorders that precede it
    dropped: set[int] = set()  # run indices of reorders no longer needed
    saved = sum(slots[run[i][2][0]].nbytes for i in views)
    copied = 0
    for x in sorted({x for step in run for x in (*step[1], *step[2])}):
        if flat(x):
            continue
        rb = [j for j in readers.get(x, ()) if reads_blocks(j)]
        rn = [j for j in readers.get(x, ()) if not reads_blocks(j)]
        outlives = x in made and x not in freed
        if makes_blocks(made.get(x)):
            if not rn and not outlives:
                blocked_of[x] = x
                if slots[x].layout != _BLOCKS:
                    new_slots[x] = replace(slots[x], layout=_BLOCKS)
            else:  # made in blocks into a slot of its own, then reordered into x
                blocked_of[x] = len(new_slots)
                new_slots.append(replace(slots[x], tensor=f"{slots[x].tensor}#{_BLOCKS}", layout=_BLOCKS))
                after.setdefault(made[x], []).append((None, (blocked_of[x],), (x,), ()))
                copied += slots[x].nbytes
        elif rb:
            src = unblocked_source(x)
            if src is not None:
                blocked_of[x] = src
                if not rn and not outlives:
                    dropped.add(made[x])
                    saved += slots[x].nbytes
            else:
                blocked_of[x] = len(new_slots)
                new_slots.append(replace(slots[x], tensor=f"{slots[x].tensor}#{_BLOCKS}", layout=_BLOCKS,
                                         alias_of=None))
                before.setdefault(min(rb), []).append((None, (x,), (blocked_of[x],), ()))
                copied += slots[x].nbytes
    if not (views or dropped) or copied >= saved:
        return None

    steps: list[Step] = []
    new_ops: list[Any] = []
    new_members: list[_Member] = []

    def reorder(step: Step) -> None:
        steps.append(step)
        new_ops.append(_Op(f"{new_slots[step[2][0]].tensor} (change of format)"))
        new_members.append(_Member(4, None, False))

    for i, ((fn, ins, outs, _), op, m) in enumerate(zip(run, ops, members)):
        for step in before.get(i, ()):
            reorder(step)
        if i in dropped:
            continue
        if reads_blocks(i):
            ins = tuple(blocked_of.get(x, x) for x in ins)
        if makes_blocks(i):
            outs = tuple(blocked_of.get(x, x) for x in outs)
        if i in chosen and m.link is not None:
            primitive = fn.blocked()
            if not _fast(primitive):
                return None
            m = replace(m, link=ChainLink(primitive, False, None, None, kind=m.link.kind))
        elif i in chosen and m.kind == 2:
            m = replace(m, view=True)
        steps.append((fn, ins, outs, ()))
        new_ops.append(op)
        new_members.append(m)
        for step in after.get(i, ()):
            reorder(step)
    gone = {run[i][2][0] for i in dropped}
    frees = tuple(sorted((freed - gone) | set(range(len(slots), len(new_slots)))))
    steps[-1] = (*steps[-1][:3], frees)
    extended = _Extended(schedule, new_slots)
    plan = _plan(extended, steps, new_members, qparams, budget=budget)
    if plan is None or plan.held > budget:
        return None
    return extended, steps, new_ops, new_members, plan


def _partition(i: int, j: int, fits: Callable[[int, int], bool],
               enough: Callable[[int, int], bool], shortest: int = 2) -> list[tuple[int, int, bool]]:
    """Steps ``i:j`` cut into the fewest pieces, each a single step or a chain ``a:b`` (at least ``shortest`` steps)
    that ``fits`` and has ``enough`` kernels (ties: the longer chain). The chains from each start are grown until the
    first that does not fit, and, from the first starts on until one fits, the chain to the run's end is tried as
    well (and, once one fits, first from every later start): what a chain holds is not monotone in its length (a
    tensor read after the chain is its output to hold, read inside it a tensor of its arena), and a chain started at
    a large tensor must hold it to its end, so cutting greedily from the left can leave a run as many pieces where a
    start one step later chains the rest of it whole (squeezenet1_1's and mobilenet_v2's first blocks)."""
    ends: dict[int, list[int]] = {}
    whole = False  # a chain from an earlier start to the run's end fits: later starts try that end first
    for a in range(i, j):
        if whole and a + shortest <= j and enough(a, j) and fits(a, j):
            ends[a] = [j]  # one piece to the end: no shorter chain from here can do better
            continue
        b, found = a + shortest, []
        while b <= j and fits(a, b):
            if enough(a, b):
                found.append(b)
            b += 1
        if not whole and b <= j and a + shortest <= j and enough(a, j) and fits(a, j):
            found.append(j)
        whole = whole or bool(found) and found[-1] == j
        ends[a] = found
    cost: dict[int, int] = {j: 0}
    choice: dict[int, tuple[int, bool]] = {}
    for a in range(j - 1, i - 1, -1):
        best, pick = cost[a + 1], (a + 1, False)
        for b in reversed(ends[a]):
            if cost[b] < best or (cost[b] == best and not pick[1]):
                best, pick = cost[b], (b, True)
        cost[a], choice[a] = best + 1, pick
    pieces, a = [], i
    while a < j:
        b, chained = choice[a]
        pieces.append((a, b, chained))
        a = b
    return pieces


def _members(schedule: Any, steps: Sequence[Step]) -> list[_Member | None]:
    """Each step as a chain member (:func:`_member`), None where no chain can run it."""
    readers = _readers(steps)
    nodes = {n.name: n for n in schedule.graph.nodes}
    return [_member(schedule, nodes, op, step, readers) for op, step in zip(schedule.ops, steps)]


def _readers(steps: Sequence[Step]) -> dict[int, int]:
    """Slot -> how many times the steps read it."""
    readers: dict[int, int] = {}
    for _, ins, _, _ in steps:
        for s in ins:
            readers[s] = readers.get(s, 0) + 1
    return readers


@dataclass(frozen=True)
class _Member:
    """A step a chain can run: its C ``kind`` (0 a convolution, 1 a pool, 2 a channel concat, 3 a gate product, 4 a
    reorder), its kernel's :class:`~perfpredict.primitives.dnnl.ChainLink` (None for the ops the chain runs itself:
    concats, global average pools and the schedule's conversions), whether it is int8 (a reorder: whether its output
    is), for a quantisation, the tensor whose calibrated grid it quantises onto, and, for a concat, whether it is a
    view (its parts written into its output in place: no call; :func:`_on_blocks`)."""

    kind: int
    link: Any
    int8: bool
    quantises: str | None = None
    view: bool = False


def _member(schedule: Any, nodes: dict, op: Any, step: Step, readers: dict[int, int]) -> _Member | None:
    """Step ``step`` (of ``op``) as a chain member, or None when no chain can run it, as far as the step alone tells
    (a concat's inputs must also come from the same chain: :func:`_plan` checks that)."""
    _, ins, outs, _ = step
    if len(outs) != 1:
        return None
    slots = [schedule.slots[s] for s in (*ins, *outs)]
    if op.kind in _REORDERS:
        return _reorder_member(op, slots)
    int8 = slots[-1].precision == "int8"
    if any(s.alias_of is not None or s.precision != slots[-1].precision or s.layout not in ("NHWC", "ANY")
           for s in slots):
        return None
    link = _link(step)
    if link is not None:
        if link.int8 != int8:
            return None
        if link.kind == 3:
            x = schedule.slots[ins[1 - link.gate]]
            return _Member(3, link, int8) if len(ins) == 2 and x.layout == "NHWC" and x.shape == slots[-1].shape \
                else None
        ok = len(ins) == (2 if link.residual is not None else 1) and tuple(slots[-1].shape) == link.primitive.out_shape
        return _Member(link.kind, link, int8) if ok else None
    if op.kind != "node":
        return None
    node, primitive = nodes[op.name], schedule.choices[op.name].primitive
    if node.op == "GlobalAveragePool" and primitive == "globalaveragepool.torch" and len(ins) == 1 \
            and slots[0].layout == "NHWC" and len(slots[0].shape) == 4:
        return _Member(1, None, int8)
    if node.op == "Concat" and primitive == "concat.torch" and int(node.attrs["axis"]) in (1, -3) and len(ins) == 2 \
            and len(set(ins)) == 2 and all(len(s.shape) == 4 and s.layout == "NHWC" for s in slots) \
            and all(readers.get(s, 0) == 1 for s in ins):
        return _Member(2, None, int8)
    return None


_REORDERS = ("quantize", "dequantize", "layout")


def _reorder_member(op: Any, slots: list) -> _Member | None:
    """A conversion the schedule inserted (a quantisation, a dequantisation or a change of layout of floats) as a
    reorder member, or None when oneDNN's reorder cannot run it here: 4-D tensors, planar or channels-last, at
    most one side int8."""
    if len(slots) != 2 or any(s.alias_of is not None or len(s.shape) != 4 or s.layout not in ("NCHW", "NHWC")
                              for s in slots):
        return None
    src, dst = slots
    if (op.kind == "layout") != (src.precision == dst.precision == "fp32"):
        return None
    return _Member(4, None, dst.precision == "int8", op.name if op.kind == "quantize" else None)


@dataclass(frozen=True)
class _ChainPlan:
    """Where a run's tensors live: its inputs and the outputs it hands on (slots, in call order), the arena of the
    others, the grid of each int8 tensor made in the run, the bytes the chain adds to what was alive before it
    (arena, outputs, scratchpad), and the pools folded into a convolution's swish pass (:func:`_mean_folds`)."""

    inputs: tuple[int, ...]
    exported: tuple[int, ...]
    frees: tuple[int, ...]
    arena: ArenaLayout
    grids: dict[int, QParams | None]
    scratch: int
    held: int
    means: dict[int, int] = field(default_factory=dict)


def _plan(schedule: Any, run: Sequence[Step], members: Sequence[_Member],
          qparams: Callable[[str], QParams] | None, budget: int | None = None) -> _ChainPlan | None:
    """How ``run`` (steps, as ``members``) would run as one chain, or None when it cannot: a concat whose inputs are
    not made by the run (or, at int8, not on its grid), an int8 pool of an input whose grid is known only when it
    runs, or an int8 residual made in the run on another grid than its consumer's. With a ``budget`` (bytes the
    chain may hold), the arena is searched harder (:data:`ARENA_TRIES` orders) where its first layout holds more
    and a tighter one could hold less."""
    produced = {step[2][0]: i for i, step in enumerate(run)}
    means = _mean_folds(run, members)
    for pool, conv in means.items():  # a folded pool's output is written by the convolution's call
        produced[run[pool][2][0]] = conv
    grids: dict[int, QParams | None] = {}
    for step, m in zip(run, members):
        out = step[2][0]
        if m.kind == 1:  # a pool: its input's grid, which must be known at build
            if m.int8 and step[1][0] not in grids:
                return None
            grids[out] = grids.get(step[1][0])
        elif m.kind == 4:  # a reorder: a quantisation's calibrated grid, else floats
            if m.quantises is not None and qparams is None:
                return None
            grids[out] = qparams(m.quantises) if m.quantises is not None else None
        elif m.kind == 2:  # a concat
            if m.int8 and qparams is None:
                return None
            grids[out] = qparams(schedule.slots[out].tensor) if m.int8 else None
            if any(s not in produced or (m.int8 and grids[s] != grids[out]) for s in step[1]):
                return None
        else:
            grids[out] = m.link.out_qparams
    for step, m in zip(run, members):  # an int8 residual made in the run must be on its consumer's grid
        if m.kind == 0 and m.int8 and m.link.residual is not None and step[1][1] in produced \
                and grids[step[1][1]] != m.link.residual:
            return None
    freed = {s for step in run for s in step[3]}
    exported = tuple(s for s in produced if s not in freed)
    inputs: list[int] = []
    for _, ins, _, _ in run:
        inputs += [s for s in ins if s not in produced and s not in inputs]
    internal = [s for s in produced if s in freed]
    last_read = {s: produced[s] for s in internal}
    for i, (_, ins, _, _) in enumerate(run):
        for s in ins:
            if s in last_read:
                last_read[s] = max(last_read[s], i)
    aliased = {s.alias_of for s in schedule.slots if s.alias_of is not None}  # slots a view shares
    in_place = _in_place(schedule, run, members, internal, produced, last_read, aliased)
    views = {step[2][0]: step[1] for step, m in zip(run, members) if m.kind == 2 and m.view}
    if any(out not in last_read for out in views):  # a view's output must be the chain's own
        return None
    parts = {p for ins in views.values() for p in ins}
    sizes = {s: schedule.slots[s].nbytes for s in internal if s not in in_place and s not in parts}
    lifetimes = {s: (produced[s], last_read[s]) for s in internal if s not in in_place and s not in parts}
    for out, ins in views.items():  # a view's output lives from when its first part is made
        lifetimes[out] = (min(produced[p] for p in ins), lifetimes[out][1])
    for out in in_place:  # the product's output takes its input's bytes: one tensor, living on
        r = _root(out, in_place)
        lifetimes[r] = (lifetimes[r][0], max(lifetimes[r][1], last_read[out]))
    spare = _spare_inputs(schedule, run, inputs, freed, aliased)
    scratch = max([m.link.primitive.scratch_bytes for m in members if m.link is not None] + [0])
    others = scratch + sum(schedule.slots[s].nbytes for s in exported)
    arena = layout_arena(sizes, lifetimes, spare=spare)
    if budget is not None and arena.size + others > budget >= arena_bound(sizes, lifetimes, spare) + others:
        arena = layout_arena(sizes, lifetimes, tries=ARENA_TRIES, spare=spare)
    if in_place:
        arena = _placed_in(arena, in_place)
    if views:
        arena = _viewed(arena, views, schedule.slots)
    held = arena.size + others
    return _ChainPlan(tuple(inputs), exported, tuple(s for s in freed if s not in produced), arena, grids, scratch,
                      held, means)


def _in_place(schedule: Any, run: Sequence[Step], members: Sequence[_Member], internal: Sequence[int],
              produced: dict[int, int], last_read: dict[int, int], aliased: set[int]) -> dict[int, int]:
    """Gate products of ``run`` that write over their input (output slot -> input slot): where the product is the
    last reader of an input the run makes and frees, of the output's size, that no view shares (not in ``aliased``;
    an elementwise oneDNN binary reads each value before it writes it), so the product writes into bytes already in
    cache."""
    mine = set(internal)
    out: dict[int, int] = {}
    for i, ((_, ins, outs, _), m) in enumerate(zip(run, members)):
        if m.kind != 3 or outs[0] not in mine:
            continue
        x = ins[1 - m.link.gate]
        if x in mine and x not in aliased and x not in out.values() and last_read.get(x) == i \
                and produced.get(x, i) < i and schedule.slots[x].nbytes == schedule.slots[outs[0]].nbytes:
            out[outs[0]] = x
    return out


def _root(slot: int, in_place: dict[int, int]) -> int:
    """The tensor whose bytes ``slot`` takes, following in-place outputs back to one that is not."""
    while slot in in_place:
        slot = in_place[slot]
    return slot


def _placed_in(arena: ArenaLayout, in_place: dict[int, int]) -> ArenaLayout:
    """``arena`` with each in-place output (:func:`_in_place`) at its input's place (an input's input first)."""
    offsets, borrowed = dict(arena.offsets), dict(arena.borrowed)
    for out in in_place:
        r = _root(out, in_place)
        if r in offsets:
            offsets[out] = offsets[r]
        else:
            borrowed[out] = borrowed[r]
    return ArenaLayout(offsets, arena.size, borrowed)


def _viewed(arena: ArenaLayout, views: dict[int, tuple[int, ...]], slots: Sequence[Any]) -> ArenaLayout:
    """``arena`` with the parts of each view (output slot -> its parts, in order) placed one after the other in the
    output's bytes."""
    offsets, borrowed = dict(arena.offsets), dict(arena.borrowed)
    for out, ins in views.items():
        at = 0
        for p in ins:
            if out in offsets:
                offsets[p] = offsets[out] + at
            else:
                k, o = borrowed[out]
                borrowed[p] = (k, o + at)
            at += slots[p].nbytes
    return ArenaLayout(offsets, arena.size, borrowed)


def _mean_folds(run: Sequence[Step], members: Sequence[_Member]) -> dict[int, int]:
    """The GlobalAveragePools of ``run`` folded into the swish pass of the convolution that makes their input (run
    index of the pool -> that of the convolution): an fp32 pool the chain runs itself, of the channels-last output
    of an fp32 convolution of the run (no residual) whose swish is our own pass after its call; the pass then sums
    each channel as it goes (``pp_dnnl_conv_run_mean``), so the output is read once, not twice (efficientnet's
    squeeze-excite blocks)."""
    from perfpredict.primitives.dnnl import NHWC

    made = {step[2][0]: i for i, step in enumerate(run)}
    folds: dict[int, int] = {}
    for i, (step, m) in enumerate(zip(run, members)):
        conv = made.get(step[1][0])
        if m.kind != 1 or m.link is not None or m.int8 or conv is None or conv in folds.values():
            continue
        c = members[conv]
        prim = c.link.primitive if c.kind == 0 and c.link is not None else None
        if prim is not None and not c.int8 and c.link.residual is None and getattr(prim, "own_swish", False) \
                and getattr(prim, "formats", None) == (NHWC, NHWC):
            folds[i] = conv
    return folds


def _exclusive(x: torch.Tensor) -> bool:
    """Whether no other tensor shares ``x``'s storage (False where this torch cannot tell)."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    return count is not None and count(x.untyped_storage()._cdata) == 2  # x's and the storage object's own


def _spare_inputs(schedule: Any, run: Sequence[Step], inputs: Sequence[int], freed: set[int],
                  aliased: set[int]) -> dict[int, tuple[int, int]]:
    """The chain's inputs whose bytes it may reuse once it has read them for the last time (slot -> (bytes, the step
    after that read)): those it frees (nothing after it reads them) that are no graph input (the caller's) and share
    their storage with no other slot (not in ``aliased``: a view of them read later)."""
    spare = {}
    for slot in inputs:
        if slot in freed and slot not in schedule.input_slots and slot not in aliased \
                and schedule.slots[slot].alias_of is None:
            last = max(i for i, (_, ins, _, _) in enumerate(run) if slot in ins)
            spare[slot] = (schedule.slots[slot].nbytes, last + 1)
    return spare


class _Call(NamedTuple):
    """One call of a chain: its C kind, member, primitive, source slot, second operand slot (a residual, a gate, a
    concat's second part, a folded pool's output; None), output slot and op name."""

    kind: int
    member: _Member
    primitive: Any
    src: int
    second: int | None
    dst: int
    name: str


def _chain(schedule: Any, run: Sequence[Step], ops: Sequence[Any], members: Sequence[_Member],
           plan: _ChainPlan) -> Step:
    """One step for ``run`` (steps of ``ops``, as ``members``) laid out as ``plan``."""
    from perfpredict.primitives.dnnl import BLOCKED, NHWC, ChannelConcat, Reorder, _status, library
    from perfpredict.primitives.dnnl_pool import global_average_pool

    inputs, exported, arena, grids = list(plan.inputs), list(plan.exported), plan.arena, plan.grids

    lent = sorted(arena.borrowed)  # after the inputs and outputs among the call's buffers: an input's bytes + offset

    def where(slot: int | None) -> int:
        if slot is None:
            return _NO_RESIDUAL
        if slot in arena.offsets:
            return arena.offsets[slot]
        if slot in arena.borrowed:
            return -1 - (len(inputs) + len(exported) + lent.index(slot))
        return -1 - (inputs.index(slot) if slot in inputs else len(inputs) + exported.index(slot))

    folded = {conv: run[pool][2][0] for pool, conv in plan.means.items()}  # convolution -> the pool output it writes
    calls: list[_Call] = []
    for i, ((_, ins, outs, _), op, m) in enumerate(zip(run, ops, members)):
        if i in plan.means or m.view:
            continue  # the convolution's call makes this pool's output; a view's parts were written in place
        second = ins[1] if len(ins) == 2 else None
        if m.kind == 4:
            a, b = schedule.slots[ins[0]], schedule.slots[outs[0]]
            prim = Reorder(tuple(a.shape), (a.precision, a.layout), (b.precision, b.layout))
        elif m.kind == 2:
            prim = ChannelConcat(tuple(tuple(schedule.slots[s].shape) for s in ins), m.int8)
        elif m.link is None:
            x = schedule.slots[ins[0]]
            prim = global_average_pool(op.name, tuple(x.shape), m.int8, BLOCKED if x.layout == _BLOCKS else NHWC)
        else:
            prim = m.link.primitive
        first = ins[1 - m.link.gate] if m.kind == 3 else ins[0]
        if m.kind == 3:
            second = ins[m.link.gate]
        kind = 5 if i in folded else m.kind
        calls.append(_Call(kind, m, prim, first, folded.get(i, second), outs[0], op.name))
    n = len(calls)
    src = (ctypes.c_int64 * n)(*(where(c.src) for c in calls))
    dst = (ctypes.c_int64 * n)(*(where(c.dst) for c in calls))
    res = (ctypes.c_int64 * n)(*(where(c.second) for c in calls))
    scales = [1.0] * (3 * n)
    zps = [0] * (3 * n)
    read_scale: list[tuple[int, int]] = []  # (index into scales, input index) of grids read from tensors per call
    res_grid: dict[int, QParams] = {}  # input index -> the grid an int8 residual input must be on
    for i, (_, m, _, first, second, out, _) in enumerate(calls):
        if m.kind == 4:  # a reorder takes its int8 side's grid: a quantisation its output's, a dequantisation its
            # input's
            if m.int8:
                scales[3 * i + 2], zps[3 * i + 2] = float(grids[out].scale), int(grids[out].zero_point)
            elif schedule.slots[first].precision == "int8":
                if first in grids:
                    scales[3 * i], zps[3 * i] = float(grids[first].scale), int(grids[first].zero_point)
                else:
                    read_scale.append((3 * i, inputs.index(first)))
            continue
        if not m.int8 or m.kind not in (0, 3):
            continue
        for j, slot in enumerate((first, second) if m.kind == 3 else (first,)):
            if slot in grids:
                scales[3 * i + j], zps[3 * i + j] = float(grids[slot].scale), int(grids[slot].zero_point)
            else:
                read_scale.append((3 * i + j, inputs.index(slot)))
        if m.kind == 3:
            scales[3 * i + 2], zps[3 * i + 2] = float(grids[out].scale), int(grids[out].zero_point)
        elif m.link.residual is not None and second not in grids:
            res_grid[inputs.index(second)] = m.link.residual
    prims = [c.primitive for c in calls]
    names = [c.name for c in calls]
    handles = (ctypes.c_void_p * n)(*(p.handle for p in prims))
    kinds = (ctypes.c_int * n)(*(c.kind for c in calls))
    scale_arr = (ctypes.c_float * (3 * n))(*scales)
    zp_arr = (ctypes.c_int * (3 * n))(*zps)
    def fmt(slot: int) -> torch.memory_format:  # channels-last but for a reorder's planar side ("ANY": 4-D NHWC)
        return _FORMATS.get(schedule.slots[slot].layout, torch.channels_last)

    in_formats = [fmt(s) for s in inputs]
    out_specs = [(tuple(schedule.slots[s].shape), grids[s], fmt(s)) for s in exported]
    scratch_bytes = max(p.scratch_bytes for p in prims)
    n_ext = len(inputs) + len(exported)
    chain_run = library().pp_dnnl_chain_run
    cl = torch.channels_last
    scratch_at = -(-arena.size // ALIGN) * ALIGN  # one buffer per call: the arena, then the scratchpad
    total = scratch_at + scratch_bytes
    lenders = sorted({k for k, _ in arena.borrowed.values()})
    lender_room = {k: max(o + _aligned(schedule.slots[t].nbytes) for t, (j, o) in arena.borrowed.items() if j == k)
                   for k in lenders}
    lends = [(inputs.index(arena.borrowed[t][0]), arena.borrowed[t][1]) for t in lent]
    ext = (ctypes.c_void_p * (n_ext + len(lent)))()  # the call's buffers, filled at each call
    failed = ctypes.c_int(-1)
    failed_ref = ctypes.byref(failed)

    def kernel(*xs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        xs = tuple(x.contiguous(memory_format=f) for x, f in zip(xs, in_formats))
        for k, qp in res_grid.items():  # an int8 residual on another grid: requantised, as the kernel does
            x = xs[k]
            if x.q_scale() != qp.scale or x.q_zero_point() != qp.zero_point:
                xs = (*xs[:k], torch.quantize_per_tensor(x.dequantize(), qp.scale, qp.zero_point, torch.quint8)
                      .contiguous(memory_format=cl), *xs[k + 1:])
        ys = [torch.empty(shape, memory_format=f) if qp is None else
              torch._empty_affine_quantized(shape, scale=qp.scale, zero_point=qp.zero_point, dtype=torch.quint8,
                                            memory_format=f) for shape, qp, f in out_specs]
        for k, t in enumerate((*xs, *ys)):
            ext[k] = t.data_ptr()
        if lends:
            own = {}  # an input that shares its storage (it should not: then a buffer of its own for this call)
            for k in lenders:
                i = inputs.index(k)
                if not _exclusive(xs[i]):
                    own[i] = torch.empty(lender_room[k], dtype=torch.uint8)
            for q, (i, offset) in enumerate(lends):
                ext[n_ext + q] = (own[i] if i in own else xs[i]).data_ptr() + offset
        sc, zp = scale_arr, zp_arr
        if read_scale:
            sc, zp = type(scale_arr).from_buffer_copy(scale_arr), type(zp_arr).from_buffer_copy(zp_arr)
            for i, k in read_scale:
                sc[i], zp[i] = xs[k].q_scale(), xs[k].q_zero_point()
        buf = torch.empty(total, dtype=torch.uint8)
        base = buf.data_ptr()
        code = chain_run(n, handles, kinds, src, dst, res, ext, base, sc, zp,
                         base + scratch_at if scratch_bytes else None, failed_ref)
        if code:
            raise PlanError(f"oneDNN failed on node '{names[failed.value]}' (in a chain of {n} oneDNN calls): "
                            f"oneDNN says {_status(code)}")
        return ys[0] if len(ys) == 1 else tuple(ys)

    kernel.links = [m.link for m in members if m.link is not None]  # type: ignore[attr-defined]
    kernel.primitives = prims  # type: ignore[attr-defined]  # keeps the primitives alive
    kernel.kinds = [c.kind for c in calls]  # type: ignore[attr-defined]  # the C kind of each call
    return kernel, plan.inputs, plan.exported, plan.frees
