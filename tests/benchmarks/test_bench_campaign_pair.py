import json

from benchmarks.bench_campaign_pair import main
from perfpredict.beacon import BEACON_ID
from perfpredict.dataset import make_record, open_store
from perfpredict.devices import load_example_board
from perfpredict.measure import latency_stats

DEV = load_example_board("raspberry_pi_4")


def _model(campaign, plan, ms, beacon):
    return make_record(kind="model", device=DEV, campaign=campaign, threads=1, stats=latency_stats([ms] * 8),
                       graph_id="g", model_name="m", family="resnet",
                       plan_json={"schema_version": 1, "name": plan, "choices": {}, "graph_id": plan},
                       extra={"plan_kind": plan, "beacon": {"id": BEACON_ID, "median_ms": beacon}})


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
