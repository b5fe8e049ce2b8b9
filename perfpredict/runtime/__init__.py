"""The runtime: build an executable from a Graph, a Plan and the ONNX weights, and run it on the CPU.

Public API (imported lazily, so that primitives can import :mod:`perfpredict.runtime.kernel` without
pulling in the executor):

* :func:`build_executable` (graph, plan, threads, calibration) -> :class:`Executable` with ``run``,
  ``prepare_input``/``forward``, ``conversions``, ``fused``, ``plan``, and ``step_times`` (:class:`StepTime`
  per scheduled step; :func:`breakdown` sums them by primitive or conversion, :func:`step_groups` by graph node);
* :func:`calibrate`, :class:`Calibration`, :func:`compare_outputs` (int8 ranges and accuracy);
* :func:`prune_graph`, :func:`prune_groups`, :class:`PruneGroup` (structured pruning);
* :func:`estimate_peak_memory`, :class:`MemoryEstimate` (analytical peak memory);
* :func:`measure_plan` (measured latency and peak memory);
* :func:`ort_session`, :func:`check_against_ort` (comparison with ONNX Runtime).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BuildContext": "kernel", "QParams": "kernel", "Kernel": "kernel",
    "build_executable": "executor", "Executable": "executor", "Conversion": "executor", "Schedule": "executor",
    "make_schedule": "executor", "resolve_plan": "executor", "StepTime": "executor", "breakdown": "executor",
    "step_groups": "executor",
    "calibrate": "calibration", "Calibration": "calibration", "calibration_inputs": "calibration",
    "compare_outputs": "calibration", "max_rel_err": "calibration",
    "prune_graph": "pruning", "prune_groups": "pruning", "PruneGroup": "pruning", "PruneResult": "pruning",
    "unprunable_reasons": "pruning",
    "estimate_peak_memory": "memory", "MemoryEstimate": "memory",
    "measure_plan": "measurement", "MemoryMeasurement": "measurement",
    "ort_session": "reference", "ort_run": "reference", "check_against_ort": "reference",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'perfpredict.runtime' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"perfpredict.runtime.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
