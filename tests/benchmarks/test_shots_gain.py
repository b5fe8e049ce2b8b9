import json

import pytest

from benchmarks.shots_gain import main


def _run(tmp_path, name, seed, split, preds):
    """A bench_predictor run of one fold with its saved predictions: preds = key -> (group, predicted, measured)."""
    keys = sorted(preds)
    saved = {split: {"gnn": {"key": keys, "family": ["a"] * len(keys), "group": [preds[k][0] for k in keys],
                             "latency_ms": [preds[k][1] for k in keys],
                             "measured_latency_ms": [preds[k][2] for k in keys]}}}
    (tmp_path / f"{name}.predictions.json").write_text(json.dumps(saved))
    meta = {"seed": seed, "data_hash": "h", "latency_stat": "beacon", "command": name,
            "predictions": f"{name}.predictions.json"}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"meta": meta, "rows": [{"split": split, "predictor": "gnn", "metrics": {}}]}))
    return str(path)


def test_both_predictors_are_scored_on_the_records_the_shots_fold_held_out(tmp_path):
    measured = {f"k{i}": 10.0 + i for i in range(8)}
    # leave one family out: every record 20% too slow; with the shots k0 and k1 in training, the rest 5% too slow
    fam = _run(tmp_path, "fam", 0, "family:a", {k: ("m@1", 1.2 * v, v) for k, v in measured.items()})
    shots = _run(tmp_path, "shots", 0, "family-shots:a:2",
                 {k: ("m@1", 1.05 * v, v) for k, v in measured.items() if k not in ("k0", "k1")})
    out = tmp_path / "gain"
    assert main(["--family", fam, "--shots", shots, "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["k"] == 2 and res["seeds"] == [0]
    pooled = res["tables"]["seed 0"]["pooled"]
    assert pooled["family"]["n"] == pooled["shots"]["n"] == 6  # the shots are no test records of either
    assert pooled["family"]["mape"] == pytest.approx(20.0) and pooled["shots"]["mape"] == pytest.approx(5.0)
    assert pooled["family"]["within_10pct"] == 0.0 and pooled["shots"]["within_10pct"] == 100.0
    # the shots' measured / predicted (1 / 1.2) rescales the other plans of their model exactly
    assert pooled["rescaled"]["mape"] == pytest.approx(0.0, abs=1e-9)
    assert pooled["shots"]["plan_spearman"] == pytest.approx(1.0)
    assert "| a | 6 | 20.00% / 0.00% / 5.00% |" in out.with_suffix(".md").read_text()
    other = _run(tmp_path, "fam1", 1, "family:a", {k: ("m@1", v, v) for k, v in measured.items()})
    with pytest.raises(SystemExit, match="differ in their seeds"):
        main(["--family", other, "--shots", shots, "--out", str(out)])


def test_on_scores_two_shot_counts_on_the_records_the_larger_held_out(tmp_path):
    measured = {f"k{i}": 10.0 + i for i in range(8)}
    fam = _run(tmp_path, "fam", 0, "family:a", {k: ("m@1", 1.2 * v, v) for k, v in measured.items()})
    # K = 2 holds out k2..k7 (k2, k3 10% too slow, the rest exact); K = 4 holds out k4..k7
    two = _run(tmp_path, "two", 0, "family-shots:a:2",
               {k: ("m@1", (1.1 if k in ("k2", "k3") else 1.0) * v, v) for k, v in measured.items()
                if k not in ("k0", "k1")})
    four = _run(tmp_path, "four", 0, "family-shots:a:4",
                {k: ("m@1", v, v) for k, v in measured.items() if k not in ("k0", "k1", "k2", "k3")})
    out = tmp_path / "gain"
    assert main(["--family", fam, "--shots", two, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["tables"]["seed 0"]["pooled"]["shots"]["n"] == 6
    assert main(["--family", fam, "--shots", two, "--on", four, "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    pooled = res["tables"]["seed 0"]["pooled"]
    assert res["k"] == 2 and res["on_k"] == 4 and pooled["family"]["n"] == pooled["shots"]["n"] == 4
    assert pooled["shots"]["mape"] == pytest.approx(0.0)  # k2 and k3, the ones it missed, are not scored
    assert "only those the K = 4 folds held out too" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match="a larger K"):
        main(["--family", fam, "--shots", four, "--on", two, "--out", str(out)])
