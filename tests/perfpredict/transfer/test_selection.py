"""Choosing among calibrators by cross-validation, averaging them, ranking source devices."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perfpredict.transfer import (
    EnsembleCalibrator, LogLinearCalibrator, ScaleCalibrator, TransferError, average_calibrators, calibrate,
    calibrator_from_dict, rank_sources, select_calibrator,
)


RNG = np.random.default_rng(0)


def test_cv_picks_the_better_method():
    x = np.sort(RNG.uniform(1, 10, 20))
    # a pure ratio: scale is the simplest method within tolerance of the best
    assert calibrate(x[:, None], 2.5 * x).method == "scale"
    # a power law: log-linear
    assert calibrate(x[:, None], 0.5 * x**2.2 * RNG.uniform(0.98, 1.02, 20)).method == "loglinear"
    # a monotone S-shaped map: isotonic
    s = 1 + 10 / (1 + np.exp(-3 * (x - 5)))
    assert calibrate(x[:, None], s).method == "isotonic"
    # the target is a sum of two independent sources: mixture
    two = RNG.uniform(1, 10, (20, 2))
    assert calibrate(two, two[:, 0] + 3 * two[:, 1]).method == "mixture"


def test_average_weights_candidates_by_cv_error():
    x = np.c_[np.sort(RNG.uniform(1, 10, 20)), RNG.uniform(1, 10, 20)]
    y = 0.5 * x[:, 0] ** 2.2 * RNG.uniform(0.98, 1.02, 20)
    cands = {"scale": (ScaleCalibrator, (0,)), "loglinear": (LogLinearCalibrator, (0,)),
             "wrong": (LogLinearCalibrator, (1,))}
    sel = average_calibrators(y, x, cands)
    w = dict(zip(sel.calibrator.names, sel.calibrator.weights))
    assert sel.method == "ensemble" and set(w) == {"loglinear"}  # the far worse candidates are dropped
    assert set(sel.cv) == {"scale", "loglinear", "wrong", "ensemble"}
    # equally good candidates (the same fit on a duplicated column) share the weight; predictions are the
    # weighted geometric mean of the members'
    x2 = np.c_[x[:, 0], x[:, 0], x[:, 1]]
    sel = average_calibrators(y, x2, {"a": (LogLinearCalibrator, (0,)), "b": (LogLinearCalibrator, (1,)),
                                      "c": (ScaleCalibrator, (2,))}, temperature=1e3)
    cal = sel.calibrator
    assert np.allclose(cal.weights[:2], cal.weights[0]) and abs(sum(cal.weights) - 1) < 1e-12
    assert cal.weights[2] < cal.weights[0]
    geo = np.exp(sum(w * np.log(m.predict(x2[:, list(c)])) for m, c, w in zip(cal.members, cal.columns, cal.weights)))
    assert np.allclose(cal.predict(x2), geo)
    again = calibrator_from_dict(json.loads(json.dumps(cal.to_dict())))
    assert isinstance(again, EnsembleCalibrator) and again.names == ("a", "b", "c")
    assert np.allclose(again.predict(x2), cal.predict(x2))


def test_selection_needs_points():
    with pytest.raises(TransferError, match="at least 2"):
        select_calibrator(np.array([1.0]), {"scale": (ScaleCalibrator, np.ones((1, 1)))})
    with pytest.raises(TransferError, match="positive"):
        calibrate(np.ones((3, 1)), np.array([1.0, -1.0, 2.0]))


def test_rank_sources_orders_by_correlation():
    t = RNG.uniform(1, 10, 30)
    src = np.c_[RNG.uniform(1, 10, 30), t * 2 + RNG.uniform(0, 0.1, 30), t**0.5]
    assert [n for n, _ in rank_sources(t, src, ["noise", "close", "sqrt"])][0] in ("close", "sqrt")
    assert rank_sources(t, src, ["noise", "close", "sqrt"])[-1][0] == "noise"


def test_the_source_column_taken_is_the_one_a_scale_fits_not_the_best_correlated():
    from perfpredict.transfer import best_scaled_column, rank_sources

    rng = np.random.default_rng(0)
    x = np.exp(rng.uniform(0, 4, 30))
    y = 2.0 * x * np.exp(rng.normal(0, 0.05, 30))
    cols = np.c_[y ** 1.5, x]  # the first correlates perfectly with y in logs, but no single scale fits it
    assert rank_sources(y, cols, ["curved", "scaled"])[0][0] == "curved"
    assert best_scaled_column(y, cols) == 1
