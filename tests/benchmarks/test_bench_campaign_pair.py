import json
import math

import pytest

from benchmarks.bench_campaign_pair import main
from perfpredict.beacon import BEACON_ID
from perfpredict.dataset import make_record, open_store
from perfpredict.devices import load_example_board
from perfpredict.measure import latency_stats

DEV = load_example_board("raspberry_pi_4")


def _model(campaign, plan, ms, beacon, model="m", graph_id="g"):
    return make_record(kind="model", device=DEV, campaign=campaign, threads=1, stats=latency_stats([ms] * 8),
                       graph_id=graph_id, model_name=model, family="resnet",
                       plan_json={"schema_version": 1, "name": plan, "choices": {}, "graph_id": plan},
                       extra={"plan_kind": plan, "beacon": {"id": BEACON_ID, "median_ms": beacon}})


def _rec(campaign, model, plan, ms):
    """A model record of ``model`` (its own graph) with a beacon of 5 ms."""
    return _model(campaign, plan, ms, 5.0, model=model, graph_id=model)


def test_ratio_by_plan_kind_cancels_the_beacon(tmp_path, capsys):
    db = tmp_path / "s.db"
    with open_store(db) as store:
        # B's machine ran 2x slower (its beacon too): the default plan's normalised ratio is 1, the int8 one 0.5
        store.append_many([_model("a", "default", 10.0, 5.0), _model("a", "int8", 8.0, 5.0),
                           _model("b", "default", 20.0, 10.0), _model("b", "int8", 8.0, 10.0),
                           _model("b", "nhwc", 9.0, 10.0)])
    out = tmp_path / "pair.json"
    assert main(["--data", str(db), "--a", "a", "--b", "b", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["shared"] == 2 and res["devices_a"] == res["devices_b"] == ["raspberry_pi_4"]
    assert {k: v["median_ratio"] for k, v in res["by_plan_kind"].items()} == {"default": 1.0, "int8": 0.5}
    assert main(["--data", str(db), "--a", "a", "--b", "none", "--out", str(out)]) == 1
    assert "share no beaconed model record" in capsys.readouterr().err


def test_agreement_of_two_sessions_splits_into_groups_and_halves_for_their_mean(tmp_path):
    db = tmp_path / "s.db"
    # session b: model m1's plans 10% slower together, m2's plans as in a; the whole session 2% slower
    with open_store(db) as store:
        store.append_many([_rec("a", m, p, 10.0) for m in ("m1", "m2") for p in ("default", "int8")]
                          + [_rec("b", "m1", p, 10.0 * 1.02 * 1.1) for p in ("default", "int8")]
                          + [_rec("b", "m2", p, 10.0 * 1.02) for p in ("default", "int8")])
    out = tmp_path / "pair.json"
    assert main(["--data", str(db), "--a", "a", "--b", "b", "--out", str(out)]) == 0
    agree = json.loads(out.read_text())["agreement"]
    assert agree["n"] == 4 and agree["groups"] == 2
    assert agree["median_ratio"] == pytest.approx(1.02 * 1.1 ** 0.5)
    assert agree["sd_within_groups"] == pytest.approx(0.0, abs=1e-12)  # all of it shared by a model's plans
    assert agree["sd_group_medians"] == pytest.approx(math.log(1.1) / 2)
    # each log ratio is log(1.1) / 2 off the middle, half of them either way: one session misses the truth by that
    # over sqrt(2), their mean by half of it, the mean of three such sessions by it over sqrt(6)

    def mape(x):
        return (math.expm1(x) - math.expm1(-x)) / 2

    assert agree["one"]["truth_mape"] == pytest.approx(mape(math.log(1.1) / 2 / math.sqrt(2)))
    assert agree["mean_of_two"]["truth_mape"] == pytest.approx(mape(math.log(1.1) / 4))
    assert agree["mean_of_three"]["truth_mape"] == pytest.approx(mape(math.log(1.1) / 2 / math.sqrt(6)))


def test_spread_within_groups_by_plan_kind_names_the_kind_the_sessions_disagree_on(tmp_path):
    db = tmp_path / "s.db"

    # session b agrees with a on the default and nhwc plans; its int8 plans are 10% slower for m1, faster for m2
    plans = ("default", "nhwc", "int8")
    with open_store(db) as store:
        store.append_many([_rec("a", m, p, 10.0) for m in ("m1", "m2") for p in plans]
                          + [_rec("b", m, p, 10.0 * (f if p == "int8" else 1.0))
                             for m, f in (("m1", 1.1), ("m2", 1 / 1.1)) for p in plans])
    out = tmp_path / "pair.json"
    assert main(["--data", str(db), "--a", "a", "--b", "b", "--out", str(out)]) == 0
    by_kind = json.loads(out.read_text())["agreement"]["by_plan_kind"]
    assert {k: v["n"] for k, v in by_kind.items()} == {"default": 2, "int8": 2, "nhwc": 2}
    for kind in ("default", "nhwc"):
        assert by_kind[kind]["sd_within_groups"] == pytest.approx(0.0, abs=1e-12)
    assert by_kind["int8"]["sd_within_groups"] == pytest.approx(math.log(1.1))
    floor = by_kind["int8"]["within_groups_mean_of_three"]["truth_mape"]
    x = math.log(1.1) / math.sqrt(6)
    assert floor == pytest.approx((math.expm1(x) - math.expm1(-x)) / 2)
    assert "| int8 | 2 |" in out.with_suffix(".md").read_text()
