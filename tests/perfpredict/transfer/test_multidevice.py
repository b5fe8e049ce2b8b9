"""The multi-device graph model: device weights fitted in closed form, training, zero-shot from a fingerprint."""

from __future__ import annotations

import numpy as np
import pytest

from perfpredict.devices import load_device
from perfpredict.nasbench201 import nb201_graph
from perfpredict.transfer import (
    DeviceFitCalibrator, DeviceSubspaceCalibrator, MultiDevicePredictor, TransferError, encode_graph,
    load_any_predictor,
)
from tests.perfpredict.transfer.stand_ins import nb201_archs, synthetic_latency


RNG = np.random.default_rng(0)


def test_device_subspace_recovers_coordinates():
    phi = RNG.normal(size=(15, 3))
    mu, basis = np.array([0.1, 0.0, 0.2]), np.array([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
    u = mu + basis.T @ np.array([0.5, -0.3])
    cal = DeviceSubspaceCalibrator(tuple(mu), tuple(map(tuple, basis)), 1e-9).fit(phi, np.exp(phi @ u + 0.7))
    assert np.allclose(cal.a, [0.5, -0.3], atol=1e-6) and cal.c == pytest.approx(0.7, abs=1e-6)


def test_device_fit_ridge_pulls_to_prior():
    phi = RNG.normal(size=(12, 4))
    y = np.exp(phi @ np.array([0.3, -0.2, 0.1, 0.0]) + 1.0)
    free = DeviceFitCalibrator((0.0,) * 4, lam=1e-6).fit(phi, y)
    assert np.allclose(free.u, [0.3, -0.2, 0.1, 0.0], atol=1e-4)
    stiff = DeviceFitCalibrator((1.0,) * 4, lam=1e6).fit(phi, y)
    assert np.allclose(stiff.u, 1.0, atol=1e-3)


def test_multidevice_learns_and_round_trips(small_model):
    path, ref_archs, devs = small_model
    pred = load_any_predictor(path)
    assert isinstance(pred, MultiDevicePredictor) and pred.model.devices == tuple(devs)
    test = [nb201_graph(a) for a in nb201_archs(20, 3)]
    p = pred.predict(test, [None] * len(test), load_device({"schema_version": 1, "name": "dev_b", "kind": "cpu"}))
    true = synthetic_latency(test, *devs["dev_b"])
    assert np.corrcoef(np.log(p.latency_ms), np.log(true))[0, 1] > 0.8
    assert np.all(p.peak_mem_bytes > 0)


def test_zero_shot_from_fingerprint_and_missing_fields(small_model):
    path, ref_archs, _ = small_model
    pred = load_any_predictor(path)
    refs = [nb201_graph(a) for a in ref_archs]
    fp = {f"ref#{i}": float(v) for i, v in enumerate(synthetic_latency(refs, 0.1, 0.9))}
    board = load_device({"schema_version": 1, "name": "new_board", "kind": "cpu", "fingerprint": fp})
    test = [nb201_graph(a) for a in nb201_archs(20, 4)]
    p = pred.predict(test, [None] * 20, board).latency_ms
    assert np.corrcoef(np.log(p), np.log(synthetic_latency(test, 0.1, 0.9)))[0, 1] > 0.8
    bare = load_device({"schema_version": 1, "name": "bare_board", "kind": "cpu"})
    with pytest.raises(TransferError, match=r"bare_board.*0 of the 6 fingerprint entries.*ref#0"):
        pred.predict(test, [None] * 20, bare)


def test_adapter_averages_candidates(small_model):
    """The default adaptation is the CV-weighted ensemble over factors and source columns; temperature=None
    picks one method."""
    path, ref_archs, _ = small_model
    model = load_any_predictor(path).model
    graphs = [nb201_graph(a) for a in nb201_archs(16, 9)]
    phi = model.factors([encode_graph(g) for g in graphs])
    y = synthetic_latency(graphs, 0.1, 0.9)
    ad = model.adapt(phi[:12], y[:12])
    assert ad.method == "ensemble" and ad.factors and ad.columns
    assert abs(sum(ad.weights.values()) - 1) < 1e-9 and ad.selection.cv_error["rmse_log"] > 0
    assert ad.inputs(phi, model).shape == (16, model.config.factors + len(ad.columns))
    assert np.corrcoef(np.log(ad.predict(phi[12:], model)), np.log(y[12:]))[0, 1] > 0.8
    flat = model.adapt(phi[:12], y[:12], temperature=1e3)  # near-equal weights: every candidate takes part
    assert set(flat.weights) == set(flat.selection.cv) - {"ensemble"} and "mixture" in flat.weights
    assert any(n.startswith("device_fit") for n in flat.weights) and max(flat.weights.values()) < 0.2
    one = model.adapt(phi[:12], y[:12], temperature=None)
    assert one.method != "ensemble" and one.weights == {one.method: 1.0}
    assert one.factors == one.method.startswith("device_")
