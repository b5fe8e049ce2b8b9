"""Pareto fronts and hypervolume, checked against brute force and hand-computed volumes."""

from __future__ import annotations

import numpy as np
import pytest

from optimiser.pareto import hypervolume, pareto_front, pareto_mask, plot_front, write_front_csv


def _dominated(p: np.ndarray, q: np.ndarray) -> bool:
    return bool(np.all(q <= p) and np.any(q < p))


@pytest.mark.parametrize("m", [2, 3])
def test_front_matches_brute_force(m):
    rng = np.random.default_rng(m)
    pts = rng.integers(0, 20, size=(120, m)).astype(float)
    mask = pareto_mask(pts)
    for i, p in enumerate(pts):
        dominated = any(_dominated(p, q) for q in pts)
        dup_before = any(np.array_equal(p, pts[j]) for j in range(i))
        assert mask[i] == (not dominated and not dup_before)
    idx = pareto_front(pts)
    assert set(idx) == set(np.flatnonzero(mask))
    assert np.all(np.diff(pts[idx, 0]) >= 0)


def test_hypervolume_known_values():
    pts = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.0, 3.0]])
    # staircase under reference (4, 4): 3*1 + 2*1 + 1*1 = 6
    assert hypervolume(pts, [4.0, 4.0]) == pytest.approx(6.0)
    cube = np.array([[0.0, 0.0, 0.0]])
    assert hypervolume(cube, [1.0, 2.0, 3.0]) == pytest.approx(6.0)
    two = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # union of boxes [0,2]x[1,2]x[1,2] (vol 2) and [1,2]x[0,2]x[0,2] (vol 4), overlap [1,2]x[1,2]x[1,2] (1)
    assert hypervolume(two, [2.0, 2.0, 2.0]) == pytest.approx(5.0)
    assert hypervolume(np.zeros((0, 2)), [1.0, 1.0]) == 0.0


def test_hypervolume_monte_carlo_agreement():
    rng = np.random.default_rng(7)
    pts = rng.random((15, 3))
    ref = np.ones(3)
    samples = rng.random((200_000, 3))
    front = pts[pareto_mask(pts)]
    covered = np.zeros(len(samples), dtype=bool)
    for p in front:
        covered |= np.all(samples >= p, axis=1)
    assert hypervolume(pts, ref) == pytest.approx(covered.mean(), abs=0.01)


def test_outputs(tmp_path):
    pts = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.0, 3.0]])
    idx = pareto_front(pts)
    path = write_front_csv(tmp_path / "f.csv", [{"trial": int(i), "a": pts[i, 0], "b": pts[i, 1]} for i in idx])
    assert path.read_text().splitlines()[0] == "trial,a,b" and len(path.read_text().splitlines()) == 4
    png = plot_front(tmp_path / "f.png", pts, pts[idx], ["a", "b"], highlight=pts[1])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
