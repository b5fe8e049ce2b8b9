"""Transfer to unseen devices: calibrators, CV selection, shot choice, the multi-device model, the adapted
checkpoint and bad-input errors. Synthetic data only (fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli.main import main as cli_main
from perfpredict.devices import load_device
from perfpredict.measure import torch_threads
from perfpredict.errors import PerfPredictError
from perfpredict.nasbench201 import arch_string, nb201_graph, nb201_onnx
from perfpredict.transfer import (CalibratedPredictor, DeviceFitCalibrator, DeviceSubspaceCalibrator,
                                  EnsembleCalibrator, IsotonicCalibrator, LogLinearCalibrator, Measurement,
                                  MixtureCalibrator, MultiDeviceConfig, MultiDevicePredictor, ScaleCalibrator,
                                  TransferError, adapt_predictor, average_calibrators, calibrate,
                                  calibrator_from_dict, choose_shots, encode_graph, fit_multi_device,
                                  load_any_predictor, rank_sources, read_measurements, select_calibrator,
                                  write_measurements)

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


@pytest.mark.parametrize("cal", [ScaleCalibrator(), LogLinearCalibrator(), IsotonicCalibrator(), MixtureCalibrator(),
                                 DeviceFitCalibrator((0.1, 0.2), 5.0),
                                 DeviceSubspaceCalibrator((0.1, 0.2), ((0.6, 0.8),), 0.1)])
def test_calibrators_round_trip(cal):
    x = RNG.uniform(1, 10, (15, 2))
    y = x[:, 0] * 1.7 + x[:, 1]
    cal.fit(x, y)
    again = calibrator_from_dict(json.loads(json.dumps(cal.to_dict())))
    assert np.allclose(again.predict(x), cal.predict(x))


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


def test_choose_shots_spreads_over_quantiles():
    pred = np.exp(RNG.uniform(0, 5, 200))
    pick = choose_shots(pred, 10)
    assert len(set(pick)) == 10
    ranks = np.argsort(np.argsort(pred))[pick]
    assert sorted(ranks // 20) == list(range(10))  # one shot per decile of predicted latency
    assert choose_shots(pred, 10) == pick  # deterministic
    with pytest.raises(TransferError):
        choose_shots(pred[:5], 6)


def test_rank_sources_orders_by_correlation():
    t = RNG.uniform(1, 10, 30)
    src = np.c_[RNG.uniform(1, 10, 30), t * 2 + RNG.uniform(0, 0.1, 30), t**0.5]
    assert [n for n, _ in rank_sources(t, src, ["noise", "close", "sqrt"])][0] in ("close", "sqrt")
    assert rank_sources(t, src, ["noise", "close", "sqrt"])[-1][0] == "noise"


# --------------------------------------------------------------------------- multi-device model end to end

OPS = ["nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect", "none"]


def _archs(n, seed):
    r = np.random.default_rng(seed)
    return [arch_string([OPS[i] for i in r.integers(0, 5, 6)]) for i in range(n)]


def _truth(graphs, a, b):
    """Synthetic device: latency = a * (MMACs)^b + 0.02 * nodes."""
    return np.array([a * (g.macs / 1e6) ** b + 0.02 * len(g.nodes) for g in graphs])


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    archs = _archs(48, 1)
    graphs = [nb201_graph(a) for a in archs]
    devs = {"dev_a": (0.05, 1.0), "dev_b": (0.2, 0.8), "dev_c": (0.01, 1.2)}
    lat = np.stack([_truth(graphs, *p) for p in devs.values()], 1)
    with torch_threads(1):  # tiny tensors: extra threads only add contention
        model = fit_multi_device([encode_graph(g) for g in graphs], lat, list(devs),
                                 MultiDeviceConfig(hidden=32, layers=2, factors=4, epochs=60, batch_size=8, lr=3e-3))
    ref_archs = _archs(6, 2)
    ref = {f"ref#{i}": model.factors([encode_graph(nb201_graph(a))])[0] for i, a in enumerate(ref_archs)}
    pred = MultiDevicePredictor(model, ref, {"dev_a": {}}, {"note": "test"})
    path = tmp_path_factory.mktemp("md") / "source"
    pred.save(path)
    return path, ref_archs, devs


def test_multidevice_learns_and_round_trips(small_model):
    path, ref_archs, devs = small_model
    pred = load_any_predictor(path)
    assert isinstance(pred, MultiDevicePredictor) and pred.model.devices == tuple(devs)
    test = [nb201_graph(a) for a in _archs(20, 3)]
    p = pred.predict(test, [None] * len(test), load_device({"schema_version": 1, "name": "dev_b", "kind": "cpu"}))
    true = _truth(test, *devs["dev_b"])
    assert np.corrcoef(np.log(p.latency_ms), np.log(true))[0, 1] > 0.8
    assert np.all(p.peak_mem_bytes > 0)


def test_zero_shot_from_fingerprint_and_missing_fields(small_model):
    path, ref_archs, _ = small_model
    pred = load_any_predictor(path)
    refs = [nb201_graph(a) for a in ref_archs]
    fp = {f"ref#{i}": float(v) for i, v in enumerate(_truth(refs, 0.1, 0.9))}
    board = load_device({"schema_version": 1, "name": "new_board", "kind": "cpu", "fingerprint": fp})
    test = [nb201_graph(a) for a in _archs(20, 4)]
    p = pred.predict(test, [None] * 20, board).latency_ms
    assert np.corrcoef(np.log(p), np.log(_truth(test, 0.1, 0.9)))[0, 1] > 0.8
    bare = load_device({"schema_version": 1, "name": "bare_board", "kind": "cpu"})
    with pytest.raises(TransferError, match=r"bare_board.*0 of the 6 fingerprint entries.*ref#0"):
        pred.predict(test, [None] * 20, bare)


def test_adapter_averages_candidates(small_model):
    """The default adaptation is the CV-weighted ensemble over factors and source columns; temperature=None
    picks one method."""
    path, ref_archs, _ = small_model
    model = load_any_predictor(path).model
    graphs = [nb201_graph(a) for a in _archs(16, 9)]
    phi = model.factors([encode_graph(g) for g in graphs])
    y = _truth(graphs, 0.1, 0.9)
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


def test_adapt_writes_a_normal_checkpoint(small_model, tmp_path):
    path, ref_archs, _ = small_model
    archs = _archs(8, 5)
    rows = []
    for i, a in enumerate(archs):
        f = tmp_path / f"m{i}.onnx"
        f.write_bytes(nb201_onnx(a).SerializeToString())
        rows.append(Measurement(str(f), None, float(_truth([nb201_graph(a)], 0.3, 0.7)[0])))
    csv_path = write_measurements(tmp_path / "m.csv", rows)
    ms = read_measurements(csv_path)
    board = load_device({"schema_version": 1, "name": "new_board", "kind": "cpu"})
    res = adapt_predictor(path, board, ms, 6, tmp_path / "adapted")
    assert res.k == 6 and res.holdout is not None and res.holdout["n"] == 2
    adapted = load_any_predictor(tmp_path / "adapted")
    assert isinstance(adapted, CalibratedPredictor)
    from perfpredict.gnn_predictor import load_predictor  # what `predict` and `optimise` call

    assert isinstance(load_predictor(tmp_path / "adapted"), CalibratedPredictor)
    card = json.loads((tmp_path / "adapted" / "transfer.json").read_text())
    assert card["source"]["path"].endswith("source") and card["k"] == 6 and card["method"] in card["cv"]
    assert sum(m["used"] for m in card["measurements"]) == 6
    test = [nb201_graph(a) for a in _archs(10, 6)]
    p = adapted.predict(test, [None] * 10, board)
    assert np.all(p.latency_ms > 0) and len(p) == 10
    assert card["method"] == "ensemble" and card["columns"][0] == {"type": "factors"}
    source = load_any_predictor(path)  # the same ensemble refit in memory on the 6 shots used
    used = [i for i, m in enumerate(card["measurements"]) if m["used"]]
    ad = source.model.adapt(source.factors([nb201_graph(archs[i]) for i in used]),
                            np.array([ms[i].latency_ms for i in used]))
    assert np.allclose(p.latency_ms, ad.predict(source.factors(test), source.model))
    with pytest.raises(TransferError, match="adapted to device 'new_board'"):
        adapted.predict(test, [None] * 10, load_device({"schema_version": 1, "name": "other", "kind": "cpu"}))
    with pytest.raises(TransferError, match="-k 9 asks for more shots than the 8 measurements"):
        adapt_predictor(path, board, ms, 9, tmp_path / "again")


def test_bad_measurement_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("model,ms\nx,1\n")
    with pytest.raises(PerfPredictError, match="missing column.*latency_ms"):
        read_measurements(bad)
    bad.write_text("model,latency_ms\nx,-3\n")
    with pytest.raises(PerfPredictError, match="positive"):
        read_measurements(bad)


def test_transfer_cli(small_model, tmp_path, capsys):
    path, ref_archs, _ = small_model
    rows = []
    for i, a in enumerate(_archs(5, 7)):
        f = tmp_path / f"m{i}.onnx"
        f.write_bytes(nb201_onnx(a).SerializeToString())
        rows.append(Measurement(f.name, None, float(_truth([nb201_graph(a)], 0.3, 0.7)[0])))
    csv_path = write_measurements(tmp_path / "m.csv", rows)  # relative ONNX paths resolve beside the CSV
    board = tmp_path / "board.json"
    load_device({"schema_version": 1, "name": "cli_board", "kind": "cpu"}).save(board)
    out = tmp_path / "adapted"
    code = cli_main(["transfer", "--predictor", str(path), "--device-features", str(board), "--measurements",
                     str(csv_path), "-k", "5", "-o", str(out), "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["k"] == 5 and res["method"] in res["cv"] and (out / "transfer.json").is_file()
    code = cli_main(["transfer", "--predictor", str(path), "--device-features", str(board), "--measurements",
                     str(csv_path), "-k", "7", "-o", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "-k 7 asks for more shots than the 5 measurements" in err
    # a shipped example board is named as in predict and optimise
    code = cli_main(["transfer", "--predictor", str(path), "--device-features", "raspberry_pi_4", "--measurements",
                     str(csv_path), "-k", "5", "-o", str(tmp_path / "pi"), "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["k"] == 5


class _RooflinePredictor:
    """A device-conditioned Predictor for the test: per node max(FLOPs / peak, bytes / bandwidth) + 5 us."""

    kind = "test-roofline"

    def predict(self, graphs, plans, device):
        from perfpredict.features import device_rates
        from perfpredict.predictor import Prediction

        r = device_rates(device)
        gl = [graphs] * len(plans) if not isinstance(graphs, list) else graphs
        lat = [sum(max(n.flops / (r.gflops_fp32 * 1e6), (n.bytes_in + n.bytes_out) / (r.bandwidth_gbs * 1e6)) + 0.005
                   for n in g.nodes) for g in gl]
        return Prediction(np.array(lat), np.ones(len(gl)))


def test_board_fit_tunes_device_features(tmp_path, monkeypatch):
    """A device-conditioned source whose target differs in compute/bandwidth balance: fitting the board's
    features beats a plain rescaling, and the tuned board lands in the checkpoint."""
    from perfpredict import transfer as tr
    from perfpredict.transfer import fit_board, scaled_board

    src = _RooflinePredictor()
    board = load_device({"schema_version": 1, "name": "tb", "kind": "cpu", "cores": 2, "peak_gflops_fp32": 50.0,
                         "mem_bw_triad_gbs": 10.0})
    truth_board = scaled_board(board, [np.log(4.0), 0.0, np.log(0.3)])
    graphs = [nb201_graph(a) for a in _archs(10, 8)]
    y = src.predict(graphs, [None] * 10, truth_board).latency_ms
    tuned, off = fit_board(src, board, graphs[:8], [None] * 8, y[:8])
    p = src.predict(graphs[8:], [None] * 2, tuned).latency_ms * np.exp(off)
    assert np.max(np.abs(p / y[8:] - 1)) < 0.05
    monkeypatch.setattr(tr, "load_any_predictor", lambda path: src)
    monkeypatch.setattr(tr, "_workload", lambda m: (graphs[int(m.model)], None))
    ms = [Measurement(str(i), None, float(v)) for i, v in enumerate(y)]
    res = adapt_predictor("unused", board, ms, 8, tmp_path / "a", methods=("board_fit", "scale", "loglinear"))
    assert res.method == "board_fit" and res.cv["board_fit"]["rmse_log"] < res.cv["scale"]["rmse_log"]
    card = json.loads((tmp_path / "a" / "transfer.json").read_text())
    assert card["columns"][0]["board"]["peak_gflops_fp32"] != 50.0


def test_board_fit_moves_the_fp32_rate_through_the_fingerprint_convolution():
    """Where the board's fingerprint times the convolution the fp32 rate is read from, the fit scales the
    fingerprint (and with it that rate) and leaves the matmul peak alone, which would move the same rate."""
    from perfpredict.features import FINGERPRINT_CONV, device_rates
    from perfpredict.transfer import fit_board, scaled_board

    src = _RooflinePredictor()
    board = load_device({"schema_version": 1, "name": "tb", "kind": "cpu", "cores": 2, "peak_gflops_fp32": 50.0,
                         "peak_gops_int8": 200.0, "mem_bw_triad_gbs": 10.0,
                         "fingerprint": {FINGERPRINT_CONV: 2.0, "fc": 0.1, "pool": 0.3}})
    truth_board = scaled_board(board, [0.0, 0.0, np.log(0.5), np.log(0.25)])  # convolution 4x faster
    graphs = [nb201_graph(a) for a in _archs(10, 9)]
    y = src.predict(graphs, [None] * 10, truth_board).latency_ms
    tuned, off = fit_board(src, board, graphs[:8], [None] * 8, y[:8])
    p = src.predict(graphs[8:], [None] * 2, tuned).latency_ms * np.exp(off)
    assert np.max(np.abs(p / y[8:] - 1)) < 0.05
    assert tuned.peak_gflops_fp32 == pytest.approx(device_rates(board).gflops_fp32)  # factor 1 on the peak
    assert device_rates(tuned).gflops_fp32 > 2.0 * device_rates(board).gflops_fp32


class _PlanAwareSource:
    """A plan-aware (GNN-like) source for the test: 2 ms per plan, 10 bytes, 4 equal nodes; records the threads."""

    def __init__(self):
        self.threads_seen = []

    def predict_plans(self, template, plans, device, threads=None):
        from perfpredict.predictor import Prediction

        self.threads_seen.append(threads)
        return Prediction(np.full(len(plans), 2.0), np.full(len(plans), 10.0))

    def node_latencies(self, template, plans, device, threads=None):
        self.threads_seen.append(threads)
        return np.full((len(plans), 4), 0.5)


def test_adapted_predictor_batched_path_and_its_device():
    """The batched (template) path takes the thread count as the source's does (``evaluate`` passes it), and an
    adapted predictor refuses a machine that only shares its target's name, or another thread count."""
    facts = {"schema_version": 1, "name": "host", "kind": "cpu", "cpu_model": "CPU A", "cores": 2}
    board = load_device({**facts, "threads_used": 2})
    src = _PlanAwareSource()
    cal = ScaleCalibrator().fit(np.array([[1.0], [2.0]]), np.array([3.0, 6.0]))
    adapted = CalibratedPredictor(src, "unused", board, [{"type": "board", "board": board.to_dict()}], cal)
    p = adapted.predict_plans("template", [None, None], board, 2)
    np.testing.assert_allclose(p.latency_ms, [6.0, 6.0])
    np.testing.assert_allclose(p.peak_mem_bytes, [10.0, 10.0])
    assert adapted.node_latencies("template", [None], board, 2).sum() == pytest.approx(6.0)
    assert set(src.threads_seen) == {2}
    twin = load_device({**facts, "cpu_model": "CPU B", "threads_used": 2})  # same name, another machine
    with pytest.raises(TransferError, match="device_id"):
        adapted.predict_plans("template", [None], twin)
    with pytest.raises(TransferError, match="at 2 threads, not 1"):
        adapted.predict_plans("template", [None], load_device({**facts, "threads_used": 1}))


