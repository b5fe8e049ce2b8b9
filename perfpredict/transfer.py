"""Transfer of latency predictions to hardware never seen in training: zero-shot from device features,
few-shot from k measurements on the new device.

Three families of adaptation, chosen by leave-one-out cross-validation on the target's labelled points
(:func:`select_calibrator`):

(a) *device fitting*: refit the device-specific parameters of a multi-device model (the device weights
    ``u, c`` of :class:`MultiDeviceModel`, HELP-style adaptation of a device embedding) on the target's
    points, in closed form: a few coordinates in the subspace the source devices span, or every weight by
    ridge regression towards the best-matching source device; for the plan-aware GNN, its input device
    features are fine-tuned instead (:func:`fit_board`);
(b) *monotone calibration* of one source prediction (the best-correlated source device): a scale, a
    log-linear map, or isotonic regression in log space with log-linear extrapolation beyond the
    calibration range (rankings largely carry across devices: performance monotonicity);
(c) *mixture*: the target latency as a non-negative combination of the predicted latencies of the source
    devices best correlated with it (chosen by the fingerprint / the labelled points).

What the counts mean. A device's *fingerprint* is part of its description (board.json ``fingerprint``:
latencies of reference workloads measured on it). ``k = 0`` (zero-shot) uses the device description
only, fingerprint included: when the fingerprint's reference workloads are graphs the model can encode
(HELP's 10 reference architectures), they are the labelled points the adaptation fits. ``k`` shots are
k further measurements of workloads chosen for the task, on top of the fingerprint.

The adapted predictor is a normal checkpoint (:class:`CalibratedPredictor`): it loads its source
predictor, applies the fitted calibration and records on its card the source, the measurements, the
chosen method and the cross-validated error. :func:`choose_shots` picks the most informative workloads
to measure (spread over predicted-latency quantiles, diverse within each stratum).

The multi-device graph model (:class:`MultiDeviceModel`, network built by ``_build_net``) is built on
torch_geometric directly: the project's plan-aware :class:`perfpredict.gnn.PerfGNN` conditions on hardware
facts (roofline priors, device vector), whereas HELP's devices are known only by their latency
fingerprints. Here a GNN maps a graph to K latent factors phi(g) and each device d is a weight vector:
``log latency = phi(g) . u_d + c_d`` (a low-rank factorisation of the graph x device log-latency table
whose graph side is a GNN), so a new device is K + 1 numbers fitted from a few points.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Protocol, Sequence

import numpy as np
from scipy.optimize import lsq_linear, nnls
from sklearn.isotonic import IsotonicRegression

from perfpredict import __version__
from perfpredict.devices import DeviceSpec, load_device
from perfpredict.errors import PerfPredictError
from perfpredict.metrics import summarise
from perfpredict.serialise import json_default

if TYPE_CHECKING:
    from perfpredict.graph import Graph


class TransferError(PerfPredictError):
    """Bad input to a transfer: missing device features, too few measurements, unknown devices."""


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(x, np.float64), 1e-9))


def transfer_metrics(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Spearman rho, MAPE (%), share within +-10% (%) and the rest of :func:`perfpredict.metrics.summarise`."""
    return summarise(np.asarray(pred, np.float64), np.asarray(true, np.float64))


# ============================================================================================ calibrators


