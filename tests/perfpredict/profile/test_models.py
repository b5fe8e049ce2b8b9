"""The model campaign on a tiny zoo model and a user's ONNX file: records, memory, drift guard, noise."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from perfpredict.beacon import BEACON_ID, beacon_ms
from perfpredict.dataset import NOISE_CAMPAIGN, memory_method_of, open_store
from perfpredict.errors import MeasurementError, PerfPredictError
from perfpredict.measure import measure_interleaved
from perfpredict.plan import validate_plan
from perfpredict.profile import Protocol, run_model_campaign, run_noise, zoo_graph
from tests.perfpredict.profile.tiny import DEV, TINY, tiny_spec


def test_model_campaign_memory_plans_and_noise(cache, tmp_path, monkeypatch):
    with open_store(tmp_path / "m.db") as store:
        kw = dict(threads=(1,), specs=[tiny_spec()], plans_per_model=3, protocol=TINY, devices={1: DEV},
                  progress=False, layer_campaign=None)
        rep = run_model_campaign(store, **kw)
        recs = list(store.iter_records(kind="model"))
        assert rep.stored == len(recs) == 3 and not rep.skipped
        graph, _ = zoo_graph(tiny_spec())
        kinds = set()
        for r in recs:
            assert r.graph_id == graph.graph_id and r.model_name == tiny_spec().name and r.family == "squeezenet"
            plan_d = json.loads(r.plan_json)
            from perfpredict.plan import Plan

            validate_plan(graph, Plan.from_dict(plan_d))
            kinds.add(plan_d["name"])
            ex = r.extra()
            assert r.peak_mem_bytes > 0 and r.est_mem_bytes > 0
            assert ex["mem"]["weights"] > 0 and r.peak_mem_bytes == ex["mem"]["weights"] + ex["mem"]["run_peak"]
            est = ex["est_mem"]
            assert est["weights"] + max(est["activations"], est["workspace"]) <= r.est_mem_bytes <= sum(est.values())
            assert ex["mem"]["method"] == "allocator" and memory_method_of(r) == "allocator"
        assert "default" in kinds and len(kinds) == 3
        assert rep.extra["memory_gap"]["n"] == 3
        # the beacon was timed in the same rounds as the three plans: one figure shared by all three records
        beacons = {json.dumps(r.extra()["beacon"], sort_keys=True) for r in recs}
        assert len(beacons) == 1 and beacon_ms(recs[0].extra()) > 0
        assert recs[0].extra()["beacon"]["id"] == BEACON_ID
        assert run_model_campaign(store, **kw).already == 3 and len(store) == 3

        with pytest.raises(PerfPredictError, match="no model records of campaign\\(s\\) elsewhere"):
            run_noise(store, sample=2, kinds=("model",), campaigns=["elsewhere"], progress=False)
        noise = run_noise(store, sample=2, seed=1, campaigns=["models"], progress=False)
        assert noise.stored == 2
        rechecks = list(store.iter_records(campaign=NOISE_CAMPAIGN))
        assert len(rechecks) == 2 and all(r.extra()["original_key"] in store.keys("models") for r in rechecks)
        assert all(beacon_ms(r.extra()) > 0 for r in rechecks)  # re-timed beside the beacon, as the originals were
        assert store.info()["noise"]["n"] == 2 and store.noise("model")["beacon"]["n"] == 2
        assert run_noise(store, sample=2, seed=1, progress=False).already == 2  # same sample: not re-measured

        run_model_campaign(store, **{**kw, "campaign": "plain", "beacon": False})
        assert all("beacon" not in r.extra() for r in store.iter_records(campaign="plain"))
        # a beacon unlike the store's (here the store's references made 10x faster) stops the campaign before it
        # stores the model's records; allow_drift stores them
        real = store.beacon_references()
        with monkeypatch.context() as patch:
            patch.setattr(store, "beacon_references", lambda: {k: v / 10 for k, v in real.items()})
            with pytest.raises(PerfPredictError, match=r"beacon runs \d+\.\d\dx the store's reference at 1 thr"):
                run_model_campaign(store, **{**kw, "campaign": "drifted"})
            assert not store.keys("drifted")
            assert run_model_campaign(store, **{**kw, "campaign": "drifted", "allow_drift": True}).stored == 3
        # steady turns: each turn one untimed call and three timed ones, and the records say so
        steady = Protocol(**{**TINY.to_dict(), "block": 3, "block_warmup": 1})
        run_model_campaign(store, **{**kw, "campaign": "steady", "protocol": steady})
        blocked = list(store.iter_records(campaign="steady"))
        assert len(blocked) == 3 and all(r.extra()["block"] == {"timed": 3, "untimed": 1} for r in blocked)
        assert all(r.n_repeats >= 3 and r.median_ms > 0 and beacon_ms(r.extra()) > 0 for r in blocked)
        assert all("block" not in r.extra() for r in store.iter_records(campaign="plain"))
        # a record timed in steady turns is re-checked in turns of the same shape, the others one call per turn
        turns = []

        caps = []

        def spy(*args, **kwargs):
            turns.append((kwargs.get("block", 1), kwargs.get("block_warmup", 0)))
            caps.append(kwargs.get("time_cap_s"))
            return measure_interleaved(*args, **kwargs)

        monkeypatch.setattr("perfpredict.profile.rechecks.measure_interleaved", spy)
        assert run_noise(store, sample=1, seed=0, kinds=("model",), campaigns=["steady"], protocol=TINY,
                         progress=False).stored == 1
        assert run_noise(store, sample=1, seed=0, kinds=("model",), campaigns=["plain"], protocol=TINY,
                         progress=False).stored == 1
        assert turns == [(3, 1), (1, 0)]
        # a campaign timed with another time cap is re-checked with its own
        assert run_noise(store, sample=1, seed=0, kinds=("model",), campaigns=["plain"], protocol=TINY, repeat=1,
                         time_cap_s=0.07, progress=False).stored == 1
        assert caps == [TINY.time_cap_s, TINY.time_cap_s, 0.07]
        with pytest.raises(PerfPredictError, match="--time-cap-s must be a positive"):
            run_noise(store, sample=1, kinds=("model",), time_cap_s=0.0, progress=False)
        with pytest.raises(MeasurementError, match="block >= 1"):
            Protocol(block=0)


def test_drift_guard_checks_every_thread_count_of_one_machine(cache, tmp_path, monkeypatch):
    # each thread count has a description of its own (threads_used differs), one machine (device_id) for all
    devs = {1: replace(DEV, threads_used=1), 2: replace(DEV, threads_used=2)}
    assert devs[1].device_id == devs[2].device_id and devs[1].to_json() != devs[2].to_json()
    kw = dict(threads=(1, 2), specs=[tiny_spec()], plans_per_model=2, protocol=TINY, devices=devs, progress=False,
              layer_campaign=None)
    with open_store(tmp_path / "d.db") as store:
        assert "beacon_check" not in run_model_campaign(store, **{**kw, "campaign": "a"}).extra  # nothing to check
        # both thread counts are checked against the store's references; the verdict on this run's real timings is
        # recorded, not acted on (on a busy 2-core machine the 2-thread beacon can drift past the guard's bounds;
        # the guard's own thresholds: test_beacon.py)
        verdicts = []
        with monkeypatch.context() as m:
            m.setattr("perfpredict.profile.models.drift_problem", lambda first, ref: verdicts.append((dict(first), ref)))
            check = run_model_campaign(store, **{**kw, "campaign": "b"}).extra["beacon_check"]
        assert set(check["first_ms"]) == set(check["reference_ms"]) == {1, 2} and "new_machine" not in check
        assert [set(first) for first, _ in verdicts] == [{1}, {1, 2}] and set(verdicts[-1][1]) == {1, 2}
        other = {t: replace(d, name="other-vm", cpu_model="Another CPU") for t, d in devs.items()}
        rep = run_model_campaign(store, **{**kw, "campaign": "c", "devices": other})
        assert rep.stored == 4 and rep.extra["beacon_check"]["new_machine"] == "other-vm"
        # the two-thread beacon 10x slower than the store's against the one-thread one: stopped at two threads (10x,
        # not 3x, so that this run's own few timed beacons, noisy on a 2-core VM, cannot bring it under the 1.75x)
        real = store.beacon_references()
        slower = {k: v / 10 if k[1] == 2 else v for k, v in real.items()}
        monkeypatch.setattr(store, "beacon_references", lambda: slower)
        with pytest.raises(PerfPredictError, match=r"2-thread / 1-thread time ratio .* at 2 thread\(s\)"):
            run_model_campaign(store, **{**kw, "campaign": "d"})
        assert {r.threads for r in store.iter_records(campaign="d")} == {1}


def test_a_users_onnx_model_is_measured_under_plans_and_loads_without_the_file(tiny_onnx, cache, tmp_path):
    from perfpredict.models import load_model
    from perfpredict.samples import graph_of, load_samples

    db = tmp_path / "u.db"
    kw = dict(threads=(1,), models=[tiny_onnx], plans_per_model=3, protocol=TINY, devices={1: DEV}, progress=False,
              layer_campaign=None)
    graph = load_model(tiny_onnx)[0]
    with open_store(db) as store:
        rep = run_model_campaign(store, **kw)
        recs = list(store.iter_records(kind="model"))
        assert rep.stored == len(recs) == 3 and rep.extra["models"] == 1  # the zoo's only when families are named
        name = os.path.splitext(os.path.basename(tiny_onnx))[0]
        assert {(r.family, r.model_name, r.graph_id) for r in recs} == {(name, name, graph.graph_id)}
        ex = recs[0].extra()
        assert "spec" not in ex and ex["onnx"] == tiny_onnx and isinstance(ex["graph"], str)
        assert recs[0].peak_mem_bytes > 0 and beacon_ms(ex) > 0
        assert run_model_campaign(store, **kw).stored == 0  # resumes: nothing measured twice
    os.remove(tiny_onnx)  # the records carry the graph: the store stays usable without the file
    samples = load_samples(db, latency_stat="beacon").models
    assert len(samples) == 3 and {s.family for s in samples} == {name}
    assert all(s.template.graph_id == graph.graph_id and s.spec is None for s in samples)
    rebuilt = graph_of(samples[0])
    assert rebuilt.graph_id == graph.graph_id and rebuilt.initializers.keys() == graph.initializers.keys()
    with open_store(tmp_path / "v.db") as store:
        with pytest.raises(PerfPredictError, match="no such ONNX file"):
            run_model_campaign(store, **kw)


def test_zoo_models_are_measured_beside_a_users_onnx_when_named(tiny_onnx, cache, tmp_path):
    with open_store(tmp_path / "s.db") as store:
        rep = run_model_campaign(store, threads=(1,), models=[tiny_onnx], specs=[tiny_spec()], plans_per_model=1,
                                 protocol=TINY, devices={1: DEV}, progress=False, layer_campaign=None, beacon=False,
                                 memory=False)
        recs = list(store.iter_records(kind="model"))
    assert rep.extra["models"] == 2 and {r.family for r in recs} == {"tiny", "squeezenet"}
    assert {("spec" in r.extra(), "graph" in r.extra()) for r in recs} == {(True, False), (False, True)}