def _target_and_proxy(slower: float):
    """A fingerprint, a new device whose fingerprint is ``slower`` x it, and a proxy device that has it."""
    fp = {"conv_a": 1.0, "conv_b": 2.0, "conv_c": 4.0, "fc": 0.5}
    target = load_device({"schema_version": 1, "name": "new", "kind": "cpu", "cores": 2, "peak_gflops_fp32": 50.0,
                          "fingerprint": {k: slower * v for k, v in fp.items()}})
    proxy = load_device({"schema_version": 1, "name": "proxy", "kind": "cpu", "cores": 2, "peak_gflops_fp32": 200.0,
                         "mem_bw_triad_gbs": 20.0, "fingerprint": fp})
    return fp, target, proxy


def test_zero_shot_through_a_proxy_scales_by_the_fingerprint_ratio(tmp_path, monkeypatch):
    """k = 0 with a proxy device whose fingerprint correlates with the target's: the adapted predictor is the
    source's prediction on the proxy times the fingerprints' ratio; without a qualifying proxy, the target board."""
    from perfpredict import transfer as tr
    from perfpredict.transfer import CalibratedPredictor, fingerprint_ratio, nearest_proxy

    src = _RooflinePredictor()
    fp, target, proxy = _target_and_proxy(3.0)
    unrelated = load_device({"schema_version": 1, "name": "far", "kind": "cpu", "cores": 4,
                             "fingerprint": {"conv_a": 1.0, "other": 2.0}})
    assert fingerprint_ratio(target, proxy) == (pytest.approx(3.0), 4)
    assert nearest_proxy(target, [unrelated, proxy])[0].name == "proxy" and nearest_proxy(target, [unrelated]) is None
    # two machines of one kind share a name: the one whose fingerprint correlates is chosen, not the first
    twin = load_device({"schema_version": 1, "name": "proxy", "kind": "cpu", "cores": 2,
                        "fingerprint": {"conv_a": 4.0, "conv_b": 1.0, "conv_c": 0.5, "fc": 2.0}})
    assert nearest_proxy(target, [twin, proxy])[0] is proxy
    graphs = [nb201_graph(a) for a in _archs(6, 3)]
    monkeypatch.setattr(tr, "load_any_predictor", lambda path: src)
    monkeypatch.setattr(tr, "_workload", lambda m: (graphs[int(m.model)], None))
    ms = [Measurement(str(i), None, 1.0) for i in range(len(graphs))]
    res = adapt_predictor("unused", target, ms, 0, tmp_path / "a", proxies=[unrelated, proxy])
    assert res.method == "proxy_scale" and res.zero_shot["proxy"] == "proxy"
    assert res.zero_shot["fingerprint_ratio"] == pytest.approx(3.0) and res.holdout["n"] == len(graphs)
    assert "Zero-shot through the proxy device `proxy`" in (tmp_path / "a" / "README.md").read_text()
    card = json.loads((tmp_path / "a" / "transfer.json").read_text())
    assert [c["board"]["name"] for c in card["columns"]] == ["proxy"]
    # the checkpoint's columns and calibrator, around the (stub) source: the proxy's prediction x 3
    adapted = CalibratedPredictor(src, "unused", target, card["columns"], tr.calibrator_from_dict(card["calibrator"]),
                                  {})
    want = 3.0 * src.predict(graphs, [None] * len(graphs), proxy).latency_ms
    np.testing.assert_allclose(adapted.predict(graphs, [None] * len(graphs), target).latency_ms, want, rtol=1e-9)
    # no proxy qualifies: the target board as is
    assert adapt_predictor("unused", target, ms, 0, tmp_path / "b", proxies=[unrelated]).method == "none"
    # none given: the devices the source was trained on, when it records them
    src.training_devices = lambda: [unrelated, proxy]
    res = adapt_predictor("unused", target, ms, 0, tmp_path / "c")
    assert res.method == "proxy_scale" and res.zero_shot["proxy"] == "proxy"
    # a target without int8 dot-product instructions never goes through a proxy with them (k = 0)
    avx2 = load_device({**target.to_dict(), "isa_features": ["avx2", "fma"]})
    vnni = load_device({**proxy.to_dict(), "isa_features": ["avx2", "avx512_vnni"]})
    assert adapt_predictor("unused", avx2, ms, 0, tmp_path / "d", proxies=[vnni]).method == "none"
    assert adapt_predictor("unused", avx2, ms, 0, tmp_path / "e", proxies=[vnni, proxy]).method == "proxy_scale"