class Calibrator(Protocol):
    """Maps source predictions (or model features) ``x`` of shape (n, m) to target latencies (ms)."""

    name: ClassVar[str]
    params: ClassVar[int]

    def fit(self, x: np.ndarray, y: np.ndarray) -> "Calibrator":
        """Fit on ``x`` (n, m) and measured target latencies ``y`` (n,) in ms."""
        ...

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Target latencies (ms) for ``x`` (n, m)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``{"method": name, ...}``), read back by :func:`calibrator_from_dict`."""
        ...


CALIBRATORS: dict[str, type] = {}
"""Calibrator classes by method name (extend with :func:`register_calibrator`)."""


def register_calibrator(cls: type) -> type:
    """Class decorator: make a calibrator available by its ``name``."""
    CALIBRATORS[cls.name] = cls
    return cls


def calibrator_from_dict(d: Mapping[str, Any]) -> Calibrator:
    """Rebuild a fitted calibrator from its :meth:`to_dict` form."""
    method = d.get("method")
    if method not in CALIBRATORS:
        raise TransferError(f"unknown calibration method '{method}'; known: {', '.join(sorted(CALIBRATORS))}")
    return CALIBRATORS[method].from_dict(d)


def _col0(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x[:, 0] if x.ndim == 2 else x


@register_calibrator
@dataclass
class ScaleCalibrator:
    """``y = s * x0``: one ratio (the median of y / x0, robust to a noisy shot) on the first column."""

    name: ClassVar[str] = "scale"
    params: ClassVar[int] = 1
    log_scale: float = 0.0

    def fit(self, x: np.ndarray, y: np.ndarray) -> "ScaleCalibrator":
        self.log_scale = float(np.median(_log(y) - _log(_col0(x))))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.exp(_log(_col0(x)) + self.log_scale)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, "log_scale": self.log_scale}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ScaleCalibrator":
        return cls(float(d["log_scale"]))


@register_calibrator
@dataclass
class SplitScaleCalibrator:
    """``y = s0 x0 + s1 x1``: one scale per part of a prediction (e.g. its fp32 and its int8 nodes' latency), s >= 0,
    least squares on relative errors, shrunk towards the common scale (median of y / (x0 + x1)) by ``ridge`` per
    part, so shots without int8 nodes leave that part at the common scale."""

    name: ClassVar[str] = "split_scale"
    params: ClassVar[int] = 2
    scales: tuple[float, ...] = ()
    ridge: float = 0.5

    def fit(self, x: np.ndarray, y: np.ndarray) -> "SplitScaleCalibrator":
        x = np.asarray(x, np.float64).reshape(len(y), -1)
        y = np.asarray(y, np.float64)
        common = float(np.median(y / np.maximum(x.sum(axis=1), 1e-12)))
        r = math.sqrt(self.ridge)
        a = np.r_[x / y[:, None], r * np.eye(x.shape[1]) / common]
        b = np.r_[np.ones(len(y)), r * np.ones(x.shape[1])]
        self.scales = tuple(float(v) for v in nnls(a, b)[0])
        if not any(v > 0 for v in self.scales):
            self.scales = (common,) * x.shape[1]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64).reshape(-1, len(self.scales))
        return x @ np.asarray(self.scales)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, "scales": list(self.scales), "ridge": self.ridge}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SplitScaleCalibrator":
        return cls(tuple(float(v) for v in d["scales"]), float(d.get("ridge", 0.5)))


@register_calibrator
@dataclass
class LogLinearCalibrator:
    """``log y = a + b log x0`` (a power law), slope clipped to [1/4, 4]; a scale with fewer than 3 points."""

    name: ClassVar[str] = "loglinear"
    params: ClassVar[int] = 2
    a: float = 0.0
    b: float = 1.0
    slope_range: ClassVar[tuple[float, float]] = (0.25, 4.0)

    def fit(self, x: np.ndarray, y: np.ndarray) -> "LogLinearCalibrator":
        u, v = _log(_col0(x)), _log(y)
        if len(u) < 3 or np.ptp(u) < 1e-9:
            self.b = 1.0
        else:
            self.b = float(np.clip(np.polyfit(u, v, 1)[0], *self.slope_range))
        self.a = float(np.mean(v - self.b * u))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.exp(self.a + self.b * _log(_col0(x)))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LogLinearCalibrator":
        return cls(float(d["a"]), float(d["b"]))


@register_calibrator
@dataclass
class IsotonicCalibrator:
    """Monotone map of log x0 to log y (isotonic regression), log-linear beyond the calibration range.

    Inside the range of the calibration points the map is the isotonic fit (piecewise linear between
    its points); outside it continues from the end value with the log-linear slope (so it extrapolates
    instead of clipping). Flat stretches of the isotonic fit are tilted by a tiny fraction of the
    log-linear map, so the order of the source predictions survives (no artificial ties).
    """

    name: ClassVar[str] = "isotonic"
    params: ClassVar[int] = 3
    knots_x: tuple[float, ...] = ()
    knots_y: tuple[float, ...] = ()
    slope: float = 1.0
    tie_break: ClassVar[float] = 1e-3

    def fit(self, x: np.ndarray, y: np.ndarray) -> "IsotonicCalibrator":
        u, v = _log(_col0(x)), _log(y)
        lin = LogLinearCalibrator().fit(np.exp(u), np.exp(v))
        self.slope = lin.b
        if len(u) < 2 or np.ptp(u) < 1e-9:
            self.knots_x, self.knots_y = (float(np.mean(u)),), (float(np.mean(v)),)
            return self
        iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(u, v)
        self.knots_x = tuple(float(t) for t in iso.X_thresholds_)
        self.knots_y = tuple(float(t) for t in iso.y_thresholds_)
        return self

    def _log_predict(self, u: np.ndarray) -> np.ndarray:
        kx, ky = np.asarray(self.knots_x), np.asarray(self.knots_y)
        out = np.interp(u, kx, ky)
        lo, hi = u < kx[0], u > kx[-1]
        out[lo] = ky[0] + self.slope * (u[lo] - kx[0])
        out[hi] = ky[-1] + self.slope * (u[hi] - kx[-1])
        return out + self.tie_break * self.slope * (u - kx.mean())

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.exp(self._log_predict(_log(_col0(x))))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, "knots_x": list(self.knots_x), "knots_y": list(self.knots_y),
                "slope": self.slope}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "IsotonicCalibrator":
        return cls(tuple(d["knots_x"]), tuple(d["knots_y"]), float(d["slope"]))


@register_calibrator
@dataclass
class MixtureCalibrator:
    """``y = sum_j w_j x_j + c`` with w, c >= 0, least squares on relative errors (NNLS).

    Columns are the predicted latencies of source devices (or any non-negative cost features); ``c`` is a
    constant per-run overhead in ms. With ``prior`` set, a ridge term pulls w towards it (strength
    ``ridge``, relative to each prior entry), so few points cannot wander far from a sensible solution.
    """

    name: ClassVar[str] = "mixture"
    params: ClassVar[int] = 4
    weights: tuple[float, ...] = ()
    offset: float = 0.0
    prior: tuple[float, ...] | None = None
    ridge: float = 0.0

    def fit(self, x: np.ndarray, y: np.ndarray) -> "MixtureCalibrator":
        x = np.asarray(x, np.float64).reshape(len(y), -1)
        y = np.asarray(y, np.float64)
        a = np.c_[x, np.ones(len(y))] / y[:, None]
        b = np.ones(len(y))
        if self.prior is not None and self.ridge > 0:
            p = np.r_[np.asarray(self.prior, np.float64), 0.0]
            scale = np.where(p > 0, p, 1.0)
            rows = np.diag(math.sqrt(self.ridge) / scale)[: x.shape[1]]
            a = np.r_[a, rows]
            b = np.r_[b, math.sqrt(self.ridge) * (p[: x.shape[1]] / scale[: x.shape[1]])]
            sol = lsq_linear(a, b, bounds=(0.0, np.inf)).x
        else:
            sol = nnls(a, b)[0]
        if not np.any(sol[:-1] > 0):  # degenerate: fall back to the first column's ratio
            sol = np.zeros(x.shape[1] + 1)
            sol[0] = float(np.exp(np.mean(_log(y) - _log(x[:, 0]))))
        self.weights, self.offset = tuple(float(w) for w in sol[:-1]), float(sol[-1])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64).reshape(-1, len(self.weights))
        return np.maximum(x @ np.asarray(self.weights) + self.offset, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, "weights": list(self.weights), "offset": self.offset,
                "prior": None if self.prior is None else list(self.prior), "ridge": self.ridge}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MixtureCalibrator":
        prior = d.get("prior")
        return cls(tuple(d["weights"]), float(d["offset"]), None if prior is None else tuple(prior),
                   float(d.get("ridge", 0.0)))


# ============================================================================================ selection


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select_calibrator`: the fitted winner and every candidate's CV errors."""

    method: str
    calibrator: Calibrator
    cv: Mapping[str, Mapping[str, float]]
    n_points: int

    @property
    def cv_error(self) -> Mapping[str, float]:
        """CV errors of the chosen method (``rmse_log``, ``mape``)."""
        return self.cv[self.method]


def cv_predictions(make: Callable[[], Calibrator], x: np.ndarray, y: np.ndarray,
                   folds: int = 10, seed: int = 0) -> np.ndarray:
    """Out-of-fold predictions (ms) of a calibrator: leave-one-out up to ``folds`` points, else ``folds``-fold."""
    x = np.asarray(x, np.float64)
    x = x.reshape(len(y), -1)
    y = np.asarray(y, np.float64)
    n = len(y)
    order = np.random.default_rng(seed).permutation(n)
    groups = np.array_split(order, min(folds, n)) if n > folds else [np.array([i]) for i in range(n)]
    pred = np.zeros(n)
    for test in groups:
        train = np.setdiff1d(np.arange(n), test)
        pred[test] = make().fit(x[train], y[train]).predict(x[test])
    return pred


def _errors(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    err = _log(pred) - _log(y)
    return {"rmse_log": float(np.sqrt(np.mean(err**2))), "mape": float(np.mean(np.abs(pred / y - 1)) * 100)}


def cross_validate(make: Callable[[], Calibrator], x: np.ndarray, y: np.ndarray,
                   folds: int = 10, seed: int = 0) -> dict[str, float]:
    """Cross-validated errors of a calibrator (:func:`cv_predictions`).

    Returns ``rmse_log`` (RMS of log(pred / true), about the relative error) and ``mape`` (%).
    """
    y = np.asarray(y, np.float64)
    if len(y) < 2:
        return {"rmse_log": math.nan, "mape": math.nan}
    return _errors(cv_predictions(make, x, y, folds, seed), y)


DEFAULT_METHODS = ("scale", "loglinear", "isotonic", "mixture")
"""Methods tried by :func:`calibrate` on source predictions, simplest first."""


def _check_points(y: np.ndarray) -> None:
    if len(y) < 2:
        raise TransferError(f"calibration needs at least 2 measured points, got {len(y)}")
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise TransferError("measured latencies must be positive finite numbers (ms)")


def _usable(candidates: Mapping[str, tuple[Callable[[], Calibrator], Any]], n: int) -> list[str]:
    """Candidates with at most n - 1 parameters (the first one always)."""
    first = next(iter(candidates))
    return [k for k, (make, _) in candidates.items() if getattr(make(), "params", 1) <= n - 1 or k == first]


def _finite_errors(cv: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    finite = {k: v["rmse_log"] for k, v in cv.items() if math.isfinite(v["rmse_log"])}
    if not finite:
        raise TransferError("no calibration method could be cross-validated on these points")
    return finite


def select_calibrator(y: np.ndarray, candidates: Mapping[str, tuple[Callable[[], Calibrator], np.ndarray]],
                      tolerance: float = 0.02, folds: int = 10) -> Selection:
    """Pick the candidate with the lowest cross-validated ``rmse_log`` and refit it on every point.

    ``candidates`` maps a method name to (factory, x) - each method may read its own inputs. Candidates are
    listed simplest first; the first whose CV error is within ``tolerance`` (relative) of the best wins
    (fewer parameters for the same accuracy). Methods with more parameters than points - 1 are skipped.
    """
    y = np.asarray(y, np.float64)
    _check_points(y)
    cv = {k: cross_validate(candidates[k][0], candidates[k][1], y, folds) for k in _usable(candidates, len(y))}
    finite = _finite_errors(cv)
    best = min(finite.values())
    method = next(k for k in finite if finite[k] <= best * (1 + tolerance) + 1e-12)
    make, x = candidates[method]
    return Selection(method, make().fit(np.asarray(x, np.float64).reshape(len(y), -1), y), cv, len(y))


def average_calibrators(y: np.ndarray, x: np.ndarray,
                        candidates: Mapping[str, tuple[Callable[[], Calibrator], Sequence[int]]],
                        temperature: float = 0.1, folds: int = 10, min_weight: float = 0.01) -> Selection:
    """Average every candidate, in log space, weighted by its cross-validated error (model averaging).

    ``candidates`` maps a method name to (factory, columns of ``x`` it reads). Weights are
    ``exp(-(e - e_best) / (temperature * e_best))`` of each candidate's CV ``rmse_log`` ``e`` (a candidate
    10% worse than the best weighs 1/e of it at the default temperature), normalised; members below
    ``min_weight`` are dropped. On a few points the CV errors of similar candidates are close and noisy, so
    averaging them is steadier than picking one. The ensemble's own entry in ``cv`` is the error of the
    weighted candidates' out-of-fold predictions (the weights themselves are not cross-validated).
    """
    y = np.asarray(y, np.float64)
    _check_points(y)
    x = np.asarray(x, np.float64).reshape(len(y), -1)
    cols = {k: tuple(int(c) for c in candidates[k][1]) for k in _usable(candidates, len(y))}
    oof = {k: cv_predictions(candidates[k][0], x[:, list(c)], y, folds) for k, c in cols.items()}
    cv: dict[str, dict[str, float]] = {k: _errors(p, y) for k, p in oof.items()}
    finite = _finite_errors(cv)
    best = min(finite.values())
    w = {k: math.exp(-(e - best) / max(temperature * best, 1e-12)) for k, e in finite.items()}
    w = {k: v for k, v in w.items() if v >= min_weight * sum(w.values())}
    weights = {k: v / sum(w.values()) for k, v in w.items()}
    members = tuple(candidates[k][0]().fit(x[:, list(cols[k])], y) for k in weights)
    ens = EnsembleCalibrator(tuple(weights), members, tuple(cols[k] for k in weights), tuple(weights.values()))
    cv["ensemble"] = _errors(np.exp(sum(v * _log(oof[k]) for k, v in weights.items())), y)
    return Selection("ensemble", ens, cv, len(y))


@register_calibrator
@dataclass
class EnsembleCalibrator:
    """Weighted geometric mean of fitted calibrators: ``log y = sum_m w_m log f_m(x[:, columns_m])``.

    Built by :func:`average_calibrators`; ``fit`` refits every member on its columns, weights fixed.
    """

    name: ClassVar[str] = "ensemble"
    params: ClassVar[int] = 1
    names: tuple[str, ...] = ()
    members: tuple[Calibrator, ...] = ()
    columns: tuple[tuple[int, ...], ...] = ()
    weights: tuple[float, ...] = ()

    def fit(self, x: np.ndarray, y: np.ndarray) -> "EnsembleCalibrator":
        x = np.asarray(x, np.float64).reshape(len(y), -1)
        for m, cols in zip(self.members, self.columns):
            m.fit(x[:, list(cols)], y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        x = x.reshape(len(x), -1)
        return np.exp(sum(w * _log(m.predict(x[:, list(cols)]))
                          for m, cols, w in zip(self.members, self.columns, self.weights)))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name,
                "members": [{"name": n, "weight": w, "columns": list(c), "calibrator": m.to_dict()}
                            for n, m, c, w in zip(self.names, self.members, self.columns, self.weights)]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EnsembleCalibrator":
        ms = d["members"]
        return cls(tuple(m["name"] for m in ms), tuple(calibrator_from_dict(m["calibrator"]) for m in ms),
                   tuple(tuple(int(c) for c in m["columns"]) for m in ms), tuple(float(m["weight"]) for m in ms))


def calibrate(source_pred: np.ndarray, y: np.ndarray, methods: Sequence[str] = DEFAULT_METHODS) -> Selection:
    """Select and fit a calibrator from source predictions ``source_pred`` (n, m; column 0 = best source)."""
    x = np.asarray(source_pred, np.float64).reshape(len(y), -1)
    unknown = [m for m in methods if m not in CALIBRATORS]
    if unknown:
        raise TransferError(f"unknown calibration method(s) {', '.join(unknown)}; known: "
                            f"{', '.join(sorted(CALIBRATORS))}")
    cands = {m: (CALIBRATORS[m], x if m == "mixture" else x[:, :1]) for m in methods}
    if x.shape[1] == 1:
        cands.pop("mixture", None)
    return select_calibrator(y, cands)


def rank_sources(target: np.ndarray, sources: np.ndarray, names: Sequence[str]) -> list[tuple[str, float]]:
    """Source devices ordered by how well their values (predicted or fingerprint latencies, one column per
    source) correlate with the target's on the same points: Pearson correlation of logs, best first."""
    t = _log(target)
    out = []
    for j, name in enumerate(names):
        s = _log(sources[:, j])
        r = float(np.corrcoef(s, t)[0, 1]) if np.ptp(s) > 0 and np.ptp(t) > 0 else -1.0
        out.append((name, r if math.isfinite(r) else -1.0))
    return sorted(out, key=lambda p: -p[1])


def best_scaled_column(y: np.ndarray, x: np.ndarray) -> int:
    """The column of ``x`` (one per candidate source, rows the points of ``y``) that one scale fits best: the least
    spread of its log ratios to ``y``. Not the best-correlated one: a correlation forgives a slope that a scale
    cannot take up."""
    return int(np.argmin(np.std(_log(y)[:, None] - _log(x), axis=0)))


def parallel_fraction(one: np.ndarray, two: np.ndarray) -> np.ndarray:
    """Amdahl's parallel fraction p of work that takes ``one`` at 1 thread and ``two`` at 2
    (``one / two = 1 / ((1 - p) + p / 2)``), clipped to [0, 1]; 0 where ``one`` is 0."""
    one, two = np.asarray(one, np.float64), np.asarray(two, np.float64)
    frac = np.divide(two, one, out=np.ones_like(one), where=one > 0)
    return 2.0 * (1.0 - np.clip(frac, 0.5, 1.0))


def amdahl_latency(one: np.ndarray, two: np.ndarray, threads: int) -> np.ndarray:
    """Latency at ``threads`` from latencies at 1 and 2 threads by Amdahl's law: ``one * ((1 - p) + p / threads)``
    with p their :func:`parallel_fraction`; zero latencies stay zero."""
    p = parallel_fraction(one, two)
    return np.asarray(one, np.float64) * ((1.0 - p) + p / threads)


def amdahl_through(latency: Callable[[DeviceSpec, int], np.ndarray], one: DeviceSpec, two: DeviceSpec,
                   threads: int) -> np.ndarray:
    """``latency(board, threads)`` at a trained device's 1-thread board ``one`` and 2-thread board ``two``,
    extrapolated to ``threads`` by :func:`amdahl_latency`."""
    return amdahl_latency(latency(one, 1), latency(two, 2), threads)


def amdahl_pairs(source: Any, threads: int) -> list[tuple[DeviceSpec, DeviceSpec]]:
    """(1-thread board, 2-thread board) pairs of the devices ``source`` trained at both counts (every pairing, for
    a machine described by several campaigns), when it trained no device at ``threads``: what an ``amdahl_scale``
    adaptation can extrapolate from (none otherwise)."""
    from perfpredict.features import threads_of

    if threads in (1, 2) or training_devices_at(source, threads):
        return []
    by_id: dict[str, dict[int, list[DeviceSpec]]] = {}
    for d in training_devices_at(source):
        by_id.setdefault(d.device_id, {}).setdefault(threads_of(d), []).append(d)
    return [(one, two) for b in by_id.values() for one in b.get(1, []) for two in b.get(2, [])]


def fingerprint_similarity(target: DeviceSpec, sources: Sequence[DeviceSpec]) -> list[tuple[str, float]]:
    """Sources ordered by correlation of their fingerprints with the target's, on the keys they share."""
    keys = sorted(target.fingerprint)
    out = []
    for s in sources:
        common = [k for k in keys if k in s.fingerprint]
        if len(common) < 3:
            out.append((s.name, -1.0))
            continue
        out.append(rank_sources(np.array([target.fingerprint[k] for k in common]),
                                np.array([[s.fingerprint[k]] for k in common]), [s.name])[0])
    return sorted(out, key=lambda p: -p[1])


def fingerprint_ratio(target: DeviceSpec, source: DeviceSpec) -> tuple[float, int]:
    """How much slower ``target`` runs the reference workloads than ``source``: the geometric mean of the ratios of
    their fingerprint entries over the keys both have, and how many keys that is (1.0 and 0 without any)."""
    common = [k for k in target.fingerprint if k in source.fingerprint
              and target.fingerprint[k] > 0 and source.fingerprint[k] > 0]
    if not common:
        return 1.0, 0
    return float(np.exp(np.mean([math.log(target.fingerprint[k] / source.fingerprint[k]) for k in common]))), \
        len(common)


PROXY_MIN_SHARED = 3
"""Fingerprint entries a proxy device must share with the target for the zero-shot proxy scaling."""

INT8_DOT_PRODUCT = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})
"""ISA features (``isa_features``, cpuinfo's names) that give a CPU int8 dot-product instructions: the int8 kernels
of fbgemm and oneDNN run several times faster with them than on the plain AVX2 / NEON sequences."""


def int8_dot_product(device: DeviceSpec) -> bool | None:
    """Whether ``device``'s CPU has int8 dot-product instructions (:data:`INT8_DOT_PRODUCT`); None when its board
    lists no ISA features (a GPU, a hand-written board)."""
    if not device.isa_features:
        return None
    return bool(INT8_DOT_PRODUCT & set(device.isa_features))


def zero_shot_proxies(target: DeviceSpec, devices: Sequence[DeviceSpec]) -> list[DeviceSpec]:
    """The ``devices`` a zero-shot prediction for ``target`` may go through: those that match its
    :func:`int8_dot_product` support (or either board does not say). The fingerprint times fp32 layers only, so its
    ratio scales int8 and fp32 work alike: through a VNNI proxy, an AVX2-only CPU's int8 plans came out 0.89x of
    their measured time and its fp32 plans 1.17x (benchmarks/README.md, "Transfer to new hardware": the Zen 3 host)."""
    want = int8_dot_product(target)
    return [d for d in devices if want is None or int8_dot_product(d) in (None, want)]


def nearest_proxy(target: DeviceSpec, proxies: Sequence[DeviceSpec]) -> tuple[DeviceSpec, float, int] | None:
    """The proxy whose fingerprint correlates best with ``target``'s (:func:`fingerprint_similarity`, on at least
    :data:`PROXY_MIN_SHARED` shared entries), with its :func:`fingerprint_ratio`; None when no proxy qualifies."""
    # by position, not name: two machines of one kind can share a name
    scored = [(fingerprint_similarity(target, [p])[0][1], i) for i, p in enumerate(proxies)]
    scored = [(r, i) for r, i in scored if r > -1.0]
    if not scored:
        return None
    proxy = proxies[max(scored, key=lambda t: (t[0], -t[1]))[1]]
    ratio, shared = fingerprint_ratio(target, proxy)
    return (proxy, ratio, shared) if shared >= PROXY_MIN_SHARED else None


# ============================================================================================ shot choice


def choose_shots(predicted_ms: np.ndarray, k: int, features: np.ndarray | None = None,
                 exclude: Iterable[int] = (), seed: int = 0) -> list[int]:
    """Indices of the ``k`` candidates most informative to measure on a new device.

    The candidates are sorted by predicted latency and cut into ``k`` equal-count strata (quantiles); in
    each stratum the pick is the candidate farthest (standardised ``features``, else log latency) from
    everything already picked - so the shots span the latency range and differ in structure. Deterministic
    for a given ``seed`` (used only to break exact ties).
    """
    p = _log(predicted_ms).reshape(-1)
    excluded = set(int(i) for i in exclude)
    cand = np.array([i for i in range(len(p)) if i not in excluded], dtype=int)
    if k <= 0:
        return []
    if k > len(cand):
        raise TransferError(f"cannot choose {k} shots from {len(cand)} candidates")
    f = p[:, None] if features is None else np.asarray(features, np.float64).reshape(len(p), -1)
    f = np.c_[f, p]
    f = (f - f[cand].mean(0)) / np.where(f[cand].std(0) > 0, f[cand].std(0), 1.0)
    jitter = np.random.default_rng(seed).uniform(0, 1e-9, len(p))
    order = cand[np.argsort(p[cand] + jitter[cand], kind="stable")]
    strata = np.array_split(order, k)
    chosen: list[int] = []
    for stratum in strata:
        if not chosen:
            mid = stratum[len(stratum) // 2]
            chosen.append(int(mid))
            continue
        d = np.min(np.linalg.norm(f[stratum][:, None, :] - f[chosen][None, :, :], axis=2), axis=1)
        chosen.append(int(stratum[int(np.argmax(d + jitter[stratum]))]))
    return chosen


# ============================================================================================ graph encoding

ENCODING_VERSION = 1
"""Version of :func:`encode_graph`'s node features (part of cache keys and checkpoints)."""

_OP_GROUPS: Mapping[str, int] = {
    "Conv": 0, "Gemm": 1, "MatMul": 1, "Relu": 2, "Clip": 2, "Sigmoid": 2, "HardSigmoid": 2, "HardSwish": 2,
    "Add": 3, "Mul": 4, "Concat": 5, "AveragePool": 6, "MaxPool": 7, "GlobalAveragePool": 8, "ReduceMean": 8,
    "BatchNormalization": 9, "Flatten": 10, "Reshape": 10, "Transpose": 10, "Split": 10, "Slice": 10, "Pad": 10,
    "Softmax": 11,
}
_N_GROUPS = 13  # the 12 groups above + other
NODE_FEATURES = _N_GROUPS + 15
"""Length of a node's feature vector."""


@dataclass(frozen=True)
class EncodedGraph:
    """A graph as arrays for a GNN: node features (n, NODE_FEATURES) and data-flow edges (2, E)."""

    x: np.ndarray
    edge_index: np.ndarray


def encode_graph(graph: "Graph") -> EncodedGraph:
    """Plan-free node features of ``graph``: op group one-hot; log MACs, FLOPs, bytes in/out, parameters;
    kernel, stride, grouped / depthwise, constant operand; log channels in/out and spatial size; in/out
    degree. Scaled to roughly [0, 1] without data-dependent statistics, so encodings are stable."""
    n = len(graph.nodes)
    x = np.zeros((n, NODE_FEATURES), np.float32)
    indeg = np.zeros(n)
    outdeg = np.zeros(n)
    for e in graph.edges:
        indeg[e.dst] += 1
        outdeg[e.src] += 1
    for i, node in enumerate(graph.nodes):
        x[i, _OP_GROUPS.get(node.op, _N_GROUPS - 1)] = 1.0
        a = node.attrs
        k = a.get("kernel", (1,))
        s = a.get("stride", (1,))
        out = node.out_shape
        inp = node.in_shape if node.input_shapes else ()
        groups = int(a.get("groups", 1))
        f = x[i, _N_GROUPS:]
        f[0:5] = np.log1p([node.macs, node.flops, node.bytes_in, node.bytes_out, node.param_count]) / 20.0
        f[5] = float(k[0]) / 7.0
        f[6] = float(s[0]) / 2.0
        f[7] = float(groups > 1)
        f[8] = float(groups > 1 and groups == a.get("in_channels") == a.get("out_channels"))
        f[9] = float(len(node.params) > 0 and node.op not in ("Conv", "Gemm", "MatMul", "BatchNormalization"))
        f[10] = math.log2(out[1]) / 10.0 if len(out) > 1 and out[1] > 0 else 0.0
        f[11] = math.log2(inp[1]) / 10.0 if len(inp) > 1 and inp[1] > 0 else 0.0
        f[12] = math.log2(out[2]) / 10.0 if len(out) > 2 and out[2] > 0 else 0.0
        f[13] = indeg[i] / 4.0
        f[14] = outdeg[i] / 4.0
    ei = np.array([[e.src for e in graph.edges], [e.dst for e in graph.edges]], np.int64).reshape(2, -1)
    return EncodedGraph(x, ei)


def pack_encodings(encs: Sequence[EncodedGraph]) -> dict[str, np.ndarray]:
    """Concatenate encodings into flat arrays (for an .npz cache); :func:`unpack_encodings` inverts it."""
    return {"x": np.concatenate([e.x for e in encs]).astype(np.float32),
            "edge_index": np.concatenate([e.edge_index for e in encs], axis=1).astype(np.int32),
            "nodes": np.array([len(e.x) for e in encs], np.int64),
            "edges": np.array([e.edge_index.shape[1] for e in encs], np.int64)}


def unpack_encodings(packed: Mapping[str, np.ndarray]) -> list[EncodedGraph]:
    """The encodings stored by :func:`pack_encodings` (node features back to float32 whatever the stored type)."""
    xo = np.r_[0, np.cumsum(packed["nodes"])]
    eo = np.r_[0, np.cumsum(packed["edges"])]
    x, ei = packed["x"], packed["edge_index"]
    return [EncodedGraph(x[xo[i]:xo[i + 1]].astype(np.float32), ei[:, eo[i]:eo[i + 1]].astype(np.int64))
            for i in range(len(packed["nodes"]))]


# ============================================================================================ device factor model


@register_calibrator
@dataclass
class DeviceFitCalibrator:
    """(a) Device fitting: ``log y = phi . u + c`` over a multi-device model's graph factors ``phi``.

    ``u`` is ridge-regressed towards the prior ``prior_u`` (a source device's weights) with strength
    ``lam``; ``c`` is free. This refits the device's own parameters of :class:`MultiDeviceModel` - the
    HELP-style adaptation of a device embedding, in closed form.
    """

    name: ClassVar[str] = "device_fit"
    params: ClassVar[int] = 3
    prior_u: tuple[float, ...] = ()
    lam: float = 10.0
    u: tuple[float, ...] = ()
    c: float = 0.0

    def fit(self, x: np.ndarray, y: np.ndarray) -> "DeviceFitCalibrator":
        x = np.asarray(x, np.float64).reshape(len(y), -1)
        v = _log(y)
        u0 = np.asarray(self.prior_u, np.float64) if self.prior_u else np.zeros(x.shape[1])
        xc, vc = x - x.mean(0), v - v.mean()
        u = np.linalg.solve(xc.T @ xc + self.lam * np.eye(x.shape[1]), xc.T @ vc + self.lam * u0)
        self.u, self.c = tuple(float(t) for t in u), float(np.mean(v - x @ u))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64).reshape(-1, len(self.u))
        return np.exp(x @ np.asarray(self.u) + self.c)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, "prior_u": list(self.prior_u), "lam": self.lam, "u": list(self.u), "c": self.c}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DeviceFitCalibrator":
        return cls(tuple(d["prior_u"]), float(d["lam"]), tuple(d["u"]), float(d["c"]))


@register_calibrator
@dataclass
class DeviceSubspaceCalibrator:
    """(a) Device fitting in the source devices' subspace: ``u = mean_u + basis^T a``, ``log y = phi . u + c``.

    ``basis`` holds the top principal directions of the source devices' weight vectors, so a new device
    is a few coordinates ``a`` (ridge ``lam``) plus an offset: fewer parameters than :class:`DeviceFitCalibrator`
    when points are scarce, like HELP's low-dimensional hardware embedding.
    """

    name: ClassVar[str] = "device_subspace"
    params: ClassVar[int] = 3
    mean_u: tuple[float, ...] = ()
    basis: tuple[tuple[float, ...], ...] = ()
    lam: float = 0.1
    a: tuple[float, ...] = ()
    c: float = 0.0

    def fit(self, x: np.ndarray, y: np.ndarray) -> "DeviceSubspaceCalibrator":
        x = np.asarray(x, np.float64).reshape(len(y), -1)
        mu, b = np.asarray(self.mean_u), np.asarray(self.basis).reshape(-1, x.shape[1])
        v = _log(y) - x @ mu
        z = x @ b.T
        zc = z - z.mean(0)
        a = np.linalg.solve(zc.T @ zc + self.lam * np.eye(len(b)), zc.T @ (v - v.mean()))
        self.a, self.c = tuple(float(t) for t in a), float(np.mean(v - z @ a))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        mu, b = np.asarray(self.mean_u), np.asarray(self.basis).reshape(len(self.a), -1)
        x = np.asarray(x, np.float64).reshape(-1, len(mu))
        return np.exp(x @ mu + (x @ b.T) @ np.asarray(self.a) + self.c)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, "mean_u": list(self.mean_u), "basis": [list(r) for r in self.basis],
                "lam": self.lam, "a": list(self.a), "c": self.c}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DeviceSubspaceCalibrator":
        return cls(tuple(d["mean_u"]), tuple(tuple(r) for r in d["basis"]), float(d["lam"]), tuple(d["a"]),
                   float(d["c"]))


