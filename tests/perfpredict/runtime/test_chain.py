"""Chains of oneDNN convolutions run in one C call: same outputs, same peak memory, the arena's layout."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
import torch
import pytest

from perfpredict.errors import PlanError
from perfpredict.plan import Choice, Plan
from perfpredict.primitives import candidates
from perfpredict.primitives.dnnl import BLOCKED, NCHW, NHWC
from perfpredict.primitives.dnnl_binary import gate_operand
from perfpredict.runtime import build_executable, max_rel_err
from perfpredict.runtime import chain
from perfpredict.runtime.chain import ALIGN, chain_steps, layout_arena
from perfpredict.runtime.kernel import QParams
from perfpredict.runtime.measurement import allocated_memory
from tests.perfpredict.runtime.nets import (blocks_fire_graph, double_gate_graph, fire_graph, planar_stem_graph,
                                            residual_se_graph, stem_graph, swish_se_graph)

CONVS = {"fp32": "conv.dnnl", "int8": "conv.dnnl_int8"}


def _plan(graph, precision):
    """Every Conv, MaxPool and gate product on oneDNN at ``precision``, every other node on its first NHWC primitive
    at it (else fp32)."""
    choices = {}
    for n in graph.nodes:
        prec = precision if candidates(n, precision=precision) else "fp32"
        if n.op == "Conv":
            choices[n.name] = Choice(CONVS[prec], "NHWC", prec)
        elif n.op == "MaxPool":
            choices[n.name] = Choice("maxpool.dnnl", "NHWC", prec)
        elif gate_operand(n) is not None:
            choices[n.name] = Choice("mul.dnnl", "NHWC", prec)
        else:
            c = candidates(n, layout="NHWC", precision=prec) or candidates(n, precision=prec)
            choices[n.name] = Choice(c[0].name, "NHWC" if "NHWC" in c[0].layouts else c[0].layouts[0], prec)
    return Plan(choices)


@pytest.fixture
def net():
    return residual_se_graph(hw=16)


@pytest.fixture
def x():
    return np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)


def _chains(exe):
    return [fn for fn, *_ in exe._fast_steps if hasattr(fn, "links")]


def test_a_chained_forward_pass_gives_the_outputs_and_nearly_the_peak_of_one_step_per_op(net, x):
    # (at int8 this net's activations are small beside oneDNN's scratchpads: no chain stays within its peak)
    plan = _plan(net, "fp32")
    chained = build_executable(net, plan)
    stepped = build_executable(net, plan, chain=False)
    assert _chains(chained) and not _chains(stepped)
    assert len(chained._fast_steps) < len(stepped._fast_steps)
    np.testing.assert_allclose(chained.run(x), stepped.run(x), rtol=1e-5, atol=1e-6)
    ours = allocated_memory(chained, chained.prepare_input(x)).run_peak_bytes
    theirs = allocated_memory(stepped, stepped.prepare_input(x)).run_peak_bytes
    assert ours <= theirs * (1 + chain.PEAK_SLACK)


def _with_budget(monkeypatch, budget):
    """Make chain_steps take ``budget(schedule, live)`` as the schedule's peak, with no slack."""
    real = chain.live_profile
    monkeypatch.setattr(chain, "PEAK_SLACK", 0.0)

    def profile(schedule):
        live, _ = real(schedule)
        return live, budget(schedule, live)

    monkeypatch.setattr(chain, "live_profile", profile)


def _layouts(monkeypatch):
    """A list that gets (schedule, layout) of every chain made from now on."""
    made = []
    real = chain._chain

    def spy(schedule, run, ops, members, layout):
        made.append((schedule, layout))
        return real(schedule, run, ops, members, layout)

    monkeypatch.setattr(chain, "_chain", spy)
    return made


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_one_chain_runs_the_residual_net_from_its_first_convolution_to_its_last(net, x, precision, monkeypatch):
    # with memory no object: conv1, conv2, conv3 (adding conv1's output from the arena), the max pool, the squeeze-
    # excite block (the global average pool run by the chain, se1, se2, the gate product) and dw, conv4
    _with_budget(monkeypatch, lambda schedule, live: 2 ** 62)
    plan = _plan(net, precision)
    assert plan.choices["gap"].primitive == "globalaveragepool.torch" and plan.choices["se_mul"].primitive == "mul.dnnl"
    chained = build_executable(net, plan, calibration=[x] if precision == "int8" else None)
    assert [[link.kind for link in c.links] for c in _chains(chained)] == [[0, 0, 0, 1, 0, 0, 3, 0, 0]]
    stepped = build_executable(net, plan, calibration=chained.calibration, chain=False)
    ours, theirs = chained.run(x), stepped.run(x)
    if precision == "fp32":  # oneDNN's average sums in another order than torch's mean
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    else:  # and may round an int8 average to the other neighbour on the grid
        exact = build_executable(net, _plan(net, "fp32"), chain=False).run(x)
        assert max_rel_err(ours, exact) <= 1.25 * max_rel_err(theirs, exact) + 1e-3


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_channel_concat_of_convolutions_made_in_the_chain_is_joined_in_it(precision, monkeypatch):
    _with_budget(monkeypatch, lambda schedule, live: 2 ** 62)
    net = fire_graph()
    x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    plan = _plan(net, precision)
    assert plan.choices["cat1"].primitive == "concat.torch"
    chained = build_executable(net, plan, calibration=[x] if precision == "int8" else None)
    stepped = build_executable(net, plan, calibration=chained.calibration, chain=False)
    # one chain of everything: the concats cost no step of their own
    assert len(chained._fast_steps) < len(stepped._fast_steps)
    [chain_fn] = [fn for fn, *_ in chained._fast_steps if hasattr(fn, "links")]
    assert len(chain_fn.links) == 8
    # (at int8 the expands already make their outputs on the concat's grid: concat_ties)
    np.testing.assert_array_equal(chained.run(x), stepped.run(x))


