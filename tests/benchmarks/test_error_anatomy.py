import json
import math

import pytest

from benchmarks.error_anatomy import main

FAMILY_LEVEL = {"resnet": 0.10, "vgg": -0.05}
# per (model, threads): the model's own level once its family's is out (each family's levels have median 0)
MODEL_LEVEL = {("resnet-a", 1): 0.04, ("resnet-a", 2): -0.04, ("resnet-b", 1): -0.04, ("resnet-b", 2): 0.04,
               ("vgg-a", 1): 0.02, ("vgg-a", 2): 0.02, ("vgg-b", 1): -0.02, ("vgg-b", 2): -0.02}
PLAN_REST = (-0.03, -0.01, 0.01, 0.03)  # what differs between one model's plans (median 0)


def _write_run(tmp_path, seed, scale=1.0, folds=("family:resnet", "family:vgg")):
    """A bench_predictor result file with saved predictions whose log errors are the levels above (times
    ``scale`` for the model levels)."""
    preds = {}
    for split in folds:
        fam = split.split(":")[1]
        p = {k: [] for k in ("key", "family", "group", "latency_ms", "peak_mem_bytes", "measured_latency_ms",
                             "measured_peak_mem_bytes")}
        for (model, threads), level in MODEL_LEVEL.items():
            if not model.startswith(fam):
                continue
            for i, rest in enumerate(PLAN_REST):
                measured = 10.0 + i
                p["key"].append(f"{model}-{threads}-{i}")
                p["family"].append(fam)
                p["group"].append(f"{model}@{threads}")
                p["latency_ms"].append(measured * math.exp(FAMILY_LEVEL[fam] + scale * level + rest))
                p["measured_latency_ms"].append(measured)
                p["peak_mem_bytes"].append(1e6)
                p["measured_peak_mem_bytes"].append(1e6)
        preds[split] = {"gnn": p}
    out = tmp_path / f"run_seed{seed}.json"
    out.with_name(out.name.replace(".json", ".predictions.json")).write_text(json.dumps(preds))
    meta = {"seed": seed, "data_hash": "h", "latency_stat": "beacon", "command": f"bench seed {seed}",
            "predictions": out.name.replace(".json", ".predictions.json")}
    out.write_text(json.dumps({"meta": meta, "rows": [{"split": s, "predictor": "gnn"} for s in folds]}))
    return out


def _mape(logs):
    return 100 * sum(abs(math.expm1(v)) for v in logs) / len(logs)


