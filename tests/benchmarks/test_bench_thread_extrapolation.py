"""bench_thread_extrapolation: Amdahl's law from the trained devices, scored on a result file's pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import bench_thread_extrapolation as bench
from perfpredict.devices import load_device
from perfpredict.gnn_predictor import load_predictor
from perfpredict.transfer import amdahl_latency, amdahl_pairs, shot_candidates


def test_a_target_that_scales_as_amdahl_says_is_predicted_exactly_once_rescaled(tmp_path):
    gnn = load_predictor("proxy")
    one, two = amdahl_pairs(gnn, 16)[-1]
    target = load_device({**two.to_dict(), "name": "sixteen", "cores": 16, "threads": 16, "threads_used": 16})
    cands = shot_candidates(["squeezenet1_1", "resnet18"])
    graphs, plans = [g for _, g, _ in cands], [p for _, _, p in cands]
    y = 1.7 * amdahl_latency(gnn.predict(graphs, plans, one, threads=1).latency_ms,
                             gnn.predict(graphs, plans, two, threads=2).latency_ms, 16)
    path = tmp_path / "measured.json"
    path.write_text(json.dumps({"device": target.name, "threads": 16, "board": target.to_dict(), "rows": [],
                                "pairs": [{"model": n, "plan": p.name, "measured_ms": float(v)}
                                          for (n, _, p), v in zip(cands, y)]}))
    out = tmp_path / "extrapolated.json"
    assert bench.main([str(path), "--shots", "2,4", "--out", str(out)]) == 0
    ev = json.loads(out.read_text())["evaluations"][0]
    assert ev["threads"] == 16 and ev["pairs"] == len(cands) and len(ev["via"]) == len(amdahl_pairs(gnn, 16))
    row = next(r for r in ev["via"] if r["pairing"].endswith(f":{len(ev['via']) - 1}"))
    assert row["unscaled"]["median_ratio"] == pytest.approx(1 / 1.7, rel=1e-4)
    assert row["shots"]["4"]["mape"] < 1e-3 and row["shots"]["4"]["scale"] == pytest.approx(1.7, rel=1e-4)
    assert sum(bool(r.get("picked")) for r in ev["via"]) == 1
    assert np.isfinite(row["fingerprint"]["mape"])


def test_a_result_without_its_board_is_refused(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"threads": 16, "pairs": []}))
    with pytest.raises(SystemExit, match="no board in the file"):
        bench.main([str(path), "--out", str(tmp_path / "x.json")])