def test_zero_shot_proxies_match_the_targets_int8_dot_product_support():
    from perfpredict.transfer import int8_dot_product, zero_shot_proxies

    def cpu(name, isa):
        return load_device({"schema_version": 1, "name": name, "kind": "cpu", "cores": 2, "isa_features": isa})

    zen3, zen4, amx = cpu("zen3", ["avx2", "fma"]), cpu("zen4", ["avx512f", "avx512_vnni"]), cpu("spr", ["amx_int8"])
    arm, bare = cpu("a76", ["neon", "asimddp"]), cpu("hand-written", [])
    assert [int8_dot_product(d) for d in (zen3, zen4, amx, arm, bare)] == [False, True, True, True, None]
    assert zero_shot_proxies(zen3, [zen4, amx, arm, bare, zen3]) == [bare, zen3]
    assert zero_shot_proxies(zen4, [zen3, amx, arm, bare]) == [amx, arm, bare]
    assert zero_shot_proxies(bare, [zen3, zen4]) == [zen3, zen4]  # a board that does not say: every device


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


def test_shots_fit_the_proxys_fp32_and_int8_nodes_apart(tmp_path, monkeypatch):
    """A target that runs a trained device's fp32 nodes 2x slower and its int8 nodes 2x faster (its int8 : fp32
    speed differs): with shots among fp32 and int8 plans, ``proxy_split`` wins the CV and the checkpoint (read back
    from disk) predicts held-out plans of either kind."""
    import random

    from perfpredict import transfer as tr
    from perfpredict.gnn import GNNConfig
    from perfpredict.gnn_predictor import GNNPredictor
    from perfpredict.models import load_model
    from perfpredict.profile import sample_plans
    from perfpredict.train import TrainOptions
    from perfpredict.transfer import precision_parts
    from tests.perfpredict.synthetic import synthetic_samples

    src = GNNPredictor(GNNConfig(hidden=8, layers=1)).fit(
        synthetic_samples(plans_per_graph=4, families=("resnet", "mobilenet_v2"), variants=1),
        options=TrainOptions(epochs=2))
    src.save(tmp_path / "src")
    src = tr.load_any_predictor(tmp_path / "src")
    fp, target, proxy = _target_and_proxy(1.5)
    target = load_device({**target.to_dict(), "threads_used": 2})
    proxy = load_device({**proxy.to_dict(), "threads_used": 2})
    src.training_devices = lambda: [proxy]
    work = []
    for name in ("resnet18", "mobilenet_v2", "squeezenet1_1"):
        g = load_model(name, resolution=32)[0]
        work += [(g, p) for p in sample_plans(g, 8, random.Random(0)) if p.name in tr.SHOT_PLANS]
    graphs, plans = [g for g, _ in work], [p for _, p in work]
    parts = precision_parts(src, graphs, plans, proxy)
    assert np.all(parts >= 0) and np.any(parts[:, 1] > 0)
    np.testing.assert_allclose(parts.sum(axis=1), src.predict(graphs, plans, proxy).latency_ms, rtol=1e-6)
    y = parts @ np.array([2.0, 0.5])
    monkeypatch.setattr(tr, "load_any_predictor", lambda path: src)
    monkeypatch.setattr(tr, "_workload", lambda m: work[int(m.model)])
    ms = [Measurement(str(i), None, float(v)) for i, v in enumerate(y)]
    res = adapt_predictor("unused", target, ms, 8, tmp_path / "a", methods=("scale", "loglinear"))
    # exact up to the shrinkage towards the common scale; one scale cannot fit both kinds of plan
    assert res.method == "proxy_split" and res.cv["proxy_split"]["mape"] < 5.0
    assert res.cv["proxy_split"]["mape"] < res.cv["proxy_scale"]["mape"] / 10 and res.holdout["mape"] < 5.0
    card = json.loads((tmp_path / "a" / "transfer.json").read_text())
    assert [c.get("part") for c in card["columns"]] == ["fp32", "int8"]
    back = tr.CalibratedPredictor.load(tmp_path / "a")
    got = back.predict(graphs, plans, target).latency_ms
    assert np.median(np.abs(got / y - 1)) < 0.05
    assert "fp32 nodes and of its int8 nodes" in (tmp_path / "a" / "README.md").read_text()