@dataclass(frozen=True)
class MultiDeviceConfig:
    """Hyper-parameters of :class:`MultiDeviceGNN` and its training."""

    hidden: int = 64
    layers: int = 3
    factors: int = 16
    epochs: int = 25
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-5
    huber_delta: float = 0.3
    outlier_ratio: float | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dict(vars(self))


def _torch():
    import torch

    return torch


def _build_net(in_dim: int, n_devices: int, cfg: MultiDeviceConfig):
    """The torch module of :class:`MultiDeviceGNN` (built lazily so importing this module stays light)."""
    torch = _torch()
    from torch import nn
    from torch_geometric.nn import SAGEConv
    from torch_geometric.utils import scatter

    class MultiDeviceGNN(nn.Module):
        """GNN over graph encodings -> K graph factors phi(g); device d: log ms = phi(g) . u_d + c_d.

        Node encoder MLP, ``layers`` rounds of GraphSAGE messages along data-flow edges and their reverse
        (residual), then sum- and mean-pooling and an MLP to ``factors`` factors.
        """

        def __init__(self) -> None:
            super().__init__()
            h = cfg.hidden
            self.enc = nn.Sequential(nn.Linear(in_dim, h), nn.ReLU(), nn.Linear(h, h))
            self.fwd = nn.ModuleList(SAGEConv(h, h) for _ in range(cfg.layers))
            self.bwd = nn.ModuleList(SAGEConv(h, h, root_weight=False, bias=False) for _ in range(cfg.layers))
            self.norms = nn.ModuleList(nn.LayerNorm(h) for _ in range(cfg.layers))
            self.phi = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Linear(h, cfg.factors))
            self.u = nn.Parameter(torch.zeros(n_devices, cfg.factors))
            self.c = nn.Parameter(torch.zeros(n_devices))

        def factors(self, x, edge_index, batch, num_graphs):
            h = self.enc(x)
            rev = edge_index.flip(0)
            for f, b, norm in zip(self.fwd, self.bwd, self.norms):
                h = h + torch.relu(norm(f(h, edge_index) + b(h, rev)))
            pooled = torch.cat([scatter(h, batch, 0, dim_size=num_graphs, reduce="sum") / 100.0,
                                scatter(h, batch, 0, dim_size=num_graphs, reduce="mean")], 1)
            return self.phi(pooled)

        def forward(self, x, edge_index, batch, num_graphs):
            return self.factors(x, edge_index, batch, num_graphs) @ self.u.T + self.c

    return MultiDeviceGNN()


