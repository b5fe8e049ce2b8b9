"""Accuracy of plans: measured with the runtime, and an additive per-layer estimate for the search.

Measurement (:class:`AccuracyMeter`). With labelled calibration data (``--calibration data.npz`` holding
``inputs`` and ``labels``) a plan's accuracy is its top-1 accuracy on those inputs, and its drop is the
fp32 default plan's accuracy minus it, in percentage points. Without labels (or without data: seeded
random inputs) the drop is the fidelity loss to the fp32 default plan: the percentage of inputs on which the
plan is *not faithful*, faithful meaning the same top-1 class and an output SQNR (per input) of at least
``FIDELITY_SQNR_DB`` (20 dB, an RMS error of 10% of the fp32 output). Top-1 alone is not enough: networks with
random weights (the zoo's) give the same top-1 for nearly every input, whatever a plan does to the output; the
SQNR bound catches that. The top-1 agreement and the SQNR over all inputs are reported too. int8 plans are
calibrated on the first inputs (per pruning).

Sensitivity (:func:`layer_sensitivity`). Running the model for every trial would dominate the search, so
the drop of a plan is estimated additively from per-layer sensitivities measured once: the drop when only
that Conv/Gemm runs at int8, when only that prune group is pruned at ratio r, and, for the other ops
that can run int8 (elementwise, pooling...), the drop of all of them at int8 together, split equally.
Without labels a single layer rarely changes a top-1 or breaks the SQNR bound on its own, while many
together do, so each sensitivity is at least the layer's :func:`noise_points` (its output-noise power
relative to the bound plus a 3 dB margin; independent noise adds in power): with the default 1-point budget,
the sum then keeps the estimated SQNR of the whole plan 3 dB above the bound. Results are cached in a JSON file keyed by
the graph, the data and the measurement, so a search (or a resumed one) does not re-run the model.
:class:`AdditiveAccuracy` sums the table for a plan; interactions between layers are ignored (the measured
drop of the final plan is reported beside it).

Data file: ``.npz`` with ``inputs`` (N x C x H x W float, or N x 1 x C x H x W) and optional ``labels``
(N integers); ``x``/``y`` are accepted as aliases.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from perfpredict.errors import PerfPredictError
from perfpredict.graph import Graph
from perfpredict.plan import Choice, Plan, default_plan

from optimiser.space import SearchSpace

__all__ = ["CalibrationData", "CalibrationError", "load_calibration", "synthetic_calibration", "digits_data",
           "save_calibration", "AccuracyResult", "FIDELITY_SQNR_DB", "faithful_rows", "noise_points",
           "AccuracyMeter", "Sensitivity", "layer_sensitivity", "accuracy_tables", "AdditiveAccuracy"]


class CalibrationError(PerfPredictError):
    """A calibration data file that is missing, unreadable, or does not fit the model."""


@dataclass(frozen=True, eq=False)
class CalibrationData:
    """Inputs (N single-image arrays of the graph's input shape) and optional integer labels."""

    inputs: np.ndarray
    labels: np.ndarray | None = None
    source: str = "synthetic"

    @property
    def digest(self) -> str:
        """A hash of the data (for the sensitivity cache)."""
        h = hashlib.sha1(np.ascontiguousarray(self.inputs, dtype=np.float32).tobytes())
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.inputs)