def test_zero_shot_proxy_is_a_trained_device_at_the_targets_thread_count(tmp_path, monkeypatch):
    """A checkpoint trained on one machine at 1 and 2 threads: a 2-thread target goes through the 2-thread board
    even where the 1-thread fingerprint correlates better (the proxy is predicted at its own thread count)."""
    from perfpredict import transfer as tr

    src = _RooflinePredictor()
    fp, _, _ = _target_and_proxy(1.0)
    target = load_device({"schema_version": 1, "name": "new", "kind": "cpu", "cores": 2, "threads_used": 2,
                          "fingerprint": {k: 2.0 * v for k, v in fp.items()}})
    one = load_device({"schema_version": 1, "name": "p", "kind": "cpu", "cores": 2, "threads_used": 1,
                       "fingerprint": fp})
    two = load_device({"schema_version": 1, "name": "p", "kind": "cpu", "cores": 2, "threads_used": 2,
                       "fingerprint": {"conv_a": 0.6, "conv_b": 1.0, "conv_c": 2.4, "fc": 0.3}})
    src.training_devices = lambda: [one, two]
    graphs = [nb201_graph(a) for a in _archs(4, 5)]
    monkeypatch.setattr(tr, "load_any_predictor", lambda path: src)
    monkeypatch.setattr(tr, "_workload", lambda m: (graphs[int(m.model)], None))
    ms = [Measurement(str(i), None, 1.0) for i in range(len(graphs))]
    adapt_predictor("unused", target, ms, 0, tmp_path / "a")
    card = json.loads((tmp_path / "a" / "transfer.json").read_text())
    assert card["columns"][0]["board"]["threads_used"] == 2
    assert card["zero_shot"]["fingerprint_ratio"] == pytest.approx(tr.fingerprint_ratio(target, two)[0])