def _collate(encs: Sequence[EncodedGraph], idx: Sequence[int]):
    torch = _torch()
    xs, eis, bs = [], [], []
    off = 0
    for k, i in enumerate(idx):
        e = encs[i]
        xs.append(e.x)
        eis.append(e.edge_index + off)
        bs.append(np.full(len(e.x), k, np.int64))
        off += len(e.x)
    return (torch.from_numpy(np.concatenate(xs).astype(np.float32)),
            torch.from_numpy(np.concatenate(eis, axis=1).astype(np.int64)),
            torch.from_numpy(np.concatenate(bs)), len(idx))


class MultiDeviceModel:
    """A trained multi-device latency model: graph factors from a GNN, one (u, c) per source device.

    Predicts any source device directly; a new device is fitted from labelled points (its fingerprint's
    reference workloads and any shots) by :meth:`adapt`.
    """

    def __init__(self, net: Any, devices: Sequence[str], config: MultiDeviceConfig, in_dim: int,
                 training: Mapping[str, Any] | None = None):
        self.net = net
        self.devices = tuple(devices)
        self.config = config
        self.in_dim = in_dim
        self.training = dict(training or {})

    @property
    def U(self) -> np.ndarray:
        """Device weights (devices, factors)."""
        return self.net.u.detach().double().numpy()

    @property
    def C(self) -> np.ndarray:
        """Device offsets (devices,)."""
        return self.net.c.detach().double().numpy()

    def factors(self, encs: Sequence[EncodedGraph], batch_size: int = 256) -> np.ndarray:
        """Graph factors phi (n, K) of encoded graphs."""
        torch = _torch()
        self.net.eval()
        out = []
        with torch.inference_mode():
            for lo in range(0, len(encs), batch_size):
                out.append(self.net.factors(*_collate(encs, range(lo, min(lo + batch_size, len(encs)))))
                           .double().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.config.factors))

    def predict_sources(self, phi: np.ndarray, devices: Sequence[str] | None = None) -> np.ndarray:
        """Predicted latencies (ms), shape (n, len(devices)), of source ``devices`` (default all) from ``phi``."""
        cols = [self.device_index(d) for d in (devices or self.devices)]
        return np.exp(phi @ self.U[cols].T + self.C[cols])

    def device_index(self, name: str) -> int:
        """Column of source device ``name``; a TransferError names the source devices."""
        try:
            return self.devices.index(name)
        except ValueError:
            raise TransferError(f"'{name}' is not a source device of this model; source devices: "
                                f"{', '.join(self.devices)}") from None

    def adapt(self, phi: np.ndarray, y: np.ndarray,
              methods: Sequence[str] = ("device_subspace", "device_fit") + DEFAULT_METHODS,
              top: int = 3, lams: Sequence[float] = (1.0, 10.0, 100.0),
              temperature: float | None = 0.1) -> "DeviceAdapter":
        """Fit a new device from labelled points (factors ``phi``, measured ``y`` ms) - see :class:`DeviceAdapter`.
        Points are filtered like the training data (``config.outlier_ratio``)."""
        return DeviceAdapter.fit(self, phi, y, methods, top, lams, self.config.outlier_ratio,
                                 temperature=temperature)

    # ----------------------------------------------------------------------------- persistence
    def state(self) -> dict[str, Any]:
        """Plain-types state (plus tensors) for torch.save."""
        return {"devices": list(self.devices), "config": self.config.to_dict(), "in_dim": self.in_dim,
                "training": json.loads(json.dumps(self.training, default=str)),
                "state_dict": {k: v.detach().clone() for k, v in self.net.state_dict().items()}}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "MultiDeviceModel":
        """Rebuild from :meth:`state`."""
        cfg = MultiDeviceConfig(**state["config"])
        net = _build_net(int(state["in_dim"]), len(state["devices"]), cfg)
        net.load_state_dict(state["state_dict"])
        net.eval()
        return cls(net, state["devices"], cfg, int(state["in_dim"]), state.get("training"))