def test_the_error_splits_into_family_model_and_plan_parts(tmp_path):
    run = _write_run(tmp_path, 0)
    out = tmp_path / "anatomy.json"
    assert main([str(run), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    a = res["seeds"]["0"]
    assert a["n"] == 32
    assert a["family_levels"] == pytest.approx({f: math.exp(v) for f, v in FAMILY_LEVEL.items()})
    # with the family's level and then the model's taken out, only the plans' differences are left
    assert a["model_level_out"]["mape"] == pytest.approx(_mape(PLAN_REST))
    assert a["family_level_out"]["mape"] == pytest.approx(
        _mape([m + r for m in MODEL_LEVEL.values() for r in PLAN_REST]))
    assert a["mean_abs_model_level"] == pytest.approx(_mape(list(MODEL_LEVEL.values())))
    # resnet's models err opposite ways at 1 and 2 threads, vgg's the same way
    assert a["threads_agreement"]["pairs"] == 4
    assert -1.0 < a["threads_agreement"]["corr"] < 1.0
    assert set(a["by_threads"]) == {"1", "2"} and a["by_threads"]["1"]["n"] == 16
    # each family's models err both ways around its level at either thread count
    for fam, level in FAMILY_LEVEL.items():
        assert set(a["by_family"][fam]) == {"1", "2"}
        assert a["by_family"][fam]["2"]["n"] == 8
        assert a["by_family"][fam]["1"]["level"] == pytest.approx(math.exp(level))
    assert a["by_family"]["vgg"]["1"]["mape"] == pytest.approx(
        _mape([-0.05 + m + r for (mod, t), m in MODEL_LEVEL.items() if mod.startswith("vgg") and t == 1
               for r in PLAN_REST]))
    assert "seed_agreement" not in res and "ensemble" not in res
    md = out.with_suffix(".md").read_text()
    assert "family level out" in md and "| resnet | 1.105 |" in md


def test_seeds_that_share_the_model_levels_agree_and_their_ensemble_averages_them(tmp_path):
    runs = [_write_run(tmp_path, 0, scale=1.0), _write_run(tmp_path, 1, scale=3.0)]
    out = tmp_path / "anatomy.json"
    assert main([*map(str, runs), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    agree = res["seed_agreement"]
    assert agree["groups"] == 8 and agree["mean_corr"] == pytest.approx(1.0)
    # the ensemble's log error is the members' mean: model levels at twice the first seed's
    ens = res["ensemble"]
    assert ens["mean_abs_model_level"] == pytest.approx(_mape([2 * v for v in MODEL_LEVEL.values()]))
    assert ens["model_level_out"]["mape"] == pytest.approx(_mape(PLAN_REST))
    # per record, the seeds differ only in their model levels (1x and 3x): with those out they agree exactly, and
    # what they share is all the mean has; as predicted, infinitely many seeds keep the mean less the scatter
    spread = res["record_spread"]
    assert spread["records"] == 32 and spread["record_corr"] == pytest.approx(1.0)
    out_ = spread["model_level_out"]
    assert out_["rms_one_seed"] == pytest.approx(out_["rms_seeds_mean"]) == pytest.approx(out_["rms_many_seeds"])
    # as predicted, seed s's error is F + (1 or 3) L + R: the mean F + 2L + R, the seeds' scatter 2L^2 over 2 seeds
    recs = [(FAMILY_LEVEL[m.split("-")[0]], lv, r) for (m, _), lv in MODEL_LEVEL.items() for r in PLAN_REST]
    shared = sum((f + 2 * lv + r) ** 2 - lv ** 2 for f, lv, r in recs) / len(recs)
    assert spread["as_predicted"]["rms_many_seeds"] == pytest.approx(100 * math.sqrt(shared))
    assert spread["as_predicted"]["rms_many_seeds"] < spread["as_predicted"]["rms_seeds_mean"]
    assert "What more seeds would give" in out.with_suffix(".md").read_text()


def test_plan_kinds_and_beacon_errors_come_from_the_store(tmp_path):
    from perfpredict.dataset import make_record, open_store
    from perfpredict.devices import load_example_board
    from perfpredict.measure import latency_stats

    run = _write_run(tmp_path, 0, folds=("family:vgg",))
    keys = json.loads(run.with_name("run_seed0.predictions.json").read_text())["family:vgg"]["gnn"]["key"]
    db = tmp_path / "s.db"
    dev = load_example_board("raspberry_pi_4")
    records = [make_record(kind="model", device=dev, campaign="c", threads=1, stats=latency_stats([10.0] * 8),
                           graph_id="g", model_name="vgg-a", family="vgg",
                           plan_json={"schema_version": 1, "name": str(i), "choices": {}, "graph_id": "g"},
                           extra={"plan_kind": "int8" if i % 2 else "default",
                                  "beacon": {"median_ms": 5.0, "ci95_rel": 0.02 if i < 8 else 0.04}})
               for i in range(len(keys))]
    with open_store(db) as store:
        store.append_many(records)
    # the saved predictions name the records by key: point them at the store's
    saved = json.loads(run.with_name("run_seed0.predictions.json").read_text())
    saved["family:vgg"]["gnn"]["key"] = [r.key for r in records]
    run.with_name("run_seed0.predictions.json").write_text(json.dumps(saved))
    out = tmp_path / "anatomy.json"
    assert main([str(run), "--data", str(db), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    kinds = res["seeds"]["0"]["by_plan_kind"]
    assert {k: v["n"] for k, v in kinds.items()} == {"default": 8, "int8": 8}
    # the first eight records are vgg-a's two thread counts, the last eight vgg-b's
    assert res["beacon"] == {"groups": 4, "median_ci95_rel": pytest.approx(3.0)}
    by_ci = res["seeds"]["0"]["by_beacon_ci"]
    assert {k: (v["groups"], v["n"]) for k, v in by_ci.items()} == {"0-3%": (2, 8), "3-6%": (2, 8)}
    assert "By the 95% CI of the beacon" in out.with_suffix(".md").read_text()
    # against each group's first default record (its plan error -0.03, measured 10 ms), the int8 ones (+0.01 / 11 ms
    # and +0.03 / 13 ms) err 0.02 and 0.06 more and run 1.1x and 1.3x as long: the same order, correlation 1
    vs = res["seeds"]["0"]["against_default"]
    assert set(vs) == {"int8"} and vs["int8"]["n"] == 8
    assert vs["int8"]["corr_with_measured_ratio"] == pytest.approx(1.0)
    assert vs["int8"]["by_family"]["vgg"] == pytest.approx({"level": math.exp(0.04), "measured_ratio": 1.43 ** 0.5})
    assert vs["int8"]["mape"] == pytest.approx(_mape([0.02, 0.06]))


def test_bad_input_is_named(tmp_path, capsys):
    assert main([str(tmp_path / "none.json")]) == 2
    assert "no such result file" in capsys.readouterr().err
    run = _write_run(tmp_path, 0)
    assert main([str(run), "--data", str(tmp_path / "none.db")]) == 2
    assert "no such store" in capsys.readouterr().err
    saved = json.loads(run.with_name("run_seed0.predictions.json").read_text())
    run.with_name("run_seed0.predictions.json").write_text(json.dumps({"random:0.2:0": saved["family:vgg"]}))
    assert main([str(run), "--out", str(tmp_path / "a.json")]) == 1
    assert "no family fold" in capsys.readouterr().err


def test_the_targets_own_noise_by_plan_kind_comes_from_the_sessions_that_timed_the_same_plans(tmp_path):
    from perfpredict.beacon import BEACON_ID
    from perfpredict.dataset import make_record, open_store
    from perfpredict.devices import load_example_board
    from perfpredict.measure import latency_stats

    dev = load_example_board("raspberry_pi_4")
    a = 0.06  # session s1 times the random plans of every group a apart; s2, s3 and the default plans agree
    kinds, noise = ("default", "default", "random", "random"), (0.0, 0.0, a, -a)
    speeds = {"s1": 1.0, "s2": 1.2, "s3": 1.0}  # s2's machine ran 1.2x slower, and so did the beacon beside it
    records = {s: [] for s in speeds}
    for g, (model, threads) in enumerate(m for m in MODEL_LEVEL if m[0].startswith("vgg")):
        for s, speed in speeds.items():
            level = 0.1 * g * (s == "s3")  # what a group's plans share in one session, which the beacon missed
            for i, kind in enumerate(kinds):
                ms = (10.0 + i) * speed * math.exp(level + (noise[i] if s == "s1" else 0.0))
                records[s].append(make_record(
                    kind="model", device=dev, campaign=s, threads=threads, stats=latency_stats([ms] * 8),
                    graph_id="g", model_name=model, family="vgg",
                    plan_json={"schema_version": 1, "name": str(i), "choices": {}, "graph_id": "g"},
                    extra={"plan_kind": kind, "beacon": {"id": BEACON_ID, "median_ms": 5.0 * speed}}))
    db = tmp_path / "s.db"
    with open_store(db) as store:
        store.append_many([r for rs in records.values() for r in rs])
    run = _write_run(tmp_path, 0, folds=("family:vgg",))
    saved = json.loads(run.with_name("run_seed0.predictions.json").read_text())
    saved["family:vgg"]["gnn"]["key"] = [r.key for r in records["s1"]]
    run.with_name("run_seed0.predictions.json").write_text(json.dumps(saved))
    result = json.loads(run.read_text())
    result["meta"]["campaigns"] = "s1+s2+s3,layers"
    run.write_text(json.dumps(result))
    out = tmp_path / "anatomy.json"
    assert main([str(run), "--data", str(db), "--out", str(out)]) == 0
    noise_of = json.loads(out.read_text())["session_noise"]
    # within a group: the random plans' residuals are +-a in the two pairs with s1 and 0 in (s2, s3), mean square
    # 2a^2/3; the group levels (s3's) cancel
    sd_one = 100 * a / math.sqrt(3)
    assert {k: noise_of["random"][k] for k in ("pairs", "sessions", "sd_one", "sd_target", "mape_target")} == \
        pytest.approx({"pairs": 24, "sessions": 3, "sd_one": sd_one, "sd_target": sd_one / math.sqrt(3),
                       "mape_target": sd_one / math.sqrt(3) * math.sqrt(2 / math.pi)})
    assert noise_of["default"]["sd_one"] == pytest.approx(0.0, abs=1e-9)
    # the whole target: a default plan of group g is 0, 0, 0.1 g in the three sessions (the beacon took s2's speed
    # out); each against the others' mean, times sqrt(2) / 3: -0.05 g, -0.05 g, 0.1 g
    c = math.sqrt(2) / 3
    floor = [abs(math.expm1(v * g * c)) for g in range(4) for v in (-0.05, -0.05, 0.1) for _ in range(2)]
    assert noise_of["default"]["floor_records"] == 8
    assert noise_of["default"]["floor_mape"] == pytest.approx(100 * sum(floor) / len(floor))
    assert noise_of["default"]["floor_within_10"] == pytest.approx(100 * 22 / 24)  # group 3 in s3: 0.141 out
    assert noise_of["all"]["floor_records"] == 16 and noise_of["all"]["pairs"] == 48
    md = out.with_suffix(".md").read_text()
    assert f"| {100 * a / math.sqrt(3):.2f}% / {100 * a / 3:.2f}% / " in md and "target noise" in md
    assert f"would score about {noise_of['all']['floor_mape']:.2f}%" in md


def test_folds_that_kept_the_familys_layer_records_are_taken_apart_too(tmp_path):
    run = _write_run(tmp_path, 0, folds=("family-layers:resnet", "family-layers:vgg"))
    out = tmp_path / "anatomy.json"
    assert main([str(run), "--out", str(out)]) == 0
    a = json.loads(out.read_text())["seeds"]["0"]
    assert a["n"] == 32 and a["model_level_out"]["mape"] == pytest.approx(_mape(PLAN_REST))
