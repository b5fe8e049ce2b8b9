"""The NeuSight collector: what it measures, the layout it writes, resuming, and bad input."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from benchmarks import collect_neusight_ops as collector
from perfpredict.external.neusight import load_op


def _source(tmp_path):
    """A NeuSight-layout folder of two GPUs with small relu and conv shapes (one shared by both GPUs)."""
    rows = {"relu": [("B", "H"), [(2, 64), (4, 32), (8, 16)]],
            "conv": [("B", "Input_Channel", "Output_Channel", "Kernel_Szie", "Input_Size", "Stride", "Padding"),
                     [(1, 3, 8, 3, 16, 1, 1), (2, 8, 8, 1, 8, 2, 0)]]}
    for gpu, take in (("GPU A", slice(None)), ("GPU B", slice(0, 1))):
        for op, (cols, shapes) in rows.items():
            path = tmp_path / "src" / "collect" / op / "p2.1.0" / f"{gpu}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["OPName", "Latency", "Device", *cols])
                w.writerows([op, 0.1, gpu, *s] for s in shapes[take])
    return tmp_path / "src", rows


def test_it_measures_every_distinct_shape_once_into_a_folder_neusight_s_loader_reads(tmp_path):
    src, rows = _source(tmp_path)
    out = tmp_path / "out"
    argv = ["--out", str(out), "--device", "cpu", "--shapes-from", str(src), "--ops", "relu,conv",
            "--warmup", "1", "--repeats", "3"]
    assert collector.main(argv) == 0
    for op, (cols, shapes) in rows.items():
        table = load_op(op, out)
        assert len(table) == len(shapes)  # the union over the two GPUs, each shape once
        assert set(zip(*(table.shape[c].tolist() for c in cols))) == set(shapes)
        assert np.all(table.latency_ms > 0) and len(table.gpus) == 1
    assert not (out / "device_configs").exists()  # NeuSight's descriptor is a GPU's


def test_a_stopped_run_resumes_without_measuring_a_shape_twice(tmp_path):
    src, rows = _source(tmp_path)
    out = tmp_path / "out"
    argv = ["--out", str(out), "--device", "cpu", "--shapes-from", str(src), "--ops", "relu", "--repeats", "2"]
    assert collector.main([*argv, "--limit", "1"]) == 0
    assert len(load_op("relu", out)) == 1
    assert collector.main(argv) == 0
    assert collector.main(argv) == 0
    assert len(load_op("relu", out)) == len(rows["relu"][1])


def test_the_shape_order_is_a_seeded_shuffle_so_a_time_budget_cuts_a_fair_sample(tmp_path):
    src, rows = _source(tmp_path)
    a = collector.neusight_shapes("relu", data=src, seed=0)
    assert sorted(a) == sorted(rows["relu"][1]) and a == collector.neusight_shapes("relu", data=src, seed=0)
    assert collector.neusight_shapes("relu", limit=2, data=src, seed=0) == a[:2]


def test_each_operator_computes_what_neusight_describes():
    out = collector.build_op("conv", (2, 3, 5, 3, 9, 2, 1), "cpu")()
    assert out.shape == (2, 5, 5, 5)
    assert collector.build_op("linear", (2, 3, 4, 5), "cpu")().shape == (2, 3, 4)
    assert collector.build_op("add", (3, 7), "cpu")().shape == (3, 7)
    ms, spread = collector.time_call(collector.build_op("relu", (4, 8), "cpu"), "cpu", 1, 5)
    assert ms > 0 and spread >= 0


def test_bad_input_names_what_is_accepted(tmp_path):
    with pytest.raises(SystemExit, match="unknown operator.*accepted: conv, linear, relu, add"):
        collector.main(["--out", str(tmp_path), "--device", "cpu", "--ops", "softmax"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA GPU.*--device cpu"):
            collector.main(["--out", str(tmp_path), "--device", "cuda"])