def fit_multi_device(encs: Sequence[EncodedGraph], latency_ms: np.ndarray, devices: Sequence[str],
                     config: MultiDeviceConfig = MultiDeviceConfig(),
                     val: tuple[Sequence[EncodedGraph], np.ndarray] | None = None,
                     val_device: tuple[Sequence[EncodedGraph], np.ndarray, Sequence[EncodedGraph], np.ndarray] | None = None,
                     progress: bool = False) -> MultiDeviceModel:
    """Train :class:`MultiDeviceGNN` on graphs ``encs`` with latencies ``latency_ms`` (graphs x devices, NaN =
    not measured).

    Loss: Huber on log latency. With ``config.outlier_ratio`` set, per device, values more than that factor
    above or below its median are masked out (degenerate measurements such as near-zero times). Training runs
    the whole one-cycle schedule; the state kept is the best of its last quarter of epochs by ``val_device`` -
    (reference encodings, their ms, query encodings, their ms) of a device left out of training, scored by the
    log error of :meth:`MultiDeviceModel.adapt` on the queries - else by ``val`` - (encodings, ms) of
    held-out graphs on the training devices - else by the training loss. Every epoch's score is in
    ``training["history"]``.
    """
    torch = _torch()
    from tqdm import tqdm

    cfg = config
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    y = np.array(latency_ms, np.float64).reshape(len(encs), len(devices))
    med = np.nanmedian(y, axis=0)
    ratio = cfg.outlier_ratio or math.inf
    bad = (y < med / ratio) | (y > med * ratio) | ~(y > 0)
    logy = np.where(bad, np.nan, np.log(np.where(bad, 1.0, y)))
    in_dim = encs[0].x.shape[1]
    net = _build_net(in_dim, len(devices), cfg)
    with torch.no_grad():
        net.c.copy_(torch.from_numpy(np.nanmean(logy, axis=0)).float())
        net.u.normal_(0.0, 0.01)
    model = MultiDeviceModel(net, devices, cfg, in_dim)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * max(1, math.ceil(len(encs) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.2)
    target = torch.from_numpy(logy).float()
    best, best_state, best_epoch = math.inf, None, -1
    history = []
    bar = tqdm(range(cfg.epochs), desc="multi-device GNN", disable=not progress, unit="epoch")
    for epoch in bar:
        net.train()
        perm = rng.permutation(len(encs))
        total, count = 0.0, 0
        for lo in range(0, len(perm), cfg.batch_size):
            idx = perm[lo:lo + cfg.batch_size]
            pred = net(*_collate(encs, idx))
            t = target[idx]
            ok = ~torch.isnan(t)
            loss = torch.nn.functional.huber_loss(pred[ok], t[ok], delta=cfg.huber_delta)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            count += len(idx)
        score = total / count
        if val_device is not None:
            ref_e, ref_y, q_e, q_y = val_device
            ad = model.adapt(model.factors(ref_e), ref_y)
            score = float(np.sqrt(np.mean((_log(ad.predict(model.factors(q_e), model)) - _log(q_y)) ** 2)))
        elif val is not None:
            vp = model.factors(val[0]) @ model.U.T + model.C
            vy = np.log(np.maximum(np.asarray(val[1], np.float64), 1e-9))
            score = float(np.sqrt(np.nanmean((vp - vy) ** 2)))
        history.append(round(score, 5))
        bar.set_postfix(score=f"{score:.4f}")
        if epoch >= cfg.epochs - max(1, cfg.epochs // 4) and score < best - 1e-6:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    model.training = {"graphs": len(encs), "devices": list(devices), "best_epoch": best_epoch,
                      "best_score": best, "history": history,
                      "score": "val_device" if val_device else ("val" if val else "train_loss"),
                      "masked_outliers": int(np.sum(bad & (y > 0)))}
    return model


@dataclass(frozen=True)
class DeviceAdapter:
    """A new device fitted on labelled points: the chosen method, its calibrator and its inputs.

    The calibrator reads the graph factors (when ``factors``) followed by the predictions of the source
    devices ``columns`` (best-correlated first): the factors for ``device_*`` methods, source predictions
    for the calibrations and the mixture, both for the CV-weighted ``ensemble`` of all of them.
    """

    method: str
    calibrator: Calibrator
    columns: tuple[str, ...]
    selection: Selection
    factors: bool = False

    @classmethod
    def fit(cls, model: MultiDeviceModel, phi: np.ndarray, y: np.ndarray,
            methods: Sequence[str] = ("device_subspace", "device_fit") + DEFAULT_METHODS, top: int = 3,
            lams: Sequence[float] = (1.0, 10.0, 100.0), outlier_ratio: float | None = None,
            ranks: Sequence[int] = (2, 4, 8), temperature: float | None = 0.1) -> "DeviceAdapter":
        """Rank sources by correlation with ``y`` on the points, build every candidate, then average them by
        their CV errors (:func:`average_calibrators` at ``temperature``) or, with ``temperature=None``, pick
        the best (:func:`select_calibrator`).

        With ``outlier_ratio``, points more than that factor away from the median of the points
        (degenerate measurements, e.g. a near-zero time) are left out of the fit.
        """
        y = np.asarray(y, np.float64)
        phi = np.asarray(phi, np.float64).reshape(len(y), -1)
        med = float(np.median(y[y > 0])) if np.any(y > 0) else 1.0
        ratio = outlier_ratio or math.inf
        keep = (y > med / ratio) & (y < med * ratio) & (y > 0)
        if keep.sum() < 2:
            raise TransferError(f"need at least 2 usable measured points to fit a device, got {int(keep.sum())}")
        phi, y = phi[keep], y[keep]
        src = model.predict_sources(phi)
        ranked = [n for n, _ in rank_sources(y, src, model.devices)]
        cols = ranked[: max(1, top)]
        k = phi.shape[1]
        x = np.c_[phi, src[:, [model.device_index(c) for c in cols]]]
        cands = cls._candidates(model, cols, methods, lams, ranks, k)
        if temperature is not None:
            sel = average_calibrators(y, x, cands, temperature)
            return cls(sel.method, sel.calibrator, tuple(cols), sel, factors=True)
        sel = select_calibrator(y, {m: (make, x[:, list(c)]) for m, (make, c) in cands.items()})
        method = sel.method.split("@")[0]
        used = () if method.startswith("device_") else (tuple(cols) if method == "mixture" else (cols[0],))
        return cls(sel.method, sel.calibrator, used, sel, factors=method.startswith("device_"))

    @staticmethod
    def _candidates(model: MultiDeviceModel, cols: Sequence[str], methods: Sequence[str], lams: Sequence[float],
                    ranks: Sequence[int], k: int) -> dict[str, tuple[Callable[[], Calibrator], tuple[int, ...]]]:
        """Candidates by name, simplest first: (factory, the columns it reads of [phi (k) | sources ``cols``])."""
        factors, best, mix = tuple(range(k)), (k,), tuple(range(k, k + len(cols)))
        cands: dict[str, tuple[Callable[[], Calibrator], tuple[int, ...]]] = {}
        for m in methods:
            if m == "device_fit":
                u0 = tuple(model.U[model.device_index(cols[0])])
                for lam in sorted(lams, reverse=True):
                    cands[f"device_fit@{lam:g}"] = (lambda lam=lam: DeviceFitCalibrator(u0, lam), factors)
            elif m == "device_subspace":
                mu = model.U.mean(0)
                _, _, vt = np.linalg.svd(model.U - mu, full_matrices=False)
                for r in ranks:
                    if r < len(model.devices) - 1 and r <= vt.shape[0]:
                        basis = tuple(tuple(row) for row in vt[:r])
                        cands[f"device_subspace@{r}"] = (
                            lambda basis=basis: DeviceSubspaceCalibrator(tuple(mu), basis, 0.1), factors)
            elif m == "mixture":
                if len(cols) > 1:
                    cands[m] = (MixtureCalibrator, mix)
            elif m in CALIBRATORS:
                cands[m] = (CALIBRATORS[m], best)
            else:
                raise TransferError(f"unknown adaptation method '{m}'; known: "
                                    f"{', '.join(sorted(CALIBRATORS))}")
        order = [c for c in ("scale", "loglinear", "isotonic") if c in cands] + \
                [c for c in cands if c.startswith("device_subspace")] + \
                [c for c in cands if c.startswith("device_fit")] + [c for c in cands if c == "mixture"]
        return {c: cands[c] for c in order}

    @property
    def weights(self) -> dict[str, float]:
        """Weight of each candidate in the prediction: the ensemble's members, else the chosen method (1)."""
        cal = self.calibrator
        return dict(zip(cal.names, cal.weights)) if isinstance(cal, EnsembleCalibrator) else {self.method: 1.0}

    def inputs(self, phi: np.ndarray, model: MultiDeviceModel) -> np.ndarray:
        """The calibrator's input for graphs with factors ``phi``."""
        parts = [phi] if self.factors else []
        if self.columns:
            parts.append(model.predict_sources(phi, self.columns))
        return np.concatenate(parts, axis=1)

    def predict(self, phi: np.ndarray, model: MultiDeviceModel) -> np.ndarray:
        """Predicted latencies (ms) on the new device for graphs with factors ``phi``."""
        return self.calibrator.predict(self.inputs(phi, model))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the calibrator, its inputs and the CV errors of every candidate)."""
        return {"method": self.method, "calibrator": self.calibrator.to_dict(), "columns": list(self.columns),
                "factors": self.factors, "cv": {k: dict(v) for k, v in self.selection.cv.items()},
                "points": self.selection.n_points}


# ============================================================================================ predictors

TRANSFER_FORMAT = "perfpredict-transfer"
TRANSFER_VERSION = 1
CARD_FILE = "transfer.json"
MULTIDEVICE_FILE = "multidevice.pt"


def _rough_memory(graph: "Graph") -> float:
    """Weights plus the largest single-node activation footprint (bytes): a rough peak for models that do
    not predict memory."""
    weights = sum(float(v.nbytes) for v in graph.initializers.values())
    act = max((n.bytes_in + n.bytes_out for n in graph.nodes), default=0)
    return weights + float(act)


def _as_list(graphs: "Graph | Sequence[Graph]", n: int) -> list["Graph"]:
    from perfpredict.graph import Graph

    if isinstance(graphs, Graph):
        return [graphs] * n
    graphs = list(graphs)
    if len(graphs) != n:
        raise TransferError(f"predict: {len(graphs)} graphs for {n} plans; pass one graph or one per plan")
    return graphs


class MultiDevicePredictor:
    """:class:`perfpredict.predictor.Predictor` over IR graphs backed by a :class:`MultiDeviceModel`.

    A source device (by name, with no fingerprint or the one it was trained with) is predicted directly;
    any other device is fitted zero-shot from its board's ``fingerprint``: the entries whose keys name
    reference workloads the checkpoint knows (``reference``: key -> graph factors) are the labelled points
    of :meth:`MultiDeviceModel.adapt`. Plans are ignored (the model predicts a graph as its device's own
    runtime deploys it); peak memory is a rough estimate (weights + largest node footprint).
    """

    kind = "multidevice"

    def __init__(self, model: MultiDeviceModel, reference: Mapping[str, np.ndarray],
                 source_fingerprints: Mapping[str, Mapping[str, float]] | None = None,
                 description: Mapping[str, Any] | None = None):
        self.model = model
        self.reference = {k: np.asarray(v, np.float64) for k, v in reference.items()}
        self.source_fingerprints = {k: dict(v) for k, v in (source_fingerprints or {}).items()}
        self.description = dict(description or {})
        self._adapters: dict[str, DeviceAdapter] = {}

    def factors(self, graphs: Sequence["Graph"]) -> np.ndarray:
        """Graph factors of ``graphs`` (each distinct graph encoded once)."""
        uniq: dict[int, int] = {}
        order = []
        for g in graphs:
            order.append(uniq.setdefault(id(g), len(uniq)))
        firsts = {v: g for g in graphs for v in [uniq[id(g)]]}
        phi = self.model.factors([encode_graph(firsts[i]) for i in range(len(uniq))])
        return phi[order]

    def fingerprint_points(self, device: DeviceSpec) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(keys, factors, latencies) of the device's fingerprint entries this predictor can use."""
        keys = [k for k in device.fingerprint if k in self.reference]
        phi = np.array([self.reference[k] for k in keys]).reshape(len(keys), self.model.config.factors)
        return keys, phi, np.array([device.fingerprint[k] for k in keys], np.float64)

    def adapter(self, device: DeviceSpec) -> DeviceAdapter | None:
        """None for a source device; else the device fitted from its fingerprint (cached per fingerprint)."""
        if device.name in self.model.devices and (not device.fingerprint or dict(device.fingerprint) ==
                                                  self.source_fingerprints.get(device.name, dict(device.fingerprint))):
            return None
        key = json.dumps(sorted(device.fingerprint.items()))
        if key not in self._adapters:
            keys, phi, y = self.fingerprint_points(device)
            if len(keys) < 3:
                need = sorted(self.reference)
                raise TransferError(
                    f"device '{device.name}' cannot be predicted zero-shot: its board has {len(keys)} of the "
                    f"{len(need)} fingerprint entries this predictor needs (keys {', '.join(need[:4])}"
                    f"{', ...' if len(need) > 4 else ''}); add the measured fingerprint or adapt it with "
                    f"`perfpredict transfer` (known source devices: {', '.join(self.model.devices)})")
            self._adapters[key] = self.model.adapt(phi, y)
        return self._adapters[key]

    def predict(self, graphs: "Graph | Sequence[Graph]", plans: Sequence[Any], device: DeviceSpec,
                threads: int | None = None):
        """Predicted latency (ms) and rough peak memory (bytes) of each graph on ``device`` (``threads`` is
        accepted for interface compatibility; a device here is what it was measured as)."""
        from perfpredict.predictor import Prediction

        glist = _as_list(graphs, len(plans))
        phi = self.factors(glist)
        ad = self.adapter(device)
        lat = self.model.predict_sources(phi, [device.name])[:, 0] if ad is None else ad.predict(phi, self.model)
        return Prediction(np.asarray(lat, np.float64), np.array([_rough_memory(g) for g in glist]))

    def save(self, path: str | Path) -> Path:
        """Write ``path/multidevice.pt`` (weights, reference factors) and ``path/transfer.json`` (card)."""
        torch = _torch()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        payload = {"format": TRANSFER_FORMAT, "format_version": TRANSFER_VERSION, "kind": self.kind,
                   "encoding_version": ENCODING_VERSION, "model": self.model.state(),
                   "reference": {k: v.tolist() for k, v in self.reference.items()},
                   "source_fingerprints": self.source_fingerprints}
        tmp = path / (MULTIDEVICE_FILE + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(path / MULTIDEVICE_FILE)
        _write_card(path, {"kind": self.kind, "devices": list(self.model.devices),
                           "reference_keys": sorted(self.reference), "training": self.model.training,
                           "config": self.model.config.to_dict(), **self.description})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "MultiDevicePredictor":
        """Read a checkpoint written by :meth:`save`."""
        torch = _torch()
        file = Path(path) / MULTIDEVICE_FILE
        try:
            payload = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for a corrupt file
            raise TransferError(f"{file}: not a readable multi-device checkpoint ({type(exc).__name__})") from None
        if payload.get("format") != TRANSFER_FORMAT or payload.get("encoding_version") != ENCODING_VERSION:
            raise TransferError(f"{file}: checkpoint format/encoding {payload.get('format')}/"
                                f"{payload.get('encoding_version')} is not {TRANSFER_FORMAT}/{ENCODING_VERSION}")
        card = _read_card(Path(path)) if (Path(path) / CARD_FILE).is_file() else {}
        return cls(MultiDeviceModel.from_state(payload["model"]), payload["reference"],
                   payload.get("source_fingerprints"), {k: v for k, v in card.items() if k not in
                                                         ("kind", "devices", "reference_keys", "training", "config")})


def _write_card(path: Path, content: Mapping[str, Any]) -> None:
    card = {"format": TRANSFER_FORMAT, "format_version": TRANSFER_VERSION, "perfpredict_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **content}
    tmp = path / (CARD_FILE + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, default=json_default) + "\n")
    tmp.replace(path / CARD_FILE)


def _read_card(path: Path) -> dict[str, Any]:
    file = path / CARD_FILE
    try:
        card = json.loads(file.read_text())
    except FileNotFoundError:
        raise TransferError(f"{path}: no {CARD_FILE} here (not a transfer checkpoint)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TransferError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != TRANSFER_FORMAT:
        raise TransferError(f"{file}: not a perfpredict transfer card (format {card.get('format')!r})")
    if card.get("format_version") != TRANSFER_VERSION:
        raise TransferError(f"{file}: transfer card format_version {card.get('format_version')} is not supported "
                            f"(this perfpredict reads {TRANSFER_VERSION})")
    return card


def load_any_predictor(path: str | Path) -> Any:
    """Load a predictor checkpoint of any kind: a transfer checkpoint (calibrated or multi-device) or a GNN
    checkpoint (:func:`perfpredict.gnn_predictor.load_predictor`, which also resolves bare names)."""
    p = Path(path)
    if (p / CARD_FILE).is_file():
        kind = _read_card(p).get("kind")
        if kind == CalibratedPredictor.kind:
            return CalibratedPredictor.load(p)
        if kind == MultiDevicePredictor.kind:
            return MultiDevicePredictor.load(p)
        raise TransferError(f"{p / CARD_FILE}: unknown transfer checkpoint kind {kind!r}; known: "
                            f"{CalibratedPredictor.kind}, {MultiDevicePredictor.kind}")
    from perfpredict.gnn_predictor import load_predictor, resolve_model_path

    resolved = resolve_model_path(path)
    if (resolved / CARD_FILE).is_file():
        return load_any_predictor(resolved)
    return load_predictor(resolved)


@dataclass(frozen=True)
class Measurement:
    """One measured workload on the target device: a model (zoo name or ONNX path), a plan (JSON path or
    None = default plan) and its latency; ``beacon_ms``, when it was timed beside the beacon workload
    (:mod:`perfpredict.beacon`, as ``--measure-on local`` times its shots), the beacon's median in the same rounds."""

    model: str
    plan: str | None
    latency_ms: float
    beacon_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        d: dict[str, Any] = {"model": self.model, "plan": self.plan, "latency_ms": self.latency_ms}
        if self.beacon_ms is not None:
            d["beacon_ms"] = self.beacon_ms
        return d


def beacon_normalised(measurements: Sequence[Measurement]) -> list[Measurement]:
    """``measurements`` with each latency timed beside the beacon scaled to the machine's typical speed over them:
    ``latency_ms * reference / beacon_ms``, the reference the median beacon of those measurements (the store's
    ``"beacon"`` latency target, :mod:`perfpredict.beacon`). Shots measured one after another on a machine whose
    speed drifts (a shared VM) then disagree by the drift no more; measurements without a beacon stay as they are."""
    from perfpredict.beacon import normalised_ms

    beacons = [m.beacon_ms for m in measurements if m.beacon_ms]
    if not beacons:
        return list(measurements)
    reference = float(np.median(beacons))
    return [replace(m, latency_ms=normalised_ms(m.latency_ms, m.beacon_ms, reference)) if m.beacon_ms else m
            for m in measurements]


PARTS = ("fp32", "int8")
"""The parts a ``board`` column can restrict a plan's predicted latency to (``"part"``): its nodes not at int8, or
at int8 (the source's per-node latencies, :meth:`GNNPredictor.node_latencies`)."""


def _template_parts(source: Any, template: Any, plans: Sequence[Any], board: DeviceSpec,
                    threads: int | None) -> np.ndarray:
    """[P, 2]: the source's predicted latency of ``plans`` of one graph template on ``board``, split into their fp32
    and their int8 nodes (:data:`PARTS`), from one call of its per-node latencies."""
    from perfpredict.features import encode_plans

    shares = np.asarray(source.node_latencies(template, plans, board, threads), np.float64)
    int8 = encode_plans(template, plans, source.space).precision == list(source.space.precisions).index("int8")
    return np.stack([(shares * ~int8).sum(axis=1), (shares * int8).sum(axis=1)], axis=1)


def precision_parts(source: Any, graphs: "Graph | Sequence[Graph]", plans: Sequence[Any], board: DeviceSpec,
                    threads: int | None = None) -> np.ndarray:
    """[n, 2]: a plan-aware source's predicted latency of each (graph, plan) on ``board`` split into its fp32 and
    its int8 nodes (:data:`PARTS`)."""
    from perfpredict.features import predict_by_graph
    from perfpredict.predictor import Prediction

    def parts(tpl: Any, ps: Sequence[Any], dev: DeviceSpec, th: int | None) -> Any:
        split = _template_parts(source, tpl, ps, dev, th)
        return Prediction(split, np.zeros(len(split)))

    return predict_by_graph(parts, graphs, list(plans), board, threads).latency_ms


def _part(column: Mapping[str, Any]) -> int | None:
    """The index in :data:`PARTS` a ``board`` column reads, None for its whole latency."""
    part = column.get("part")
    if part is not None and part not in PARTS:
        raise TransferError(f"unknown column part '{part}'; known: {', '.join(PARTS)}")
    return None if part is None else PARTS.index(part)


def _pairwise_mixin() -> type:
    try:
        from perfpredict.additive import PairwiseCostsMixin
    except ImportError:  # the additive-costs module is optional for this class
        return object
    return PairwiseCostsMixin


class CalibratedPredictor(_pairwise_mixin()):  # type: ignore[misc]
    """A source predictor adapted to one target device: a normal checkpoint implementing Predictor.

    ``columns`` say what the calibrator reads for each (graph, plan): ``{"type": "factors"}`` (the graph
    factors of a multi-device source, one input column each), ``{"type": "source_device", "name": ...}``
    (a multi-device source's prediction for one of its devices) or ``{"type": "board", "board": {...}}``
    (the source's prediction for that device description - the target's own board for a zero-shot column,
    or a proxy) or ``{"type": "amdahl", "one": {...}, "two": {...}, "threads": t}`` (the source's predictions for
    one trained device at 1 and 2 threads, extrapolated to t threads by :func:`amdahl_latency`). Peak memory is
    the source's prediction for the target board. When every column is a board or an Amdahl pair and the source
    is plan-aware (``predict_plans`` / ``node_latencies``, the GNN), the NodeCostModel methods work too: node
    shares are the source's (an Amdahl pair's extrapolated node by node), rescaled to the calibrated total.
    """

    kind = "calibrated"

    def __init__(self, source: Any, source_path: str, target: DeviceSpec, columns: Sequence[Mapping[str, Any]],
                 calibrator: Calibrator, card: Mapping[str, Any] | None = None):
        self.source = source
        self.source_path = str(source_path)
        self.target = target
        self.columns = [dict(c) for c in columns]
        self._board_specs: list[DeviceSpec | None] | None = None
        self._amdahl_specs: list[tuple[DeviceSpec, DeviceSpec] | None] = []
        self.calibrator = calibrator
        self.card = dict(card or {})

    @property
    def space(self) -> Any:
        """The source's feature space (a plan-aware source's: what the node-cost methods price memory with)."""
        space = getattr(self.source, "space", None)
        if space is None:
            raise TransferError(f"adapted predictor for '{self.target.name}' over a source without a feature space "
                                "has no per-node costs")
        return space

    def _source_predict(self, graphs: Any, plans: Sequence[Any], board: DeviceSpec, threads: int | None):
        if threads is None:
            return self.source.predict(graphs, plans, board)
        return self.source.predict(graphs, plans, board, threads=threads)

    def inputs(self, graphs: "Graph | Sequence[Graph]", plans: Sequence[Any],
               threads: int | None = None) -> np.ndarray:
        """The calibrator's input matrix for (graph, plan) pairs."""
        cols: list[np.ndarray] = []
        phi = None
        splits: dict[int, np.ndarray] = {}  # per board: both parts come from one prediction
        for i, (c, board) in enumerate(zip(self.columns, self._column_boards())):
            if c["type"] in ("factors", "source_device") and phi is None:
                phi = self.source.factors(_as_list(graphs, len(plans)))
            if c["type"] == "factors":
                cols.extend(phi.T)
            elif c["type"] == "source_device":
                cols.append(self.source.model.predict_sources(phi, [c["name"]])[:, 0])
            elif c["type"] == "board" and _part(c) is not None:
                key = self._column_boards().index(board)
                if key not in splits:
                    splits[key] = precision_parts(self.source, graphs, plans, board, threads)
                cols.append(splits[key][:, _part(c)])
            elif c["type"] == "board":
                cols.append(self._source_predict(graphs, plans, board, threads).latency_ms)
            elif c["type"] == "amdahl":
                cols.append(self._amdahl(i, lambda b, t: self._source_predict(graphs, plans, b, t).latency_ms))
            else:
                raise TransferError(f"unknown calibrator input column {c!r}")
        return np.stack(cols, axis=1)

    def predict(self, graphs: "Graph | Sequence[Graph]", plans: Sequence[Any], device: DeviceSpec,
                threads: int | None = None):
        """Predicted latency (ms) and peak memory (bytes) on the target device (``device`` must be it;
        ``threads`` is passed on to a source that takes it)."""
        from perfpredict.predictor import Prediction

        self._check_device(device, threads)
        plans = list(plans)
        lat = self.calibrator.predict(self.inputs(graphs, plans, threads))
        if isinstance(self.source, MultiDevicePredictor):
            mem = np.array([_rough_memory(g) for g in _as_list(graphs, len(plans))])
        else:
            mem = self._source_predict(graphs, plans, self.target, threads).peak_mem_bytes
        return Prediction(np.asarray(lat, np.float64), np.asarray(mem, np.float64))

    def answers_for(self, device: DeviceSpec, threads: int | None = None) -> bool:
        """Whether this adaptation holds for ``device`` at ``threads`` (its target: see :meth:`predict`)."""
        try:
            self._check_device(device, threads)
        except TransferError:
            return False
        return True

    def _check_device(self, device: DeviceSpec, threads: int | None = None) -> None:
        """The adaptation holds for its target only: same name, and where both boards say so, the same machine
        (device_id: hosts of one name differ) and thread count (``threads``, else the board's)."""
        t = self.target
        if device.name != t.name:
            raise TransferError(f"this predictor was adapted to device '{t.name}', not '{device.name}'; "
                                f"use its source {self.source_path} or adapt one for '{device.name}'")
        if device.device_id != t.device_id and device.cpu_model and t.cpu_model:
            raise TransferError(f"this predictor was adapted to device '{t.name}' with device_id {t.device_id}, not "
                                f"the machine of device_id {device.device_id} that shares its name; use its source "
                                f"{self.source_path} or adapt one for this machine")
        used = threads or device.threads_used
        if used and t.threads_used and used != t.threads_used:
            raise TransferError(f"this predictor was adapted to device '{t.name}' at {t.threads_used} threads, not "
                                f"{used}; use its source {self.source_path} or adapt one at {used} threads")

    def _boards(self) -> list[DeviceSpec]:
        """Each column's board (an Amdahl pair's 2-thread one) when every column is a board or an Amdahl pair and
        the source is plan-aware."""
        if any(c["type"] not in ("board", "amdahl") for c in self.columns) or \
                not hasattr(self.source, "predict_plans"):
            raise TransferError(f"adapted predictor for '{self.target.name}' ({self.card.get('method')}) over a "
                                "plan-agnostic source has no per-plan template path")
        boards = self._column_boards()
        return [b if b is not None else self._amdahl_specs[i][1] for i, b in enumerate(boards)]

    def _column_boards(self) -> list[DeviceSpec | None]:
        """Each column's board (None for other column types), parsed once with the (1-thread, 2-thread) boards of
        the Amdahl columns: the optimiser predicts batch by batch."""
        if self._board_specs is None:
            self._board_specs = [load_device(c["board"]) if c["type"] == "board" else None for c in self.columns]
            self._amdahl_specs = [(load_device(c["one"]), load_device(c["two"])) if c["type"] == "amdahl" else None
                                  for c in self.columns]
        return self._board_specs

    def _amdahl(self, i: int, latency: Callable[[DeviceSpec, int], np.ndarray]) -> np.ndarray:
        """Amdahl column ``i``'s values: ``latency(board, threads)`` at its 1- and 2-thread boards, extrapolated
        to its thread count."""
        self._column_boards()
        one, two = self._amdahl_specs[i]
        return amdahl_through(latency, one, two, self.columns[i]["threads"])

    def predict_plans(self, template: Any, plans: Sequence[Any], device: DeviceSpec, threads: int | None = None):
        """Batched prediction of many plans of one graph template (plan-aware sources only; ``threads`` is
        passed on to the source)."""
        from perfpredict.predictor import Prediction

        self._check_device(device, threads)
        boards = self._boards()
        splits: dict[int, np.ndarray] = {}  # per board: both parts come from one prediction
        cols = []
        for i, (c, b) in enumerate(zip(self.columns, boards)):
            if c["type"] == "amdahl":
                cols.append(self._amdahl(i, lambda b, t: self.source.predict_plans(template, plans, b, t).latency_ms))
                continue
            if _part(c) is None:
                cols.append(np.asarray(self.source.predict_plans(template, plans, b, threads).latency_ms, np.float64))
                continue
            key = boards.index(b)
            if key not in splits:
                splits[key] = _template_parts(self.source, template, plans, b, threads)
            cols.append(splits[key][:, _part(c)])
        lat = self.calibrator.predict(np.stack(cols, axis=1))
        mem = self.source.predict_plans(template, plans, self.target, threads).peak_mem_bytes
        return Prediction(np.asarray(lat, np.float64), np.asarray(mem, np.float64))

    def node_latencies(self, template: Any, plans: Sequence[Any], device: DeviceSpec,
                       threads: int | None = None) -> np.ndarray:
        """Per-node latency shares (the source's, on the first column's board or Amdahl pair), rescaled per plan to
        the calibrated total."""
        if self.columns[0]["type"] == "amdahl":  # node by node
            shares = self._amdahl(0, lambda b, t: self.source.node_latencies(template, plans, b, t))
        else:
            shares = np.asarray(self.source.node_latencies(template, plans, self._boards()[0], threads), np.float64)
        total = self.predict_plans(template, plans, device, threads).latency_ms
        return shares * (total / np.maximum(shares.sum(axis=1), 1e-12))[:, None]

    def save(self, path: str | Path) -> Path:
        """Write ``path/transfer.json`` (the card: source, target, method, calibrator, measurements, CV errors)
        and a human-readable ``path/README.md``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        src = Path(self.source_path)
        try:
            rel = str(Path(src).resolve().relative_to(path.resolve().parent))
            source_ref = {"path": str(src.resolve()), "relative_to_parent": rel}
        except ValueError:
            source_ref = {"path": str(src.resolve())}
        _write_card(path, {"kind": self.kind, "source": source_ref, "target": self.target.to_dict(),
                           "columns": self.columns, "calibrator": self.calibrator.to_dict(), **self.card})
        (path / "README.md").write_text(_card_markdown(self, source_ref))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CalibratedPredictor":
        """Read a checkpoint written by :meth:`save` (its source is loaded from the recorded path, or from the
        same place relative to this checkpoint's parent folder when the tree was moved)."""
        path = Path(path)
        card = _read_card(path)
        if card.get("kind") != cls.kind:
            raise TransferError(f"{path / CARD_FILE}: kind {card.get('kind')!r} is not {cls.kind!r}")
        src = card["source"]
        cand = [Path(src["path"])]
        if src.get("relative_to_parent"):
            cand.insert(0, path.resolve().parent / src["relative_to_parent"])
        where = next((c for c in cand if c.exists()), None)
        if where is None:
            raise TransferError(f"{path}: its source predictor is missing (looked in {', '.join(map(str, cand))})")
        rest = {k: v for k, v in card.items() if k not in ("kind", "source", "target", "columns", "calibrator",
                                                          "format", "format_version")}
        return cls(load_any_predictor(where), str(where), load_device(card["target"]), card["columns"],
                   calibrator_from_dict(card["calibrator"]), rest)


def _card_markdown(p: CalibratedPredictor, source_ref: Mapping[str, Any]) -> str:
    c = p.card
    lines = [f"# Adapted predictor: {p.target.name}", "",
             f"- source predictor: `{source_ref['path']}`",
             f"- method: **{c.get('method')}** (chosen by leave-one-out cross-validation on {c.get('points')} "
             f"labelled points: {c.get('k')} shots + {c.get('fingerprint_points', 0)} fingerprint entries)",
             f"- cross-validated error of the chosen method: {json.dumps(c.get('cv_error'))}", "",
             "| candidate | CV rmse(log) | CV MAPE % |", "|---|---|---|"]
    for name, v in (c.get("cv") or {}).items():
        lines.append(f"| {name} | {v.get('rmse_log', float('nan')):.4f} | {v.get('mape', float('nan')):.2f} |")
    if c.get("zero_shot"):
        z = c["zero_shot"]
        lines += ["", f"Zero-shot through the proxy device `{z['proxy']}`: its prediction x "
                      f"{z['fingerprint_ratio']:.4f}, the ratio of the two fingerprints over "
                      f"{z['shared_fingerprint_entries']} shared entries."]
    elif c.get("method") == "proxy_split":
        lines += ["", f"Through the proxy device `{p.columns[0]['board']['name']}`: its predicted latency of a plan's fp32 "
                      "nodes and of its int8 nodes, each rescaled to the shots."]
    elif c.get("method") == "amdahl_scale":
        lines += ["", f"Through the trained device `{p.columns[0]['two']['name']}` at 1 and 2 threads: its two "
                      f"predictions extrapolated to {p.columns[0]['threads']} threads by Amdahl's law, rescaled to "
                      "the shots."]
    elif c.get("method") == "proxy_scale":
        lines += ["", f"Through the proxy device `{p.columns[0]['board']['name']}` (the trained device whose "
                      "fingerprint correlates best with the target's): its prediction, rescaled to the shots."]
    if c.get("holdout"):
        lines += ["", f"Held-out measurements (not used to fit): {json.dumps(c['holdout'])}"]
    lines += ["", "## Measurements", "", "| model | plan | latency ms | used |", "|---|---|---|---|"]
    for m in c.get("measurements", []):
        lines.append(f"| {m['model']} | {m.get('plan') or 'default'} | {m['latency_ms']:.4g} | {m.get('used', True)} |")
    return "\n".join(lines) + "\n"


# ============================================================================================ adaptation


def read_measurements(path: str | Path) -> list[Measurement]:
    """Read a measurements CSV: header ``model,latency_ms`` and optionally ``plan`` (plan JSON path; empty =
    default plan). Relative paths are taken relative to the CSV's folder."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TransferError(f"{path}: no such measurements file") from None
    reader = csv.DictReader(text.splitlines())
    cols = set(reader.fieldnames or [])
    missing = [c for c in ("model", "latency_ms") if c not in cols]
    if missing:
        raise TransferError(f"{path}: missing column(s) {', '.join(missing)}; a measurements CSV has columns "
                            "model, latency_ms and optionally plan")
    def positive_ms(row: Mapping[str, Any], column: str, i: int) -> float:
        try:
            ms = float(row[column])
        except (TypeError, ValueError):
            raise TransferError(f"{path}:{i}: {column} {row.get(column)!r} is not a number") from None
        if not math.isfinite(ms) or ms <= 0:
            raise TransferError(f"{path}:{i}: {column} must be a positive number of ms, got {ms}")
        return ms

    out = []
    for i, row in enumerate(reader, start=2):
        ms = positive_ms(row, "latency_ms", i)
        model = (row.get("model") or "").strip()
        if not model:
            raise TransferError(f"{path}:{i}: empty model")
        if model.endswith(".onnx") and not Path(model).is_absolute():
            model = str(path.parent / model)
        plan = (row.get("plan") or "").strip() or None
        if plan and not Path(plan).is_absolute():
            plan = str(path.parent / plan)
        beacon = positive_ms(row, "beacon_ms", i) if (row.get("beacon_ms") or "").strip() else None
        out.append(Measurement(model, plan, ms, beacon))
    if not out:
        raise TransferError(f"{path}: no measurements (only a header)")
    return out


def _workload(m: Measurement) -> tuple["Graph", Any]:
    from perfpredict.models import load_model
    from perfpredict.plan import Plan, default_plan, validate_plan

    graph, _ = load_model(m.model)
    if m.plan is None:
        return graph, default_plan(graph)
    plan = Plan.load(m.plan)
    validate_plan(graph, plan)
    return graph, plan


@dataclass(frozen=True)
class TransferResult:
    """What :func:`adapt_predictor` produced: the checkpoint, the chosen method and its CV error, errors on
    measurements held out of the fit (when more were given than ``k``) and, for a zero-shot through a proxy
    device, the proxy, the fingerprint ratio and the entries it was taken over."""

    path: Path
    method: str
    cv_error: Mapping[str, float]
    cv: Mapping[str, Mapping[str, float]]
    k: int
    fingerprint_points: int
    holdout: Mapping[str, float] | None
    zero_shot: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"path": str(self.path), "method": self.method, "cv_error": dict(self.cv_error),
                "cv": {k: dict(v) for k, v in self.cv.items()}, "k": self.k,
                "fingerprint_points": self.fingerprint_points, "holdout": self.holdout,
                "zero_shot": dict(self.zero_shot) if self.zero_shot else None}


def adapt_predictor(source_path: str | Path, device: DeviceSpec, measurements: Sequence[Measurement], k: int,
                    out: str | Path, proxies: Sequence[DeviceSpec] = (),
                    methods: Sequence[str] = ("device_subspace", "device_fit", "board_fit") + DEFAULT_METHODS
                    ) -> TransferResult:
    """Adapt the predictor at ``source_path`` to ``device`` with ``k`` of the ``measurements`` and save it.

    With more measurements than ``k``, the ``k`` most informative ones (:func:`choose_shots` on the source's
    zero-shot predictions) are used and the rest report a held-out error. A multi-device source also uses
    the board's fingerprint entries as labelled points (k = 0 is then a zero-shot fit); any other source
    (e.g. the GNN) is calibrated on its predictions for the target board (zero-shot column) and for the
    ``proxies`` (mixture candidates), or - ``board_fit``, with 4 or more shots - has the board's device
    features fine-tuned (:func:`fit_board`). With k = 0 it predicts at the :func:`nearest_proxy` scaled by the
    :func:`fingerprint_ratio` when a proxy's fingerprint qualifies (method ``proxy_scale``; the proxies given, else
    the devices the source records it was trained on, either kept to :func:`zero_shot_proxies`), else it is used
    as is on the target board.
    """
    if k < 0:
        raise TransferError(f"-k must be >= 0, got {k}")
    if k > len(measurements):
        raise TransferError(f"-k {k} asks for more shots than the {len(measurements)} measurements given; "
                            f"pass more measurements or -k {len(measurements)} or less")
    source = load_any_predictor(source_path)
    if isinstance(source, CalibratedPredictor):
        raise TransferError(f"{source_path} is already adapted to '{source.target.name}'; adapt its source "
                            f"{source.source_path} instead")
    zero_shot: dict[str, Any] = {}
    work = [_workload(m) for m in measurements]
    graphs = [g for g, _ in work]
    plans = [p for _, p in work]
    y_all = np.array([m.latency_ms for m in measurements], np.float64)
    multi = isinstance(source, MultiDevicePredictor)
    if multi:
        zero = source.predict(graphs, plans, device).latency_ms if _fingerprint_ok(source, device) else \
            source.model.predict_sources(source.factors(graphs))[:, 0]
    else:
        zero = source.predict(graphs, plans, device).latency_ms
    feats = np.array([[math.log1p(g.macs), math.log1p(g.param_count), len(g.nodes)] for g in graphs])
    used = choose_shots(zero, k, feats) if k < len(measurements) else list(range(len(measurements)))
    held = [i for i in range(len(measurements)) if i not in used]
    fp_points = 0
    if multi:
        keys, phi_fp, y_fp = source.fingerprint_points(device)
        fp_points = len(keys)
        phi_used = source.factors([graphs[i] for i in used]) if used else np.zeros((0, source.model.config.factors))
        phi = np.r_[phi_fp, phi_used.reshape(len(used), -1)]
        y = np.r_[y_fp, y_all[used]]
        if len(y) < 2:
            raise TransferError(f"device '{device.name}': {len(y)} labelled point(s) ({fp_points} usable fingerprint "
                                f"entries + {len(used)} shots); need at least 2 - add the fingerprint of the "
                                f"reference workloads ({', '.join(sorted(source.reference)[:3])}, ...) or more shots")
        ad = source.model.adapt(phi, y, methods=[m for m in methods if m != "board_fit"])
        columns: list[dict[str, Any]] = ([{"type": "factors"}] if ad.factors else []) + \
            [{"type": "source_device", "name": n} for n in ad.columns]
        sel, calibrator = ad.selection, ad.calibrator
    else:
        base = [{"type": "board", "board": device.to_dict()}]
        # zero-shot candidates: the proxies given, else the devices the source was trained on (when it records them)
        near = nearest_proxy(device, zero_shot_proxies(device, list(proxies) or training_devices_at(
            source, device.threads_used))) if not used else None
        if near is not None:
            # zero-shot through a device the source predicts well: its prediction there, scaled by how much slower
            # the target runs the fingerprint's reference workloads
            proxy, ratio, shared = near
            sel = Selection("proxy_scale", ScaleCalibrator(math.log(ratio)),
                            {"proxy_scale": {"rmse_log": math.nan, "mape": math.nan}}, 0)
            calibrator = sel.calibrator
            columns = [{"type": "board", "board": proxy.to_dict()}]
            zero_shot = {"proxy": proxy.name, "fingerprint_ratio": ratio, "shared_fingerprint_entries": shared}
        elif not used:
            sel = Selection("none", ScaleCalibrator(0.0), {"none": {"rmse_log": math.nan, "mape": math.nan}}, 0)
            calibrator, columns = sel.calibrator, base
        else:
            ug = [graphs[i] for i in used]
            up = [plans[i] for i in used]
            # the proxies given, else the trained device nearest by fingerprint: its prediction is a column too
            offered = list(proxies)
            if not offered:
                near_k = nearest_proxy(device, training_devices_at(source, device.threads_used))
                offered = [near_k[0]] if near_k is not None else []
            xs = [zero[used]] + [source.predict(ug, up, p).latency_ms for p in offered]
            x = np.stack(xs, axis=1)
            ranked = rank_sources(y_all[used], x[:, 1:], [p.name for p in offered]) if offered else []
            top = [i + 1 for i, (name, _) in enumerate(ranked[:2])]
            cols = [0] + [next(j + 1 for j, p in enumerate(offered) if p.name == ranked[t - 1][0]) for t in top]
            cands: dict[str, tuple[Callable[[], Calibrator], np.ndarray]] = {}
            for m in methods:
                if m == "mixture" and len(cols) > 1:
                    cands[m] = (MixtureCalibrator, x[:, cols])
                elif m in ("scale", "loglinear", "isotonic"):
                    cands[m] = (CALIBRATORS[m], x[:, :1])
            if "scale" in methods and len(cols) > 1:  # the best-ranked proxy's prediction, rescaled to the shots
                cands["proxy_scale"] = (ScaleCalibrator, x[:, cols[1]:cols[1] + 1])
                split = precision_parts(source, ug, up, offered[cols[1] - 1]) \
                    if hasattr(source, "node_latencies") and getattr(source, "space", None) is not None else None
                if split is not None and np.any(split[:, 1] > 0) and np.any(split[:, 0] > 0):
                    # its fp32 and int8 nodes rescaled apart: devices differ in int8 : fp32 speed
                    cands["proxy_split"] = (SplitScaleCalibrator, split)
            from perfpredict.features import threads_of

            t_dev = threads_of(device)
            pairs = amdahl_pairs(source, t_dev) if "scale" in methods else []
            if pairs:  # a thread count the source never trained at: the trained devices' 1- and 2-thread
                # predictions extrapolated by Amdahl's law; the one that one scale fits best (the least spread of
                # its log ratios to the shots) rescaled to them
                shot_ms = lambda b, t: source.predict(ug, up, b, threads=t).latency_ms  # noqa: E731
                xa = np.stack([amdahl_through(shot_ms, one, two, t_dev) for one, two in pairs], axis=1)
                amdahl_at = best_scaled_column(y_all[used], xa)
                cands["amdahl_scale"] = (ScaleCalibrator, xa[:, amdahl_at:amdahl_at + 1])
            if len(used) < 2:
                cands = {"scale": (ScaleCalibrator, x[:, :1])}
                sel = Selection("scale", ScaleCalibrator().fit(x[:, :1], y_all[used]),
                                {"scale": {"rmse_log": math.nan, "mape": math.nan}}, len(used))
            else:
                sel = select_calibrator(y_all[used], cands)
            calibrator = sel.calibrator
            if sel.method == "mixture":
                columns = base + [{"type": "board", "board": offered[j - 1].to_dict()} for j in cols[1:]]
            elif sel.method == "proxy_scale":
                columns = [{"type": "board", "board": offered[cols[1] - 1].to_dict()}]
            elif sel.method == "proxy_split":
                columns = [{"type": "board", "board": offered[cols[1] - 1].to_dict(), "part": part} for part in PARTS]
            elif sel.method == "amdahl_scale":
                one, two = pairs[amdahl_at]
                columns = [{"type": "amdahl", "one": one.to_dict(), "two": two.to_dict(), "threads": t_dev}]
            else:
                columns = base
            if "board_fit" in methods and len(used) >= 4:
                cv_b = _board_fit_cv(source, device, ug, up, y_all[used])
                cv_all = {**{a: dict(b) for a, b in sel.cv.items()}, "board_fit": cv_b}
                best = min(v["rmse_log"] for v in cv_all.values() if math.isfinite(v["rmse_log"]))
                if cv_b["rmse_log"] <= best + 1e-12:
                    tuned, off = fit_board(source, device, ug, up, y_all[used])
                    calibrator = ScaleCalibrator(off)
                    columns = [{"type": "board", "board": tuned.to_dict()}]
                    sel = Selection("board_fit", calibrator, cv_all, len(used))
                else:
                    sel = Selection(sel.method, sel.calibrator, cv_all, sel.n_points)
    mlist = [{**m.to_dict(), "used": i in used} for i, m in enumerate(measurements)]
    card = {**({"zero_shot": zero_shot} if zero_shot else {}), "method": sel.method,
            "cv_error": dict(sel.cv.get(sel.method, {})),
            "cv": {a: dict(b) for a, b in sel.cv.items()}, "k": len(used), "fingerprint_points": fp_points,
            "points": sel.n_points, "measurements": mlist, "source_kind": getattr(source, "kind", "gnn")}
    pred = CalibratedPredictor(source, str(Path(getattr(source, "source_path", source_path)) if not multi
                                          else source_path), device, columns, calibrator, card)
    holdout = None
    if held:
        hp = pred.predict([graphs[i] for i in held], [plans[i] for i in held], device).latency_ms
        holdout = {k2: v for k2, v in transfer_metrics(hp, y_all[held]).items() if k2 in ("n", "mape", "within_10",
                                                                                           "spearman")}
        pred.card["holdout"] = holdout
    out = pred.save(out)
    return TransferResult(out, sel.method, sel.cv.get(sel.method, {}), sel.cv, len(used), fp_points, holdout,
                          zero_shot or None)


def training_devices_at(source: Any, threads: int | None = None) -> list[DeviceSpec]:
    """The devices ``source`` records it trained on (none when it records none); with ``threads``, only those at
    that thread count (a proxy is predicted at its own board's threads, so one at another count would scale the
    wrong latencies)."""
    from perfpredict.features import threads_of

    devices = getattr(source, "training_devices", None)
    out = list(devices()) if callable(devices) else []
    return [d for d in out if threads_of(d) == threads] if threads else out


BOARD_FIT_FIELDS = ("peak_gflops_fp32", "peak_gops_int8", "mem_bw_triad_gbs", "fingerprint")
"""What :func:`fit_board` scales: the board's throughput figures and (one common factor) its fingerprint."""


def scaled_board(board: DeviceSpec, log_factors: Sequence[float]) -> DeviceSpec:
    """``board`` with fp32 / int8 throughput, bandwidth and fingerprint multiplied by exp(``log_factors``).

    Figures the board lacks start from :func:`perfpredict.features.device_rates`' estimates (what a
    device-conditioned predictor would assume for it); the result keeps its name.
    """
    from perfpredict.features import device_rates

    m = list(log_factors) + [0.0] * (4 - len(log_factors))
    rates = device_rates(board)
    d = board.to_dict()
    base_threads = board.threads_used
    d["peak_gflops_fp32"] = float(rates.gflops_fp32 * math.exp(m[0]))
    d["peak_gops_int8"] = float(rates.gops_int8 * math.exp(m[1]))
    d["mem_bw_triad_gbs"] = float(rates.bandwidth_gbs * math.exp(m[2]))
    if d.get("mem_bw_copy_gbs"):
        d["mem_bw_copy_gbs"] = float(d["mem_bw_copy_gbs"] * math.exp(m[2]))
    if d.get("fingerprint"):
        d["fingerprint"] = {k: float(v * math.exp(m[3])) for k, v in d["fingerprint"].items()}
    if base_threads is None and "threads_used" in d:
        d.pop("threads_used")
    return load_device(d)


def fit_board(source: Any, board: DeviceSpec, graphs: Sequence["Graph"], plans: Sequence[Any], y: np.ndarray,
              ridge: float = 1e-3, max_evals: int = 200) -> tuple[DeviceSpec, float]:
    """(a) for a device-conditioned source (the GNN): fine-tune the device's features - the input through
    which it sees a device - to the measured points.

    Finds log-factors on the board's throughput figures and fingerprint (:func:`scaled_board`) that minimise
    the variance of the log errors of ``source``'s predictions (the shape) plus ``ridge`` x their squared
    size (Powell, bounded to x/20..x20), then the residual scale (median log ratio). Returns (tuned board,
    residual log-scale). Where the fingerprint times the 3x3 convolution the fp32 rate is read from (feature schema
    8, :func:`perfpredict.features.device_rates`), the fingerprint's factor is the fp32 one and the matmul peak's
    is left at 1: both would move the same rate.
    """
    from scipy.optimize import minimize

    from perfpredict.features import FINGERPRINT_CONV

    y = np.asarray(y, np.float64)
    free = [1, 2, 3] if FINGERPRINT_CONV in (board.fingerprint or {}) else [0, 1, 2, 3] if board.fingerprint else \
        [0, 1, 2]

    def full(m: np.ndarray) -> np.ndarray:
        out = np.zeros(4)
        out[free] = m
        return out

    def preds(m: np.ndarray) -> np.ndarray:
        return source.predict(list(graphs), list(plans), scaled_board(board, full(m))).latency_ms

    def loss(m: np.ndarray) -> float:
        r = _log(preds(m)) - _log(y)
        return float(np.mean((r - np.mean(r)) ** 2) + ridge * np.mean(m**2))

    res = minimize(loss, np.zeros(len(free)), method="Powell", bounds=[(-3.0, 3.0)] * len(free),
                   options={"maxfev": max_evals, "xtol": 1e-2, "ftol": 1e-4})
    tuned = scaled_board(board, full(res.x))
    offset = float(np.median(_log(y) - _log(preds(res.x))))
    return tuned, offset


def _board_fit_cv(source: Any, board: DeviceSpec, graphs: Sequence["Graph"], plans: Sequence[Any],
                  y: np.ndarray) -> dict[str, float]:
    """Leave-one-out errors of :func:`fit_board` (same keys as :func:`cross_validate`)."""
    n = len(y)
    pred = np.zeros(n)
    for i in range(n):
        keep = [j for j in range(n) if j != i]
        tuned, off = fit_board(source, board, [graphs[j] for j in keep], [plans[j] for j in keep], y[keep])
        pred[i] = source.predict([graphs[i]], [plans[i]], tuned).latency_ms[0] * math.exp(off)
    err = _log(pred) - _log(y)
    return {"rmse_log": float(np.sqrt(np.mean(err**2))), "mape": float(np.mean(np.abs(pred / y - 1)) * 100)}


def _fingerprint_ok(source: MultiDevicePredictor, device: DeviceSpec) -> bool:
    return len([k for k in device.fingerprint if k in source.reference]) >= 3 or device.name in source.model.devices


SHOT_PLANS = ("default", "nhwc", "int8-nhwc", "pruned-0.5")
"""The plans of each zoo model that ``--measure-on local`` chooses its shots among (named as
:func:`perfpredict.profile.sample_plans` names them): the default, the kinds of plan a search visits."""


def _plan_features(graph: "Graph", plan: Any) -> list[float]:
    """Shares of the graph's nodes at int8, pruned and in NHWC under ``plan``."""
    cs = list(plan.resolve(graph).values())
    n = max(len(cs), 1)
    return [sum(c.precision == "int8" for c in cs) / n, sum(c.prune > 0 for c in cs) / n,
            sum(c.layout == "NHWC" for c in cs) / n]


def shot_candidates(models: Sequence[str] | None = None,
                    plan_kinds: Sequence[str] = SHOT_PLANS) -> list[tuple[str, "Graph", Any]]:
    """(zoo model name, graph, plan) pairs a new device's shots are chosen among: each model's (default: every zoo
    model's) plans of ``plan_kinds``, named as :func:`perfpredict.profile.sample_plans` names them."""
    import random

    from perfpredict.models import load_model
    from perfpredict.plan import default_plan
    from perfpredict.profile import sample_plans
    from perfpredict.zoo import list_models

    cands: list[tuple[str, Any, Any]] = []
    for name in list(models or list_models()):
        graph = load_model(name)[0]
        if tuple(plan_kinds) == ("default",):
            cands.append((name, graph, default_plan(graph)))
            continue
        plans = sample_plans(graph, 8, random.Random(0))
        cands.extend((name, graph, p) for p in plans if p.name in plan_kinds)
    return cands


def choose_candidates(source: Any, device: DeviceSpec, cands: Sequence[tuple[str, "Graph", Any]], k: int,
                      exclude: Iterable[int] = ()) -> list[int]:
    """Indices of the ``k`` of ``cands`` (:func:`shot_candidates`) most informative to measure on ``device``:
    :func:`choose_shots` on ``source``'s predictions for the board (FLOPs where it cannot answer) and on the
    model's size and the plan's int8 / pruned / NHWC shares."""
    graphs, plans = [g for _, g, _ in cands], [p for _, _, p in cands]
    try:
        pred = source.predict(graphs, plans, device).latency_ms
    except TransferError:
        pred = np.array([g.flops for g in graphs], np.float64)
    feats = np.array([[math.log1p(g.macs), math.log1p(g.param_count), len(g.nodes)] + _plan_features(g, p)
                      for g, p in zip(graphs, plans)])
    return choose_shots(pred, k, feats, exclude=exclude)


def measure_candidates(source: Any, device: DeviceSpec, k: int, models: Sequence[str] | None = None,
                       threads: int | None = None, progress: bool = False, plans_dir: str | Path | None = None,
                       plan_kinds: Sequence[str] = SHOT_PLANS, done: Sequence[Measurement] = (),
                       on_measured: Callable[[list[Measurement]], None] | None = None) -> list[Measurement]:
    """Choose the ``k`` most informative (zoo model, plan) pairs for ``device`` and measure them here, each
    round-robin with the beacon workload (:func:`perfpredict.runtime.measurement.measure_plan_beside`; ``threads``:
    the board's ``threads_used`` by default), so that :func:`beacon_normalised` can take the machine's drift
    between shots out of their latencies.

    The candidates are each model's plans of ``plan_kinds`` (with ``plans_dir``, where the non-default ones
    are written as plan JSON; without it, the default plans only), chosen by :func:`choose_shots` on the
    source's predictions for the board and on the model's size and the plan's int8 / pruned / NHWC shares.
    The choice is deterministic, so a killed run resumes: a pick found in ``done`` (an earlier run's
    measurements) is not measured again, and ``on_measured`` gets the list so far after every measurement.
    """
    from tqdm import tqdm

    from perfpredict.beacon import BEACON_KEY, Beacon
    from perfpredict.runtime import measurement

    cands = shot_candidates(models, plan_kinds if plans_dir is not None else ("default",))
    if k > len(cands):
        raise TransferError(f"-k {k} is more than the {len(cands)} candidate (model, plan) pairs of "
                            f"{len({n for n, _, _ in cands})} models")
    pick = choose_candidates(source, device, cands, k)
    earlier = {(m.model, str(Path(m.plan).resolve()) if m.plan else None): m for m in done}
    out = []
    beacon, t = Beacon(), threads or device.threads_used
    for i in tqdm(pick, desc="measuring", disable=not progress, unit="plan"):
        name, graph, plan = cands[i]
        plan_path = None
        if plans_dir is not None and plan.name != "default":
            folder = Path(plans_dir).resolve()
            folder.mkdir(parents=True, exist_ok=True)
            plan_path = str(plan.save(folder / f"{Path(name).stem}.{plan.name}.json"))
        if (name, plan_path) in earlier:
            out.append(earlier[(name, plan_path)])
            continue
        stats = measurement.measure_plan_beside(graph, plan, {BEACON_KEY: beacon.call(t)}, threads=t)
        out.append(Measurement(name, plan_path, float(stats["plan"].median_ms), float(stats[BEACON_KEY].median_ms)))
        if on_measured is not None:
            on_measured(out)
    return out


def write_measurements(path: str | Path, measurements: Sequence[Measurement]) -> Path:
    """Write measurements as a CSV readable by :func:`read_measurements`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "plan", "latency_ms", "beacon_ms"])
        for m in measurements:
            plan = m.plan or ""
            if plan and Path(plan).is_absolute() and Path(plan).parent.is_relative_to(path.parent.resolve()):
                plan = str(Path(plan).relative_to(path.parent.resolve()))  # the folder travels with its plans
            w.writerow([m.model, plan, f"{m.latency_ms:.6g}", "" if m.beacon_ms is None else f"{m.beacon_ms:.6g}"])
    tmp.replace(path)  # atomic: a killed run leaves the previous file whole
    return path
