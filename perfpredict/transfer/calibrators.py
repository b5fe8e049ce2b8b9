"""Calibrators: maps from a source predictor's latencies to a target device's, fitted on a few measured
points (a scale, a log-linear map, isotonic regression, a mixture of source devices), and their registry."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Protocol

import numpy as np
from scipy.optimize import lsq_linear, nnls
from sklearn.isotonic import IsotonicRegression

from perfpredict.errors import TransferError


def safe_log(x: np.ndarray) -> np.ndarray:
    """Natural log of latencies, clipped at 1e-9 so a zero never gives -inf."""
    return np.log(np.maximum(np.asarray(x, np.float64), 1e-9))


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
        self.log_scale = float(np.median(safe_log(y) - safe_log(_col0(x))))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.exp(safe_log(_col0(x)) + self.log_scale)

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
        u, v = safe_log(_col0(x)), safe_log(y)
        if len(u) < 3 or np.ptp(u) < 1e-9:
            self.b = 1.0
        else:
            self.b = float(np.clip(np.polyfit(u, v, 1)[0], *self.slope_range))
        self.a = float(np.mean(v - self.b * u))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.exp(self.a + self.b * safe_log(_col0(x)))

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
        u, v = safe_log(_col0(x)), safe_log(y)
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
        return np.exp(self._log_predict(safe_log(_col0(x))))

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
            sol[0] = float(np.exp(np.mean(safe_log(y) - safe_log(x[:, 0]))))
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