def load_calibration(path: str | os.PathLike, graph: Graph, limit: int | None = None) -> CalibrationData:
    """Read ``inputs`` (and ``labels``) from an .npz file and check them against the graph's input shape."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CalibrationError(f"{path}: no such calibration file") from None
    except Exception as exc:  # zipfile / numpy format errors
        raise CalibrationError(f"{path}: not a readable .npz file ({type(exc).__name__}); expected arrays "
                               "'inputs' and optional 'labels'") from None
    keys = set(data.files)
    xkey = "inputs" if "inputs" in keys else ("x" if "x" in keys else None)
    if xkey is None:
        raise CalibrationError(f"{path}: no 'inputs' array (found {sorted(keys)}); expected 'inputs' and optional "
                               "'labels'")
    x = np.asarray(data[xkey], dtype=np.float32)
    shape = tuple(graph.tensor_shapes[graph.inputs[0]])
    if x.ndim == len(shape) and x.shape[1:] == shape[1:]:
        x = x[:, None] if shape[0] == 1 else x[None]
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise CalibrationError(f"{path}: inputs of shape {list(x.shape)} do not fit the model input {list(shape)}; "
                               f"expected N x {' x '.join(str(s) for s in shape[1:])}")
    y = None
    ykey = "labels" if "labels" in keys else ("y" if "y" in keys else None)
    if ykey is not None:
        y = np.asarray(data[ykey]).reshape(-1)
        if len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise CalibrationError(f"{path}: 'labels' must hold {len(x)} integers, got {y.dtype} of length {len(y)}")
    if limit is not None:
        x, y = x[:limit], (y[:limit] if y is not None else None)
    return CalibrationData(x, y, str(path))


def digits_data(resolution: int = 32, train_fraction: float = 0.7, seed: int = 0
                ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's bundled digits (1797 8x8 images, 10 classes, no download) as 3-channel images of
    ``resolution`` x ``resolution`` (nearest upsampling), normalised; ((x_train, y_train), (x_test, y_test))
    with x of shape N x 3 x R x R float32 and y int64, split by a seeded shuffle."""
    from sklearn.datasets import load_digits

    d = load_digits()
    img = d.images.astype(np.float32) / 16.0
    rep = -(-resolution // 8)
    img = np.repeat(np.repeat(img, rep, axis=1), rep, axis=2)[:, :resolution, :resolution]
    x = np.repeat(((img - 0.5) / 0.5)[:, None], 3, axis=1).astype(np.float32)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(train_fraction * len(x))
    tr, te = order[:cut], order[cut:]
    return (x[tr], y[tr]), (x[te], y[te])


def save_calibration(path: str | os.PathLike, inputs: np.ndarray, labels: np.ndarray | None = None) -> Path:
    """Write a calibration .npz (``inputs`` and optional ``labels``) as ``--calibration`` reads it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"inputs": np.asarray(inputs, dtype=np.float32)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels, dtype=np.int64)
    np.savez(path, **arrays)
    return path


def synthetic_calibration(graph: Graph, n: int = 16, seed: int = 0) -> CalibrationData:
    """``n`` seeded standard-normal inputs (no labels): fidelity only."""
    rng = np.random.default_rng(seed)
    shape = tuple(graph.tensor_shapes[graph.inputs[0]])
    return CalibrationData(rng.standard_normal((n, *shape), dtype=np.float32), None, f"synthetic:{n}:{seed}")


@dataclass(frozen=True)
class AccuracyResult:
    """Accuracy of one plan: ``drop_pct`` in points (labelled: accuracy drop; else the percentage of inputs
    that are not faithful), top-1 agreement with fp32, the output SQNR, and the faithful share."""

    drop_pct: float
    top1_agreement: float
    sqnr_db: float
    accuracy_pct: float | None = None
    reference_accuracy_pct: float | None = None
    faithful: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"drop_pct": self.drop_pct, "top1_agreement": self.top1_agreement,
                "faithful": self.faithful, "sqnr_db": self.sqnr_db,
                "accuracy_pct": self.accuracy_pct, "reference_accuracy_pct": self.reference_accuracy_pct}


FIDELITY_SQNR_DB = 20.0
"""Least output SQNR (dB) per input for a plan to count as faithful to fp32 on that input."""


def faithful_rows(out: np.ndarray, ref: np.ndarray, min_sqnr_db: float = FIDELITY_SQNR_DB) -> np.ndarray:
    """Per input (row): same top-1 as ``ref`` and an SQNR of at least ``min_sqnr_db``."""
    noise = np.sum((out - ref) ** 2, axis=1)
    signal = np.sum(ref ** 2, axis=1)
    with np.errstate(divide="ignore"):
        sqnr = np.where(noise > 0, 10.0 * np.log10(np.maximum(signal, 1e-300) / np.maximum(noise, 1e-300)), np.inf)
    return (out.argmax(axis=1) == ref.argmax(axis=1)) & (sqnr >= min_sqnr_db)


NOISE_MARGIN_DB = 3.0
"""Margin of the additive noise estimate over the fidelity bound: the per-layer sum is only an estimate, and
a plan estimated exactly at the bound measured half its inputs below it."""


def noise_points(sqnr_db: float, bound_db: float = FIDELITY_SQNR_DB + NOISE_MARGIN_DB) -> float:
    """A layer's output-noise power relative to the bound plus a margin, in points: 1 point when its SQNR is
    ``bound_db``. Independent noise sources add in power, so a plan whose layers sum to at most 1 point is
    estimated to keep an SQNR of ``bound_db``, the fidelity bound with a 3 dB (2x noise power) margin."""
    if sqnr_db == float("inf"):
        return 0.0
    return float(10.0 ** ((bound_db - sqnr_db) / 10.0))


class AccuracyMeter:
    """Runs plans with the runtime on calibration data and compares them with the fp32 default plan."""

    def __init__(self, graph: Graph, data: CalibrationData, threads: int | None = None, calibration_inputs: int = 8):
        self.graph = graph
        self.data = data
        self.threads = threads
        self.n_calib = max(1, min(calibration_inputs, len(data)))
        self._calibrations: dict[tuple, Any] = {}
        self._reference: np.ndarray | None = None
        self.runs = 0

    def outputs(self, plan: Plan) -> np.ndarray:
        """The plan's outputs on every input, stacked (N x output size)."""
        from perfpredict.runtime import build_executable

        calib = None
        if any(c.precision == "int8" for c in plan.resolve(self.graph).values()):
            calib = self._calibration(plan)
        exe = build_executable(self.graph, plan, threads=self.threads, calibration=calib)
        outs = []
        for x in self.data.inputs:
            y = exe.run(x)
            y = y[0] if isinstance(y, tuple) else y
            outs.append(np.asarray(y, dtype=np.float64).reshape(-1))
        self.runs += 1
        return np.stack(outs)

    def _calibration(self, plan: Plan) -> Any:
        from perfpredict.runtime import calibrate

        key = tuple(sorted((n, c.prune) for n, c in plan.resolve(self.graph).items() if c.prune > 0))
        if key not in self._calibrations:
            self._calibrations[key] = calibrate(self.graph, plan, inputs=list(self.data.inputs[:self.n_calib]))
        return self._calibrations[key]

    @property
    def reference(self) -> np.ndarray:
        """Outputs of the fp32 default plan."""
        if self._reference is None:
            self._reference = self.outputs(default_plan(self.graph))
        return self._reference

    def measure(self, plan: Plan) -> AccuracyResult:
        """Accuracy drop (and fidelity) of ``plan``."""
        from perfpredict.runtime import compare_outputs

        ref = self.reference
        out = self.outputs(plan)
        cmp = compare_outputs(out, ref)
        agree = float(cmp["top1_agreement"])
        faithful = float(np.mean(faithful_rows(out, ref)))
        if self.data.labels is not None:
            acc = 100.0 * float(np.mean(out.argmax(axis=1) == self.data.labels))
            ref_acc = 100.0 * float(np.mean(ref.argmax(axis=1) == self.data.labels))
            return AccuracyResult(ref_acc - acc, agree, float(cmp["sqnr_db"]), acc, ref_acc, faithful)
        return AccuracyResult(100.0 * (1.0 - faithful), agree, float(cmp["sqnr_db"]), faithful=faithful)


# ------------------------------------------------------------------------------------- sensitivity


@dataclass
class Sensitivity:
    """Per-layer accuracy drops (points): ``int8[node]`` and ``prune[group leader][ratio]``."""

    int8: dict[str, float] = field(default_factory=dict)
    prune: dict[str, dict[float, float]] = field(default_factory=dict)
    runs: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"int8": self.int8, "prune": {k: {str(r): v for r, v in d.items()} for k, d in self.prune.items()},
                "runs": self.runs}


