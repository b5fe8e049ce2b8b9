"""Accuracy metrics of predictions against measurements: relative errors and rank agreement.

* MAPE: mean of ``|pred - true| / true`` (in %).
* RMSPE: root mean square of the relative error (in %).
* within_5 / within_10: share (in %) of predictions within +-5% / +-10% of the truth.
* spearman / kendall: rank correlations (scipy.stats; tau-b), NaN with fewer than 2 distinct values.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

METRIC_NAMES: tuple[str, ...] = ("n", "mape", "rmspe", "within_5", "within_10", "spearman", "kendall")


def relative_errors(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> np.ndarray:
    """``(pred - true) / true`` element-wise; raises ValueError on mismatched lengths or non-positive truth."""
    p = np.asarray(pred, np.float64).reshape(-1)
    t = np.asarray(true, np.float64).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"prediction and truth lengths differ: {p.size} vs {t.size}")
    if np.any(~np.isfinite(t)) or np.any(t <= 0):
        raise ValueError("true values must be finite and positive for relative errors")
    return (p - t) / t


def mape(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> float:
    """Mean absolute percentage error (%)."""
    r = relative_errors(pred, true)
    return float(np.mean(np.abs(r)) * 100.0) if r.size else math.nan


def rmspe(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> float:
    """Root mean square percentage error (%)."""
    r = relative_errors(pred, true)
    return float(np.sqrt(np.mean(r**2)) * 100.0) if r.size else math.nan


def within(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray, tolerance: float) -> float:
    """Share (%) of predictions whose relative error is at most ``tolerance`` (e.g. 0.10)."""
    r = relative_errors(pred, true)
    return float(np.mean(np.abs(r) <= tolerance + 1e-12) * 100.0) if r.size else math.nan


def spearman(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation (NaN when either side is constant or has fewer than 2 values)."""
    p, t = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if p.size < 2 or np.ptp(p) == 0 or np.ptp(t) == 0:
        return math.nan
    return float(stats.spearmanr(p, t).statistic)


def kendall(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> float:
    """Kendall tau-b rank correlation (NaN when either side is constant or has fewer than 2 values)."""
    p, t = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if p.size < 2 or np.ptp(p) == 0 or np.ptp(t) == 0:
        return math.nan
    return float(stats.kendalltau(p, t).statistic)


def summarise(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` for one target."""
    p = np.asarray(pred, np.float64).reshape(-1)
    t = np.asarray(true, np.float64).reshape(-1)
    if p.size == 0:
        return {"n": 0, **{k: math.nan for k in METRIC_NAMES[1:]}}
    return {"n": int(p.size), "mape": mape(p, t), "rmspe": rmspe(p, t), "within_5": within(p, t, 0.05),
            "within_10": within(p, t, 0.10), "spearman": spearman(p, t), "kendall": kendall(p, t)}


def grouped_ranking(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray,
                    groups: Sequence[Any]) -> dict[str, float]:
    """Mean Spearman and Kendall over groups (e.g. the plans of one model at one thread count): how well
    the predictor orders the alternatives an optimiser chooses between. Groups of fewer than 3 are skipped."""
    p, t = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    idx: dict[Any, list[int]] = {}
    for k, g in enumerate(groups):
        idx.setdefault(g, []).append(k)
    sp, kt = [], []
    for sel in idx.values():
        if len(sel) >= 3:
            s, k = spearman(p[sel], t[sel]), kendall(p[sel], t[sel])
            if not math.isnan(s):
                sp.append(s)
                kt.append(k)
    return {"groups": len(sp), "spearman": float(np.mean(sp)) if sp else math.nan,
            "kendall": float(np.mean(kt)) if kt else math.nan}


def clean(obj: Any) -> Any:
    """``obj`` with NaN/inf floats replaced by None (for JSON)."""
    if isinstance(obj, Mapping):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