def test_shots_with_k_use_the_nearest_trained_device_as_a_candidate(tmp_path, monkeypatch):
    """With k > 0 shots and no proxy given, the trained device nearest by fingerprint is a calibration candidate
    (``proxy_scale``: its prediction rescaled to the shots); where the target runs as that device scaled, it wins
    the cross-validation and the checkpoint reads that device's board."""
    from perfpredict import transfer as tr

    src = _RooflinePredictor()
    _, target, proxy = _target_and_proxy(2.0)
    graphs = [nb201_graph(a) for a in _archs(8, 4)]
    y = 2.5 * src.predict(graphs, [None] * len(graphs), proxy).latency_ms
    src.training_devices = lambda: [proxy]
    monkeypatch.setattr(tr, "load_any_predictor", lambda path: src)
    monkeypatch.setattr(tr, "_workload", lambda m: (graphs[int(m.model)], None))
    ms = [Measurement(str(i), None, float(v)) for i, v in enumerate(y)]
    res = adapt_predictor("unused", target, ms, 8, tmp_path / "a", methods=("scale", "loglinear"))
    assert res.method == "proxy_scale" and res.cv["proxy_scale"]["mape"] < 1e-6 < res.cv["scale"]["mape"]
    card = json.loads((tmp_path / "a" / "transfer.json").read_text())
    assert [c["board"]["name"] for c in card["columns"]] == ["proxy"]
    assert "Through the proxy device `proxy`" in (tmp_path / "a" / "README.md").read_text()
    src.training_devices = lambda: []  # nothing to offer: the target board's column only
    assert "proxy_scale" not in adapt_predictor("unused", target, ms, 8, tmp_path / "b", methods=("scale",)).cv


