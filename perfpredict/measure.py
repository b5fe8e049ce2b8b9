"""Measurement protocol: latency of any zero-argument callable, and peak memory of a workload.

Latency (`measure_latency`, `measure_interleaved`):
  * ``warmup`` untimed calls, then timed calls (``time.perf_counter_ns``, garbage collector
    paused) until the 95% confidence interval of the median is within ``target_ci`` of the
    median, or ``max_repeats`` / ``time_cap_s`` is reached. At least ``min_repeats`` timed
    calls are always made, even past the time cap.
  * The CI of the median is distribution-free (order statistics, binomial method): with n
    sorted samples x(1..n), [x(l), x(n+1-l)] covers the median with probability >= 95% for
    the largest l with P(Binomial(n, 1/2) < l) <= 0.025. ``ci95_rel`` is its half-width
    divided by the median. No such l exists for n < 6, so ``ci95_rel`` is ``inf`` there.
  * ``stable`` is False when the target was never reached; callers must report (or drop)
    such results, never keep them silently.

Peak memory (`peak_memory_of`): the workload runs in a fresh Python subprocess. The child
imports the workload's module (and runs an optional setup), which sets the baseline; it then
resets the kernel's high-water mark by writing "5" to /proc/self/clear_refs (Linux >= 4.0),
runs the workload once, and reads VmHWM from /proc/self/status. The peak is VmHWM minus the
resident set at the reset. Where the reset is refused, the child falls back to subtracting
the resident set at the same point from the never-reset VmHWM ("baseline-subtraction"),
which is exact when the workload's peak exceeds everything before it, else a lower bound.
The resident set also follows the C allocator's caching and page faults, so two runs of the same
workload can differ by several percent (more for small workloads).

Allocated peak (`allocated_peak_of`): the rise of the bytes held through torch's CPU allocator while
a callable runs in this process, from torch.profiler's allocation events (each carries the
allocator's running total). It counts every tensor, workspace and library scratchpad obtained
through torch's allocator and nothing else (not the interpreter, thread stacks or memory a library
mallocs itself); it is exact and repeats to the byte for a deterministic workload.
"""

from __future__ import annotations

import gc
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, Mapping

from perfpredict.errors import MeasurementError

__all__ = [
    "LatencyStats",
    "PeakMemory",
    "latency_stats",
    "measure_latency",
    "measure_interleaved",
    "peak_memory_of",
    "allocated_peak_of",
    "noise_floor",
    "torch_threads",
    "busy_elsewhere",
    "contention_note",
]


@dataclass(frozen=True)
class LatencyStats:
    """Summary of timed repeats of one callable (all times in milliseconds)."""

    median_ms: float
    iqr_ms: float
    mean_ms: float
    min_ms: float
    cv: float  # standard deviation / mean
    n_repeats: int
    ci95_rel: float  # half-width of the 95% CI of the median / median (inf if n < 6)
    stable: bool  # ci95_rel <= the target the measurement was asked for
    threads: int | None  # torch intra-op threads in effect (None if torch not loaded)
    warmup: int


@dataclass(frozen=True)
class PeakMemory:
    """Peak resident memory of one workload run in an isolated subprocess (bytes)."""

    peak_bytes: int  # high-water mark during the workload minus baseline_bytes
    baseline_bytes: int  # resident set after imports and setup, before the workload
    hwm_bytes: int  # the child's absolute VmHWM at the end
    method: str  # "clear_refs" or "baseline-subtraction"
    wall_s: float  # wall time of the workload call alone
    result: Any  # the workload's return value if JSON-serialisable, else None


# ---------------------------------------------------------------- statistics


@lru_cache(maxsize=4096)
def _median_ci_rank(n: int) -> int:
    """Largest 1-based rank l with P(Binomial(n, .5) < l) <= 0.025; 0 if none exists."""
    if n < 6:
        return 0
    if n > 1000:  # normal approximation is accurate here and avoids huge integers
        return max(1, int(math.floor(n / 2 - 1.959964 * math.sqrt(n) / 2)))
    total = 2**n
    cum = 0
    l = 0
    for k in range(n + 1):
        cum += math.comb(n, k)  # cum = P(B <= k) * 2**n
        if cum * 40 <= total:  # P(B <= k) <= 0.025, so rank k + 1 is admissible
            l = k + 1
        else:
            break
    return l


def _ci95_rel(sorted_ms: list[float], median: float) -> float:
    l = _median_ci_rank(len(sorted_ms))
    if l == 0 or median <= 0:
        return math.inf
    lo, hi = sorted_ms[l - 1], sorted_ms[len(sorted_ms) - l]
    return (hi - lo) / 2.0 / median


