"""int8 calibration: activation ranges from fp32 runs, quantisation parameters, and accuracy of a plan.

:func:`calibrate` runs the fp32 version of the graph (the plan's pruning applied, every node at its
default fp32 primitive, nothing fused, so every tensor is materialised) on calibration inputs and
records each tensor's range: its min/max (``method="minmax"``, the default) or, per input, the
``percentile`` and ``100 - percentile`` percentiles averaged over inputs (``method="percentile"``,
which clips outliers). :meth:`Calibration.qparams` turns a range into quint8 parameters with the int8
primitives' :func:`~perfpredict.primitives.quantized.choose_qparams`.

The default inputs are a few seeded standard-normal arrays of the graph's input shape; pass real images
for representative ranges. A calibration is made for one pruning of a graph (ranges of a differently
pruned graph are only approximately right).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from perfpredict.errors import PlanError
from perfpredict.graph import Graph
from perfpredict.plan import Choice, Plan, default_choice
from perfpredict.runtime.kernel import QParams

METHODS = ("minmax", "percentile")
DEFAULT_INPUTS = 4


@dataclass(frozen=True)
class Calibration:
    """Per-tensor activation ranges (tensor name -> (min, max)) and how they were taken."""

    ranges: Mapping[str, tuple[float, float]]
    method: str = "minmax"
    n_inputs: int = 0
    _cache: dict[str, QParams] = field(default_factory=dict, repr=False, compare=False)

    def qparams(self, tensor: str) -> QParams:
        """quint8 parameters of ``tensor``'s range; a :class:`PlanError` if it was not calibrated."""
        qp = self._cache.get(tensor)
        if qp is None:
            from perfpredict.primitives.quantized import choose_qparams

            if tensor not in self.ranges:
                raise PlanError(f"calibration has no range for tensor '{tensor}'; calibrate on the same graph "
                                "(and pruning) as the plan")
            lo, hi = self.ranges[tensor]
            qp = choose_qparams(float(lo), float(hi))
            self._cache[tensor] = qp
        return qp


def calibration_inputs(graph: Graph, n: int = DEFAULT_INPUTS, seed: int = 0) -> list[tuple[np.ndarray, ...]]:
    """``n`` seeded standard-normal inputs (one array per graph input) of the graph's input shapes."""
    rng = np.random.default_rng(seed)
    shapes = [tuple(graph.tensor_shapes[t]) for t in graph.inputs]
    return [tuple(rng.standard_normal(s, dtype=np.float32) for s in shapes) for _ in range(n)]


def _as_samples(graph: Graph, inputs: Any) -> list[tuple[Any, ...]]:
    if inputs is None:
        return calibration_inputs(graph)
    shape = tuple(graph.tensor_shapes[graph.inputs[0]])
    if isinstance(inputs, (np.ndarray, torch.Tensor)):
        arr = inputs
        if tuple(arr.shape) == shape:
            return [(arr,)]
        if arr.ndim == len(shape) + 1 and tuple(arr.shape[1:]) == shape:
            return [(a,) for a in arr]
        if arr.ndim == len(shape) and tuple(arr.shape[1:]) == shape[1:] and shape[0] == 1:
            return [(a[None],) for a in arr]
        raise PlanError(f"calibration inputs of shape {list(arr.shape)} do not fit graph input shape {list(shape)}; "
                        "pass arrays of that shape, a stack of them, or a batch of single images")
    samples = [tuple(s) if isinstance(s, (tuple, list)) else (s,) for s in inputs]
    if not samples:
        raise PlanError("calibration needs at least one input array, got none")
    return samples


def _fp32_plan(graph: Graph, plan: Plan | None) -> Plan:
    """Every node at its default fp32 choice, with ``plan``'s prune ratios."""
    choices = {}
    for node in graph.nodes:
        c = plan.choice(node) if plan is not None else None
        d = default_choice(node)
        choices[node.name] = Choice(d.primitive, d.layout, "fp32", c.prune if c is not None else 0.0)
    return Plan(choices, "calibration")


def calibrate(graph: Graph, plan: Plan | None = None, inputs: Any = None, *, method: str = "minmax",
              percentile: float = 99.99) -> Calibration:
    """Activation ranges of every tensor of ``graph`` (pruned as ``plan`` says) over calibration inputs.

    ``inputs``: None (seeded random normal inputs), one array of the input shape, a stack of them, or
    a sequence of arrays. ``method``: "minmax" or "percentile" (with ``percentile``, e.g. 99.99).
    """
    from perfpredict.runtime.executor import build_executable

    if method not in METHODS:
        raise PlanError(f"calibration method '{method}' is unknown; accepted: {', '.join(METHODS)}")
    if method == "percentile" and not 50.0 < percentile <= 100.0:
        raise PlanError(f"calibration percentile must be in (50, 100], got {percentile}")
    exe = build_executable(graph, _fp32_plan(graph, plan), fuse=False)
    samples = _as_samples(graph, inputs)
    lows: dict[str, list[float]] = {}
    highs: dict[str, list[float]] = {}
    for sample in samples:
        for name, value in exe.trace(*sample).items():
            if not value.is_floating_point():
                continue
            if method == "minmax":
                lo, hi = float(value.min()), float(value.max())
            else:
                flat = value.detach().reshape(-1).numpy()
                lo, hi = (float(v) for v in np.percentile(flat, [100.0 - percentile, percentile]))
            lows.setdefault(name, []).append(lo)
            highs.setdefault(name, []).append(hi)
    if method == "minmax":
        ranges = {t: (min(lows[t]), max(highs[t])) for t in lows}
    else:
        ranges = {t: (float(np.mean(lows[t])), float(np.mean(highs[t]))) for t in lows}
    return Calibration(ranges, method, len(samples))


def max_rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    """max |a - ref| divided by max |ref| (the absolute error when ``ref`` is all zeros)."""
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if a.shape != ref.shape:
        raise ValueError(f"cannot compare outputs of shapes {a.shape} and {ref.shape}")
    err = float(np.max(np.abs(a - ref))) if a.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return err / scale if scale > 0 else err


def compare_outputs(a: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """How far output ``a`` (e.g. int8) is from ``ref`` (fp32): top1_agreement, sqnr_db, max_rel_err.

    ``top1_agreement`` is the share of rows (axis 0) whose argmax over the rest agrees; ``sqnr_db`` is
    10 log10(sum ref^2 / sum (a - ref)^2) (inf when equal).
    """
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    rel = max_rel_err(a, ref)
    rows_a = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)
    rows_r = ref.reshape(ref.shape[0], -1) if ref.ndim > 1 else ref.reshape(1, -1)
    top1 = float(np.mean(rows_a.argmax(axis=1) == rows_r.argmax(axis=1)))
    noise = float(np.sum((a - ref) ** 2))
    signal = float(np.sum(ref ** 2))
    sqnr = float("inf") if noise == 0 else (10.0 * np.log10(signal / noise) if signal > 0 else float("-inf"))
    return {"top1_agreement": top1, "sqnr_db": sqnr, "max_rel_err": rel}


__all__ = ["Calibration", "calibrate", "calibration_inputs", "compare_outputs", "max_rel_err", "METHODS"]