def test_measure_on_local_chooses_among_models_and_plans(tmp_path, monkeypatch):
    """``--measure-on local`` picks its k shots among each model's default, NHWC, int8 and pruned plans, writes
    the non-default ones as plan JSON in the output folder and lists them in a CSV that reads back (the timing
    itself is the runtime's, tested with it; here a stand-in returns a fixed figure)."""
    import types

    from perfpredict.plan import Plan
    from perfpredict.runtime import measurement
    from perfpredict.transfer import SHOT_PLANS, measure_candidates

    from perfpredict.beacon import BEACON_KEY, Beacon

    timed = []

    def fake_measure(graph, plan, beside, threads=None):
        timed.append((graph.name, plan.name, threads))
        assert set(beside) == {BEACON_KEY}  # every shot is timed beside the beacon
        return {"plan": types.SimpleNamespace(median_ms=1.0 + len(timed)),
                BEACON_KEY: types.SimpleNamespace(median_ms=0.5 * len(timed))}

    monkeypatch.setattr(measurement, "measure_plan_beside", fake_measure)
    monkeypatch.setattr(Beacon, "call", lambda self, threads: (lambda: None))
    board = load_device({"schema_version": 1, "name": "b", "kind": "cpu", "cores": 2, "threads_used": 2})
    models = ["squeezenet1_1", "mobilenet_v2"]
    ms = measure_candidates(_RooflinePredictor(), board, 6, models=models, plans_dir=tmp_path / "out" / "shots")
    assert len(ms) == 6 == len(timed) and {t for _, _, t in timed} == {2}
    kinds = {name for _, name, _ in timed}
    assert kinds <= set(SHOT_PLANS) and len(kinds) > 1 and len({m.model for m in ms}) == 2
    for m in ms:  # the default plan stays implicit; any other is a file named for its model and kind
        if m.plan is not None:
            plan = Plan.load(m.plan)
            assert plan.name in SHOT_PLANS and plan.name != "default" and m.plan.endswith(f"{m.model}.{plan.name}.json")
    back = read_measurements(write_measurements(tmp_path / "out" / "measurements.csv", ms))
    assert [(b.model, b.plan, b.latency_ms) for b in back] == [(m.model, m.plan, m.latency_ms) for m in ms]
    assert [b.beacon_ms for b in back] == [0.5 * (i + 1) for i in range(6)]
    assert "shots/" in (tmp_path / "out" / "measurements.csv").read_text()  # relative: the folder can move
    # a killed run resumes: what an earlier run measured (read back from its CSV) is not measured again
    timed.clear()
    seen = []
    again = measure_candidates(_RooflinePredictor(), board, 6, models=models, plans_dir=tmp_path / "out" / "shots",
                               done=back[:4], on_measured=lambda so_far: seen.append(len(so_far)))
    assert len(timed) == 2 and seen == [5, 6]
    assert [m.latency_ms for m in again[:4]] == [m.latency_ms for m in ms[:4]]
    with pytest.raises(TransferError, match="-k 99 is more than the"):
        measure_candidates(_RooflinePredictor(), board, 99, models=models, plans_dir=tmp_path / "x")
    # without a plans folder: the default plans only
    timed.clear()
    assert all(m.plan is None for m in measure_candidates(_RooflinePredictor(), board, 2, models=models))


