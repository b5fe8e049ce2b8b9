"""CLI of the profiling campaigns, the dataset, the device and `measure`: behaviour and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import perfpredict
from cli.main import main
from perfpredict.dataset import make_record, open_store
from perfpredict.devices import load_example_board
from perfpredict.measure import latency_stats

DEV = load_example_board("raspberry_pi_4")


@pytest.fixture
def store_path(tmp_path):
    """A small store: two layer records and one model record, made without measuring."""
    path = tmp_path / "s.db"
    with open_store(path) as s:
        for i, t in enumerate((1, 2)):
            s.append(make_record(kind="layer", device=DEV, campaign="layers", threads=t,
                                 stats=latency_stats([1.0 + i] * 8), node_json={"op": "Relu", "i": i},
                                 primitive="relu.torch", layout="NCHW", precision="fp32", prune=0.0,
                                 family="resnet"))
        s.append(make_record(kind="model", device=DEV, campaign="models", threads=1, stats=latency_stats([5.0] * 8),
                             graph_id="g", plan_json={"schema_version": 1, "choices": {}}, model_name="resnet18",
                             family="resnet", peak_mem_bytes=1000, est_mem_bytes=1100))
    return path


def _one_line_error(capsys, code, expected_code=1):
    err = capsys.readouterr().err.strip()
    assert code == expected_code
    assert err.startswith("perfpredict") and "\n" not in err and "Traceback" not in err
    return err


def test_dataset_info_text_and_json(store_path, capsys):
    assert main(["dataset", "info", str(store_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["records"] == 3 and info["by_kind"] == {"layer": 2, "model": 1}
    assert info["by_threads"] == {"1": 2, "2": 1} and info["noise"] is None
    assert main(["dataset", "info", str(store_path)]) == 0
    out = capsys.readouterr().out
    assert "3 records" in out and "noise floor: no re-measurements" in out
    # each campaign's row names the machine(s) that measured it
    device = next(iter(info["by_device"]))
    assert any(line.split()[:1] == [c] and line.rstrip().endswith(device) for c in info["by_campaign"]
               for line in out.splitlines())


def test_dataset_export_csv_and_parquet(store_path, tmp_path, capsys):
    csv = tmp_path / "out.csv"
    assert main(["dataset", "export", str(store_path), "-o", str(csv), "--kind", "layer"]) == 0
    df = pd.read_csv(csv)
    assert len(df) == 2 and set(df["kind"]) == {"layer"} and "median_ms" in df.columns
    assert "wrote 2 records" in capsys.readouterr().out
    pq = tmp_path / "out.parquet"
    assert main(["dataset", "export", str(store_path), "-o", str(pq), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 3 and len(pd.read_parquet(pq)) == 3


def test_dataset_errors_are_one_line(tmp_path, store_path, capsys):
    err = _one_line_error(capsys, main(["dataset", "info", str(tmp_path / "missing.db")]))
    assert "no such store" in err
    err = _one_line_error(capsys, main(["dataset", "export", str(store_path), "-o", str(tmp_path / "x.txt")]))
    assert ".csv, .parquet" in err
    (tmp_path / "junk.db").write_text("not sqlite at all " * 100)
    _one_line_error(capsys, main(["dataset", "info", str(tmp_path / "junk.db")]))


def test_profile_bad_flags_and_missing_store(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["profile", "layers", "--store", str(tmp_path / "s.db"), "--threads", "0"])
    assert e.value.code == 2 and "positive integers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["profile", "models", "--threads", "1"])  # no --store
    assert e.value.code == 2 and "--store" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["profile", "layers", "--store", str(tmp_path / "s.db"), "--bogus"])
    assert e.value.code == 2 and "--bogus" in capsys.readouterr().err
    err = _one_line_error(capsys, main(["profile", "noise", "--store", str(tmp_path / "missing.db")]))
    assert "no such store" in err
    err = _one_line_error(capsys, main(["profile", "memory", "--store", str(tmp_path / "missing.db")]))
    assert "no such store" in err
    with pytest.raises(SystemExit) as e:
        main(["profile", "models", "--store", str(tmp_path / "s.db"), "--memory-method", "vmhwm"])
    assert e.value.code == 2 and "allocator" in capsys.readouterr().err
    err = _one_line_error(capsys, main(["profile", "layers", "--store", str(tmp_path / "no" / "dir" / "s.db"),
                                        "--device", str(tmp_path / "none.json")]))
    assert "does not exist" in err or "no such board" in err
    err = _one_line_error(capsys, main(["profile", "layers", "--store", str(tmp_path / "s.db"), "--families", "nope",
                                        "--device", _board(tmp_path), "--no-progress"]))
    assert "unknown family nope" in err
    err = _one_line_error(capsys, main(["profile", "noise", "--store", str(tmp_path / "s.db"), "--kinds", "bogus"]))
    assert "accepted: layer, model" in err
    with pytest.raises(SystemExit) as e:
        main(["profile", "models", "--store", str(tmp_path / "s.db"), "--block", "0"])
    assert e.value.code == 2 and "--block: expected a positive integer, got 0" in capsys.readouterr().err


def test_profile_steps_errors_and_json(tmp_path, store_path, capsys):
    err = _one_line_error(capsys, main(["profile", "steps", "--store", str(tmp_path / "missing.db")]))
    assert "no such store" in err
    err = _one_line_error(capsys, main(["profile", "steps", "--store", str(store_path), "--campaigns", "nope"]))
    assert "no records in campaign(s) nope" in err and "the store's campaigns: layers, models" in err
    with pytest.raises(SystemExit) as e:
        main(["profile", "steps", "--store", str(store_path), "--repeats", "0"])
    assert e.value.code == 2 and "--repeats: expected a positive integer, got 0" in capsys.readouterr().err
    # the store's one model record has no zoo spec to rebuild it from: nothing to time
    assert main(["profile", "steps", "--store", str(store_path), "--json", "--no-progress"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["campaign"] == "step-times" and rep["planned"] == 0 and rep["stored"] == 0


def _board(tmp_path) -> str:
    path = tmp_path / "board.json"
    DEV.save(path)
    return str(path)


def test_device_show_validates(tmp_path, capsys):
    board = _board(tmp_path)
    assert main(["device", "show", board, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["name"] == DEV.name and d["device_id"] == DEV.device_id
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**DEV.to_dict(), "cores": -1}))
    err = _one_line_error(capsys, main(["device", "show", str(bad)]))
    assert "cores" in err
    err = _one_line_error(capsys, main(["device", "describe", "-o", str(tmp_path / "no" / "b.json")]))
    assert "does not exist" in err


def test_measure_json_schema_on_a_tiny_zoo_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PERFPREDICT_CACHE", str(tmp_path / "cache"))
    assert main(["measure", "squeezenet1_1", "--resolution", "32", "--threads", "1", "--time-cap-s", "0.05",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["graph"] == "squeezenet1_1" and out["input_shape"] == [1, 3, 32, 32] and out["threads"] == 1
    lat = out["latency"]
    assert lat["median_ms"] > 0 and lat["n_repeats"] >= 5 and lat["min_ms"] <= lat["median_ms"]
    assert isinstance(lat["stable"], bool)
    mem = out["memory"]
    assert mem["measured_peak_bytes"] == mem["measured_weight_bytes"] + mem["measured_run_peak_bytes"]
    parts = mem["estimated_weights"], mem["estimated_activations"], mem["estimated_workspace"]
    assert parts[0] + max(parts[1:]) <= mem["estimated_peak_bytes"] <= sum(parts)
    assert mem["measured_weight_bytes"] > 0 and mem["method"] == "allocator"


def test_measure_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PERFPREDICT_CACHE", str(tmp_path / "cache"))
    err = _one_line_error(capsys, main(["measure", str(tmp_path / "missing.onnx")]))
    assert "no such ONNX file" in err
    err = _one_line_error(capsys, main(["measure", "no_such_model"]))
    assert "neither an ONNX file nor a zoo model" in err
    with pytest.raises(SystemExit) as e:
        main(["measure", "squeezenet1_1", "--threads", "0"])
    assert e.value.code == 2 and "--threads: expected a positive integer, got 0" in capsys.readouterr().err
    plan = tmp_path / "plan.json"
    plan.write_text("{not json")
    err = _one_line_error(capsys, main(["measure", "squeezenet1_1", "--resolution", "32", "--plan", str(plan)]))
    assert "not valid JSON" in err


@pytest.mark.parametrize("campaign", ["layers", "models"])
def test_a_missing_or_malformed_users_onnx_is_a_one_line_error(campaign, tmp_path, capsys):
    db = str(tmp_path / "u.db")
    err = _one_line_error(capsys, main(["profile", campaign, "--store", db, "--model", str(tmp_path / "no.onnx")]))
    assert "no such ONNX file" in err and "no.onnx" in err and not (tmp_path / "u.db").exists()
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx model")
    err = _one_line_error(capsys, main(["profile", campaign, "--store", db, "--model", str(tmp_path / "bad.onnx")]))
    assert "bad.onnx" in err and not (tmp_path / "u.db").exists()


def test_profile_layers_and_models_of_a_users_onnx_model(tiny_onnx, tmp_path, capsys):
    db = str(tmp_path / "u.db")
    board = str(Path(perfpredict.__file__).parent / "boards" / "raspberry_pi_4.json")
    common = ["--store", db, "--model", tiny_onnx, "--threads", "1", "--time-cap-s", "0.005", "--device", board,
              "--no-progress", "--json"]
    assert main(["profile", "layers", *common, "--prune-ratios", "0"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["stored"] > 0 and rep["extra"]["configs_by_op"]["Conv"] == 1
    assert main(["profile", "models", *common, "--plans-per-model", "2", "--no-beacon"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["stored"] == 2 and rep["extra"]["models"] == 1
