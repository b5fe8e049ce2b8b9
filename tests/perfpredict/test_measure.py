"""Latency protocol, interleaving, noise floor, subprocess peak memory and allocator peak memory."""

from __future__ import annotations

import math
import os
import sys
import textwrap
import time

import pytest
import torch

from perfpredict.errors import MeasurementError
from perfpredict.measure import (
    LatencyStats,
    _median_ci_rank,
    allocated_peak_of,
    busy_elsewhere,
    contention_note,
    latency_stats,
    measure_interleaved,
    measure_latency,
    noise_floor,
    peak_memory_of,
)

MB = 1024 * 1024


def test_median_ci_ranks_match_binomial_tables():
    # standard order-statistic ranks of the 95% CI of the median
    assert [_median_ci_rank(n) for n in (5, 6, 10, 20, 100)] == [0, 1, 2, 6, 40]


def test_latency_stats_summary():
    s = latency_stats([1.0, 2.0, 3.0, 4.0, 100.0, 2.5, 3.5, 2.0, 3.0, 2.0], target_ci=0.5, threads=2, warmup=1)
    assert s.median_ms == 2.75 and s.min_ms == 1.0 and s.n_repeats == 10
    assert s.mean_ms == pytest.approx(12.3)
    assert s.ci95_rel == pytest.approx((4.0 - 2.0) / 2 / 2.75)  # ranks 2 and 9 of 10
    assert s.stable and s.threads == 2 and s.warmup == 1
    few = latency_stats([1.0, 1.0, 1.0])
    assert math.isinf(few.ci95_rel) and not few.stable
    with pytest.raises(MeasurementError, match="at least one"):
        latency_stats([])


def test_measure_latency_counts_calls_and_converges():
    calls = []
    stats = measure_latency(lambda: calls.append(sum(range(2000))), warmup=4, min_repeats=8, target_ci=0.5)
    assert isinstance(stats, LatencyStats)
    assert len(calls) == 4 + stats.n_repeats and stats.n_repeats >= 8
    assert stats.stable and stats.warmup == 4 and stats.median_ms > 0


def test_unstable_when_target_unreachable_within_time_cap():
    i = iter(range(10**9))

    def jittery():
        time.sleep(0.0002 * (next(i) % 7))

    t0 = time.perf_counter()
    stats = measure_latency(jittery, warmup=0, max_repeats=10**6, target_ci=1e-9, time_cap_s=0.15)
    # the cap stops it (10**6 repeats would take minutes); the bound is loose, as a loaded machine stretches it
    assert time.perf_counter() - t0 < 30.0
    assert not stats.stable and stats.n_repeats < 10**6


def test_min_repeats_beat_time_cap_and_max_repeats_bound():
    stats = measure_latency(lambda: time.sleep(0.01), warmup=0, min_repeats=3, time_cap_s=0.001)
    assert stats.n_repeats == 3 and not stats.stable  # n < 6: no 95% CI
    stats = measure_latency(lambda: None, warmup=0, min_repeats=2, max_repeats=7, target_ci=1e-12)
    assert stats.n_repeats == 7


def test_threads_set_and_restored():
    before = torch.get_num_threads()
    seen = []
    stats = measure_latency(lambda: seen.append(torch.get_num_threads()), threads=1, warmup=0, min_repeats=6)
    assert set(seen) == {1} and stats.threads == 1 and torch.get_num_threads() == before


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"warmup": -1}, "warmup must be an integer >= 0"),
        ({"min_repeats": 0}, "min_repeats must be an integer >= 1"),
        ({"min_repeats": 5, "max_repeats": 3}, r"max_repeats must be an integer >= min_repeats \(5\)"),
        ({"target_ci": 0}, "target_ci must be a number > 0"),
        ({"time_cap_s": -1}, "time_cap_s must be a number > 0"),
        ({"threads": 0}, "threads must be a positive integer or None"),
    ],
)
def test_bad_protocol_arguments(kwargs, message):
    with pytest.raises(MeasurementError, match=message):
        measure_latency(lambda: None, **kwargs)


