"""The NAS-Bench-201 collector: the network it times, its order, the layout it writes, resuming, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import collect_nb201_latency as collector
from perfpredict.errors import DatasetError
from perfpredict.external.help import evaluate_transfer, load_help
from perfpredict.nasbench201 import nb201_graph

SHIPPED = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "nb201_h200"
MIXED = "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def _macs(net: torch.nn.Module) -> int:
    """Multiply-accumulates of the convolutions and the classifier of one forward pass."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            total += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        else:
            total += mod.in_features * mod.out_features

    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    return total


@pytest.mark.parametrize("arch", [MIXED, ALL_NONE])
def test_the_timed_network_computes_what_the_eager_graph_describes(arch):
    """Every edge runs (dead branches and none edges included): the same MACs as nb201_graph(mode="eager")."""
    net = collector.nb201_module(arch)
    assert not net.training
    assert _macs(net) == nb201_graph(arch, mode="eager").macs


def test_the_archs_a_held_out_device_needs_come_first():
    ref = [5000, 12, 15000]
    order = collector.measurement_order(16000, ref, pool=900, seed=3)
    needed = set(range(1900)) | set(ref)
    assert sorted(order) == list(range(16000))
    assert set(order[:len(needed)]) == needed and order[:10] != sorted(order[:10])
    assert order == collector.measurement_order(16000, ref, pool=900, seed=3)
    assert set(collector.measurement_order(16000, ref, pool=900, needed_only=True)) == needed


def test_it_appends_resumes_and_writes_a_folder_the_help_loader_reads(tmp_path):
    data = load_help("nasbench201", SHIPPED, devices=[])
    raw = tmp_path / "raw" / "cpu_x.csv"
    assert collector.collect(data.archs, [7, 3], raw, "cpu", 1, 0, 2, progress=False) == 2
    assert collector.collect(data.archs, [7, 3, 9], raw, "cpu", 1, 0, 2, progress=False) == 1  # 7 and 3 kept
    rows = collector.read_raw(raw)
    assert sorted(rows) == [3, 7, 9] and all(ms > 0 and beacon > 0 for ms, _, beacon in rows.values())
    _, how = collector.write_table(tmp_path, data.archs, data.reference_index)
    assert how["cpu_x"]["correction"] == "beacon"
    mine = load_help("nasbench201", tmp_path)
    assert mine.devices == ("cpu_x",) and mine.archs == data.archs and mine.reference_index == data.reference_index
    lat = mine.latency("cpu_x")
    assert np.isfinite(lat[[3, 7, 9]]).all() and (lat[[3, 7, 9]] > 0).all()
    assert len(mine.missing("cpu_x")) == len(mine) - 3 and not mine.complete("cpu_x")


def test_the_shipped_devices_hold_what_a_held_out_device_needs():
    data = load_help("nasbench201", SHIPPED)
    assert set(data.devices) >= {"h200_1", "h200_32", "h200_256", "xeon_emr_16t"}
    need = np.r_[list(data.reference_index), np.arange(1900)]
    for dev in data.devices:
        assert not len(data.missing(dev, need)) and (data.latency(dev)[need] > 0).all()


def test_a_partly_measured_device_cannot_train_and_a_test_device_needs_the_queries():
    data = load_help("nasbench201", SHIPPED)
    with pytest.raises(DatasetError, match="'h200_32' has no latency for .* training device needs every"):
        evaluate_transfer(data, ["h200_32", "h200_256"], ["h200_1"], shots=[0])
    full = {d: np.where(np.isfinite(data.latency(d)), data.latency(d), 1.0) for d in ("h200_32", "h200_256")}
    gap = data.latency("h200_1").copy()
    gap[1234] = np.nan
    holed = type(data)(data.space, data.archs, {**full, "h200_1": gap}, data.reference_index)
    with pytest.raises(DatasetError, match=r"'h200_1' has no latency for 1 .*index 1234.*held-out device needs"):
        evaluate_transfer(holed, ["h200_32", "h200_256"], ["h200_1"], shots=[0])


def test_no_gpu_is_a_one_line_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(SystemExit, match="no CUDA GPU"):
        collector.main(["--out", str(tmp_path), "--device", "cuda"])


def _rows(ms, beacon=None):
    beacon = [float("nan")] * len(ms) if beacon is None else beacon
    return {i: (float(m), 0.01, float(b)) for i, (m, b) in enumerate(zip(ms, beacon))}


def test_drift_is_taken_out_by_the_beacon_else_by_a_running_median_where_it_shows():
    rng = np.random.default_rng(0)
    cost = np.exp(rng.normal(0, 0.3, 600))  # archs in random order
    speed = np.exp(0.3 * np.sin(np.arange(600) / 40))  # the machine slows and speeds up over the run
    fixed, how = collector.drift_corrected(_rows(cost * speed, 2.0 * speed))
    assert how["correction"] == "beacon" and how["lag1_raw"] > 0.3 and abs(how["lag1_corrected"]) < 0.15
    assert np.allclose(list(fixed.values()), cost * np.median(speed))  # at the run's typical speed
    fixed, how = collector.drift_corrected(_rows(cost * speed))
    assert how["correction"] == "running median of 51" and how["lag1_corrected"] < how["lag1_raw"] / 2
    got = np.log(list(fixed.values()))
    assert np.corrcoef(got, np.log(cost))[0, 1] > 0.9 > np.corrcoef(np.log(cost * speed), np.log(cost))[0, 1]
    fixed, how = collector.drift_corrected(_rows(cost))  # steady machine: left as measured
    assert how["correction"] == "none" and list(fixed.values()) == pytest.approx(cost.tolist())


def test_no_architecture_list_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFPREDICT_EXTERNAL", str(tmp_path / "none"))
    with pytest.raises(SystemExit, match="collect_nb201_latency: external dataset folder .* not found"):
        collector.main(["--out", str(tmp_path / "out"), "--device", "cpu"])
