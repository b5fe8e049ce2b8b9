"""NeuSight loaders against the real files: GPUs, row counts, specs, work formulas, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perfpredict.errors import DatasetError
from perfpredict.external.neusight import (OPERATORS, OpTable, gpu_family, gpu_spec, gpu_specs, list_gpus, load_op,
                                           op_work)


def test_measured_gpus_exclude_reserved_t4(neusight_root):
    for op in OPERATORS:
        gpus = list_gpus(op)
        assert len(gpus) == 4 and not any("T4" in g for g in gpus)
        assert {gpu_family(g) for g in gpus} == {"A100", "P100", "P4", "V100"}


def test_row_counts_and_columns(neusight_root):
    conv = load_op("conv")
    per_gpu = {g: int((conv.gpu == g).sum()) for g in conv.gpus}
    assert all(4700 < n < 5100 for n in per_gpu.values())
    assert set(conv.shape) == {"B", "Input_Channel", "Output_Channel", "Kernel_Szie", "Input_Size", "Stride", "Padding"}
    relu = load_op("relu", gpus=["Tesla P4"])
    assert len(relu) == 1750 and relu.gpus == ("Tesla P4",)
    assert np.all(relu.latency_ms > 0)


def test_specs_include_t4_descriptor(neusight_root):
    specs = gpu_specs()
    t4 = specs["Tesla T4"]
    assert t4.kind == "gpu" and t4.gpu_sm_count == 40 and t4.gpu_tflops_fp32 == pytest.approx(8.141)
    assert gpu_spec("Tesla V100-PCIE-32GB").gpu_mem_bandwidth_gbs == 900
    assert "AMD Instinct MI100" in specs  # SingleFLOPsMM used as the fp32 peak
    with pytest.raises(DatasetError, match="available:"):
        gpu_spec("GeForce 256")


def test_op_work_formulas():
    t = OpTable("conv", np.array(["g"], object), np.array([1.0]),
                {"B": np.array([2]), "Input_Channel": np.array([3]), "Output_Channel": np.array([8]),
                 "Kernel_Szie": np.array([3]), "Input_Size": np.array([10]), "Stride": np.array([2]),
                 "Padding": np.array([1])})
    flops, nbytes = op_work(t)
    assert flops[0] == 2 * 2 * 8 * 5 * 5 * 3 * 9  # output 5x5
    assert nbytes[0] == 4 * (2 * 3 * 100 + 8 * 3 * 9 + 2 * 8 * 25)
    lin = OpTable("linear", np.array(["g"], object), np.array([1.0]),
                  {"B": np.array([1]), "M": np.array([4]), "N": np.array([5]), "K": np.array([6])})
    assert op_work(lin)[0][0] == 2 * 4 * 5 * 6


def test_errors_name_what_is_available(neusight_root):
    with pytest.raises(DatasetError, match="accepted: conv, linear, relu, add"):
        load_op("gelu")
    with pytest.raises(DatasetError, match="Tesla T4.*available"):
        load_op("conv", gpus=["Tesla T4"])
    assert gpu_family("NVIDIA A100 80GB PCIe") == gpu_family("NVIDIA A100-PCIE-40GB") == "A100"


def test_features_need_descriptor_fields(neusight_root):
    from perfpredict.devices import load_device
    from perfpredict.external.neusight import op_features

    relu = load_op("relu", gpus=["Tesla P4"])
    x, roof = op_features(relu, gpu_specs())
    assert x.shape[0] == len(relu) and np.all(roof > 0)
    partial = {"Tesla P4": load_device({"schema_version": 1, "name": "Tesla P4", "kind": "gpu", "gpu_sm_count": 20})}
    with pytest.raises(DatasetError, match="lacks gpu_tflops_fp32.*needed"):
        op_features(relu, partial)
    with pytest.raises(DatasetError, match="no GPU descriptor for Tesla P4"):
        op_features(relu, {})


def _synthetic_gpus(root):
    """A NeuSight-layout folder of three GPUs (families A10, B20, C30) whose relu time is 10 us + bytes / bandwidth."""
    import csv

    rng = np.random.default_rng(0)
    shapes = [(int(b), int(h)) for b, h in zip(rng.integers(1, 64, 40), rng.integers(64, 4096, 40))]
    for name, bw in (("Test A10", 300.0), ("Test B20", 900.0), ("Test C30", 2000.0)):
        desc = {"Device": name, "Dev_Mem": 16, "Mem_Bw": bw, "Num_Sm": 40, "Core_Per_SM": 64, "Freq": 1500,
                "SingleFLOPs": 10000, "L2Cache": 6}
        (root / "device_configs").mkdir(parents=True, exist_ok=True)
        (root / "device_configs" / f"{name.replace(' ', '_')}.json").write_text(json.dumps(desc))
        path = root / "collect" / "relu" / "p2.1.0" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["OPName", "Latency", "Device", "B", "H"])
            w.writerows(["relu", 0.01 + 8 * b * h / (bw * 1e6), name, b, h] for b, h in shapes)


def test_bench_transfer_holds_out_the_test_gpus_named_by_family_or_name(tmp_path, capsys):
    from cli.main import main

    _synthetic_gpus(tmp_path)
    args = ["bench", "transfer", "--space", "neusight", "--data", str(tmp_path), "--ops", "relu", "--shots", "0,5",
            "--train-devices", "A10,Test B20", "--test-devices", "C30", "--json"]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    per_gpu = res["results"]["relu"]["per_gpu"]
    assert list(per_gpu) == ["C30"] and per_gpu["C30"]["gpu"] == ["Test C30"] and per_gpu["C30"]["rows"] == 40
    assert set(per_gpu["C30"]) >= {"0", "5"} and res["test_devices"] == ["C30"]
    assert main(args[:-1]) == 0  # the table
    assert "C30" in capsys.readouterr().out


def test_bench_transfer_names_unknown_gpus_and_operators(tmp_path, capsys):
    from cli.main import main

    _synthetic_gpus(tmp_path)
    base = ["bench", "transfer", "--space", "neusight", "--data", str(tmp_path), "--ops", "relu"]
    assert main(base + ["--train-devices", "A10", "--test-devices", "Z99"]) != 0
    err = capsys.readouterr().err
    assert "no GPU 'Z99'" in err and "Test A10" in err and "Traceback" not in err
    assert main(base[:-1] + ["softmax", "--train-devices", "A10", "--test-devices", "C30"]) != 0
    assert "unknown NeuSight operator(s) softmax; accepted: conv, linear, relu, add" in capsys.readouterr().err
    assert main(["bench", "transfer", "--ops", "relu", "--train-devices", "a", "--test-devices", "b"]) != 0
    assert "--ops applies to --space neusight only" in capsys.readouterr().err
    assert main(base + ["--train-devices", "A10", "--test-devices", "C30", "--epochs", "3", "--save-model", "m"]) != 0
    assert "--epochs, --save-model apply to the HELP spaces" in capsys.readouterr().err