def test_the_schedules_conversions_run_in_the_chain_as_onednn_reorders(x, monkeypatch):
    # int8 but for conv2 and the squeeze-excite block: the input's layout change, its quantisation and the
    # (de)quantisations around the fp32 ops are reorders of the chain, so one chain runs the net up to the Flatten
    import perfpredict.primitives.dnnl as dnnl

    _with_budget(monkeypatch, lambda schedule, live: 2 ** 62)
    net = residual_se_graph(hw=16)
    choices = dict(_plan(net, "int8").choices)
    for name, c in _plan(net, "fp32").choices.items():
        if name in ("conv2", "relu2", "gap", "se1", "se_relu", "se2", "se_gate", "se_mul"):
            choices[name] = c
    plan = Plan(choices)
    chained = build_executable(net, plan, calibration=[x])
    stepped = build_executable(net, plan, calibration=chained.calibration, chain=False)
    kinds = [op.kind for op in stepped.schedule.ops]
    assert kinds[:2] == ["layout", "quantize"] and kinds.count("dequantize") >= 2
    [chain_fn] = _chains(chained)
    reorders = [p for p in chain_fn.primitives if isinstance(p, dnnl.Reorder)]
    assert len(reorders) >= 5
    assert len(chained._fast_steps) <= len(stepped._fast_steps) - len(chain_fn.primitives) + 1
    # the chain quantises bit for bit as torch; its average pool may still round to the other neighbour on the grid
    exact = build_executable(net, _plan(net, "fp32"), chain=False).run(x)
    ours, theirs = chained.run(x), stepped.run(x)
    assert max_rel_err(ours, exact) <= 1.25 * max_rel_err(theirs, exact) + 1e-3


@pytest.mark.parametrize("source, target", [(("fp32", "NHWC"), ("int8", "NHWC")), (("int8", "NHWC"), ("fp32", "NHWC")),
                                            (("fp32", "NCHW"), ("fp32", "NHWC")), (("fp32", "NHWC"), ("fp32", "NCHW")),
                                            (("fp32", "NCHW"), ("int8", "NHWC"))])
def test_a_reorder_quantises_dequantises_and_changes_layout_as_torch_does(source, target):
    import torch

    from perfpredict.primitives.dnnl import Reorder, library

    formats = {"NCHW": torch.contiguous_format, "NHWC": torch.channels_last}
    scale, zp = 0.0473, 117
    x = torch.from_numpy(3 * np.random.default_rng(3).standard_normal((1, 24, 9, 11)).astype(np.float32))
    if source[0] == "int8":
        x = torch.quantize_per_tensor(x, scale, zp, torch.quint8)
    x = x.contiguous(memory_format=formats[source[1]])
    if target[0] == "int8":
        want = torch.quantize_per_tensor(x, scale, zp, torch.quint8).contiguous(memory_format=formats[target[1]])
        y = torch._empty_affine_quantized(x.shape, scale=scale, zero_point=zp, dtype=torch.quint8,
                                          memory_format=formats[target[1]])
    else:
        want = (x.dequantize() if x.is_quantized else x).contiguous(memory_format=formats[target[1]])
        y = torch.empty(x.shape, memory_format=formats[target[1]])
    r = Reorder(tuple(x.shape), source, target)
    assert r.scratch_bytes == 0
    # a (de)quantisation that keeps the layout runs perfpredict's loops, the others oneDNN's reorder
    assert r.impl.startswith("perfpredict:") == (source[1] == target[1] and "int8" in (source[0], target[0]))
    assert library().pp_dnnl_reorder_run(r.handle, x.data_ptr(), y.data_ptr(), None, scale, zp) == 0
    if target[0] == "int8":
        torch.testing.assert_close(y.int_repr(), want.int_repr(), rtol=0, atol=0)
    else:
        torch.testing.assert_close(y, want, rtol=0, atol=0)