def _cache_path(cache_dir: Path, space: SearchSpace, data: CalibrationData) -> Path:
    return cache_dir / f"sensitivity-v4-{space.graph_id}-{data.digest}.json"  # v4: noise points with a 3 dB margin


def layer_sensitivity(space: SearchSpace, meter: AccuracyMeter, cache_dir: str | os.PathLike | None = None,
                      progress: bool = True) -> Sensitivity:
    """Measure (or read from the cache) the per-layer sensitivities the space needs.

    Each measurement is a plan that differs from the default in one layer (int8) or one prune group
    (pruned at a ratio, everything else default); the elementwise/pooling ops that can run int8 are
    measured together. The cache file is updated after every measurement.
    """
    from tqdm import tqdm

    g = space.graph
    path = _cache_path(Path(cache_dir), space, meter.data) if cache_dir is not None else None
    cache: dict[str, float] = {}
    if path is not None and path.is_file():
        try:
            cache = {str(k): float(v) for k, v in json.loads(path.read_text()).get("drops", {}).items()}
        except (ValueError, AttributeError):
            cache = {}
    default = default_plan(g)
    jobs: list[tuple[str, Callable[[], Plan]]] = []
    heavy, light = [], []
    for i, name in enumerate(space.nodes):
        if i in space.tied or not any(c.precision == "int8" for c in space.options[name]):
            continue
        (heavy if g.nodes[i].op in ("Conv", "Gemm", "MatMul") else light).append(i)
    for i in heavy:
        jobs.append((f"int8:{space.nodes[i]}", lambda i=i: _with_int8(space, default, [i])))
    if light:
        jobs.append(("int8:others", lambda: _with_int8(space, default, light)))
    for k, group in enumerate(space.groups):
        for r in space.group_ratios[k]:
            if r > 0:
                jobs.append((f"prune:{group[0]}:{r:g}", lambda group=group, r=r: _with_prune(space, default, group, r)))
    todo = [(key, make) for key, make in jobs if key not in cache]
    runs = 0
    bar = tqdm(total=len(todo), desc="layer sensitivity", unit="run", disable=not progress or not todo, leave=False)
    try:
        for key, make in todo:
            r = meter.measure(make())
            drop = r.drop_pct if meter.data.labels is not None else max(r.drop_pct, noise_points(r.sqnr_db))
            cache[key] = float(max(0.0, drop))
            runs += 1
            bar.update(1)
            if path is not None:
                _write_cache(path, space, meter.data, cache)
    finally:
        bar.close()
    out = Sensitivity(runs=runs)
    for i in heavy:
        out.int8[space.nodes[i]] = cache[f"int8:{space.nodes[i]}"]
    if light:
        share = cache["int8:others"] / len(light)
        for i in light:
            out.int8[space.nodes[i]] = share
    for k, group in enumerate(space.groups):
        out.prune[group[0]] = {r: (cache[f"prune:{group[0]}:{r:g}"] if r > 0 else 0.0) for r in space.group_ratios[k]}
    return out


