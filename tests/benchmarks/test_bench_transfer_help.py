"""bench_transfer_help's references on a folder of devices measured in part (the shipped NB201 H200 folder)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import bench_transfer_help as bench

SHIPPED = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "nb201_h200"


def test_references_only_scores_held_out_devices_without_training(tmp_path, capsys):
    out = tmp_path / "refs.json"
    assert bench.main(["--data", str(SHIPPED), "--test-devices", "h200_1,xeon_emr_16t", "--references-only",
                       "-o", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["test_devices"] == ["h200_1", "xeon_emr_16t"] and "per_device" not in res
    for dev in res["test_devices"]:
        assert 0 < res["ceiling_spearman"][dev] <= 1
        assert set(res["ceiling_spearman_all"][dev]) == {"gbm_all", "ridge_pairs_all"}
        assert 0 < res["cv_residual"][dev]["queries"] < 1 and 0 < res["cv_residual"][dev]["others"] < 1
    # a proxy is only a device measured on every arch: the HELP copy's, where it is present
    for dev, best in res["best_other_device"].items():
        assert best["best_other_device"] not in {"h200_1", "h200_32", "h200_256", "xeon_emr_16t"}
    assert "same-device references" in capsys.readouterr().out
