"""A reference workload timed in the same rounds as a model campaign's candidates, to take the machine's drift out
of their latencies.

On a shared VM the speed of the whole machine drifts by several percent within minutes and by tens of percent
between hours (co-tenants, frequency), and that drift is most of a model record's error: re-measuring a record
later disagrees with it far more than two plans timed in the same rounds disagree with each other. Every group of
plans a model campaign times interleaved (:func:`perfpredict.measure.measure_interleaved`) therefore times one more
candidate, the beacon: a fixed model under a fixed plan, the same in every group. A record keeps its own median
as measured and the beacon's median of the same rounds (``extra_json["beacon"]``); the latency target
``"beacon"`` of :func:`perfpredict.samples.load_samples` is then

    median_ms * reference_ms / beacon_ms

with ``reference_ms`` the median beacon time over the store's records of the same device and thread count: the
record's latency as it would be at the store's typical machine speed. :meth:`perfpredict.dataset.Store.noise`
reports the noise floor of that target beside the raw one where re-checks carry a beacon too.

The beacon is ``mobilenet_v2`` at 128 x 128 under its default plan (torch's kernels: a mix of convolutions,
depthwise convolutions and memory-bound elementwise ops, whose cost does not move with this project's dispatch
revisions). :data:`BEACON_ID` names it in every record, so records of another beacon are never normalised
against each other.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

BEACON_MODEL = "mobilenet_v2"
BEACON_RESOLUTION = 128
BEACON_ID = f"{BEACON_MODEL}@{BEACON_RESOLUTION}:default:v1"
"""The beacon's identity as records store it: model, resolution, plan, version of this definition."""

BEACON_KEY = "__beacon__"
"""The beacon's name among the candidates of an interleaved measurement (no record key looks like it)."""


class Beacon:
    """The beacon workload, built lazily once per thread count: ``call(threads)`` is a zero-argument callable that
    runs one forward pass."""

    def __init__(self) -> None:
        self._graph: Any = None
        self._input: Any = None
        self._calls: dict[int, Callable[[], Any]] = {}

    def call(self, threads: int) -> Callable[[], Any]:
        """One forward pass of the beacon at ``threads`` intra-op threads (built on first use)."""
        if threads not in self._calls:
            import numpy as np

            from perfpredict.models import load_model
            from perfpredict.plan import default_plan
            from perfpredict.runtime import build_executable

            if self._graph is None:
                self._graph = load_model(BEACON_MODEL, resolution=BEACON_RESOLUTION)[0]
                self._input = np.random.default_rng(0).standard_normal(self._graph.input_shape).astype(np.float32)
            exe = build_executable(self._graph, default_plan(self._graph), threads=threads)
            xs = exe.prepare_input(self._input)
            self._calls[threads] = lambda exe=exe, xs=xs: exe.forward(*xs)
        return self._calls[threads]


def beacon_extra(stats: Any) -> dict[str, Any]:
    """What a record stores of the beacon timed beside it (``extra_json["beacon"]``), from its
    :class:`~perfpredict.measure.LatencyStats`."""
    ci = stats.ci95_rel if math.isfinite(stats.ci95_rel) else None  # too few repeats for a CI: JSON has no inf
    return {"id": BEACON_ID, "median_ms": stats.median_ms, "ci95_rel": ci, "n_repeats": stats.n_repeats}


def beacon_ms(extra: dict[str, Any]) -> float | None:
    """The beacon's median (ms) stored in a record's extra, or None when the record has none (or another beacon's)."""
    b = extra.get("beacon")
    if not isinstance(b, dict) or b.get("id") != BEACON_ID:
        return None
    ms = b.get("median_ms")
    return float(ms) if isinstance(ms, (int, float)) and ms > 0 else None


def normalised_ms(median_ms: float, beacon: float, reference: float) -> float:
    """``median_ms`` at the reference machine speed: scaled by ``reference / beacon``."""
    return median_ms * reference / beacon


DRIFT_TOLERANCE = 2.5
"""How far (a factor either way) the beacon beside a campaign's first model may run from the store's reference at a
thread count before :func:`drift_problem` calls the machine changed. In ``datasets/xeon2.db`` (the AMX Xeon VM, two
days of campaigns) the beacon beside each model's plans ran at 0.64-2.23x the store's median at one thread."""

SCALING_TOLERANCE = 1.75
"""How far the beacon's two-thread / one-thread time ratio beside a campaign's first model may move from the store's
before :func:`drift_problem` calls the runtime changed. The ratio follows the OpenMP wait policy and the cores free,
not the machine's overall speed: in ``datasets/xeon2.db`` it stayed within 0.69-2.12x of the store's for each
model's plans (2 of 826 models beyond 1.75x), and a run under ``OMP_WAIT_POLICY=PASSIVE``, which no campaign of that
store used, put it at 2.8x (the two-thread beacon at 31 ms, the one-thread at 14)."""


def drift_problem(first: Mapping[int, float], reference: Mapping[int, float], *, tolerance: float = DRIFT_TOLERANCE,
                  scaling_tolerance: float = SCALING_TOLERANCE) -> str | None:
    """Why the beacon times ``first`` (threads -> ms, this campaign's first model at each thread count) say that
    the machine or its runtime is not the one the store's ``reference`` times (threads -> ms,
    :meth:`perfpredict.dataset.Store.beacon_references`) were measured on; None when they agree. Records timed
    under another runtime behaviour (another OpenMP wait policy, a core taken by other work) are not made
    comparable by the beacon, whose own time moves by another factor than theirs."""
    both = sorted(t for t in first if reference.get(t, 0) > 0 and first[t] > 0)
    for lo, hi in zip(both, both[1:]):
        ratio = (first[hi] / first[lo]) / (reference[hi] / reference[lo])
        if not 1 / scaling_tolerance <= ratio <= scaling_tolerance:
            return (f"the beacon's {hi}-thread / {lo}-thread time ratio is {first[hi] / first[lo]:.2f} against the "
                    f"store's {reference[hi] / reference[lo]:.2f} ({ratio:.2f}x; accepted "
                    f"{1 / scaling_tolerance:.2f}-{scaling_tolerance:.2f}x): the runtime's threading differs (is "
                    "OMP_WAIT_POLICY set otherwise than for the store's campaigns, or a core busy?)")
    for t in both:
        ratio = first[t] / reference[t]
        if not 1 / tolerance <= ratio <= tolerance:
            return (f"the beacon runs {ratio:.2f}x the store's reference at {t} thread(s) ({first[t]:.2f} ms against "
                    f"{reference[t]:.2f} ms; accepted {1 / tolerance:.2f}-{tolerance:.2f}x): the machine is busier, "
                    "idler or not the one the store's campaigns ran on")
    return None
