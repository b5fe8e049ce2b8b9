"""bench_transfer_local's measurements travel: pairs measured on one machine are scored on another."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_transfer_local
from perfpredict.devices import load_example_board
from perfpredict.transfer import shot_candidates


def _earlier(tmp_path, board, models=("squeezenet1_1",)):
    pairs = [{"model": n, "plan": p.name, "measured_ms": 1.0 + i, "ci95_rel": 0.01}
             for i, (n, _, p) in enumerate(shot_candidates(list(models)))]
    path = tmp_path / "measured.json"
    path.write_text(json.dumps({"device": board.name, "device_id": board.device_id, "threads": 4,
                                "predictor": "proxy", "board": board.to_dict(), "rows": [], "pairs": pairs}))
    return path, pairs


def test_reused_pairs_are_scored_on_the_board_they_were_measured_on(tmp_path):
    board = load_example_board("xeon_gold_6240")
    path, pairs = _earlier(tmp_path, board)
    out = tmp_path / "scored.json"
    assert bench_transfer_local.main(["--reuse", str(path), "--models", "squeezenet1_1", "--shots", "0",
                                      "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["board"] == board.to_dict() and res["device_id"] == board.device_id and res["threads"] == 4
    assert [p["measured_ms"] for p in res["pairs"]] == [p["measured_ms"] for p in pairs]
    assert all(p["board_ms"] > 0 for p in res["pairs"])
    assert [r["k"] for r in res["rows"]] == [0] and res["rows"][0]["adapted"]["n"] == len(pairs)


def test_reusing_a_file_that_lacks_pairs_names_them(tmp_path):
    path, _ = _earlier(tmp_path, load_example_board("xeon_gold_6240"))
    with pytest.raises(SystemExit, match="lacks .* of the pairs, e.g. resnet18:"):
        bench_transfer_local.main(["--reuse", str(path), "--models", "squeezenet1_1,resnet18", "--shots", "0",
                                   "--out", str(tmp_path / "x.json")])
