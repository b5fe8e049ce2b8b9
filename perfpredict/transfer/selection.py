"""Choosing among calibrators by leave-one-out cross-validation on the target's points, or averaging them by
their cross-validated error; ranking source devices by how well they predict the target."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from perfpredict.errors import TransferError
from perfpredict.metrics import summarise
from perfpredict.transfer.calibrators import (
    CALIBRATORS, Calibrator, calibrator_from_dict, register_calibrator, safe_log,
)


def transfer_metrics(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Spearman rho, MAPE (%), share within +-10% (%) and the rest of :func:`perfpredict.metrics.summarise`."""
    return summarise(np.asarray(pred, np.float64), np.asarray(true, np.float64))


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
    err = safe_log(pred) - safe_log(y)
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
    cv["ensemble"] = _errors(np.exp(sum(v * safe_log(oof[k]) for k, v in weights.items())), y)
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
        return np.exp(sum(w * safe_log(m.predict(x[:, list(cols)]))
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
    t = safe_log(target)
    out = []
    for j, name in enumerate(names):
        s = safe_log(sources[:, j])
        r = float(np.corrcoef(s, t)[0, 1]) if np.ptp(s) > 0 and np.ptp(t) > 0 else -1.0
        out.append((name, r if math.isfinite(r) else -1.0))
    return sorted(out, key=lambda p: -p[1])


def best_scaled_column(y: np.ndarray, x: np.ndarray) -> int:
    """The column of ``x`` (one per candidate source, rows the points of ``y``) that one scale fits best: the least
    spread of its log ratios to ``y``. Not the best-correlated one: a correlation forgives a slope that a scale
    cannot take up."""
    return int(np.argmin(np.std(safe_log(y)[:, None] - safe_log(x), axis=0)))