def _write_cache(path: Path, space: SearchSpace, data: CalibrationData, drops: Mapping[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"graph_id": space.graph_id, "data": data.source, "digest": data.digest,
                               "labelled": data.labels is not None, "drops": dict(drops)}, indent=1))
    tmp.replace(path)


def _with_int8(space: SearchSpace, base: Plan, nodes: list[int]) -> Plan:
    choices = dict(base.choices)
    idx = space.encode(base)
    for i in nodes:
        opts = space.options[space.nodes[i]]
        idx[i] = next(k for k, c in enumerate(opts) if c.precision == "int8" and c.prune == 0.0)
    idx = space.complete(idx)
    for i, name in enumerate(space.nodes):
        choices[name] = space.options[name][idx[i]]
    return Plan(choices, "sensitivity", space.graph_id)


def _with_prune(space: SearchSpace, base: Plan, group: tuple[str, ...], ratio: float) -> Plan:
    choices = dict(base.choices)
    for m in group:
        c = choices[m]
        choices[m] = Choice(c.primitive, c.layout, c.precision, ratio)
    return Plan(choices, "sensitivity", space.graph_id)


def accuracy_tables(space: SearchSpace, sens: Sensitivity) -> list[np.ndarray]:
    """Per node, the additive drop of each option: its int8 sensitivity if int8, plus (for a prune group's
    first member only, so a group counts once) the group's drop at the option's ratio."""
    leaders = {g[0] for g in space.groups}
    out = []
    for name in space.nodes:
        vals = []
        for c in space.options[name]:
            v = sens.int8.get(name, 0.0) if c.precision == "int8" else 0.0
            if name in leaders and c.prune > 0:
                v += sens.prune.get(name, {}).get(c.prune, 0.0)
            vals.append(v)
        out.append(np.array(vals, dtype=float))
    return out


class AdditiveAccuracy:
    """Estimated drop of plans as the sum of their options' per-layer sensitivities."""

    def __init__(self, space: SearchSpace, tables: list[np.ndarray]):
        self.space = space
        self.tables = tables

    def drop(self, indices: np.ndarray) -> np.ndarray:
        """Estimated drop (points) of each row of a (plans x nodes) index matrix."""
        idx = np.atleast_2d(indices)
        total = np.zeros(len(idx))
        for i, t in enumerate(self.tables):
            if len(t) > 1 and t.any():
                total += t[idx[:, i]]
        return total
