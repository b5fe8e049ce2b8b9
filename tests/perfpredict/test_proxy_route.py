"""The zero-shot proxy route: a checkpoint answers for a device it never trained on through the trained device
nearest by fingerprint, scaled by the fingerprint ratio."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli.main import main
from perfpredict.devices import load_device
from perfpredict.errors import PerfPredictError
from perfpredict.nasbench201 import arch_string, nb201_graph
from perfpredict.proxy_route import isa_note, proxy_route, route_predictor, thread_range_note, trained_on
from perfpredict.transfer import CalibratedPredictor
from tests.perfpredict.transfer.stand_ins import RooflinePredictor

FP = {"conv_a": 1.0, "conv_b": 2.0, "conv_c": 4.0, "fc": 0.5}


def _device(name: str, cpu: str, threads: int = 2, slower: float = 1.0, fingerprint: bool = True, **extra):
    return load_device({"schema_version": 1, "name": name, "kind": "cpu", "cpu_model": cpu, "cores": 2,
                        "threads_used": threads, "peak_gflops_fp32": 100.0, "mem_bw_triad_gbs": 20.0,
                        **({"fingerprint": {k: slower * v for k, v in FP.items()}} if fingerprint else {}), **extra})


def _source(*devices):
    src = RooflinePredictor()
    src.training_devices = lambda: list(devices)
    return src


def test_an_unseen_device_is_predicted_on_its_nearest_trained_device_times_the_ratio():
    near, other = _device("near", "cpu A"), _device("other", "cpu B", fingerprint=False)
    src = _source(other, near, _device("near", "cpu A", threads=1, slower=2.0))
    target = _device("new", "cpu C", slower=3.0, peak_gflops_fp32=5.0)
    routed, route = route_predictor(src, target, 2)
    assert route is not None and route.proxy is near and route.ratio == pytest.approx(3.0) and route.shared == 4
    assert isinstance(routed, CalibratedPredictor) and routed.card["method"] == "proxy_scale"
    graphs = [nb201_graph(arch_string(["nor_conv_3x3"] * 6)), nb201_graph(arch_string(["avg_pool_3x3"] * 6))]
    want = 3.0 * src.predict(graphs, [None, None], near).latency_ms
    np.testing.assert_allclose(routed.predict(graphs, [None, None], target).latency_ms, want, rtol=1e-9)
    assert "'near'" in route.describe() and "--zero-shot board" in route.describe()
    assert route.to_dict()["route"] == "proxy" and route.to_dict()["fingerprint_ratio"] == pytest.approx(3.0)
    # asked for the board's features: the source as it is
    assert route_predictor(src, target, 2, "board") == (src, None)
    with pytest.raises(PerfPredictError, match="--zero-shot must be one of proxy, board"):
        route_predictor(src, target, 2, "nearest")


def test_the_route_applies_only_where_it_means_something():
    near = _device("near", "cpu A")
    src = _source(near)
    # a device the checkpoint trained on (same machine, same thread count): its own features
    same = _device("near", "cpu A", slower=1.3)
    assert trained_on(src, same) and proxy_route(src, same) is None
    assert not trained_on(src, _device("near", "cpu A", threads=1))
    # no fingerprint in the board, a thread count other than the fingerprint's, no trained device at that count,
    # a source that records no training devices
    assert proxy_route(src, _device("new", "cpu C", fingerprint=False)) is None
    assert proxy_route(src, _device("new", "cpu C"), threads=1) is None
    assert proxy_route(src, _device("new", "cpu C", threads=1)) is None
    assert proxy_route(RooflinePredictor(), _device("new", "cpu C")) is None
    # fewer than three shared fingerprint entries
    sparse = load_device({**_device("sparse", "cpu D").to_dict(), "fingerprint": {"conv_a": 1.0, "x": 1.0}})
    assert proxy_route(src, sparse) is None


def test_the_route_keeps_to_proxies_of_the_targets_int8_dot_product_support():
    """The fingerprint times fp32 layers: a target without VNNI is not scaled from a VNNI proxy, and says so."""
    vnni, plain = _device("vnni", "cpu A", isa_features=["avx2", "avx512_vnni"]), _device("plain", "cpu B")
    target = _device("new", "cpu C", slower=2.0, isa_features=["avx2", "fma"])
    assert proxy_route(_source(vnni), target) is None
    note = isa_note(_source(vnni), target)
    assert "lacks int8 dot-product instructions" in note and "board's features" in note
    # a proxy whose board does not list its ISA is allowed; a matching one is taken
    assert proxy_route(_source(vnni, plain), target).proxy is plain and isa_note(_source(vnni, plain), target) is None
    match = _device("avx2", "cpu D", slower=0.5, isa_features=["avx2"])
    assert proxy_route(_source(vnni, match), target).proxy is match
    # where no route could apply anyway (no fingerprint), no note
    assert isa_note(_source(vnni), _device("new", "cpu C", fingerprint=False, isa_features=["avx2"])) is None


def test_predict_takes_the_proxy_route_for_an_unseen_board(tmp_path, capsys):
    """End to end with the shipped checkpoint: a board copied from one of its training devices but for another
    CPU, with the fingerprint 2x slower, is predicted at the nearest trained device's prediction times the ratio;
    the board copied as it is, and --zero-shot board, read the board's own features."""
    from perfpredict.gnn_predictor import load_predictor
    from perfpredict.models import load_model
    from perfpredict.plan import default_plan
    from perfpredict.transfer import nearest_proxy

    gnn = load_predictor("proxy")
    devices = [d for d in gnn.training_devices() if d.threads_used == 2]
    trained = devices[0]
    board = load_device({**trained.to_dict(), "name": "unseen-board", "cpu_model": "Some Other CPU",
                         "fingerprint": {k: 2.0 * v for k, v in trained.fingerprint.items()}})
    board.save(tmp_path / "board.json")
    trained.save(tmp_path / "seen.json")
    args = ["predict", "squeezenet1_1", "--resolution", "64", "--json", "--device-features"]
    assert main(args + [str(tmp_path / "seen.json")]) == 0
    assert json.loads(capsys.readouterr().out)["zero_shot"] == {"route": "board"}
    assert main(args + [str(tmp_path / "board.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    proxy, ratio, shared = nearest_proxy(board, devices)
    assert out["zero_shot"] == {"route": "proxy", "proxy": proxy.name, "proxy_device_id": proxy.device_id,
                                "threads": 2, "fingerprint_ratio": pytest.approx(ratio),
                                "shared_fingerprint_entries": shared}
    graph, _ = load_model("squeezenet1_1", resolution=64)
    want = ratio * gnn.predict(graph, [default_plan(graph)], proxy, threads=2).latency_ms[0]
    assert out["predictions"][0]["latency_ms"] == pytest.approx(want, rel=1e-6)
    assert main(args + [str(tmp_path / "board.json"), "--zero-shot", "board"]) == 0
    own = gnn.predict(graph, [default_plan(graph)], board, threads=2).latency_ms[0]
    assert json.loads(capsys.readouterr().out)["predictions"][0]["latency_ms"] == pytest.approx(own, rel=1e-6)
    assert main(args[:-2] + ["--device-features", str(tmp_path / "board.json")]) == 0
    assert "note: device 'unseen-board'" in capsys.readouterr().out
    # the same board without int8 dot-product instructions: the board's features, with a note
    plain = load_device({**board.to_dict(), "isa_features": ["avx", "avx2", "fma"]})
    plain.save(tmp_path / "avx2.json")
    assert main(args + [str(tmp_path / "avx2.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["zero_shot"] == {"route": "board"} and any("lacks int8 dot-product" in n for n in out["notes"])


def test_optimise_searches_through_the_proxy_on_an_unseen_board(tmp_path, capsys):
    """optimise (which prices memory and node costs through the predictor) runs on the routed predictor, and its
    report names the proxy; --zero-shot board searches on the board's own features."""
    from perfpredict.gnn_predictor import load_predictor

    trained = [d for d in load_predictor("proxy").training_devices() if d.threads_used == 2][0]
    board = load_device({**trained.to_dict(), "name": "unseen-board", "cpu_model": "Some Other CPU",
                         "fingerprint": {k: 3.0 * v for k, v in trained.fingerprint.items()}})
    board.save(tmp_path / "board.json")
    args = ["optimise", "squeezenet1_1", "--resolution", "64", "--device-features", str(tmp_path / "board.json"),
            "--trials", "16", "--no-measure", "--json"]
    assert main(args + ["-o", str(tmp_path / "a")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert " via " in report["predictor"] and "x 3" in report["predictor"]
    assert main(args + ["-o", str(tmp_path / "b"), "--zero-shot", "board"]) == 0
    assert " via " not in json.loads(capsys.readouterr().out)["predictor"]


def test_a_thread_count_outside_those_trained_at_gets_a_note():
    src = _source(_device("a", "cpu A", threads=1), _device("a", "cpu A", threads=2))
    assert thread_range_note(src, _device("new", "cpu C"), 2) is None
    assert thread_range_note(src, _device("new", "cpu C", threads=1)) is None
    note = thread_range_note(src, _device("new", "cpu C", threads=16))
    assert "trained at 1-2 thread(s) only" in note and "at 16 threads it extrapolates" in note
    assert "transfer -k 10" in note
    assert "trained at 2 thread(s)" in thread_range_note(_source(_device("a", "cpu A")), _device("n", "cpu C"), 4)
    assert thread_range_note(RooflinePredictor(), _device("new", "cpu C"), 16) is None  # records no devices


def test_predict_and_optimise_say_when_the_thread_count_is_extrapolated(tmp_path, capsys):
    from perfpredict.gnn_predictor import load_predictor

    trained = [d for d in load_predictor("proxy").training_devices() if d.threads_used == 2][0]
    board = load_device({**trained.to_dict(), "name": "many-cores", "cpu_model": "Some Other CPU", "cores": 16, "threads": 16,
                         "threads_used": 16})
    board.save(tmp_path / "board.json")
    base = ["squeezenet1_1", "--resolution", "64", "--device-features", str(tmp_path / "board.json"), "--json"]
    assert main(["predict", *base]) == 0
    assert any("at 16 threads it extrapolates" in n for n in json.loads(capsys.readouterr().out)["notes"])
    assert main(["predict", *base, "--threads", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["notes"] == []
    assert main(["optimise", *base, "--trials", "8", "--no-measure", "-o", str(tmp_path / "o")]) == 0
    assert any("at 16 threads it extrapolates" in n for n in json.loads(capsys.readouterr().out)["notes"])
