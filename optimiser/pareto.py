"""Pareto fronts of evaluated plans: non-dominated filtering, hypervolume, CSV and PNG output.

All objectives are minimised. The hypervolume is the volume dominated by the front and bounded by a
reference point (by default beyond the worst value of each objective, see :func:`default_reference`); it
is exact: a sweep in two dimensions and recursive slicing (HSO) in more.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["pareto_mask", "pareto_front", "hypervolume", "default_reference", "write_front_csv", "plot_front"]


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``points`` (n x m, minimised); duplicates keep the first."""
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2:
        raise ValueError(f"points must be a 2-D array (n x objectives), got shape {pts.shape}")
    n = len(pts)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        if not keep[i]:
            continue
        others = pts[keep]
        dominated = np.all(others <= pts[i], axis=1) & np.any(others < pts[i], axis=1)
        if dominated.any():
            keep[i] = False
            continue
        same = np.flatnonzero(np.all(pts == pts[i], axis=1))
        keep[same[same > i]] = False
    return keep


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows, sorted by the first objective."""
    pts = np.asarray(points, dtype=float)
    idx = np.flatnonzero(pareto_mask(pts))
    return idx[np.lexsort(pts[idx].T[::-1])]


def default_reference(points: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """A reference point beyond the worst value of each objective by ``margin`` times the larger of the
    objective's spread and its magnitude (so a single point still has a meaningful volume)."""
    pts = np.asarray(points, dtype=float)
    worst = pts.max(axis=0)
    scale = np.maximum(pts.max(axis=0) - pts.min(axis=0), np.abs(worst))
    return worst + margin * np.where(scale > 0, scale, 1.0)


def hypervolume(points: np.ndarray, reference: Sequence[float] | None = None) -> float:
    """Exact hypervolume dominated by ``points`` (minimised) up to ``reference``."""
    pts = np.asarray(points, dtype=float)
    if len(pts) == 0:
        return 0.0
    ref = np.asarray(reference if reference is not None else default_reference(pts), dtype=float)
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = pts[pareto_mask(pts)]
    return float(_hv(pts, ref))


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    m = pts.shape[1]
    if m == 1:
        return float(ref[0] - pts[:, 0].min())
    if m == 2:
        order = np.argsort(pts[:, 0])
        total, best_y = 0.0, ref[1]
        for x, y in pts[order]:
            if y < best_y:
                total += (ref[0] - x) * (best_y - y)
                best_y = y
        return total
    # slice along the last objective
    order = np.argsort(pts[:, -1])
    pts = pts[order]
    total = 0.0
    for k in range(len(pts)):
        lo = pts[k, -1]
        hi = pts[k + 1, -1] if k + 1 < len(pts) else ref[-1]
        if hi <= lo:
            continue
        layer = pts[: k + 1, :-1]
        layer = layer[pareto_mask(layer)]
        total += _hv(layer, ref[:-1]) * (hi - lo)
    return total


def write_front_csv(path: str | Path, rows: Sequence[dict]) -> Path:
    """Write front rows (dicts with the same keys) as CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(rows[0]) if rows else ["trial"]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def plot_front(path: str | Path, all_points: np.ndarray, front: np.ndarray, labels: Sequence[str],
               title: str = "", highlight: np.ndarray | None = None) -> Path:
    """Scatter every evaluated point and the front (first two objectives) to a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = np.asarray(all_points, dtype=float)
    fr = np.asarray(front, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    if len(pts):
        ax.scatter(pts[:, 0], pts[:, 1], s=8, alpha=0.3, color="0.5", label="evaluated plans")
    if len(fr):
        order = np.argsort(fr[:, 0])
        ax.step(fr[order, 0], fr[order, 1], where="post", color="C0", lw=1.2)
        ax.scatter(fr[:, 0], fr[:, 1], s=22, color="C0", label="Pareto front", zorder=3)
    if highlight is not None:
        ax.scatter([highlight[0]], [highlight[1]], marker="*", s=160, color="C3", label="chosen plan", zorder=4)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