def latency_stats(
    samples_ms: Iterable[float], *, target_ci: float = 0.02, threads: int | None = None, warmup: int = 0
) -> LatencyStats:
    """Summarise raw per-call times (ms) into LatencyStats."""
    xs = sorted(float(x) for x in samples_ms)
    if not xs:
        raise MeasurementError("latency_stats: samples_ms must hold at least one time, got none")
    n = len(xs)
    med = statistics.median(xs)
    mean = statistics.fmean(xs)
    if n >= 2:
        q = statistics.quantiles(xs, n=4, method="inclusive")
        iqr = q[2] - q[0]
        cv = statistics.stdev(xs) / mean if mean > 0 else 0.0
    else:
        iqr, cv = 0.0, 0.0
    ci = _ci95_rel(xs, med)
    return LatencyStats(
        median_ms=med,
        iqr_ms=iqr,
        mean_ms=mean,
        min_ms=xs[0],
        cv=cv,
        n_repeats=n,
        ci95_rel=ci,
        stable=ci <= target_ci,
        threads=threads,
        warmup=warmup,
    )


# ---------------------------------------------------------------- a quiet machine


def _proc_busy_s() -> float | None:
    """Seconds of CPU time the whole machine has spent busy since boot (user, nice, system, irq, softirq and steal:
    the hypervisor's share is time taken from us too), from /proc/stat; None where it cannot be read."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 8:
        return None
    jiffies = [int(v) for v in fields[1:]]
    busy = sum(jiffies[:3]) + sum(jiffies[5:8])  # user nice system [idle iowait] irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def busy_elsewhere(window_s: float = 0.25) -> float | None:
    """CPUs' worth of work that other processes (and the hypervisor) ran on this machine over the next ``window_s``
    seconds: the machine's busy time from /proc/stat less this process's own CPU time, over the window. 0 on an
    idle machine, about 2 with two busy processes beside us; None where /proc/stat is not readable (not Linux)."""
    before, own_before, t0 = _proc_busy_s(), time.process_time(), time.perf_counter()
    if before is None:
        return None
    time.sleep(window_s)
    after, own_after, t1 = _proc_busy_s(), time.process_time(), time.perf_counter()
    if after is None:
        return None
    return max(0.0, (after - before) - (own_after - own_before)) / max(t1 - t0, 1e-9)


def contention_note(threads: int | None = None, *, window_s: float = 0.25) -> str | None:
    """A one-line warning when other work leaves this machine fewer free CPUs than ``threads`` (default: every
    CPU) need, so that timings taken now would be slower and noisier than on a quiet machine (an OpenMP thread
    pool whose thread is preempted waits at every barrier: ten to a hundred times a kernel's time); None on a
    machine quiet enough, or where the load cannot be read."""
    cpus = os.cpu_count() or 1
    want = min(threads or cpus, cpus)
    other = busy_elsewhere(window_s)
    if other is None or other < 0.25 or cpus - other >= want - 0.25:
        return None
    return (f"other processes kept {other:.1f} of this machine's {cpus} CPUs busy just now, fewer free than timing at "
            f"{want} thread{'s' if want > 1 else ''} needs: measurements will be slower and noisier than on a quiet "
            "machine (stop the other work, time at fewer --threads, or set OMP_WAIT_POLICY=PASSIVE)")


# ---------------------------------------------------------------- latency


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int | None]:
    """Set torch's intra-op thread count for the block and restore it afterwards.

    Yields the thread count in effect, or None when threads is None and torch is not loaded.
    """
    if threads is None:
        torch = sys.modules.get("torch")
        yield torch.get_num_threads() if torch is not None else None
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise MeasurementError(f"threads must be a positive integer or None, got {threads!r}")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _check_protocol(warmup: int, min_repeats: int, max_repeats: int, target_ci: float, time_cap_s: float) -> None:
    if not isinstance(warmup, int) or warmup < 0:
        raise MeasurementError(f"warmup must be an integer >= 0, got {warmup!r}")
    if not isinstance(min_repeats, int) or min_repeats < 1:
        raise MeasurementError(f"min_repeats must be an integer >= 1, got {min_repeats!r}")
    if not isinstance(max_repeats, int) or max_repeats < min_repeats:
        raise MeasurementError(f"max_repeats must be an integer >= min_repeats ({min_repeats}), got {max_repeats!r}")
    if not (isinstance(target_ci, (int, float)) and target_ci > 0):
        raise MeasurementError(f"target_ci must be a number > 0, got {target_ci!r}")
    if not (isinstance(time_cap_s, (int, float)) and time_cap_s > 0):
        raise MeasurementError(f"time_cap_s must be a number > 0 (seconds), got {time_cap_s!r}")


@contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _time_once(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e6


def _converged(samples: list[float], target_ci: float) -> bool:
    xs = sorted(samples)
    return _ci95_rel(xs, statistics.median(xs)) <= target_ci


def measure_latency(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    min_repeats: int = 5,
    max_repeats: int = 200,
    target_ci: float = 0.02,
    time_cap_s: float = 2.0,
    threads: int | None = None,
) -> LatencyStats:
    """Time fn() until the 95% CI of the median is within target_ci (relative) or a cap is hit.

    The time cap covers the timed phase only; min_repeats calls are always made.
    threads, if given, sets torch's intra-op threads for the duration (restored afterwards).
    """
    if not callable(fn):
        raise MeasurementError(f"measure_latency: fn must be a zero-argument callable, got {type(fn).__name__}")
    _check_protocol(warmup, min_repeats, max_repeats, target_ci, time_cap_s)
    with torch_threads(threads) as used, _gc_paused():
        for _ in range(warmup):
            fn()
        samples: list[float] = []
        deadline = time.perf_counter() + time_cap_s
        while len(samples) < max_repeats:
            samples.append(_time_once(fn))
            n = len(samples)
            if n < min_repeats:
                continue
            # checking is O(n log n); past 50 samples check every 5th to keep overhead negligible
            if (n <= 50 or n % 5 == 0) and _converged(samples, target_ci):
                break
            if time.perf_counter() >= deadline:
                break
    return latency_stats(samples, target_ci=target_ci, threads=used, warmup=warmup)


def measure_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    *,
    warmup: int = 3,
    min_repeats: int = 5,
    max_repeats: int = 200,
    target_ci: float = 0.02,
    time_cap_s: float = 2.0,
    threads: int | None = None,
    seed: int = 0,
    settle_s: float = 0.0,
    block: int = 1,
    block_warmup: int = 0,
    lockstep: bool = False,
    block_warmup_s: float = 0.0,
) -> dict[str, LatencyStats]:
    """Measure several candidates round-robin, in a freshly shuffled (seeded) order each round.

    Machine drift then spreads over all candidates instead of biasing one. A candidate leaves
    the rotation once it has min_repeats samples and a CI within target_ci, or max_repeats.
    The time cap is per candidate: the whole call stops after time_cap_s * len(fns) seconds.
    ``settle_s`` seconds of sleep precede each timed call, so that thread pools which spin after a
    run (ONNX Runtime's, OpenMP's) have gone idle and do not take cores from the next candidate.
    ``block`` > 1 makes each turn ``block_warmup`` untimed calls and then ``block`` timed calls back to back:
    steady-state latency (thread pools awake, weights in cache, as a deployed model runs), still spread
    over the rounds. Use it when candidates come from different runtimes, whose thread pools sleep and
    wake differently: a single call after another runtime's turn measures the wake-up, not the model.
    ``block_warmup_s`` > 0 goes on with untimed calls until that many seconds of the turn have passed, so that a
    short candidate (a millisecond per call) gets as much warm-up time as a long one, not just as many calls.
    ``lockstep`` keeps every candidate in the rotation until all have met the target (or max_repeats), so that
    all samples come from the same rounds: use it when the medians are compared with each other (choosing the
    fastest plan), where a candidate that left early would be timed in other minutes than the rest.
    """
    if not fns:
        raise MeasurementError("measure_interleaved: fns must hold at least one named callable, got none")
    for name, fn in fns.items():
        if not callable(fn):
            raise MeasurementError(f"measure_interleaved: fns[{name!r}] must be a zero-argument callable")
    _check_protocol(warmup, min_repeats, max_repeats, target_ci, time_cap_s)
    if not settle_s >= 0:
        raise MeasurementError(f"measure_interleaved: settle_s must be >= 0 seconds, got {settle_s!r}")
    if not isinstance(block, int) or isinstance(block, bool) or block < 1:
        raise MeasurementError(f"measure_interleaved: block must be an integer >= 1, got {block!r}")
    if not isinstance(block_warmup, int) or isinstance(block_warmup, bool) or block_warmup < 0:
        raise MeasurementError(f"measure_interleaved: block_warmup must be an integer >= 0, got {block_warmup!r}")
    if not block_warmup_s >= 0:
        raise MeasurementError(f"measure_interleaved: block_warmup_s must be >= 0 seconds, got {block_warmup_s!r}")
    rng = random.Random(seed)
    names = list(fns)
    samples: dict[str, list[float]] = {k: [] for k in names}
    with torch_threads(threads) as used, _gc_paused():
        for _ in range(warmup):
            for k in names:
                fns[k]()
        active = list(names)
        deadline = time.perf_counter() + time_cap_s * len(names)
        while active:
            rng.shuffle(active)
            for k in active:
                if settle_s:
                    time.sleep(settle_s)
                turn = time.perf_counter()
                for _ in range(block_warmup):
                    fns[k]()
                while time.perf_counter() - turn < block_warmup_s:
                    fns[k]()
                for _ in range(min(block, max_repeats - len(samples[k]))):
                    samples[k].append(_time_once(fns[k]))
            still = []
            for k in active:
                n = len(samples[k])
                if n >= max_repeats or (n >= min_repeats and _converged(samples[k], target_ci)):
                    continue
                still.append(k)
            if lockstep and still:  # nobody leaves before everybody is done (but for max_repeats)
                still = [k for k in active if len(samples[k]) < max_repeats]
            active = still
            if active and time.perf_counter() >= deadline and all(len(samples[k]) >= min_repeats for k in active):
                break
    return {k: latency_stats(samples[k], target_ci=target_ci, threads=used, warmup=warmup) for k in names}


def noise_floor(pairs: Iterable[tuple[float, float]]) -> dict[str, float | int]:
    """Agreement of repeated medians: pairs of (first, second) for the same records.

    Relative difference is |second - first| / first. Returns n, within_5pct and within_10pct
    (shares in [0, 1]) and median_rel_diff: how well a second measurement scores against the first.

    Also what a predictor that knew each record's true latency would score against the stored (first)
    figures: ``truth_within_5pct``, ``truth_within_10pct`` and ``truth_mape`` (a share; 0.05 = 5%). If each
    measurement is the truth times an independent, identically and symmetrically distributed factor, the log of one
    factor is distributed as the pair's log ratio divided by sqrt(2) (exactly so for log-normal noise), so the
    stored figure misses the truth by ``|exp(log(second / first) / sqrt(2)) - 1|``. An estimate under that
    assumption, not a bound: the best score the measurements let any predictor show. Shares, median and means
    are NaN when there are no pairs.
    """
    rel, truth = [], []
    for i, (a, b) in enumerate(pairs):
        a, b = float(a), float(b)
        if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
            raise MeasurementError(f"noise_floor: pair {i} must hold two positive finite medians, got ({a}, {b})")
        rel.append(abs(b - a) / a)
        truth.append(abs(math.expm1(math.log(b / a) / math.sqrt(2.0))))
    n = len(rel)
    if n == 0:
        return {"n": 0, "within_5pct": math.nan, "within_10pct": math.nan, "median_rel_diff": math.nan,
                "truth_within_5pct": math.nan, "truth_within_10pct": math.nan, "truth_mape": math.nan}
    eps = 1e-12  # a pair 1.1 ** sqrt(2) apart stands for an error of 0.1, up to rounding
    return {
        "n": n,
        "within_5pct": sum(r <= 0.05 for r in rel) / n,
        "within_10pct": sum(r <= 0.10 for r in rel) / n,
        "median_rel_diff": statistics.median(rel),
        "truth_within_5pct": sum(t <= 0.05 + eps for t in truth) / n,
        "truth_within_10pct": sum(t <= 0.10 + eps for t in truth) / n,
        "truth_mape": sum(truth) / n,
    }


# ---------------------------------------------------------------- peak memory


def _resolve(path: str) -> Callable[..., Any]:
    """Import "package.module:function" and return the function."""
    import importlib

    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise MeasurementError(f"callable path must look like 'package.module:function', got {path!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise MeasurementError(f"{path!r} names a {type(obj).__name__}, not a callable")
    return obj


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise MeasurementError(f"/proc/self/status has no {field} line; peak memory needs Linux procfs")


def _reset_hwm() -> bool:
    """Reset this process's VmHWM to its current RSS; True if the kernel honoured it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    # after a reset the high-water mark sits at (about) the current resident set
    return _status_kb("VmHWM") <= _status_kb("VmRSS") + 1024


def _peak_child(spec_path: str) -> None:
    """Entry point of the measuring subprocess (python -m perfpredict.measure SPEC OUT)."""
    with open(spec_path) as f:
        spec = json.load(f)
    out_path = spec["out"]
    payload = spec["payload"]
    work = _resolve(spec["callable"])
    if spec.get("setup"):
        prepared = _resolve(spec["setup"])(payload)
        if prepared is not None:
            payload = prepared
    gc.collect()
    method = "clear_refs" if _reset_hwm() else "baseline-subtraction"
    base_kb = _status_kb("VmRSS")
    t0 = time.perf_counter()
    result = work(payload)
    wall = time.perf_counter() - t0
    hwm_kb = _status_kb("VmHWM")
    try:
        json.dumps(result)
    except (TypeError, ValueError):
        result = None
    with open(out_path, "w") as f:
        json.dump(
            {
                "peak_bytes": max(0, hwm_kb - base_kb) * 1024,
                "baseline_bytes": base_kb * 1024,
                "hwm_bytes": hwm_kb * 1024,
                "method": method,
                "wall_s": wall,
                "result": result,
            },
            f,
        )


def peak_memory_of(
    callable_path: str,
    payload: Any = None,
    *,
    setup_path: str | None = None,
    threads: int | None = None,
    timeout_s: float = 600.0,
    python: str | None = None,
) -> PeakMemory:
    """Run callable_path(payload) once in a fresh subprocess and return its peak memory.

    callable_path is "package.module:function", importable in the child; payload must be
    JSON-serialisable. setup_path (same form), if given, runs first as setup(payload); its
    memory counts in the baseline, and a non-None return value replaces the payload handed to
    the workload (e.g. build the plan in setup, run it once in the workload). The child
    inherits the working directory and environment (PYTHONPATH included); threads sets
    OMP_NUM_THREADS / MKL_NUM_THREADS there. See the module docstring for the method.
    """
    if not isinstance(callable_path, str):
        raise MeasurementError(f"callable_path must be a 'package.module:function' string, got {callable_path!r}")
    for label, p in (("callable_path", callable_path), ("setup_path", setup_path)):
        if p is not None and (":" not in p or p.startswith(":") or p.endswith(":")):
            raise MeasurementError(f"{label} must look like 'package.module:function', got {p!r}")
    try:
        payload_text = json.dumps(payload)
    except (TypeError, ValueError) as exc:
        raise MeasurementError(f"peak_memory_of: payload must be JSON-serialisable ({exc})") from None
    env = dict(os.environ)
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise MeasurementError(f"threads must be a positive integer or None, got {threads!r}")
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory(prefix="perfpredict-mem-") as tmp:
        spec_path = os.path.join(tmp, "spec.json")
        out_path = os.path.join(tmp, "out.json")
        with open(spec_path, "w") as f:
            f.write(f'{{"callable": {json.dumps(callable_path)}, "setup": {json.dumps(setup_path)}, '
                    f'"out": {json.dumps(out_path)}, "payload": {payload_text}}}')
        cmd = [python or sys.executable, "-m", "perfpredict.measure", spec_path]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise MeasurementError(f"peak_memory_of: {callable_path} did not finish within {timeout_s} s") from None
        if proc.returncode != 0 or not os.path.exists(out_path):
            lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
            last = lines[-1].strip() if lines else f"exit status {proc.returncode}"
            raise MeasurementError(f"peak_memory_of: workload {callable_path} failed in its subprocess: {last}")
        with open(out_path) as f:
            d = json.load(f)
    return PeakMemory(**d)


def allocated_peak_of(fn: Callable[[], Any]) -> int:
    """Peak rise (bytes) of the memory held through torch's CPU allocator while ``fn()`` runs in this process.

    Reads torch.profiler's allocation events (``profile_memory=True``): each reports the allocator's running
    total after it, so the peak is the largest total minus the total before the first event. 0 when ``fn``
    allocates nothing through torch. Raises :class:`MeasurementError` if ``fn`` raises.
    """
    os.environ.setdefault("KINETO_LOG_LEVEL", "99")  # the profiler otherwise logs its start and stop to stderr
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    except Exception as exc:  # noqa: BLE001 - reported as a measurement failure
        raise MeasurementError(f"allocated_peak_of: the workload failed: {type(exc).__name__}: {exc}") from exc
    events: list[tuple[int, int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        if e.tag == _EventType.Allocation and e.extra_fields.device.type == "cpu":
            f = e.extra_fields
            events.append((e.start_time_ns, int(f.total_allocated), int(f.alloc_size)))
        stack.extend(e.children)
    if not events:
        return 0
    events.sort()
    start = events[0][1] - events[0][2]
    return max(0, max(total for _, total, _ in events) - start)


if __name__ == "__main__":
    _peak_child(sys.argv[1])
