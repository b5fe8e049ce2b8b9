"""Baseline predictors the GNN is compared with (same Predictor interface, same featurisation).

* :class:`FlopsLinearBaseline` -- latency = a_d * effective GFLOPs + b_d per device d (device and thread
  count), fitted on model samples by least squares on relative errors. Effective FLOPs account for
  pruning (features.PlanFeatures). Memory = a * analytical memory estimate + b (pooled).
* :class:`KernelSumBaseline` -- nn-Meter style: a scikit-learn regressor (RandomForest ``"rf"`` or
  GradientBoosting ``"gbm"``, one per kernel class: dense conv, depthwise/grouped conv, fully connected,
  pooling, elementwise, data movement) predicts the log latency of each *kernel* from its node and plan
  features and the device vector; it is trained on layer samples (kernels measured alone). Fusion aware:
  an activation the runtime folds into its Conv/Gemm is not a kernel (its producer's row carries the
  ``has_fused_now`` flag), so conv+relu counts once. A model's latency is the sum over its kernels; kernel
  classes without layer samples fall back to the node's roofline prior. With ``calibrate`` (default) the
  sum is mapped by a_d * sum + b_d per device, fitted on the model samples (nn-Meter has no such step; it
  only makes the baseline stronger). Memory as in the FLOPs baseline.
  It also implements :class:`perfpredict.predictor.NodeCostModel` (via :mod:`perfpredict.additive`).

Unseen devices use the calibration of the nearest trained device (Euclidean distance of the device
vectors without fingerprints). ``save``/``load`` pickle the fitted object (trusted files only).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from perfpredict import __version__
from perfpredict.additive import PairwiseCostsMixin
from perfpredict.devices import DeviceSpec
from perfpredict.errors import PerfPredictError
from perfpredict.features import (DEVICE_COLUMNS, FEATURE_SCHEMA_VERSION, PLAN_COLUMNS, FeatureSpace, GraphTemplate,
                                  PlanFeatures, device_vector, encode_plans, plan_node_features, threads_of)
from perfpredict.graph import Graph
from perfpredict.plan import Plan
from perfpredict.predictor import Prediction, predict_by_graph

BASELINE_FORMAT = "perfpredict-baseline"
_DEVICE_NUMERIC = [i for i, c in enumerate(DEVICE_COLUMNS) if not c.startswith("log_fp_")]
_KERNEL_CLASSES = ("conv", "dwconv", "fc", "pool", "elementwise", "data")
_CLASS_OF_OP = {"Gemm": "fc", "MatMul": "fc", "MaxPool": "pool", "AveragePool": "pool", "GlobalAveragePool": "pool",
                "ReduceMean": "pool", "Relu": "elementwise", "Clip": "elementwise", "Sigmoid": "elementwise",
                "HardSigmoid": "elementwise", "HardSwish": "elementwise", "Mul": "elementwise", "Add": "elementwise",
                "BatchNormalization": "elementwise"}


class BaselineError(PerfPredictError):
    """A baseline that cannot be fitted (no usable samples) or loaded."""


def _plan_col(space: FeatureSpace, name: str) -> int:
    return len(space.primitives) + 1 + PLAN_COLUMNS.index(name)


def _device_key(device: DeviceSpec, threads: int) -> str:
    return f"{device.device_id}:{threads}"


def _fit_affine(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising sum(((a x + b) - y) / y)^2 with a > 0 (falls back to the ratio of means)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & (y > 0)
    x, y = x[ok], y[ok]
    if len(x) == 0:
        return 1.0, 0.0
    if len(x) >= 2 and np.ptp(x) > 0:
        A = np.stack([x / y, 1.0 / y], axis=1)
        (a, b), *_ = np.linalg.lstsq(A, np.ones_like(y), rcond=None)
        if a > 0:
            return float(a), float(b)
    return float(np.sum(y / x * 1.0) / len(x)) if np.all(x > 0) else 1.0, 0.0


class _DeviceCalibrated:
    """Per-device affine maps with nearest-device fallback."""

    def __init__(self) -> None:
        self.maps: dict[str, tuple[float, float]] = {}
        self.vectors: dict[str, np.ndarray] = {}

    def fit(self, keys: list[str], vectors: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> None:
        for k in dict.fromkeys(keys):
            sel = np.array([kk == k for kk in keys])
            self.maps[k] = _fit_affine(x[sel], y[sel])
            self.vectors[k] = vectors[keys.index(k)][_DEVICE_NUMERIC]

    def lookup(self, device: DeviceSpec, threads: int) -> tuple[float, float]:
        key = _device_key(device, threads)
        if key in self.maps:
            return self.maps[key]
        if not self.maps:
            return 1.0, 0.0
        v = device_vector(device, threads)[_DEVICE_NUMERIC]
        near = min(self.vectors, key=lambda k: float(np.sum((self.vectors[k] - v) ** 2)))
        return self.maps[near]


class _BaselineBase:
    """Shared plumbing: featurisation, Predictor.predict over graphs, memory calibration, persistence."""

    kind = "baseline"

    def __init__(self) -> None:
        self.space: FeatureSpace | None = None
        self.memory_map: tuple[float, float] = (1.0, 0.0)
        self.fitted = False

    def _features(self, template: GraphTemplate, plans: Sequence[Any], device: DeviceSpec,
                  threads: int | None) -> PlanFeatures:
        assert self.space is not None
        return plan_node_features(template, encode_plans(template, plans, self.space), self.space, device, threads)

    def _fit_memory(self, samples: Any) -> None:
        xs, ys = [], []
        for group in _groups(samples.models):
            s0 = group[0]
            pf = self._features(s0.template, [s.plan for s in group], s0.device, s0.threads)
            for s, prior in zip(group, pf.memory_prior):
                if s.peak_mem_bytes:
                    xs.append(prior)
                    ys.append(s.peak_mem_bytes)
        self.memory_map = _fit_affine(np.array(xs), np.array(ys))

    def _require_fitted(self) -> None:
        if not self.fitted or self.space is None:
            raise BaselineError(f"{type(self).__name__} is not fitted: call fit(samples) first")

    def predict(self, graphs: Graph | Sequence[Graph], plans: Sequence[Plan], device: DeviceSpec,
                threads: int | None = None) -> Prediction:
        """Predicted latency (ms) and peak memory (bytes) of each (graph, plan) on ``device``."""
        return predict_by_graph(self.predict_plans, graphs, plans, device, threads)

    def predict_plans(self, template: GraphTemplate, plans: Sequence[Plan], device: DeviceSpec,
                      threads: int | None = None) -> Prediction:  # pragma: no cover - overridden
        raise NotImplementedError

    def _memory(self, pf: PlanFeatures) -> np.ndarray:
        a, b = self.memory_map
        return np.maximum(a * pf.memory_prior + b, 1.0)

    def save(self, path: str | Path) -> Path:
        """Pickle the fitted baseline to ``path`` (a directory gets ``baseline.pkl``)."""
        self._require_fitted()
        path = Path(path)
        file = path / "baseline.pkl" if path.suffix != ".pkl" else path
        file.parent.mkdir(parents=True, exist_ok=True)
        with open(file, "wb") as f:
            pickle.dump({"format": BASELINE_FORMAT, "kind": self.kind, "perfpredict_version": __version__,
                         "feature_schema_version": FEATURE_SCHEMA_VERSION, "model": self}, f)
        return file

    @staticmethod
    def load(path: str | Path) -> "_BaselineBase":
        """Load a pickled baseline (checks format and feature schema version)."""
        path = Path(path)
        file = path / "baseline.pkl" if path.is_dir() else path
        try:
            with open(file, "rb") as f:
                payload = pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
            raise BaselineError(f"{file}: not a readable baseline ({type(exc).__name__})") from None
        if not isinstance(payload, dict) or payload.get("format") != BASELINE_FORMAT:
            raise BaselineError(f"{file}: not a perfpredict baseline file")
        if payload.get("feature_schema_version") != FEATURE_SCHEMA_VERSION:
            raise BaselineError(f"{file}: baseline uses feature schema {payload.get('feature_schema_version')}, "
                                f"this perfpredict uses {FEATURE_SCHEMA_VERSION}; refit it")
        return payload["model"]


def _groups(models: Sequence[Any]) -> list[list[Any]]:
    out: dict[tuple[int, str, int], list[Any]] = {}
    for s in models:
        out.setdefault((id(s.template), s.device.to_json(indent=None), s.threads), []).append(s)
    return list(out.values())


class FlopsLinearBaseline(_BaselineBase):
    """Latency linear in effective FLOPs per device; memory linear in the analytical estimate."""

    kind = "flops"

    def __init__(self) -> None:
        super().__init__()
        self.latency_maps = _DeviceCalibrated()

    def _gflops(self, pf: PlanFeatures) -> np.ndarray:
        assert self.space is not None
        return np.expm1(pf.plan[:, :, _plan_col(self.space, "log_eff_flops")].astype(np.float64)).sum(axis=1) / 1e9

    def fit(self, samples: Any) -> "FlopsLinearBaseline":
        """Fit on the model samples of a :class:`perfpredict.samples.SampleSet`."""
        self.space = FeatureSpace.current()
        keys, vecs, xs, ys = [], [], [], []
        for group in _groups(samples.models):
            s0 = group[0]
            pf = self._features(s0.template, [s.plan for s in group], s0.device, s0.threads)
            g = self._gflops(pf)
            for s, x in zip(group, g):
                if s.latency_ms:
                    keys.append(_device_key(s.device, s.threads))
                    vecs.append(device_vector(s.device, s.threads))
                    xs.append(x)
                    ys.append(s.latency_ms)
        if not xs:
            raise BaselineError("FlopsLinearBaseline: no model sample with a latency to fit")
        self.latency_maps.fit(keys, vecs, np.array(xs), np.array(ys))
        self._fit_memory(samples)
        self.fitted = True
        return self

    def predict_plans(self, template: GraphTemplate, plans: Sequence[Plan], device: DeviceSpec,
                      threads: int | None = None) -> Prediction:
        """Batched prediction of many plans of one graph."""
        self._require_fitted()
        t = threads_of(device, threads)
        pf = self._features(template, plans, device, t)
        a, b = self.latency_maps.lookup(device, t)
        return Prediction(np.maximum(a * self._gflops(pf) + b, 1e-6), self._memory(pf))


class KernelSumBaseline(PairwiseCostsMixin, _BaselineBase):
    """nn-Meter-style sum of per-kernel regressors (see the module docstring)."""

    def __init__(self, model: str = "rf", calibrate: bool = True, seed: int = 0, min_rows: int = 30):
        super().__init__()
        if model not in ("rf", "gbm"):
            raise BaselineError(f"unknown kernel regressor '{model}'; accepted: rf, gbm")
        self.model = model
        self.kind = f"kernel-{model}"
        self.calibrate = calibrate
        self.seed = seed
        self.min_rows = min_rows
        self.regressors: dict[str, Any] = {}
        self.latency_maps = _DeviceCalibrated()

    def _limit_threads(self) -> Any:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=1)  # OpenMP oversubscription is very slow on a shared 2-core host

    def _new_regressor(self) -> Any:
        if self.model == "rf":
            from sklearn.ensemble import RandomForestRegressor

            return RandomForestRegressor(n_estimators=120, min_samples_leaf=2, max_features=0.4, n_jobs=1,
                                         random_state=self.seed)
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(max_iter=400, learning_rate=0.08, max_leaf_nodes=31,
                                             l2_regularization=1e-3, random_state=self.seed)

    def _classes(self, template: GraphTemplate) -> np.ndarray:
        from perfpredict.features import STATIC_COLUMNS

        gi = STATIC_COLUMNS.index("log_groups")
        out = []
        for op, groups in zip(template.ops, template.static_raw[:, gi]):
            if op == "Conv":
                out.append("dwconv" if groups > 0 else "conv")
            else:
                out.append(_CLASS_OF_OP.get(op, "data"))
        return np.array(out)

    def _rows(self, pf: PlanFeatures, device: DeviceSpec, threads: int) -> np.ndarray:
        """[P, n, d] kernel feature rows: static + plan columns (no conversion columns) + device numerics."""
        assert self.space is not None
        drop = [_plan_col(self.space, c) for c in ("layout_conversions_in", "precision_conversions_in",
                                                   "log_conversion_bytes", "output_conversion")]
        keep = [j for j in range(pf.plan.shape[2]) if j not in drop]
        P, n, _ = pf.plan.shape
        dev = device_vector(device, threads)[_DEVICE_NUMERIC]
        return np.concatenate([np.broadcast_to(pf.static, (P, n, pf.static.shape[1])), pf.plan[:, :, keep],
                               np.broadcast_to(dev, (P, n, len(dev)))], axis=2)

    def fit(self, samples: Any) -> "KernelSumBaseline":
        """Fit the kernel regressors on layer samples, then the calibration and memory on model samples."""
        self.space = FeatureSpace.current()
        if not samples.layers:
            raise BaselineError(f"{self.kind}: needs layer samples (kind 'layer' records) to fit kernel regressors")
        rows: dict[str, list[np.ndarray]] = {c: [] for c in _KERNEL_CLASSES}
        targets: dict[str, list[float]] = {c: [] for c in _KERNEL_CLASSES}
        fused_col = _plan_col(self.space, "fused_now")
        for group in _groups(samples.layers):
            s0 = group[0]
            pf = self._features(s0.template, [s.choices for s in group], s0.device, s0.threads)
            r = self._rows(pf, s0.device, s0.threads)
            classes = self._classes(s0.template)
            for j, s in enumerate(group):
                kernels = np.flatnonzero(pf.plan[j, :, fused_col] < 0.5)
                if len(kernels) == 0:
                    continue
                k = kernels[0]
                rows[classes[k]].append(r[j, k])
                targets[classes[k]].append(np.log(s.latency_ms))
        self.regressors = {}
        all_rows = [x for c in _KERNEL_CLASSES for x in rows[c]]
        all_y = [y for c in _KERNEL_CLASSES for y in targets[c]]
        with self._limit_threads():
            for c in _KERNEL_CLASSES:
                if len(rows[c]) >= self.min_rows:
                    self.regressors[c] = self._new_regressor().fit(np.stack(rows[c]), np.array(targets[c]))
            if not self.regressors and all_rows:
                reg = self._new_regressor().fit(np.stack(all_rows), np.array(all_y))
                self.regressors = {c: reg for c in _KERNEL_CLASSES if rows[c]}
        self.fitted = True
        if self.calibrate:
            keys, vecs, xs, ys = [], [], [], []
            for group in _groups(samples.models):
                s0 = group[0]
                sums = self.kernel_latencies(s0.template, [s.plan for s in group], s0.device, s0.threads).sum(1)
                for s, x in zip(group, sums):
                    if s.latency_ms:
                        keys.append(_device_key(s.device, s.threads))
                        vecs.append(device_vector(s.device, s.threads))
                        xs.append(x)
                        ys.append(s.latency_ms)
            self.latency_maps.fit(keys, vecs, np.array(xs), np.array(ys))
        self._fit_memory(samples)
        return self

    def kernel_latencies(self, template: GraphTemplate, plans: Sequence[Any], device: DeviceSpec,
                         threads: int | None = None) -> np.ndarray:
        """[P, n] predicted kernel latency (ms) per node; 0 for an activation fused into its producer."""
        assert self.space is not None
        t = threads_of(device, threads)
        pf = self._features(template, plans, device, t)
        out = pf.prior_ms.copy()
        rows = self._rows(pf, device, t)
        classes = self._classes(template)
        with self._limit_threads():
            for c, reg in self.regressors.items():
                cols = np.flatnonzero(classes == c)
                if len(cols):
                    X = rows[:, cols, :].reshape(-1, rows.shape[2])
                    out[:, cols] = np.exp(reg.predict(X)).reshape(len(plans), len(cols))
        out[pf.plan[:, :, _plan_col(self.space, "fused_now")] > 0.5] = 0.0
        return out

    def node_latencies(self, template: GraphTemplate, plans: Sequence[Plan], device: DeviceSpec,
                       threads: int | None = None) -> np.ndarray:
        """[P, n] calibrated per-node latency (ms) whose rows sum to the predicted latency."""
        k = self.kernel_latencies(template, plans, device, threads)
        a, b = self.latency_maps.lookup(device, threads_of(device, threads)) if self.calibrate else (1.0, 0.0)
        return a * k + b / max(template.n_nodes, 1)

    def predict_plans(self, template: GraphTemplate, plans: Sequence[Plan], device: DeviceSpec,
                      threads: int | None = None) -> Prediction:
        """Batched prediction of many plans of one graph."""
        self._require_fitted()
        t = threads_of(device, threads)
        lat = self.node_latencies(template, plans, device, t).sum(axis=1)
        pf = self._features(template, plans, device, t)
        return Prediction(np.maximum(lat, 1e-6), self._memory(pf))


BASELINES = {"flops": FlopsLinearBaseline, "kernel-rf": lambda: KernelSumBaseline("rf"),
             "kernel-gbm": lambda: KernelSumBaseline("gbm")}
"""Baseline kinds by name (trained per split by ``perfpredict evaluate`` and the benchmark)."""


def make_baseline(kind: str) -> Any:
    """A fresh, unfitted baseline of ``kind`` (one of :data:`BASELINES`, or ``"roofline"`` which needs no fit)."""
    if kind == "roofline":
        from perfpredict.analytical import RooflineModel

        return RooflineModel()
    try:
        return BASELINES[kind]()
    except KeyError:
        raise BaselineError(f"unknown baseline '{kind}'; accepted: {', '.join([*BASELINES, 'roofline'])}") from None