def test_interleaved_shuffles_rounds_reproducibly():
    def run(seed):
        order = []
        fns = {k: (lambda k=k: order.append(k)) for k in "abc"}
        out = measure_interleaved(fns, warmup=0, min_repeats=6, max_repeats=6, target_ci=1e-12, seed=seed)
        return order, out

    order, out = run(0)
    assert set(out) == {"a", "b", "c"} and all(s.n_repeats == 6 for s in out.values())
    rounds = [tuple(order[i : i + 3]) for i in range(0, len(order), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)  # every round visits each candidate once
    assert len(set(rounds)) > 1  # ... in varying order
    assert run(0)[0] == order and run(1)[0] != order


def test_interleaved_keeps_unconverged_candidates_going():
    i = iter(range(10**9))
    # bimodal jitter: the median's CI straddles both modes and never narrows
    fns = {"steady": lambda: sum(range(3000)), "jitter": lambda: time.sleep(0.001 * (next(i) % 2))}
    out = measure_interleaved(fns, warmup=1, min_repeats=6, max_repeats=400, target_ci=0.2, time_cap_s=0.1)
    assert out["jitter"].n_repeats >= out["steady"].n_repeats >= 6
    assert not out["jitter"].stable


def test_interleaved_lockstep_times_every_candidate_in_every_round():
    i = iter(range(10**9))
    fns = {"steady": lambda: sum(range(3000)), "jitter": lambda: time.sleep(0.001 * (next(i) % 2))}
    kw = dict(warmup=1, min_repeats=6, max_repeats=60, target_ci=0.2, time_cap_s=5.0)
    apart = measure_interleaved(fns, **kw)
    together = measure_interleaved(fns, lockstep=True, **kw)
    assert apart["steady"].n_repeats < apart["jitter"].n_repeats  # the steady one leaves the rotation early
    # in lockstep it stays until the jitter one is done (here: max_repeats), so both come from the same rounds
    assert together["steady"].n_repeats == together["jitter"].n_repeats == 60
    order = []
    out = measure_interleaved({k: (lambda k=k: order.append(k)) for k in "ab"}, warmup=0, min_repeats=4,
                              max_repeats=50, target_ci=0.5, lockstep=True)
    assert [s.n_repeats for s in out.values()] == [len(order) // 2] * 2  # converged at once: stops together


def test_interleaved_settles_before_each_timed_call():
    stamps: list[float] = []

    def call():
        stamps.append(time.perf_counter())

    measure_interleaved({"a": call, "b": call}, warmup=0, min_repeats=3, max_repeats=3, settle_s=0.01)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert len(stamps) == 6 and min(gaps) >= 0.009  # a pause of settle_s precedes every timed call
    with pytest.raises(MeasurementError, match="settle_s must be >= 0"):
        measure_interleaved({"a": call}, settle_s=-1.0)


def test_noise_floor():
    nf = noise_floor([(1.0, 1.03), (2.0, 2.16), (1.0, 1.5), (4.0, 4.0)])
    assert nf["n"] == 4 and nf["within_5pct"] == 0.5 and nf["within_10pct"] == 0.75
    assert nf["median_rel_diff"] == pytest.approx(0.055)
    assert math.isnan(noise_floor([])["within_5pct"]) and math.isnan(noise_floor([])["truth_mape"])
    with pytest.raises(MeasurementError, match="pair 0 must hold two positive"):
        noise_floor([(0.0, 1.0)])


def test_noise_floor_estimates_what_a_predictor_of_the_truth_would_score():
    # with i.i.d. log-normal noise a pair's log ratio has sqrt(2) times the spread of one measurement's
    # deviation from the truth: pairs 1.1 ** sqrt(2) apart stand for measurements 10% off
    r10, r4 = 1.1 ** math.sqrt(2), 1.04 ** math.sqrt(2)
    nf = noise_floor([(1.0, r10), (2.0, 2.0), (1.0, 1.0 / r10), (3.0, 3.0 * r4)])
    assert nf["truth_within_10pct"] == 1.0 and nf["truth_within_5pct"] == 0.5
    assert nf["within_10pct"] == 0.5  # a second measurement scores worse than the truth would
    assert nf["truth_mape"] == pytest.approx((0.1 + 0.0 + (1 - 1 / 1.1) + 0.04) / 4)


@pytest.fixture
def workload_module(tmp_path, monkeypatch):
    (tmp_path / "pp_mem_workload.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            def alloc(payload):
                a = np.ones(payload["mb"] * 1024 * 1024 // 8)
                return {"sum": float(a[:10].sum())}

            def hold(payload):
                return {"buf": np.ones(payload["setup_mb"] * 1024 * 1024 // 8), "mb": payload["mb"]}

            def alloc_after_setup(prepared):
                return alloc(prepared)

            def boom(payload):
                raise ValueError("workload exploded")
            """
        )
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    return "pp_mem_workload"


def test_peak_memory_of_known_allocation(workload_module):
    pm = peak_memory_of(f"{workload_module}:alloc", {"mb": 200})
    assert 190 * MB <= pm.peak_bytes <= 260 * MB
    assert pm.baseline_bytes > 5 * MB and pm.hwm_bytes >= pm.peak_bytes
    assert pm.result == {"sum": 10.0}
    if sys.platform.startswith("linux"):
        assert pm.method in ("clear_refs", "baseline-subtraction")


def test_peak_memory_setup_is_in_baseline(workload_module):
    pm = peak_memory_of(f"{workload_module}:alloc_after_setup", {"mb": 100, "setup_mb": 150},
                        setup_path=f"{workload_module}:hold")  # fmt: skip
    assert pm.baseline_bytes >= 150 * MB
    if pm.method == "clear_refs":  # the reset forgets the setup's own peak
        assert 90 * MB <= pm.peak_bytes <= 160 * MB


def test_peak_memory_errors(workload_module):
    with pytest.raises(MeasurementError, match="failed in its subprocess: ValueError: workload exploded"):
        peak_memory_of(f"{workload_module}:boom")
    with pytest.raises(MeasurementError, match="must look like 'package.module:function'"):
        peak_memory_of("no_colon")
    with pytest.raises(MeasurementError, match="payload must be JSON-serialisable"):
        peak_memory_of(f"{workload_module}:alloc", {"x": object()})


def test_interleaved_blocks_run_back_to_back_after_untimed_calls():
    order: list[str] = []
    fns = {k: (lambda k=k: order.append(k)) for k in "ab"}
    out = measure_interleaved(fns, warmup=0, min_repeats=6, max_repeats=6, target_ci=1e-12, block=3,
                              block_warmup=1, seed=0)
    assert all(s.n_repeats == 6 for s in out.values())  # two turns of 3 timed calls each
    runs = [order[i : i + 4] for i in range(0, len(order), 4)]
    assert len(runs) == 4 and all(len(set(r)) == 1 for r in runs)  # 1 untimed + 3 timed, one candidate a turn
    with pytest.raises(MeasurementError, match="block must be an integer >= 1"):
        measure_interleaved(fns, block=0)
    with pytest.raises(MeasurementError, match="block_warmup must be an integer >= 0"):
        measure_interleaved(fns, block_warmup=-1)


def test_a_warm_up_time_gives_a_short_candidate_more_untimed_calls_than_a_long_one():
    import time

    calls = {"short": 0, "long": 0}

    def make(k, s):
        def fn():
            calls[k] += 1
            time.sleep(s)
        return fn

    fns = {"short": make("short", 0.0005), "long": make("long", 0.005)}
    measure_interleaved(fns, warmup=0, min_repeats=2, max_repeats=2, target_ci=1e-12, block=1, block_warmup=1,
                        block_warmup_s=0.02, seed=0)
    # two turns each: 1 timed call per turn, untimed calls filling 20 ms (about 40 short, 4 long)
    assert calls["short"] > 3 * calls["long"] and calls["long"] >= 2 * 3
    with pytest.raises(MeasurementError, match="block_warmup_s must be >= 0"):
        measure_interleaved(fns, block_warmup_s=-1.0)


def test_allocated_peak_of_counts_the_bytes_held_at_once():
    held = torch.empty(1000, dtype=torch.uint8)  # held before: not part of the rise

    def work():
        a = torch.empty(10_000_000, dtype=torch.uint8)
        b = torch.empty(5_000_000, dtype=torch.uint8)
        del a, b
        c = torch.empty(3_000_000, dtype=torch.uint8)
        del c

    assert allocated_peak_of(work) == 15_000_000
    assert allocated_peak_of(work) == 15_000_000  # repeats to the byte
    assert allocated_peak_of(lambda: held.sum()) < 64 * 1024  # a scalar and a small reduction buffer
    assert allocated_peak_of(lambda: None) == 0


def test_allocated_peak_of_reports_a_failing_workload():
    def boom():
        raise ValueError("exploded")

    with pytest.raises(MeasurementError, match="the workload failed: ValueError: exploded"):
        allocated_peak_of(boom)


def _fake_clock(monkeypatch, busy_s, own_s, wall_s):
    """/proc/stat's busy seconds, this process's CPU seconds and the wall clock at the two reads of busy_elsewhere."""
    import perfpredict.measure as m

    busy, own, wall = iter(busy_s), iter(own_s), iter(wall_s)
    monkeypatch.setattr(m, "_proc_busy_s", lambda: next(busy))
    monkeypatch.setattr(m.time, "process_time", lambda: next(own))
    monkeypatch.setattr(m.time, "perf_counter", lambda: next(wall))
    monkeypatch.setattr(m.time, "sleep", lambda s: None)


def test_busy_elsewhere_is_the_machines_busy_time_less_our_own(monkeypatch):
    # the machine ran 0.5 CPU-seconds in a quarter of a second, 0.1 of them ours: 1.6 CPUs of other work
    _fake_clock(monkeypatch, [100.0, 100.5], [10.0, 10.1], [0.0, 0.25])
    assert busy_elsewhere() == pytest.approx(1.6)
    _fake_clock(monkeypatch, [100.0, 100.05], [10.0, 10.1], [0.0, 0.25])  # all of it ours: nothing else
    assert busy_elsewhere() == 0.0
    _fake_clock(monkeypatch, [None], [10.0], [0.0])  # no /proc/stat
    assert busy_elsewhere() is None


def test_busy_elsewhere_reads_this_machine():
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat")
    other = busy_elsewhere(0.05)
    assert other is not None and 0.0 <= other <= 4 * (os.cpu_count() or 1)


@pytest.mark.parametrize("other, threads, warned", [
    (None, 2, False),   # load unknown
    (0.1, 2, False),    # a quiet machine
    (1.0, 2, True),     # one of two CPUs taken: two threads will wait on a preempted one
    (1.0, 1, False),    # one thread still has a CPU of its own
    (1.9, 1, True),
    (2.0, None, True),  # default: every CPU
])
def test_contention_note_when_fewer_cpus_are_free_than_the_threads_need(monkeypatch, other, threads, warned):
    import perfpredict.measure as m

    monkeypatch.setattr(m, "busy_elsewhere", lambda window_s=0.25: other)
    monkeypatch.setattr(m.os, "cpu_count", lambda: 2)
    note = contention_note(threads)
    assert (note is not None) == warned
    if warned:
        assert f"kept {other:.1f} of this machine's 2 CPUs busy" in note and "\n" not in note