def test_the_quantisation_loops_give_torchs_values_bit_for_bit_on_every_isa_this_cpu_has():
    # ties (values half a step from two neighbours), random values, values past int32 and infinities
    import torch

    from perfpredict.primitives.dnnl import library

    lib = library()
    for isa in range(lib.pp_quant_isa() + 1):  # 0 scalar, 1 AVX2 + FMA, 2 AVX-512
        for scale, zp in [(0.0473, 117), (0.2, 250), (0.0031, 0)]:
            for x in [(torch.arange(4003, dtype=torch.float32) - 2000) * 0.25 * scale,
                      torch.from_numpy(3 * np.random.default_rng(isa).standard_normal(70001).astype(np.float32)),
                      torch.tensor([1e20, -1e20, float("inf"), -float("inf"), 3e9, -3e9] + [0.0] * 11)]:
                want = torch.quantize_per_tensor(x, scale, zp, torch.quint8)
                q = torch.empty(x.shape, dtype=torch.uint8)
                lib.pp_quantize_u8(isa, x.data_ptr(), q.data_ptr(), x.numel(), scale, zp)
                torch.testing.assert_close(q, want.int_repr(), rtol=0, atol=0)
                ints, back = want.int_repr(), torch.empty(x.shape)
                lib.pp_dequantize_u8(isa, ints.data_ptr(), back.data_ptr(), x.numel(), scale, zp)
                torch.testing.assert_close(back, want.dequantize(), rtol=0, atol=0)


def test_a_reorder_between_two_int8_tensors_is_refused():
    from perfpredict.primitives.dnnl import Reorder

    with pytest.raises(PlanError, match="cannot reorder"):
        Reorder((1, 4, 2, 2), ("int8", "NCHW"), ("int8", "NHWC"))


def test_conversions_alone_or_around_a_single_kernel_are_not_chained(x, monkeypatch):
    # a chain's own Python work costs about what it saves on two cheap steps
    _with_budget(monkeypatch, lambda schedule, live: 2 ** 62)
    net = residual_se_graph(hw=16)
    exe = build_executable(net, _plan(net, "fp32"), chain=False)
    members = chain._members(exe.schedule, exe._steps)
    assert members[0] is not None and members[0].kind == 4  # the input's layout change
    conv1 = members.index(next(m for m in members if m is not None and m.kind == 0))
    steps = list(exe._steps)
    lone = [s if i <= conv1 else (lambda *xs: None, *s[1:]) for i, s in enumerate(steps)]  # nothing after conv1 chains
    out = chain_steps(exe.schedule, lone)
    assert not [fn for fn, *_ in out if hasattr(fn, "links")]
    assert len(out) == len(steps)


def test_a_run_whose_chain_onednn_refuses_runs_step_by_step(monkeypatch):
    import perfpredict.primitives.dnnl as dnnl

    def refuse(*args, **kwargs):
        raise PlanError("oneDNN cannot concatenate: it says unimplemented")

    monkeypatch.setattr(dnnl, "ChannelConcat", refuse)
    _with_budget(monkeypatch, lambda schedule, live: 2 ** 62)
    net = fire_graph()
    x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    chained = build_executable(net, _plan(net, "fp32"))
    stepped = build_executable(net, _plan(net, "fp32"), chain=False)
    assert not _chains(chained)
    np.testing.assert_array_equal(chained.run(x), stepped.run(x))


def test_step_times_and_trace_still_run_one_step_per_op(net, x):
    exe = build_executable(net, _plan(net, "fp32"))
    assert _chains(exe)
    assert len(exe.step_times(x, repeats=1, warmup=0)) == len(exe.schedule.ops)
    assert set(exe.trace(x)) == set(exe.schedule.tensor_slots)


