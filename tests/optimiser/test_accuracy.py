"""Accuracy with the runtime: a small CNN trained on scikit-learn's digits, measured under int8 and pruning;
per-layer sensitivities, their cache, the additive estimate, and calibration-file errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from perfpredict.graph import load_onnx
from perfpredict.plan import default_plan

from optimiser.accuracy import (FIDELITY_SQNR_DB, AccuracyMeter, AdditiveAccuracy, CalibrationError, accuracy_tables,
                                digits_data, faithful_rows, layer_sensitivity, load_calibration, noise_points,
                                save_calibration)
from optimiser.space import SearchSpace, SpaceConfig


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A small CNN trained for a few epochs on digits at 16x16, exported to ONNX; and its test split."""
    (xtr, ytr), (xte, yte) = digits_data(resolution=16, seed=0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(16, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = torch.from_numpy(xtr), torch.from_numpy(ytr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is fastest, and the machine is shared
    try:
        for _ in range(6):
            for i in range(0, len(x), 64):
                opt.zero_grad()
                nn.functional.cross_entropy(net(x[i:i + 64]), y[i:i + 64]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("digits") / "digits.onnx"
    with torch.no_grad():
        torch.onnx.export(net.eval(), (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"])
    data_path = save_calibration(path.with_suffix(".npz"), xte[:64], yte[:64])
    return load_onnx(path), data_path


def test_faithful_needs_the_same_top1_and_a_close_output():
    ref = np.array([[5.0, 1.0, 0.0], [5.0, 1.0, 0.0], [5.0, 1.0, 0.0]])
    noise = 10 ** (-FIDELITY_SQNR_DB / 20) * np.linalg.norm(ref[0])  # RMS error at exactly the bound
    out = np.array([[5.0, 1.0, 0.0],  # identical
                    [5.0 + 2 * noise, 1.0, 0.0],  # same top-1, SQNR 6 dB under the bound
                    [0.0, 5.0, 0.0]])  # other top-1
    assert faithful_rows(out, ref).tolist() == [True, False, False]
    assert faithful_rows(ref + np.array([0.5 * noise, 0, 0]), ref).all()
    assert noise_points(FIDELITY_SQNR_DB + 3) == pytest.approx(1.0) and noise_points(float("inf")) == 0.0
    assert noise_points(FIDELITY_SQNR_DB + 13) * 10 == pytest.approx(1.0)  # ten such layers reach bound + margin
    assert noise_points(FIDELITY_SQNR_DB) == pytest.approx(10 ** 0.3)


def test_measured_accuracy_of_plans(digits_model):
    graph, data_path = digits_model
    data = load_calibration(data_path, graph)
    assert data.labels is not None and len(data) == 64
    meter = AccuracyMeter(graph, data, threads=1)
    base = meter.measure(default_plan(graph))
    assert base.drop_pct == 0.0 and base.top1_agreement == 1.0
    assert base.reference_accuracy_pct > 50.0  # the model did learn: far above chance (10%)
    space = SearchSpace(graph)
    int8 = space.decode(space.complete(np.array([
        next((k for k, c in enumerate(space.options[n]) if c.precision == "int8" and c.prune == 0), 0)
        for n in space.nodes])))
    r = meter.measure(int8)
    assert 0.0 <= r.top1_agreement <= 1.0 and np.isfinite(r.sqnr_db)
    assert r.drop_pct == pytest.approx(base.accuracy_pct - r.accuracy_pct)


def test_sensitivity_cache_and_additive_estimate(digits_model, tmp_path):
    graph, data_path = digits_model
    data = load_calibration(data_path, graph, limit=32)
    space = SearchSpace(graph, SpaceConfig(prune_ratios=(0.0, 0.5)))
    meter = AccuracyMeter(graph, data, threads=1)
    sens = layer_sensitivity(space, meter, tmp_path, progress=False)
    assert sens.runs > 0 and set(sens.int8) and all(v >= 0 for v in sens.int8.values())
    again = layer_sensitivity(space, AccuracyMeter(graph, data, threads=1), tmp_path, progress=False)
    assert again.runs == 0 and again.int8 == sens.int8 and again.prune == sens.prune
    tables = accuracy_tables(space, sens)
    est = AdditiveAccuracy(space, tables)
    rows = space.sample(np.random.default_rng(0), 20)
    expect = [sum(tables[i][row[i]] for i in range(len(row))) for row in rows]
    assert np.allclose(est.drop(rows), expect)
    assert est.drop(space.default_indices()[None])[0] == 0.0


def test_calibration_file_errors(digits_model, tmp_path):
    graph, _ = digits_model
    with pytest.raises(CalibrationError, match="no such"):
        load_calibration(tmp_path / "none.npz", graph)
    np.savez(tmp_path / "wrong.npz", inputs=np.zeros((4, 3, 8, 8), np.float32))
    with pytest.raises(CalibrationError, match="do not fit"):
        load_calibration(tmp_path / "wrong.npz", graph)
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((4, 3, 16, 16), np.float32), y=np.zeros(3, np.int64))
    with pytest.raises(CalibrationError, match="labels"):
        load_calibration(tmp_path / "nolabels.npz", graph)
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(CalibrationError, match="readable"):
        load_calibration(tmp_path / "junk.npz", graph)
