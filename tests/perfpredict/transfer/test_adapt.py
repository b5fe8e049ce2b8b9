"""Adapting a source to a new device: the checkpoint written, the CLI, board fitting, proxies and shots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli.main import main as cli_main
from perfpredict.devices import load_device
from perfpredict.nasbench201 import nb201_graph, nb201_onnx
from perfpredict.transfer import (
    CalibratedPredictor, Measurement, TransferError, adapt_predictor, load_any_predictor, read_measurements,
    write_measurements,
)
from tests.perfpredict.transfer.stand_ins import (
    RooflinePredictor, TwoThreadRoofline, nb201_archs, synthetic_latency, target_and_proxy,
)


def test_adapt_writes_a_normal_checkpoint(small_model, tmp_path):
    path, ref_archs, _ = small_model
    archs = nb201_archs(8, 5)
    rows = []
    for i, a in enumerate(archs):
        f = tmp_path / f"m{i}.onnx"
        f.write_bytes(nb201_onnx(a).SerializeToString())
        rows.append(Measurement(str(f), None, float(synthetic_latency([nb201_graph(a)], 0.3, 0.7)[0])))
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
    test = [nb201_graph(a) for a in nb201_archs(10, 6)]
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


def test_transfer_cli(small_model, tmp_path, capsys):
    path, ref_archs, _ = small_model
    rows = []
    for i, a in enumerate(nb201_archs(5, 7)):
        f = tmp_path / f"m{i}.onnx"
        f.write_bytes(nb201_onnx(a).SerializeToString())
        rows.append(Measurement(f.name, None, float(synthetic_latency([nb201_graph(a)], 0.3, 0.7)[0])))
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


def test_board_fit_tunes_device_features(tmp_path, monkeypatch):
    """A device-conditioned source whose target differs in compute/bandwidth balance: fitting the board's
    features beats a plain rescaling, and the tuned board lands in the checkpoint."""
    from perfpredict import transfer as tr
    from perfpredict.transfer import fit_board, scaled_board

    src = RooflinePredictor()
    board = load_device({"schema_version": 1, "name": "tb", "kind": "cpu", "cores": 2, "peak_gflops_fp32": 50.0,
                         "mem_bw_triad_gbs": 10.0})
    truth_board = scaled_board(board, [np.log(4.0), 0.0, np.log(0.3)])
    graphs = [nb201_graph(a) for a in nb201_archs(10, 8)]
    y = src.predict(graphs, [None] * 10, truth_board).latency_ms
    tuned, off = fit_board(src, board, graphs[:8], [None] * 8, y[:8])
    p = src.predict(graphs[8:], [None] * 2, tuned).latency_ms * np.exp(off)
    assert np.max(np.abs(p / y[8:] - 1)) < 0.05
    monkeypatch.setattr(tr.adapt, "load_any_predictor", lambda path: src)
    monkeypatch.setattr(tr.adapt, "_workload", lambda m: (graphs[int(m.model)], None))
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

    src = RooflinePredictor()
    board = load_device({"schema_version": 1, "name": "tb", "kind": "cpu", "cores": 2, "peak_gflops_fp32": 50.0,
                         "peak_gops_int8": 200.0, "mem_bw_triad_gbs": 10.0,
                         "fingerprint": {FINGERPRINT_CONV: 2.0, "fc": 0.1, "pool": 0.3}})
    truth_board = scaled_board(board, [0.0, 0.0, np.log(0.5), np.log(0.25)])  # convolution 4x faster
    graphs = [nb201_graph(a) for a in nb201_archs(10, 9)]
    y = src.predict(graphs, [None] * 10, truth_board).latency_ms
    tuned, off = fit_board(src, board, graphs[:8], [None] * 8, y[:8])
    p = src.predict(graphs[8:], [None] * 2, tuned).latency_ms * np.exp(off)
    assert np.max(np.abs(p / y[8:] - 1)) < 0.05
    assert tuned.peak_gflops_fp32 == pytest.approx(device_rates(board).gflops_fp32)  # factor 1 on the peak
    assert device_rates(tuned).gflops_fp32 > 2.0 * device_rates(board).gflops_fp32


def test_zero_shot_through_a_proxy_scales_by_the_fingerprint_ratio(tmp_path, monkeypatch):
    """k = 0 with a proxy device whose fingerprint correlates with the target's: the adapted predictor is the
    source's prediction on the proxy times the fingerprints' ratio; without a qualifying proxy, the target board."""
    from perfpredict import transfer as tr
    from perfpredict.transfer import CalibratedPredictor, fingerprint_ratio, nearest_proxy

    src = RooflinePredictor()
    fp, target, proxy = target_and_proxy(3.0)
    unrelated = load_device({"schema_version": 1, "name": "far", "kind": "cpu", "cores": 4,
                             "fingerprint": {"conv_a": 1.0, "other": 2.0}})
    assert fingerprint_ratio(target, proxy) == (pytest.approx(3.0), 4)
    assert nearest_proxy(target, [unrelated, proxy])[0].name == "proxy" and nearest_proxy(target, [unrelated]) is None
    # two machines of one kind share a name: the one whose fingerprint correlates is chosen, not the first
    twin = load_device({"schema_version": 1, "name": "proxy", "kind": "cpu", "cores": 2,
                        "fingerprint": {"conv_a": 4.0, "conv_b": 1.0, "conv_c": 0.5, "fc": 2.0}})
    assert nearest_proxy(target, [twin, proxy])[0] is proxy
    graphs = [nb201_graph(a) for a in nb201_archs(6, 3)]
    monkeypatch.setattr(tr.adapt, "load_any_predictor", lambda path: src)
    monkeypatch.setattr(tr.adapt, "_workload", lambda m: (graphs[int(m.model)], None))
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
    fp, target, proxy = target_and_proxy(1.5)
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
    monkeypatch.setattr(tr.adapt, "load_any_predictor", lambda path: src)
    monkeypatch.setattr(tr.adapt, "_workload", lambda m: work[int(m.model)])
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

    src = RooflinePredictor()
    fp, _, _ = target_and_proxy(1.0)
    target = load_device({"schema_version": 1, "name": "new", "kind": "cpu", "cores": 2, "threads_used": 2,
                          "fingerprint": {k: 2.0 * v for k, v in fp.items()}})
    one = load_device({"schema_version": 1, "name": "p", "kind": "cpu", "cores": 2, "threads_used": 1,
                       "fingerprint": fp})
    two = load_device({"schema_version": 1, "name": "p", "kind": "cpu", "cores": 2, "threads_used": 2,
                       "fingerprint": {"conv_a": 0.6, "conv_b": 1.0, "conv_c": 2.4, "fc": 0.3}})
    src.training_devices = lambda: [one, two]
    graphs = [nb201_graph(a) for a in nb201_archs(4, 5)]
    monkeypatch.setattr(tr.adapt, "load_any_predictor", lambda path: src)
    monkeypatch.setattr(tr.adapt, "_workload", lambda m: (graphs[int(m.model)], None))
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

    src = RooflinePredictor()
    _, target, proxy = target_and_proxy(2.0)
    graphs = [nb201_graph(a) for a in nb201_archs(8, 4)]
    y = 2.5 * src.predict(graphs, [None] * len(graphs), proxy).latency_ms
    src.training_devices = lambda: [proxy]
    monkeypatch.setattr(tr.adapt, "load_any_predictor", lambda path: src)
    monkeypatch.setattr(tr.adapt, "_workload", lambda m: (graphs[int(m.model)], None))
    ms = [Measurement(str(i), None, float(v)) for i, v in enumerate(y)]
    res = adapt_predictor("unused", target, ms, 8, tmp_path / "a", methods=("scale", "loglinear"))
    assert res.method == "proxy_scale" and res.cv["proxy_scale"]["mape"] < 1e-6 < res.cv["scale"]["mape"]
    card = json.loads((tmp_path / "a" / "transfer.json").read_text())
    assert [c["board"]["name"] for c in card["columns"]] == ["proxy"]
    assert "Through the proxy device `proxy`" in (tmp_path / "a" / "README.md").read_text()
    src.training_devices = lambda: []  # nothing to offer: the target board's column only
    assert "proxy_scale" not in adapt_predictor("unused", target, ms, 8, tmp_path / "b", methods=("scale",)).cv


def test_shots_at_an_untrained_thread_count_extrapolate_a_trained_device_by_amdahl(tmp_path, monkeypatch):
    """A target at 16 threads, a source trained at 1 and 2 only: the trained device's 1- and 2-thread predictions
    extrapolated by Amdahl's law and rescaled (``amdahl_scale``) fit the shots where no rescaling of the board's
    own answer can, win the CV, and the checkpoint (read back) predicts the held-out pairs."""
    from perfpredict import transfer as tr
    from perfpredict.transfer import amdahl_latency, amdahl_pairs

    src = TwoThreadRoofline()
    spec = {"schema_version": 1, "name": "trained", "kind": "cpu", "cores": 2, "peak_gflops_fp32": 200.0,
            "mem_bw_triad_gbs": 20.0}
    one, two = load_device({**spec, "threads_used": 1}), load_device({**spec, "threads_used": 2})
    target = load_device({**spec, "name": "many", "cores": 16, "threads_used": 16, "peak_gflops_fp32": 900.0})
    src.training_devices = lambda: [one, two]
    assert amdahl_pairs(src, 16) == [(one, two)] and amdahl_pairs(src, 2) == []
    graphs = [nb201_graph(a) for a in nb201_archs(12, 5)]
    nones = [None] * len(graphs)
    y = 0.6 * amdahl_latency(src.predict(graphs, nones, one, 1).latency_ms, src.predict(graphs, nones, two, 2).latency_ms,
                             16)
    monkeypatch.setattr(tr.adapt, "load_any_predictor", lambda path: src)
    monkeypatch.setattr(tr.adapt, "_workload", lambda m: (graphs[int(m.model)], None))
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
