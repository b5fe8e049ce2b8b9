"""Calibrators: what each recovers on synthetic data, and their round trip through the registry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perfpredict.transfer import (
    DeviceFitCalibrator, DeviceSubspaceCalibrator, IsotonicCalibrator, LogLinearCalibrator, MixtureCalibrator,
    ScaleCalibrator, calibrator_from_dict,
)


RNG = np.random.default_rng(0)


def test_isotonic_is_monotone_and_extrapolates():
    x = np.sort(RNG.uniform(1, 10, 30))
    y = np.exp(np.sqrt(x)) * RNG.uniform(0.95, 1.05, 30)
    cal = IsotonicCalibrator().fit(x[:, None], y)
    grid = np.linspace(0.5, 20, 200)
    p = cal.predict(grid[:, None])
    assert np.all(np.diff(p) > 0)  # strictly increasing: ties broken by the source order
    assert p[-1] > cal.predict(np.array([[x.max()]]))[0] * 1.2  # continues beyond the range, not clipped


def test_loglinear_recovers_power_law():
    x = RNG.uniform(1, 50, 20)
    cal = LogLinearCalibrator().fit(x[:, None], 3.0 * x**1.5)
    assert cal.b == pytest.approx(1.5, abs=1e-6) and np.exp(cal.a) == pytest.approx(3.0, rel=1e-6)


def test_isotonic_recovers_monotone_transform():
    x = np.sort(RNG.uniform(1, 10, 40))
    f = lambda v: 2 + np.log1p(v) ** 3  # monotone, not a power law
    cal = IsotonicCalibrator().fit(x[:, None], f(x))
    inner = np.linspace(1.5, 9.5, 50)
    assert np.max(np.abs(cal.predict(inner[:, None]) / f(inner) - 1)) < 0.05


def test_mixture_recovers_nonnegative_weights():
    x = RNG.uniform(1, 10, (25, 3))
    y = 2.0 * x[:, 0] + 0.5 * x[:, 2] + 1.0
    cal = MixtureCalibrator().fit(x, y)
    assert np.allclose(cal.weights, [2.0, 0.0, 0.5], atol=1e-6) and cal.offset == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("cal", [ScaleCalibrator(), LogLinearCalibrator(), IsotonicCalibrator(), MixtureCalibrator(),
                                 DeviceFitCalibrator((0.1, 0.2), 5.0),
                                 DeviceSubspaceCalibrator((0.1, 0.2), ((0.6, 0.8),), 0.1)])
def test_calibrators_round_trip(cal):
    x = RNG.uniform(1, 10, (15, 2))
    y = x[:, 0] * 1.7 + x[:, 1]
    cal.fit(x, y)
    again = calibrator_from_dict(json.loads(json.dumps(cal.to_dict())))
    assert np.allclose(again.predict(x), cal.predict(x))


def test_split_scale_fits_one_scale_per_part_and_shrinks_an_unseen_part():
    from perfpredict.transfer import SplitScaleCalibrator, calibrator_from_dict

    x = np.array([[1.0, 0.0], [2.0, 1.0], [0.5, 3.0], [4.0, 0.5]])
    y = 2.0 * x[:, 0] + 0.5 * x[:, 1]
    cal = SplitScaleCalibrator(ridge=1e-9).fit(x, y)
    assert cal.scales == pytest.approx((2.0, 0.5), rel=1e-4)
    again = calibrator_from_dict(cal.to_dict())
    np.testing.assert_allclose(again.predict(x), y, rtol=1e-4)
    # no shot has an int8 part: that part stays at the common scale, not at 0
    only = SplitScaleCalibrator().fit(x[:, :1] * [1, 0] + [0, 0], 3.0 * x[:, 0])
    assert only.scales[0] == pytest.approx(3.0, rel=1e-3) and only.scales[1] == pytest.approx(3.0, rel=1e-3)
