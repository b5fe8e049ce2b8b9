"""Which workloads to measure: spread over quantiles; chosen among models and plans and measured here."""

from __future__ import annotations

import numpy as np
import pytest

from perfpredict.devices import load_device
from perfpredict.transfer import TransferError, choose_shots, read_measurements, write_measurements
from tests.perfpredict.transfer.stand_ins import RooflinePredictor


RNG = np.random.default_rng(0)


def test_choose_shots_spreads_over_quantiles():
    pred = np.exp(RNG.uniform(0, 5, 200))
    pick = choose_shots(pred, 10)
    assert len(set(pick)) == 10
    ranks = np.argsort(np.argsort(pred))[pick]
    assert sorted(ranks // 20) == list(range(10))  # one shot per decile of predicted latency
    assert choose_shots(pred, 10) == pick  # deterministic
    with pytest.raises(TransferError):
        choose_shots(pred[:5], 6)


def test_measure_on_local_chooses_among_models_and_plans(tmp_path, monkeypatch):
    """``--measure-on local`` picks its k shots among each model's default, NHWC, int8 and pruned plans, writes
    the non-default ones as plan JSON in the output folder and lists them in a CSV that reads back (the timing
    itself is the runtime's, tested with it; here a stand-in returns a fixed figure)."""
    import types

    from perfpredict.plan import Plan
    from perfpredict.runtime import measurement
    from perfpredict.transfer import SHOT_PLANS, measure_candidates

    from perfpredict.beacon import BEACON_KEY, Beacon

    timed = []

    def fake_measure(graph, plan, beside, threads=None):
        timed.append((graph.name, plan.name, threads))
        assert set(beside) == {BEACON_KEY}  # every shot is timed beside the beacon
        return {"plan": types.SimpleNamespace(median_ms=1.0 + len(timed)),
                BEACON_KEY: types.SimpleNamespace(median_ms=0.5 * len(timed))}

    monkeypatch.setattr(measurement, "measure_plan_beside", fake_measure)
    monkeypatch.setattr(Beacon, "call", lambda self, threads: (lambda: None))
    board = load_device({"schema_version": 1, "name": "b", "kind": "cpu", "cores": 2, "threads_used": 2})
    models = ["squeezenet1_1", "mobilenet_v2"]
    ms = measure_candidates(RooflinePredictor(), board, 6, models=models, plans_dir=tmp_path / "out" / "shots")
    assert len(ms) == 6 == len(timed) and {t for _, _, t in timed} == {2}
    kinds = {name for _, name, _ in timed}
    assert kinds <= set(SHOT_PLANS) and len(kinds) > 1 and len({m.model for m in ms}) == 2
    for m in ms:  # the default plan stays implicit; any other is a file named for its model and kind
        if m.plan is not None:
            plan = Plan.load(m.plan)
            assert plan.name in SHOT_PLANS and plan.name != "default" and m.plan.endswith(f"{m.model}.{plan.name}.json")
    back = read_measurements(write_measurements(tmp_path / "out" / "measurements.csv", ms))
    assert [(b.model, b.plan, b.latency_ms) for b in back] == [(m.model, m.plan, m.latency_ms) for m in ms]
    assert [b.beacon_ms for b in back] == [0.5 * (i + 1) for i in range(6)]
    assert "shots/" in (tmp_path / "out" / "measurements.csv").read_text()  # relative: the folder can move
    # a killed run resumes: what an earlier run measured (read back from its CSV) is not measured again
    timed.clear()
    seen = []
    again = measure_candidates(RooflinePredictor(), board, 6, models=models, plans_dir=tmp_path / "out" / "shots",
                               done=back[:4], on_measured=lambda so_far: seen.append(len(so_far)))
    assert len(timed) == 2 and seen == [5, 6]
    assert [m.latency_ms for m in again[:4]] == [m.latency_ms for m in ms[:4]]
    with pytest.raises(TransferError, match="-k 99 is more than the"):
        measure_candidates(RooflinePredictor(), board, 99, models=models, plans_dir=tmp_path / "x")
    # without a plans folder: the default plans only
    timed.clear()
    assert all(m.plan is None for m in measure_candidates(RooflinePredictor(), board, 2, models=models))
