"""NeuSight loaders against the real files: GPUs, row counts, specs, work formulas, errors."""

from __future__ import annotations

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
