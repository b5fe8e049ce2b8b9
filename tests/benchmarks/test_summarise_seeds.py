import json

import pytest

from benchmarks.summarise_seeds import FAMILIES, FAMILY_LAYERS, main

# per seed and split: (held-out latency records, MAPE, share within 10%)
FOLDS = {0: {"family:a": (10, 4.0, 90.0), "family:b": (30, 8.0, 70.0),
             "family-layers:a": (10, 2.0, 100.0), "family-layers:b": (30, 6.0, 80.0)},
         1: {"family:a": (10, 6.0, 80.0), "family:b": (30, 4.0, 90.0),
             "family-layers:a": (10, 4.0, 90.0), "family-layers:b": (30, 2.0, 100.0)}}


def _metrics(n, mape, within):
    return {"latency": {"n": n, "mape": mape, "within_10": within, "kendall": 0.9},
            "memory": {"n": n, "mape": 0.1, "within_10": 100.0, "kendall": 1.0}}


def _write(tmp_path, seed):
    rows = [{"split": split, "predictor": "gnn", "metrics": _metrics(*v)} for split, v in FOLDS[seed].items()]
    meta = {"seed": seed, "data_hash": "h", "latency_stat": "beacon", "command": f"bench seed {seed}"}
    path = tmp_path / f"run{seed}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}))
    return path


def test_family_and_family_layers_folds_pool_apart_weighted_by_records(tmp_path):
    out = tmp_path / "summary"
    assert main([str(_write(tmp_path, 0)), str(_write(tmp_path, 1)), "--out", str(out)]) == 0
    rows = {r["split"]: r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    # seed 0: (10 x 4 + 30 x 8) / 40 = 7, seed 1: (60 + 120) / 40 = 4.5; with the layers kept 5 and 2.5
    assert rows[FAMILIES]["latency_mape"]["values"] == pytest.approx([7.0, 4.5])
    assert rows[FAMILY_LAYERS]["latency_mape"]["values"] == pytest.approx([5.0, 2.5])
    assert rows[FAMILY_LAYERS]["latency_within_10"]["mean"] == pytest.approx((85.0 + 97.5) / 2)
    assert FAMILY_LAYERS in out.with_suffix(".md").read_text()
