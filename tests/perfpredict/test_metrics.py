"""Metrics: relative errors, shares within tolerance, rank correlations."""

import math

import numpy as np
import pytest

from perfpredict.metrics import METRIC_NAMES, clean, kendall, mape, relative_errors, rmspe, spearman, summarise, within


def test_relative_error_figures():
    pred, true = [110.0, 90.0, 100.0, 130.0], [100.0, 100.0, 100.0, 100.0]
    assert mape(pred, true) == pytest.approx(12.5)
    assert rmspe(pred, true) == pytest.approx(math.sqrt((100 + 100 + 0 + 900) / 4))
    assert within(pred, true, 0.05) == pytest.approx(25.0)
    assert within(pred, true, 0.10) == pytest.approx(75.0)  # +-10% exactly counts as within


def test_rank_correlations():
    true = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(true * 3, true) == pytest.approx(1.0)
    assert kendall(true * 3, true) == pytest.approx(1.0)
    assert spearman(-true, true) == pytest.approx(-1.0)
    assert kendall(-true, true) == pytest.approx(-1.0)
    assert math.isnan(spearman([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]))
    assert math.isnan(kendall([1.0], [1.0]))


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        relative_errors([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        mape([1.0], [0.0])


def test_summarise_and_clean():
    s = summarise([1.0, 2.0, 3.2], [1.0, 2.0, 3.0])
    assert tuple(s) == METRIC_NAMES and s["n"] == 3
    assert s["within_5"] == pytest.approx(200 / 3)
    empty = summarise([], [])
    assert empty["n"] == 0 and math.isnan(empty["mape"])
    assert clean({"a": float("nan"), "b": [np.float64(1.5), np.int64(2)]}) == {"a": None, "b": [1.5, 2]}


def test_grouped_ranking_averages_per_group():
    from perfpredict.metrics import grouped_ranking

    true = [1.0, 2.0, 3.0, 10.0, 20.0, 30.0, 5.0]
    pred = [1.0, 2.0, 3.0, 30.0, 20.0, 10.0, 5.0]  # group a ordered right, group b reversed
    r = grouped_ranking(pred, true, ["a", "a", "a", "b", "b", "b", "c"])
    assert r["groups"] == 2  # group c is too small
    assert r["kendall"] == pytest.approx(0.0) and r["spearman"] == pytest.approx(0.0)