def test_shots_timed_beside_the_beacon_are_scaled_to_its_median(tmp_path):
    # two shots measured while the machine ran 1.5x slower (their beacon 1.5x too) come back to the speed of the
    # others; a measurement without a beacon stays as it is
    from perfpredict.transfer import Measurement, beacon_normalised

    ms = [Measurement("a", None, 2.0, 1.0), Measurement("b", None, 4.0, 1.0), Measurement("c", None, 3.0, 1.5),
          Measurement("d", None, 6.0, 1.5), Measurement("e", None, 1.0, 1.0), Measurement("f", None, 9.0)]
    out = beacon_normalised(ms)
    assert [m.latency_ms for m in out] == pytest.approx([2.0, 4.0, 2.0, 4.0, 1.0, 9.0])
    assert beacon_normalised(ms[-1:]) == ms[-1:]
    # the CSV keeps the latencies as timed and the beacon beside them; a CSV without the column reads as before
    back = read_measurements(write_measurements(tmp_path / "m.csv", ms))
    assert [(b.latency_ms, b.beacon_ms) for b in back] == [(m.latency_ms, m.beacon_ms) for m in ms]
    (tmp_path / "old.csv").write_text("model,latency_ms\na,2.0\n")
    assert read_measurements(tmp_path / "old.csv")[0].beacon_ms is None
    (tmp_path / "bad.csv").write_text("model,latency_ms,beacon_ms\na,2.0,-1\n")
    with pytest.raises(TransferError, match="beacon_ms must be a positive"):
        read_measurements(tmp_path / "bad.csv")


def test_amdahl_extrapolates_from_one_and_two_threads():
    from perfpredict.transfer import amdahl_latency

    one = np.array([8.0, 8.0, 8.0, 0.0, 8.0])
    two = np.array([4.0, 8.0, 6.0, 0.0, 9.0])  # all parallel, all serial, half-half, zero, slower at 2 (clipped)
    np.testing.assert_allclose(amdahl_latency(one, two, 16), [0.5, 8.0, 4.0 + 4.0 / 16, 0.0, 8.0])
    np.testing.assert_allclose(amdahl_latency(one, two, 2), [4.0, 8.0, 6.0, 0.0, 8.0])


class _TwoThreadRoofline(_RooflinePredictor):
    """A source that knows thread scaling up to the 2 threads it 'trained' at: each graph's parallel fraction
    grows with its FLOPs; asked for more threads it answers for 2."""

    def predict(self, graphs, plans, device, threads=None):
        from perfpredict.features import threads_of
        from perfpredict.predictor import Prediction

        base = super().predict(graphs, plans, device)
        gl = [graphs] * len(plans) if not isinstance(graphs, list) else graphs
        p = np.array([0.3 + 0.6 * min(1.0, g.macs / 2e8) for g in gl])
        t = min(threads_of(device, threads), 2)
        return Prediction(base.latency_ms * ((1 - p) + p / t), base.peak_mem_bytes)


