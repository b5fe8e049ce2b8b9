"""Measured latency and peak memory of a graph under a plan, with :mod:`perfpredict.measure`'s protocol.

Latency: the executable is built once, its input prepared once, and ``Executable.forward`` is timed by
:func:`perfpredict.measure.measure_latency` (warm-up, repeats until the median's 95% CI is tight enough,
torch threads set for the duration).

Peak memory, two methods. :class:`MemoryMeasurement` reports the run's peak, the deployed weight bytes (exact
sizes of the deployed parameters, :func:`perfpredict.runtime.memory.weight_bytes`) and their sum as
``peak_bytes``, the measured counterpart of :class:`~perfpredict.runtime.memory.MemoryEstimate.total`.

* ``"allocator"`` (the default): the executable is built and run once in this process, then one more forward
  pass runs under :func:`perfpredict.measure.allocated_peak_of`: the peak of the bytes held through torch's
  allocator above what was held before the pass (activations, workspaces, oneDNN scratchpads; not the input,
  which is the caller's buffer, prepared before). Exact and repeatable to the byte, so a predictor can be
  scored against it without measurement noise.
* ``"rss"``: :func:`perfpredict.measure.peak_memory_of` runs one inference in a fresh subprocess. Its setup
  loads the graph, builds the executable (weights prepacked) and prepares the input, which all count in the
  baseline; it also makes glibc serve every allocation above 64 KiB with mmap, so freed tensors leave the
  resident set at once and the high-water mark follows live memory. It also sees memory outside torch's
  allocator, but follows the C allocator's caching and page faults: re-measuring gives a few percent
  different figures (median 4% on the Xeon store, more for small models). Recent kernels keep the
  resident-set counters per CPU and read them approximately, so a run peak of a megabyte or two can read
  several times too low; use ``"allocator"`` for small workloads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pickle
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from perfpredict.errors import MeasurementError
from perfpredict.graph import Graph
from perfpredict.measure import LatencyStats, allocated_peak_of, measure_interleaved, measure_latency, peak_memory_of
from perfpredict.plan import Plan

MEMORY_METHODS = ("allocator", "rss")
"""Accepted ``method`` values of :func:`measure_memory` (see the module docstring)."""

_MMAP_THRESHOLD = 64 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@dataclass(frozen=True)
class MemoryMeasurement:
    """Measured peak memory of one inference (bytes): ``peak_bytes = weight_bytes + run_peak_bytes``.

    ``method`` is ``"allocator"`` or, for the resident-set method, ``"clear_refs"`` / ``"baseline-subtraction"``.
    """

    peak_bytes: int
    weight_bytes: int
    run_peak_bytes: int
    method: str


def _input_for(graph: Graph, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(tuple(graph.tensor_shapes[t]), dtype=np.float32) for t in graph.inputs)


def measure_plan_beside(graph: Graph, plan: Plan | None, beside: Mapping[str, Callable[[], Any]], *,
                        threads: int | None = None, warmup: int = 3, min_repeats: int = 5, max_repeats: int = 200,
                        target_ci: float = 0.02, time_cap_s: float = 2.0, seed: int = 0) -> dict[str, LatencyStats]:
    """Latency of ``graph`` under ``plan`` timed round-robin with the workloads of ``beside``
    (:func:`perfpredict.measure.measure_interleaved`, so a drift of the machine's speed reaches all of them alike):
    the plan's :class:`LatencyStats` under ``"plan"``, each other workload's under its name."""
    from perfpredict.runtime.executor import build_executable

    if "plan" in beside:
        raise MeasurementError("measure_plan_beside: 'plan' names the plan itself; give the other workloads "
                               "other names")
    exe = build_executable(graph, plan, threads=threads)
    xs = exe.prepare_input(*_input_for(graph, seed))
    return measure_interleaved({"plan": lambda: exe.forward(*xs), **beside}, warmup=warmup, min_repeats=min_repeats,
                               max_repeats=max_repeats, target_ci=target_ci, time_cap_s=time_cap_s, threads=threads,
                               seed=seed)


def measure_plan(graph: Graph, plan: Plan | None = None, *, threads: int | None = None, memory: bool = True,
                 warmup: int = 3, min_repeats: int = 5, max_repeats: int = 200, target_ci: float = 0.02,
                 time_cap_s: float = 2.0, seed: int = 0, calibration: Any = None,
                 memory_timeout_s: float = 600.0, memory_method: str = "allocator"
                 ) -> tuple[LatencyStats, MemoryMeasurement | None]:
    """Latency of ``graph`` under ``plan`` and (when ``memory``) its measured peak memory (``memory_method``, see
    :func:`measure_memory`).

    ``threads`` is torch's intra-op thread count for both; the input is seeded standard-normal data.
    Raises :class:`PlanError` for an illegal plan and :class:`MeasurementError` when a measurement fails.
    """
    from perfpredict.runtime.executor import build_executable

    exe = build_executable(graph, plan, threads=threads, calibration=calibration)
    xs = exe.prepare_input(*_input_for(graph, seed))
    # the executable sets its threads itself; measure_latency records (and also sets) the same count
    stats = measure_latency(lambda: exe.forward(*xs), warmup=warmup, min_repeats=min_repeats,
                            max_repeats=max_repeats, target_ci=target_ci, time_cap_s=time_cap_s, threads=threads)
    if not memory:
        return stats, None
    if memory_method == "allocator":
        return stats, allocated_memory(exe, xs)
    return stats, measure_memory(graph, exe.plan, threads=threads, seed=seed, calibration=exe.calibration,
                                 timeout_s=memory_timeout_s, method=memory_method)


def allocated_memory(exe: Any, xs: tuple[Any, ...]) -> MemoryMeasurement:
    """The ``"allocator"`` measurement of a built :class:`~perfpredict.runtime.executor.Executable` on prepared
    inputs ``xs``: one forward pass first (first-run caches), then the peak of a second one."""
    import torch

    from perfpredict.runtime.memory import weight_bytes

    with torch.inference_mode():
        exe.forward(*xs)
        run_peak = allocated_peak_of(lambda: exe.forward(*xs))
    weights = weight_bytes(exe.graph, dict(exe.plan.choices))
    return MemoryMeasurement(weights + run_peak, weights, run_peak, "allocator")


def measure_memory(graph: Graph, plan: Plan | None = None, *, threads: int | None = None, seed: int = 0,
                   calibration: Any = None, timeout_s: float = 600.0, method: str = "allocator") -> MemoryMeasurement:
    """Measured peak memory of one inference of ``graph`` under ``plan`` by ``method`` (one of
    :data:`MEMORY_METHODS`, see the module docstring). ``timeout_s`` bounds the ``"rss"`` subprocess."""
    from perfpredict.errors import MeasurementError
    from perfpredict.runtime.executor import build_executable, resolve_plan
    from perfpredict.runtime.memory import weight_bytes
    from perfpredict.runtime.pruning import prune_graph

    if method not in MEMORY_METHODS:
        raise MeasurementError(f"memory method '{method}' is not known; accepted: {', '.join(MEMORY_METHODS)}")
    if method == "allocator":
        exe = build_executable(graph, plan, threads=threads, calibration=calibration)
        return allocated_memory(exe, exe.prepare_input(*_input_for(graph, seed)))
    resolved = resolve_plan(graph, plan)
    choices = dict(resolved.choices)
    ratios = {n: c.prune for n, c in choices.items() if c.prune > 0}
    run_graph = prune_graph(graph, ratios).graph if ratios else graph
    fd, path = tempfile.mkstemp(prefix="perfpredict-graph-", suffix=".pkl")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump({"graph": graph, "plan": resolved.to_dict(), "threads": threads, "seed": seed,
                         "calibration": calibration}, f, protocol=pickle.HIGHEST_PROTOCOL)
        peak = peak_memory_of(f"{__name__}:_memory_workload", {"path": path},
                              setup_path=f"{__name__}:_memory_setup", threads=threads, timeout_s=timeout_s)
    finally:
        os.unlink(path)
    weights = weight_bytes(run_graph, choices)
    return MemoryMeasurement(weights + peak.peak_bytes, weights, peak.peak_bytes, peak.method)


def _limit_malloc_caching() -> None:
    """Serve allocations above 64 KiB with mmap (returned at free), so RSS follows live memory (glibc only)."""
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _MMAP_THRESHOLD)
    except (OSError, AttributeError):
        return


def _memory_setup(payload: dict[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    """Subprocess setup: load the graph, build the executable and its input (counted in the baseline)."""
    from perfpredict.runtime.executor import build_executable

    _limit_malloc_caching()
    with open(payload["path"], "rb") as f:
        spec = pickle.load(f)
    graph = spec["graph"]
    exe = build_executable(graph, Plan.from_dict(spec["plan"]), threads=spec["threads"],
                           calibration=spec["calibration"])
    xs = exe.prepare_input(*_input_for(graph, spec["seed"]))
    exe.forward(*xs)  # one-off costs (JIT-compiled kernels, thread pools, caches) go into the baseline
    return exe, xs


def _memory_workload(prepared: tuple[Any, tuple[Any, ...]]) -> None:
    """Subprocess workload: one forward pass."""
    exe, xs = prepared
    exe.forward(*xs)