def test_a_chain_that_would_hold_more_than_the_peak_is_cut(net, x, monkeypatch):
    monkeypatch.setattr(chain, "_REORDERS", ())  # no conversions in chains: the first chain starts at conv1
    exe = build_executable(net, _plan(net, "fp32"), chain=False)
    members = chain._members(exe.schedule, exe._steps)
    first = next(i for i, m in enumerate(members) if m is not None)
    held = {k: chain._plan(exe.schedule, exe._steps[first:first + k], members[first:first + k], None).held
            for k in (2, 3)}
    assert held[3] > held[2]  # conv3's output is the chain's to hold as well

    def chains(budget):
        """The chains cut within ``budget`` bytes as the schedule's peak: (first step, steps, bytes held)."""
        made = []
        real = chain._chain

        def spy(schedule, run, ops, members, plan):
            made.append((next(k for k, s in enumerate(exe._steps) if s is run[0]), len(run), plan.held))
            return real(schedule, run, ops, members, plan)

        _with_budget(monkeypatch, lambda schedule, live: budget)
        monkeypatch.setattr(chain, "_chain", spy)
        out = chain_steps(exe.schedule, exe._steps)
        monkeypatch.setattr(chain, "_chain", real)
        return made, out

    live, _ = chain.live_profile(exe.schedule)
    made, _ = chains(live[first] + held[3])
    assert (first, 3) in [(a, n) for a, n, _ in made] or any(a == first and n > 3 for a, n, _ in made)
    budget = live[first] + held[3] - 1
    made, cut = chains(budget)
    assert made and all(live[a] + h <= budget for a, _, h in made)
    assert (first, 3) not in [(a, n) for a, n, _ in made]
    y = np.asarray(exe.run(x))
    exe._fast_steps = cut
    np.testing.assert_allclose(exe.run(x), y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tries", [0, 16])
def test_the_arena_never_puts_two_live_tensors_in_the_same_bytes(tries):
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 12))
        sizes = {s: int(rng.integers(1, 5000)) for s in range(n)}
        lifetimes = {}
        for s in range(n):
            first = int(rng.integers(0, 10))
            lifetimes[s] = (first, first + int(rng.integers(0, 4)))
        layout = layout_arena(sizes, lifetimes, tries=tries)
        assert all(o % ALIGN == 0 for o in layout.offsets.values())
        for a in range(n):
            assert layout.offsets[a] + sizes[a] <= layout.size
            for b in range(a + 1, n):
                (fa, la), (fb, lb) = lifetimes[a], lifetimes[b]
                if fa <= lb and fb <= la:  # alive at the same time: disjoint bytes
                    oa, ob = layout.offsets[a], layout.offsets[b]
                    assert oa + sizes[a] <= ob or ob + sizes[b] <= oa
        busiest = max(sum(sizes[s] for s in range(n) if lifetimes[s][0] <= t <= lifetimes[s][1]) for t in range(14))
        assert layout.size >= chain.arena_bound(sizes, lifetimes) >= busiest


def test_the_arena_reuses_the_bytes_of_tensors_that_are_gone():
    # a -> b -> c, each read only by the next: c can take a's place
    layout = layout_arena({0: 1000, 1: 1000, 2: 1000}, {0: (0, 1), 1: (1, 2), 2: (2, 3)})
    assert layout.offsets[2] == layout.offsets[0]
    assert layout.size == 2 * 1024


def test_more_orders_close_the_gaps_first_fit_leaves():
    # squeezenet1_1's first two fire modules after the max pool (bytes, and the steps each tensor lives): largest
    # first and in order both leave the second squeeze output above the rest; the bound is the most alive at once
    sizes = {0: 193600, 1: 774400, 2: 774400, 3: 1548800, 4: 193600, 5: 774400, 6: 774400, 7: 1548800}
    lifetimes = {0: (0, 2), 1: (1, 3), 2: (2, 3), 3: (3, 4), 4: (4, 6), 5: (5, 7), 6: (6, 7), 7: (7, 8)}
    bound = chain.arena_bound(sizes, lifetimes)
    assert bound == 774400 * 2 + 1548800
    assert layout_arena(sizes, lifetimes).size > bound
    assert layout_arena(sizes, lifetimes, tries=64).size == bound
    assert layout_arena(sizes, lifetimes, tries=64) == layout_arena(sizes, lifetimes, tries=64)  # seeded


def test_a_run_is_cut_into_the_fewest_pieces_not_greedily_from_the_left():
    # a chain fits only from step 0 to 2, or from step 1 to the run's end: greedily from the left that is a chain
    # and four single steps; the fewest pieces are step 0 alone and one chain of the rest
    def fits(a, b):
        return (a, b) in {(0, 2), (1, 6)}

    def enough(a, b):
        return True

    assert chain._partition(0, 6, fits, enough) == [(0, 1, False), (1, 6, True)]
    # where every chain fits, one chain; where none does, single steps; ties go to the longer chain
    assert chain._partition(0, 6, lambda a, b: True, enough) == [(0, 6, True)]
    assert chain._partition(0, 3, lambda a, b: False, enough) == [(0, 1, False), (1, 2, False), (2, 3, False)]
    assert chain._partition(0, 4, lambda a, b: b - a == 2, enough) == [(0, 2, True), (2, 4, True)]
    # a chain needs enough kernels (conversions do not count): a conversion and one kernel stay two steps
    assert chain._partition(0, 2, lambda a, b: True, lambda a, b: False) == [(0, 1, False), (1, 2, False)]