def test_shots_at_an_untrained_thread_count_extrapolate_a_trained_device_by_amdahl(tmp_path, monkeypatch):
    """A target at 16 threads, a source trained at 1 and 2 only: the trained device's 1- and 2-thread predictions
    extrapolated by Amdahl's law and rescaled (``amdahl_scale``) fit the shots where no rescaling of the board's
    own answer can, win the CV, and the checkpoint (read back) predicts the held-out pairs."""
    from perfpredict import transfer as tr
    from perfpredict.transfer import amdahl_latency, amdahl_pairs

    src = _TwoThreadRoofline()
    spec = {"schema_version": 1, "name": "trained", "kind": "cpu", "cores": 2, "peak_gflops_fp32": 200.0,
            "mem_bw_triad_gbs": 20.0}
    one, two = load_device({**spec, "threads_used": 1}), load_device({**spec, "threads_used": 2})
    target = load_device({**spec, "name": "many", "cores": 16, "threads_used": 16, "peak_gflops_fp32": 900.0})
    src.training_devices = lambda: [one, two]
    assert amdahl_pairs(src, 16) == [(one, two)] and amdahl_pairs(src, 2) == []
    graphs = [nb201_graph(a) for a in _archs(12, 5)]
    nones = [None] * len(graphs)
    y = 0.6 * amdahl_latency(src.predict(graphs, nones, one, 1).latency_ms, src.predict(graphs, nones, two, 2).latency_ms,
                             16)
    monkeypatch.setattr(tr, "load_any_predictor", lambda path: src)
    monkeypatch.setattr(tr, "_workload", lambda m: (graphs[int(m.model)], None))
    ms = [Measurement(str(i), None, float(v)) for i, v in enumerate(y)]
    res = adapt_predictor("unused", target, ms, 8, tmp_path / "a", methods=("scale", "loglinear", "isotonic"))
    assert res.method == "amdahl_scale" and res.cv["amdahl_scale"]["mape"] < 1e-6 < res.cv["scale"]["mape"]
    assert res.holdout["mape"] < 1e-6
    card = json.loads((tmp_path / "a" / "transfer.json").read_text())
    assert card["columns"] == [{"type": "amdahl", "one": one.to_dict(), "two": two.to_dict(), "threads": 16}]
    assert "extrapolated to 16 threads by Amdahl's law" in (tmp_path / "a" / "README.md").read_text()
    adapted = CalibratedPredictor(src, "unused", target, card["columns"], tr.calibrator_from_dict(card["calibrator"]))
    np.testing.assert_allclose(adapted.predict(graphs, nones, target, threads=16).latency_ms, y, rtol=1e-9)
    # a source trained at the target's thread count offers no extrapolation
    src.training_devices = lambda: [one, two, load_device({**spec, "threads_used": 16})]
    assert "amdahl_scale" not in adapt_predictor("unused", target, ms, 8, tmp_path / "b", methods=("scale",)).cv


def test_an_amdahl_column_over_the_gnn_serves_the_optimisers_per_plan_and_per_node_paths(tmp_path, capsys):
    """The shipped GNN as source: an adapted predictor through an Amdahl pair answers the same by whole graphs and
    by plan templates, its node latencies add up to its totals (what the optimiser's tables read), and saved as a
    checkpoint it drives ``optimise``, whose report names it as adapted."""
    from perfpredict.features import template_for
    from perfpredict.gnn_predictor import load_predictor
    from perfpredict.models import load_model
    from perfpredict.plan import default_plan, Choice
    from perfpredict.transfer import ScaleCalibrator, amdahl_latency, amdahl_pairs

    gnn = load_predictor("proxy")
    one, two = amdahl_pairs(gnn, 16)[0]
    target = load_device({**two.to_dict(), "name": "sixteen", "cores": 16, "threads": 16, "threads_used": 16})
    columns = [{"type": "amdahl", "one": one.to_dict(), "two": two.to_dict(), "threads": 16}]
    adapted = CalibratedPredictor(gnn, str(gnn.source_path), target, columns, ScaleCalibrator(np.log(0.8)))
    graph, _ = load_model("squeezenet1_1", resolution=64)
    base = default_plan(graph)
    node = next(n for n, c in base.choices.items() if c.primitive.startswith("conv."))
    plans = [base, base.with_choice(node, Choice(base.choices[node].primitive, "NHWC"))]
    whole = adapted.predict(graph, plans, target).latency_ms
    want = 0.8 * amdahl_latency(gnn.predict(graph, plans, one, threads=1).latency_ms,
                                gnn.predict(graph, plans, two, threads=2).latency_ms, 16)
    np.testing.assert_allclose(whole, want, rtol=1e-5)
    tpl = template_for(graph)
    np.testing.assert_allclose(adapted.predict_plans(tpl, plans, target).latency_ms, whole, rtol=1e-5)
    np.testing.assert_allclose(adapted.node_latencies(tpl, plans, target).sum(axis=1), whole, rtol=1e-5)
    costs = adapted.node_costs(graph, target, {node: [base.choices[node]]})
    assert costs[node].shape == (1,) and np.all(np.isfinite(costs[node]))
    adapted.save(tmp_path / "adapted")
    target.save(tmp_path / "board.json")
    assert cli_main(["optimise", "squeezenet1_1", "--resolution", "64", "--predictor", str(tmp_path / "adapted"),
                     "--device-features", str(tmp_path / "board.json"), "--trials", "8", "--no-measure", "--json",
                     "-o", str(tmp_path / "run")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["predictor"].startswith(str(tmp_path / "adapted")) and "adapted to 'sixteen'" in report["predictor"]


def test_the_source_column_taken_is_the_one_a_scale_fits_not_the_best_correlated():
    from perfpredict.transfer import best_scaled_column, rank_sources

    rng = np.random.default_rng(0)
    x = np.exp(rng.uniform(0, 4, 30))
    y = 2.0 * x * np.exp(rng.normal(0, 0.05, 30))
    cols = np.c_[y ** 1.5, x]  # the first correlates perfectly with y in logs, but no single scale fits it
    assert rank_sources(y, cols, ["curved", "scaled"])[0][0] == "curved"
    assert best_scaled_column(y, cols) == 1
