"""HELP loaders against the real files: counts, device names, reference archs, layouts, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from perfpredict.errors import DatasetError
from perfpredict.external.help import (FBNET_OPS, HELP_SPLITS, encode_archs, encode_fbnet, fingerprint_key,
                                       list_devices, load_help, load_pt)
from perfpredict.nasbench201 import NUM_ARCHS, parse_arch

AVAILABLE = {"1080ti_1", "1080ti_32", "1080ti_256", "2080ti_1", "2080ti_32", "2080ti_256", "titanx_1", "titanx_32",
             "titanx_256", "titanxp_1", "titanxp_32", "titanxp_256", "silver_4114", "silver_4210r", "gold_6240",
             "pixel3", "samsung_a50", "samsung_s7", "essential_ph_1"}


def test_nasbench201_tables(help_root):
    d = load_help("nasbench201")
    assert len(d) == NUM_ARCHS == 15625
    assert set(d.devices) == AVAILABLE
    assert not set(d.devices) & set(HELP_SPLITS["nasbench201"]["meta_test"])  # reserved devices are absent
    assert d.reference_index == (11982, 431, 55, 9, 14451, 8636, 9881, 13479, 6196, 1462)
    assert d.archs[0] == "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    parse_arch(d.archs[123])
    lat = d.latency("titanx_1")
    assert lat.shape == (15625,) and np.all(lat > 0)
    assert np.all(d.latency("samsung_a50") == np.round(d.latency("samsung_a50")))  # phones: whole ms
    assert d.matrix(["titanx_1", "gold_6240"]).shape == (15625, 2)


def test_fingerprint_is_reference_latencies(help_root):
    d = load_help("nasbench201", devices=["gold_6240"])
    spec = d.device_spec("gold_6240")
    assert spec.kind == "cpu" and len(spec.fingerprint) == 10
    key = fingerprint_key("nasbench201", 55)
    assert spec.fingerprint[key] == pytest.approx(d.latency("gold_6240")[55])


def test_csv_and_pt_layouts_agree(help_root):
    pt = load_help("fbnet", devices=["pixel3", "gold_6240"])
    csv = load_help("fbnet", data=help_root / "derived_csv", devices=["pixel3", "gold_6240"])
    assert len(pt) == len(csv) == 5000
    assert pt.archs == csv.archs and len(pt.archs[0]) == 22
    assert np.allclose(pt.matrix(["pixel3", "gold_6240"]), csv.matrix(["pixel3", "gold_6240"]))


def test_space_folder_layout_and_several_folders(help_root, tmp_path):
    """A folder holding <space>/<device>.pt for other devices is read, metadata from the default copy."""
    (tmp_path / "nasbench201").mkdir()
    shutil.copy(help_root / "data" / "nasbench201" / "latency" / "pixel3.pt", tmp_path / "nasbench201" / "newdev.pt")
    assert list_devices("nasbench201", tmp_path) == ["newdev"]
    d = load_help("nasbench201", data=[tmp_path, help_root], devices=["newdev", "titanx_1"])
    assert np.array_equal(d.latency("newdev"), load_pt(help_root / "data/nasbench201/latency/pixel3.pt"))
    assert d.reference_index[0] == 11982


def test_unknown_device_and_space_errors(help_root):
    with pytest.raises(DatasetError, match="raspi4.*available: 1080ti_1"):
        load_help("nasbench201", devices=["raspi4"])
    with pytest.raises(DatasetError, match="accepted: nasbench201, fbnet, ofa"):
        load_help("darts")
    d = load_help("fbnet", devices=["pixel3"])
    with pytest.raises(DatasetError, match="available: pixel3"):
        d.latency("titanx_1")


def test_fbnet_encoding(help_root):
    d = load_help("fbnet", devices=["pixel3"])
    e = encode_archs(d, [0, 1])
    assert e[0].x.shape == (22, e[0].x.shape[1]) and e[0].edge_index.shape == (2, 21)
    op = d.archs[0][0]
    assert e[0].x[0, op] == 1 and e[0].x[0, :len(FBNET_OPS)].sum() == 1
    with pytest.raises(DatasetError):
        encode_fbnet([0] * 5)


def test_bench_transfer_cli_small_run(help_root, capsys, tmp_path):
    from cli.main import main
    from perfpredict.transfer import MultiDevicePredictor, load_any_predictor

    code = main(["bench", "transfer", "--space", "fbnet", "--train-devices", "titanxp_1,titanxp_32,2080ti_1",
                 "--test-devices", "titanx_1", "--shots", "0,5", "--queries", "100", "--repeats", "1",
                 "--train-archs", "200", "--epochs", "2", "--save-model", str(tmp_path / "md"), "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["val_device"] == "2080ti_1" and res["train_devices"] == ["titanxp_1", "titanxp_32"]
    row = res["results"]["titanx_1"]
    assert set(row) == {"0", "5"} and -1 <= row["5"]["spearman"] <= 1 and row["5"]["mape"] > 0
    assert res["protocol"]["query_range"] == [4000, 4100]
    saved = load_any_predictor(tmp_path / "md")
    assert isinstance(saved, MultiDevicePredictor) and saved.model.devices == ("titanxp_1", "titanxp_32")
    assert sorted(saved.reference) == sorted(f"fbnet#{i}" for i in load_help("fbnet", devices=["pixel3"]).reference_index)


def test_bench_transfer_cli_unknown_device(help_root, capsys):
    from cli.main import main

    code = main(["bench", "transfer", "--train-devices", "titanx_1,gold_6240", "--test-devices", "raspi4"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "raspi4" in err and "available: 1080ti_1" in err


def test_bench_transfer_cli_one_training_device(help_root, capsys):
    """One training device is also the validation device: nothing is left to train on, said in one line."""
    from cli.main import main

    code = main(["bench", "transfer", "--train-devices", "pixel3", "--test-devices", "samsung_s7", "--shots", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "'pixel3'" in err and "at least 2 training devices" in err


def test_bench_transfer_reads_a_folder_of_new_devices(help_root, tmp_path, capsys):
    """A folder holding only the test device (as the reserved devices will be) works with --data."""
    from cli.main import main

    (tmp_path / "fbnet").mkdir()
    shutil.copy(help_root / "data" / "fbnet" / "latency" / "pixel3.pt", tmp_path / "fbnet" / "newdev.pt")
    code = main(["bench", "transfer", "--data", str(tmp_path), "--space", "fbnet", "--train-devices",
                 "titanxp_1,2080ti_1,samsung_a50", "--test-devices", "newdev", "--shots", "5", "--queries", "50",
                 "--repeats", "1", "--train-archs", "100", "--epochs", "1", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert list(res["results"]) == ["newdev"] and res["results"]["newdev"]["5"]["repeats"] == 1