def test_the_arena_borrows_the_bytes_of_an_input_the_chain_has_read_for_the_last_time():
    # input 9 (4,096 bytes) is last read at step 0: tensors made from step 1 on go there first, where they fit
    sizes = {0: 2048, 1: 2048, 2: 2048, 3: 8192}
    lifetimes = {0: (0, 1), 1: (1, 2), 2: (2, 3), 3: (3, 4)}
    alone = layout_arena(sizes, lifetimes)
    layout = layout_arena(sizes, lifetimes, spare={9: (4096, 1)})
    assert 0 not in layout.borrowed  # made at step 0, while the input is still read
    assert {s for s, (k, _) in layout.borrowed.items() if k == 9} == {1, 2}  # 3 does not fit in 4,096 bytes
    (_, o1), (_, o2) = layout.borrowed[1], layout.borrowed[2]
    assert o1 + 2048 <= o2 or o2 + 2048 <= o1  # alive together at step 2: disjoint bytes
    assert layout.size < alone.size
    assert chain.arena_bound(sizes, lifetimes, {9: (4096, 1)}) <= layout.size


def _fire_after_a_torch_stem():
    net = fire_graph()
    choices = dict(_plan(net, "fp32").choices)
    choices["stem"] = Choice("conv.onednn", "NHWC", "fp32")  # not oneDNN's chain: the chain starts at its output
    return net, Plan(choices)


def test_a_chain_reuses_an_input_it_no_longer_reads_and_computes_the_same(monkeypatch):
    net, plan = _fire_after_a_torch_stem()
    made = _layouts(monkeypatch)
    _with_budget(monkeypatch, lambda schedule, live: 2 ** 62)  # the fire modules in one chain after the stem
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    chained = build_executable(net, plan)
    assert any(layout.arena.borrowed for _, layout in made)
    np.testing.assert_allclose(chained.run(x), build_executable(net, plan, chain=False).run(x), rtol=1e-5, atol=1e-6)


def test_an_input_that_shares_its_storage_is_not_written_over(monkeypatch):
    _with_budget(monkeypatch, lambda schedule, live: 2 ** 62)
    net, plan = _fire_after_a_torch_stem()
    exe = build_executable(net, plan)
    lender = next(s for s in exe._fast_steps if hasattr(s[0], "links"))
    fn, ins = lender[0], lender[1]
    x = np.random.default_rng(4).standard_normal((1, 3, 16, 16)).astype(np.float32)
    regs = exe.trace(x)
    slot = exe.schedule.slots[ins[0]]
    source = regs[slot.tensor].contiguous(memory_format=torch.channels_last)
    kept = source.clone()
    out = fn(source.clone())  # a tensor of its own: the chain reuses its bytes once it has read it
    lone = source.clone()
    fn(lone)
    assert not torch.equal(lone, kept)
    view = source[:]  # a second tensor on the same storage: the chain must leave it as it was
    again = fn(source)
    assert torch.equal(view, kept) and torch.equal(source, kept)
    assert torch.equal(again, out)


def _stem_chains(exe):
    return [[type(p).__name__ for p in fn.primitives] for fn in _chains(exe)]


@functools.cache
def _blocks_fast() -> bool:
    """Whether oneDNN has optimised kernels in its 16-channel blocked format (nChw16c) on this CPU, as it does with
    AVX-512: on an AVX2-only CPU it has only its reference kernel there, and the runtime keeps every chain
    channels-last (``chain._fast``), which the tests of blocked chains then check instead."""
    net = stem_graph()
    exe = build_executable(net, _plan(net, "fp32"), chain=False)
    [(t, _)] = chain._stems(exe.schedule, exe._steps, chain._members(exe.schedule, exe._steps))
    return chain._fast(exe._steps[t + 1][0].planar_to_blocked())


def _unblocked(calls) -> bool:
    """Whether no call of ``calls`` (:func:`_calls`) reads or writes oneDNN's blocked format."""
    return all(BLOCKED not in (f or ()) for cs in calls for _, _, f in cs)


@pytest.mark.parametrize("hw", [32, 29])
def test_a_stem_runs_from_planar_input_through_blocks_in_its_chain(hw, monkeypatch):
    # the input's layout change, the stem convolution and its max pool become: the convolution from planar input
    # into blocks, the pool on blocks, one reorder to channels-last
    _with_budget(monkeypatch, lambda schedule, live: 2 ** 62)
    net = stem_graph(hw=hw)
    plan = _plan(net, "fp32")
    stepped = build_executable(net, plan, chain=False)
    members = chain._members(stepped.schedule, stepped._steps)
    assert chain._stems(stepped.schedule, stepped._steps, members) == [(0, True)]
    chained = build_executable(net, plan)
    plain_chain = [["Reorder", "_Primitive", "_Pool", "_Primitive", "_Primitive", "Reorder"]]
    assert _stem_chains(chained) == ([["_Primitive", "_Pool", "Reorder", "_Primitive", "_Primitive", "Reorder"]]
                                     if _blocks_fast() else plain_chain)  # else the stem stays as it is
    monkeypatch.setattr(chain, "_stems", lambda *args: [])
    plain = build_executable(net, plan)
    assert _stem_chains(plain) == plain_chain
    x = np.random.default_rng(5).standard_normal((1, 3, hw, hw)).astype(np.float32)
    np.testing.assert_allclose(chained.run(x), stepped.run(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(chained.run(x), plain.run(x), rtol=1e-5, atol=1e-5)


def test_a_stem_that_no_chain_holds_whole_runs_step_by_step(monkeypatch):
    _with_budget(monkeypatch, lambda schedule, live: 0)  # no chain fits: the rewritten steps must not run alone
    net = stem_graph()
    plan = _plan(net, "fp32")
    exe = build_executable(net, plan)
    assert not _chains(exe) and all(fn is not None for fn, *_ in exe._fast_steps)
    x = np.random.default_rng(6).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(exe.run(x), build_executable(net, plan, chain=False).run(x))


def test_a_few_channel_convolution_of_whole_blocks_is_a_stem_with_or_without_a_max_pool():
    # fire: 16 output channels into a convolution; residual_se: 8 output channels
    for net, stems in ((fire_graph(), [(0, False)]), (residual_se_graph(hw=16), []), (stem_graph(), [(0, True)])):
        exe = build_executable(net, _plan(net, "fp32"), chain=False)
        assert chain._stems(exe.schedule, exe._steps, chain._members(exe.schedule, exe._steps)) == stems


@pytest.mark.parametrize("dense", [False, True])
def test_after_a_stem_without_a_pool_pointwise_and_depthwise_convolutions_run_on_blocks(dense, monkeypatch):
    # no concat: blocks only for the stem's sake, so not for a dense 3x3 window (oneDNN's blocked kernels trail there)
    _with_budget(monkeypatch, lambda schedule, live: 2 ** 62)
    net = planar_stem_graph(dense=dense)
    plan = _plan(net, "fp32")
    [calls] = _calls(build_executable(net, plan))
    formats = [(t, f) for _, t, f in calls]
    if not _blocks_fast():  # no fast kernels in blocks: every step channels-last
        assert _unblocked([calls])
    elif dense:  # the stem into blocks, its reorder out of them, the rest channels-last
        assert formats[:2] == [("_Primitive", (NCHW, BLOCKED)), ("Reorder", (BLOCKED, NHWC))]
        assert all(f == (NHWC, NHWC) for t, f in formats[2:] if t == "_Primitive")
    else:  # the stem's reorder goes: the depthwise and pointwise convolutions read blocks, the head channels-last
        assert formats[:4] == [("_Primitive", (NCHW, BLOCKED)), ("_Primitive", (BLOCKED, BLOCKED)),
                               ("_Primitive", (BLOCKED, BLOCKED)), ("Reorder", (BLOCKED, NHWC))]
        assert formats[4] == ("_Primitive", (NHWC, NHWC))
    x = np.random.default_rng(10).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(build_executable(net, plan).run(x), build_executable(net, plan, chain=False).run(x),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels,batch", [(32, 1), (24, 1), (32, 2)])  # 24: channels past the last 16
def test_a_global_average_pool_of_a_swish_output_is_folded_into_the_swish_pass(channels, batch, monkeypatch):
    _with_budget(monkeypatch, lambda schedule, live: 2 ** 62)
    net = swish_se_graph(channels=channels, batch=batch)
    plan = _plan(net, "fp32")
    x = np.random.default_rng(3).standard_normal((batch, 3, 16, 16)).astype(np.float32)
    x[-1] *= 3  # the images differ in scale: each has its own means
    chained = build_executable(net, plan)
    (c,) = _chains(chained)
    stepped = build_executable(net, plan, chain=False)
    np.testing.assert_allclose(chained.run(x), stepped.run(x), rtol=1e-5, atol=1e-6)
    own = [link.primitive.own_swish for link in c.links if link.kind == 0]
    if not own[1]:  # no AVX-512: the swish is oneDNN's post-op and the chain runs the pool itself
        assert 5 not in c.kinds and own == [False] * len(own)
        return
    assert c.kinds.count(5) == 1 and c.kinds[c.kinds.index(5) + 1] == 0  # conv2 also averages; se1 comes next
    monkeypatch.setattr(chain, "_mean_folds", lambda run, members: {})
    (unfolded,) = _chains(build_executable(net, plan))
    assert 5 not in unfolded.kinds and len(unfolded.kinds) == len(c.kinds) + 1


def _conv_member(own_swish=True, formats=(NHWC, NHWC), residual=None, int8=False):
    link = SimpleNamespace(primitive=SimpleNamespace(own_swish=own_swish, formats=formats), residual=residual)
    return chain._Member(0, link, int8)


def test_only_an_fp32_channels_last_convolution_with_its_own_swish_pass_takes_the_pool_of_its_output():
    run = [(None, (0,), (1,), ()), (None, (1,), (2,), ())]
    pool = chain._Member(1, None, False)
    assert chain._mean_folds(run, [_conv_member(), pool]) == {1: 0}
    for conv in (_conv_member(int8=True), _conv_member(own_swish=False), _conv_member(formats=(NCHW, BLOCKED)),
                 _conv_member(residual=QParams(1.0, 0))):
        assert chain._mean_folds(run, [conv, pool]) == {}
    assert chain._mean_folds(run, [_conv_member(), chain._Member(1, None, True)]) == {}  # an int8 pool
    assert chain._mean_folds([(None, (0,), (1,), ()), (None, (0,), (2,), ())], [_conv_member(), pool]) == {}


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_gate_product_writes_over_its_input_where_it_reads_it_last(precision, monkeypatch):
    _with_budget(monkeypatch, lambda schedule, live: 2 ** 62)
    net = residual_se_graph(hw=16)
    plan = _plan(net, precision)
    x = np.random.default_rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32)
    made = _layouts(monkeypatch)
    chained = build_executable(net, plan, calibration=[x] if precision == "int8" else None)
    ((schedule, layout),) = made
    slot = {s.tensor: i for i, s in enumerate(schedule.slots) if s.precision == precision}
    assert layout.arena.offsets[slot["se"]] == layout.arena.offsets[slot["m"]]  # se_mul writes over the pool's m
    monkeypatch.setattr(chain, "_in_place", lambda *a: {})
    made.clear()
    apart = build_executable(net, plan, calibration=chained.calibration)
    assert made[0][1].arena.size >= layout.arena.size
    np.testing.assert_array_equal(chained.run(x), apart.run(x))


def test_an_in_place_output_takes_its_inputs_place_in_the_arena_or_in_a_borrowed_input():
    arena = chain.ArenaLayout({1: 0, 2: 64}, 128, {5: (0, 64)})
    placed = chain._placed_in(arena, {3: 1, 4: 3, 6: 5})  # 4 over 3 over 1; 6 over the borrowed 5
    assert placed.offsets == {1: 0, 2: 64, 3: 0, 4: 0} and placed.borrowed == {5: (0, 64), 6: (0, 64)}
    assert placed.size == 128


def test_gate_products_in_a_row_all_write_over_the_first_input():
    # x (made at 0) -> z1 = x * g at 1 -> z2 = z1 * g at 2 -> read at 3
    schedule = SimpleNamespace(slots=[SimpleNamespace(nbytes=n, alias_of=None) for n in (64, 64, 64, 64, 64)])
    run = [(None, (4,), (0,), ()), (None, (0, 4), (1,), (0,)), (None, (1, 4), (2,), (1,)), (None, (2,), (3,), (2,))]
    gate = SimpleNamespace(gate=1)
    members = [chain._Member(0, None, False), chain._Member(3, gate, False), chain._Member(3, gate, False),
               chain._Member(0, None, False)]
    produced = {0: 0, 1: 1, 2: 2, 3: 3}
    last_read = {0: 1, 1: 2, 2: 3, 3: 3}
    in_place = chain._in_place(schedule, run, members, [0, 1, 2], produced, last_read, set())
    assert in_place == {1: 0, 2: 1} and chain._root(2, in_place) == 0


def test_two_gate_products_in_a_row_run_in_place_in_a_chain_and_compute_the_same(monkeypatch):
    _with_budget(monkeypatch, lambda schedule, live: 2 ** 62)
    net = double_gate_graph()
    plan = _plan(net, "fp32")
    made = _layouts(monkeypatch)
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    chained = build_executable(net, plan)
    ((schedule, layout),) = made
    slot = {s.tensor: i for i, s in enumerate(schedule.slots)}
    assert layout.arena.offsets[slot["m2"]] == layout.arena.offsets[slot["m1"]] == layout.arena.offsets[slot["a"]]
    np.testing.assert_allclose(chained.run(x), build_executable(net, plan, chain=False).run(x), rtol=1e-5, atol=1e-6)


def _calls(exe):
    """Each chain's calls as (C kind, primitive type, its (in, out) formats where it has them)."""
    return [[(k, type(p).__name__, getattr(p, "formats", None)) for k, p in zip(fn.kinds, fn.primitives)]
            for fn in _chains(exe)]


@pytest.mark.parametrize("tap", [False, True])  # tap: the first concat is also a graph output
def test_concats_of_whole_blocks_are_views_in_a_chain_whose_own_tensors_run_in_blocks(tap, monkeypatch):
    _with_budget(monkeypatch, lambda schedule, live: 2 ** 62)
    net = blocks_fire_graph(tap=tap)
    plan = _plan(net, "fp32")
    x = np.random.default_rng(7).standard_normal((1, 3, 16, 16)).astype(np.float32)
    [calls] = _calls(build_executable(net, plan))
    kinds = [k for k, _, _ in calls]
    if _blocks_fast():
        assert 2 not in kinds  # the expands write into the concat's bytes: no concat call
        blocked = [(t, f) for _, t, f in calls if f == (BLOCKED, BLOCKED)]
        assert blocked.count(("_Primitive", (BLOCKED, BLOCKED))) == 6
        assert blocked.count(("_Pool", (BLOCKED, BLOCKED))) == 3
        # reorders out of blocks: the pooled tensor the 10-channel head reads and, with tap, the concat that outlives
        # the chain; the stem's own reorder out of blocks is gone
        assert [t for _, t, f in calls if f == (BLOCKED, NHWC)] == ["Reorder"] * (2 if tap else 1)
    else:  # no fast kernels in blocks: channels-last, the concats called
        assert _unblocked([calls]) and kinds.count(2) == 2
    chained = build_executable(net, plan)
    monkeypatch.setattr(chain, "_on_blocks", lambda *args: None)
    plain = build_executable(net, plan)
    assert [k for k, _, _ in _calls(plain)[0]].count(2) == 2
    stepped = build_executable(net, plan, chain=False)
    for ours, theirs, steps in zip(chained.run(x), plain.run(x), stepped.run(x)):
        np.testing.assert_allclose(ours, steps, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch,precision", [(2, "fp32"), (1, "int8")])
def test_a_chain_stays_channels_last_where_no_concat_would_be_a_view(batch, precision, monkeypatch):
    # at batch 2 a part of a blocked concat is not a contiguous range of it; at int8 nothing runs on blocks
    _with_budget(monkeypatch, lambda schedule, live: 2 ** 62)
    net = blocks_fire_graph(batch=batch)
    x = np.random.default_rng(8).standard_normal((batch, 3, 16, 16)).astype(np.float32)
    plan = _plan(net, precision)
    chained = build_executable(net, plan, calibration=[x] if precision == "int8" else None)
    calls = [c for cs in _calls(chained) for c in cs]
    assert [k for k, _, _ in calls].count(2) == 2
    # in blocks only the fp32 stem: its convolution, its pool and its reorder out of blocks
    blocked = [i for i, (_, _, f) in enumerate(calls) if BLOCKED in (f or ())]
    assert blocked == ([0, 1, 2] if precision == "fp32" and _blocks_fast() else [])
    # channels that do not fill blocks, no concat: fire's stem into blocks and out, residual_se's not even that
    for net, stem in ((fire_graph(), [0, 1] if _blocks_fast() else []), (residual_se_graph(hw=16), [])):
        calls = [c for cs in _calls(build_executable(net, _plan(net, "fp32"))) for c in cs]
        assert [i for i, (_, _, f) in enumerate(calls) if BLOCKED in (f or ())] == stem
    if precision == "fp32":
        np.testing.assert_allclose(chained.run(x)[0], build_executable(net := blocks_fire_graph(batch=batch), plan,
                                                                       chain=False).run(x)[0], rtol=1e-5, atol=1e-5)


def test_a_views_parts_lie_one_after_the_other_in_its_outputs_bytes():
    slots = [SimpleNamespace(nbytes=n) for n in (0, 256, 512, 768, 128, 128)]
    arena = chain.ArenaLayout({3: 1024}, 2048, {4: (9, 64)})
    out = chain._viewed(arena, {3: (1, 2), 4: (5, 0)}, slots)
    assert out.offsets == {3: 1024, 1: 1024, 2: 1280}
    assert out.borrowed == {4: (9, 64), 5: (9, 64), 0: (9, 192)}
    assert out.size == 2048


def test_nothing_runs_on_blocks_where_onednn_has_only_its_reference_kernel_for_them(monkeypatch):
    _with_budget(monkeypatch, lambda schedule, live: 2 ** 62)
    assert not chain._fast(SimpleNamespace(impl="ref:any")) and chain._fast(SimpleNamespace(impl="jit:avx512_core"))
    monkeypatch.setattr(chain, "_fast", lambda primitive: False)  # as on a CPU without AVX-512
    for net, hw in ((blocks_fire_graph(), 16), (stem_graph(), 32)):
        plan = _plan(net, "fp32")
        exe = build_executable(net, plan)
        assert _chains(exe) and not any(BLOCKED in (f or ()) for cs in _calls(exe) for _, _, f in cs)
        x = np.random.default_rng(9).standard_normal((1, 3, hw, hw)).astype(np.float32)
        ours, theirs = exe.run(x), build_executable(net, plan, chain=False).run(x)
        pairs = zip(ours, theirs) if isinstance(ours, tuple) else [(ours, theirs)]
        for a, b in pairs:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
