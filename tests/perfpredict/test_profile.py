"""Profiling campaigns on a tiny zoo model: layer and model records, resume after SIGKILL, skips, noise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import numpy as np
import pytest

from perfpredict.beacon import BEACON_ID, beacon_ms
from perfpredict.dataset import MEMORY_CAMPAIGN, NOISE_CAMPAIGN, make_record, memory_method_of, open_store
from perfpredict.devices import load_example_board, static_host
from perfpredict.errors import MeasurementError, PerfPredictError
from perfpredict.measure import latency_stats, measure_interleaved
from perfpredict.plan import Choice, default_choice, validate_plan
from perfpredict.primitives import get_primitive
from perfpredict.profile import (
    FastestChoices,
    Protocol,
    SkipLog,
    campaign_device,
    collect_layer_configs,
    isolate_node,
    layer_candidates,
    run_layer_campaign,
    run_model_campaign,
    run_memory_remeasure,
    run_noise,
    run_step_times,
    sample_plans,
    sample_swap_plans,
    spec_from_dict,
    zoo_graph,
)
from perfpredict.zoo import get_spec

DEV = load_example_board("xeon_gold_6240")
TINY = Protocol(warmup=3, min_repeats=3, max_repeats=5, target_ci=0.05, time_cap_s=0.005, max_call_ms=200.0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private zoo export cache (tiny squeezenet at 32x32 exported once for the module)."""
    path = tmp_path_factory.mktemp("zoo-cache")
    old = os.environ.get("PERFPREDICT_CACHE")
    os.environ["PERFPREDICT_CACHE"] = str(path)
    zoo_graph(_spec())
    yield path
    if old is None:
        os.environ.pop("PERFPREDICT_CACHE", None)
    else:
        os.environ["PERFPREDICT_CACHE"] = old


def _spec():
    return get_spec("squeezenet1_1").with_input_shape((1, 3, 32, 32))


def test_layer_configs_isolate_and_prune(cache):
    configs = collect_layer_configs([_spec()], 6, seed=0, ops=("Conv", "Relu"))
    assert len(configs) == 6
    assert len({c.identity_json for c in configs}) == 6  # deduplicated
    conv = next(c for c in configs if c.op == "Conv" and c.node.attrs["groups"] == 1)
    assert len(conv.graph.nodes) == 1 and conv.graph.inputs == conv.node.activation_inputs
    k = conv.node.attrs["out_channels"]
    pruned = isolate_node(conv.graph, conv.node, 0.5)
    assert pruned.nodes[0].attrs["out_channels"] == k - round(0.5 * k)
    assert pruned.nodes[0].macs < conv.node.macs and pruned.nodes[0].attrs["kernel"] == conv.node.attrs["kernel"]
    cands = layer_candidates(conv.node, (0.0, 0.5))
    labels = {c.label for c in cands}
    assert len(labels) == len(cands)
    assert {c.precision for c in cands} == {"fp32", "int8"} and {c.prune for c in cands} == {0.0, 0.5}
    relu = next(c for c in configs if c.op == "Relu")
    assert {c.prune for c in layer_candidates(relu.node, (0.0, 0.5))} == {0.0}  # not prunable


def test_a_primitive_filter_keeps_its_layers_and_candidates(cache, tmp_path):
    # a primitive added later is measured beside its rival only, on the layers it runs
    wanted = ("conv.winograd4", "conv.dnnl")
    configs = collect_layer_configs([_spec()], 50, seed=0, primitives=wanted)
    assert configs and all(c.op == "Conv" and get_primitive("conv.winograd4").applies(c.node) for c in configs)
    for cfg in configs:
        assert {c.primitive for c in layer_candidates(cfg.node, (0.0,), wanted)} == set(wanted)
    with open_store(tmp_path / "s.db") as store, pytest.raises(PerfPredictError, match="unknown primitive 'conv.x'"):
        run_layer_campaign(store, threads=(1,), specs=[_spec()], n_configs=1, primitives=("conv.x",),
                           protocol=TINY, devices={1: DEV}, progress=False)


def test_layer_campaign_records_resume_and_skips(cache, tmp_path):
    db = tmp_path / "s.db"
    with open_store(db) as store:
        kw = dict(threads=(1,), specs=[_spec()], n_configs=3, ops=("Conv", "MaxPool"), prune_ratios=(0.0, 0.5),
                  protocol=TINY, devices={1: DEV}, progress=False)
        rep = run_layer_campaign(store, **kw)
        assert rep.planned == rep.stored + sum(rep.skipped.values()) and rep.stored > 0
        recs = list(store.iter_records(kind="layer"))
        assert len(recs) == rep.stored and len({r.key for r in recs}) == len(recs)
        for r in recs:
            assert r.device_name == DEV.name and r.threads == 1 and r.median_ms > 0 and r.n_repeats >= 3
            ident = json.loads(r.node_json)
            assert ident["op"] in ("Conv", "MaxPool") and ident["input_shapes"]
            ex = r.extra()
            assert spec_from_dict(ex["spec"]) == _spec() and ex["min_ms"] <= r.median_ms
            assert r.stable == (r.ci95_rel <= TINY.target_ci)
        assert rep.unstable == sum(1 for r in recs if not r.stable)
        # resume: nothing new is measured, nothing is duplicated
        again = run_layer_campaign(store, **kw)
        assert again.stored == 0 and again.already == rep.stored
        assert len(store) == rep.stored
        # noise re-check of layers: re-timed interleaved with their stored siblings, stored as rechecks
        noise = run_noise(store, sample=2, seed=0, kinds=("layer",), protocol=TINY, progress=False)
        assert noise.stored == 2 and set(noise.extra["this_run_by_kind"]) == {"layer"}
        rechecks = list(store.iter_records(campaign=NOISE_CAMPAIGN))
        assert {r.extra()["original_key"] for r in rechecks} <= store.keys("layers")
        assert all(r.kind == "layer" and r.median_ms > 0 for r in rechecks)
        # a tight call limit skips candidates and logs them; logged skips are not retried
        slow = Protocol(warmup=3, min_repeats=3, max_repeats=5, time_cap_s=0.005, max_call_ms=1e-6)
        rep2 = run_layer_campaign(store, **{**kw, "protocol": slow, "campaign": "strict"})
        assert rep2.stored == 0 and sum(rep2.skipped.values()) == rep2.planned
        log = SkipLog(db)
        assert len(log.keys()) == rep2.planned + sum(rep.skipped.values())
        assert all("too slow" in e["reason"] for e in log.entries() if e["campaign"] == "strict")
        rep3 = run_layer_campaign(store, **{**kw, "protocol": slow, "campaign": "strict"})
        assert rep3.skipped == {"skipped in an earlier run": rep2.planned}


def test_model_campaign_memory_plans_and_noise(cache, tmp_path, monkeypatch):
    with open_store(tmp_path / "m.db") as store:
        kw = dict(threads=(1,), specs=[_spec()], plans_per_model=3, protocol=TINY, devices={1: DEV},
                  progress=False, layer_campaign=None)
        rep = run_model_campaign(store, **kw)
        recs = list(store.iter_records(kind="model"))
        assert rep.stored == len(recs) == 3 and not rep.skipped
        graph, _ = zoo_graph(_spec())
        kinds = set()
        for r in recs:
            assert r.graph_id == graph.graph_id and r.model_name == _spec().name and r.family == "squeezenet"
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

        monkeypatch.setattr("perfpredict.profile.measure_interleaved", spy)
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
    kw = dict(threads=(1, 2), specs=[_spec()], plans_per_model=2, protocol=TINY, devices=devs, progress=False,
              layer_campaign=None)
    with open_store(tmp_path / "d.db") as store:
        assert "beacon_check" not in run_model_campaign(store, **{**kw, "campaign": "a"}).extra  # nothing to check
        # both thread counts are checked against the store's references; the verdict on this run's real timings is
        # recorded, not acted on (on a busy 2-core machine the 2-thread beacon can drift past the guard's bounds;
        # the guard's own thresholds: test_beacon.py)
        verdicts = []
        with monkeypatch.context() as m:
            m.setattr("perfpredict.profile.drift_problem", lambda first, ref: verdicts.append((dict(first), ref)))
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


def test_rss_memory_is_remeasured_by_the_allocator_and_attached_to_its_original(cache, tmp_path):
    from perfpredict.samples import load_samples

    db = tmp_path / "rss.db"
    with open_store(db) as store:
        run_model_campaign(store, threads=(1,), specs=[_spec()], plans_per_model=2, protocol=TINY, devices={1: DEV},
                           progress=False, layer_campaign=None, memory_method="rss")
        originals = {r.key: r for r in store.iter_records(kind="model")}
        assert {memory_method_of(r) for r in originals.values()} == {"rss"}
        assert store.has_memory_method("rss") and not store.has_memory_method("allocator")
        rep = run_memory_remeasure(store, progress=False)
        assert rep.stored == 2 and rep.extra["repeat_max_rel_diff"] == 0  # two builds, the same bytes
        again = list(store.iter_records(campaign=MEMORY_CAMPAIGN))
        assert {r.extra()["original_key"] for r in again} == set(originals)
        for r in again:
            assert r.median_ms is None and r.peak_mem_bytes > 0 and memory_method_of(r) == "allocator"
            assert r.graph_id == originals[r.extra()["original_key"]].graph_id
        assert run_memory_remeasure(store, progress=False).already == 2
        allocated = {r.extra()["original_key"]: r.peak_mem_bytes for r in again}
    auto = load_samples(db, kinds=("model",))
    assert auto.memory_method == "allocator" and len(auto.models) == 2  # the re-measurements are no samples
    assert {s.key: s.peak_mem_bytes for s in auto.models} == allocated
    rss = load_samples(db, kinds=("model",), memory_method="rss")
    assert {s.key: s.peak_mem_bytes for s in rss.models} == {k: r.peak_mem_bytes for k, r in originals.items()}
    assert all(s.latency_ms > 0 for s in auto.models + rss.models)


def test_step_times_group_every_node_and_attach_to_their_originals(cache, tmp_path, monkeypatch):
    from perfpredict.dataset import STEPS_CAMPAIGN, Store
    from perfpredict.samples import load_samples

    real_step_times = Store.step_times
    db = tmp_path / "steps.db"
    with open_store(db) as store:
        run_model_campaign(store, threads=(1, 2), specs=[_spec()], plans_per_model=3, protocol=TINY,
                           devices={1: replace(DEV, threads_used=1), 2: replace(DEV, threads_used=2)},
                           progress=False, layer_campaign=None, campaign="m")
        originals = {r.key: r for r in store.iter_records(kind="model")}
        with pytest.raises(PerfPredictError, match="no records in campaign.*nope.*the store's campaigns: m"):
            run_step_times(store, campaigns=["nope"], progress=False)
        rep = run_step_times(store, threads=[1], repeats=2, progress=False)
        assert rep.stored == 3 and rep.threads == (1,) and rep.extra["steps_vs_record"]["n"] == 3
        timed = list(store.iter_records(campaign=STEPS_CAMPAIGN))
        assert {r.extra()["original_key"] for r in timed} == {k for k, r in originals.items() if r.threads == 1}
        graph, _ = zoo_graph(_spec())
        for r in timed:
            steps = r.extra()["steps"]
            names = [n for _, nodes in steps["groups"] for n in nodes]
            assert sorted(names) == sorted(n.name for n in graph.nodes)  # every node in exactly one group
            assert all(ms > 0 for ms, _ in steps["groups"]) and r.median_ms is None and r.plan_json is None
            assert steps["total_ms"] == pytest.approx(sum(ms for ms, _ in steps["groups"]), abs=1e-5)
        assert run_step_times(store, threads=[1], progress=False).already == 3  # resumed: nothing timed again
    loaded = load_samples(db, kinds=("model",), campaigns=["m"])
    assert len(loaded.models) == len(originals) and loaded.skipped["step times (attached to their original)"] == 3
    # timed on this machine for records of another (DEV): attached to the plans that run nothing in int8 only
    fp32 = {s.key for s in loaded.models if s.threads == 1
            and not any(c.precision == "int8" for c in s.plan.choices.values())}
    assert fp32 and {s.key for s in loaded.models if s.steps is not None} == fp32
    for s in loaded.models:
        if s.steps is not None:
            grp, ms = s.steps
            assert grp.min() >= 0 and len(ms) == grp.max() + 1 and len(grp) == s.template.n_nodes
    # timed on the records' own machine: attached to every plan
    monkeypatch.setattr(Store, "step_times", lambda self: {k: [(DEV.device_id, g) for _, g in v]
                                                           for k, v in real_step_times(self).items()})
    mine = load_samples(db, kinds=("model",), campaigns=["m"])
    assert {s.key for s in mine.models if s.steps is not None} == {r.extra()["original_key"] for r in timed}


def test_sample_plans_are_legal_and_distinct(cache):
    import random

    graph, _ = zoo_graph(_spec())
    plans = sample_plans(graph, 8, random.Random(0), ref_rate=1e6)
    assert len(plans) == 8 and len({p.key for p in plans}) == 8
    assert plans[0].name == "default" and plans[0].choices == {}
    for p in plans:
        validate_plan(graph, p)
    assert any(c.precision == "int8" for p in plans for c in p.choices.values())
    assert any(c.prune > 0 for p in plans for c in p.choices.values())
    assert plans == sample_plans(graph, 8, random.Random(0), ref_rate=1e6)  # seeded
    by_name = {p.name: p for p in plans}
    # whole-graph int8 in each layout, on the first-ranked int8 conv that has it
    for name, layout, prim in (("int8", "NCHW", "conv.int8"), ("int8-nhwc", "NHWC", "conv.dnnl_int8")):
        convs = [c for n, c in by_name[name].choices.items() if graph.node(n).op == "Conv"]
        assert convs and all(c == Choice(prim, layout, "int8") for c in convs), name


def test_swap_plans_move_convolutions_away_from_the_whole_graph_anchor(cache, tmp_path):
    import random

    graph, _ = zoo_graph(_spec())
    plans = sample_swap_plans(graph, 8, random.Random(0), ref_rate=1e6)
    assert len(plans) == 8 and len({p.key for p in plans}) == 8 and plans[0].name == "anchor"
    ops = {n.name: n.op for n in graph.nodes}
    anchor = plans[0].choices
    assert all(c == Choice("conv.dnnl", "NHWC") for n, c in anchor.items() if ops[n] == "Conv")
    assert all(c.primitive == "maxpool.dnnl" for n, c in anchor.items() if ops[n] == "MaxPool")
    def full(p):  # compact plans leave out default choices
        return {n.name: p.choices.get(n.name, default_choice(n)) for n in graph.nodes}

    for p in plans[1:]:
        validate_plan(graph, p)
        moved = {n for n, c in full(p).items() if c != full(plans[0])[n]}
        assert moved and {ops[n] for n in moved} == {"Conv"} and p.name in ("swap", "band")
        assert all(full(p)[n].precision == "fp32" and full(p)[n].primitive != "conv.dnnl" for n in moved)
    assert {"swap", "band"} <= {p.name for p in plans}
    assert plans == sample_swap_plans(graph, 8, random.Random(0), ref_rate=1e6)  # seeded
    with open_store(tmp_path / "s.db") as store:
        with pytest.raises(PerfPredictError, match="plans 'nope' is not known; accepted: mixed, swaps"):
            run_model_campaign(store, threads=(1,), specs=[_spec()], plans="nope", devices={1: DEV}, progress=False)
        rep = run_model_campaign(store, threads=(1,), specs=[_spec()], plans_per_model=2, plans="swaps",
                                 protocol=TINY, devices={1: DEV}, progress=False, layer_campaign=None, memory=False)
        assert rep.stored == 2 and rep.extra["plans_by_kind"]["anchor"] == 1


def test_fastest_choices_pick_the_lowest_median(cache, tmp_path):
    configs = collect_layer_configs([_spec()], 1, seed=0, ops=("Conv",))
    cfg = configs[0]
    with open_store(tmp_path / "f.db") as store:
        for prim, layout, ms in (("conv.onednn", "NHWC", 2.0), ("conv.im2col", "NCHW", 1.0)):
            store.append(make_record(kind="layer", device=DEV, campaign="layers", threads=1,
                                     stats=latency_stats([ms] * 8), node_json=cfg.identity_json, primitive=prim,
                                     layout=layout, precision="fp32", prune=0.0))
        fast = FastestChoices.from_store(store)
    best = fast.best(cfg.node, 1)
    assert (best.primitive, best.layout) == ("conv.im2col", "NCHW")
    assert fast.best(cfg.node, 2).primitive == "conv.im2col"  # falls back to another thread count
    assert fast.best(cfg.node, 1, ("int8",)) is None


def test_campaign_device_reuses_the_stored_description(tmp_path):
    host = static_host()
    if host is None:
        pytest.skip("this host cannot be described")
    described = load_example_board("xeon_gold_6240")
    spec = type(host)(**{**host.__dict__, "threads_used": 1, "peak_gflops_fp32": 12.5})
    with open_store(tmp_path / "d.db") as store:
        store.append(make_record(kind="layer", device=spec, campaign="c", threads=1, stats=latency_stats([1.0] * 8),
                                 node_json={"op": "Relu"}))
        store.append(make_record(kind="layer", device=described, campaign="c", threads=1,
                                 stats=latency_stats([1.0] * 8), node_json={"op": "Add"}))
        got = campaign_device(store, 1)
    assert got.device_id == host.device_id and got.peak_gflops_fp32 == 12.5


def test_bad_arguments_are_one_line_errors(cache, tmp_path):
    with open_store(tmp_path / "e.db") as store:
        with pytest.raises(PerfPredictError, match="unknown family nope; known: "):
            run_layer_campaign(store, families=["nope"], devices={1: DEV, 2: DEV}, progress=False)
        with pytest.raises(PerfPredictError, match="threads must be positive"):
            run_layer_campaign(store, threads=(0,), specs=[_spec()], progress=False)
        with pytest.raises(PerfPredictError, match="no layer or model records"):
            run_noise(store, sample=3, progress=False)


_KILL_SCRIPT = textwrap.dedent("""
    import sys
    from perfpredict.dataset import open_store
    from perfpredict.devices import load_example_board
    from perfpredict.profile import Protocol, run_layer_campaign
    from perfpredict.zoo import get_spec
    dev = load_example_board("xeon_gold_6240")
    spec = get_spec("squeezenet1_1").with_input_shape((1, 3, 32, 32))
    proto = Protocol(warmup=3, min_repeats=6, max_repeats=400, target_ci=1e-9, time_cap_s=0.02, max_call_ms=500)
    with open_store(sys.argv[1]) as store:
        run_layer_campaign(store, threads=(1,), specs=[spec], n_configs=8, ops=("Conv", "Relu", "Concat", "MaxPool"),
                           prune_ratios=(0.0,), protocol=proto, devices={1: dev}, progress=False)
""")


def test_sigkill_then_resume_loses_nothing_and_duplicates_nothing(cache, tmp_path):
    db = tmp_path / "k.db"
    script = tmp_path / "campaign.py"
    script.write_text(_KILL_SCRIPT)
    env = {**os.environ, "PERFPREDICT_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, str(script), str(db)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        n_before = 0
        while time.time() < deadline and proc.poll() is None:
            if db.exists():
                with open_store(db, create=False) as s:
                    n_before = len(s)
                if n_before >= 3:
                    break
            time.sleep(0.05)
        assert n_before >= 3, "the campaign stored nothing before the deadline"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    with open_store(db) as store:
        before = store.keys()
        assert len(before) >= n_before
        proto = Protocol(warmup=3, min_repeats=6, max_repeats=400, target_ci=1e-9, time_cap_s=0.02, max_call_ms=500)
        rep = run_layer_campaign(store, threads=(1,), specs=[_spec()], n_configs=8,
                                 ops=("Conv", "Relu", "Concat", "MaxPool"), prune_ratios=(0.0,), protocol=proto,
                                 devices={1: DEV}, progress=False)
        after = list(store.iter_records())
    keys = [r.key for r in after]
    assert len(keys) == len(set(keys))  # no duplicates
    assert before <= set(keys)  # nothing finished was lost
    assert rep.already == len(before) and rep.planned == len(keys) + sum(rep.skipped.values())
    assert all(np.isfinite(r.median_ms) for r in after)


def test_a_kernel_probe_campaign_loads_back_and_stays_in_every_family_split(cache, tmp_path):
    from perfpredict.samples import load_samples, make_splits
    from perfpredict.zoo import sample_variants

    db = tmp_path / "p.db"
    with open_store(db) as store:
        rep = run_layer_campaign(store, threads=(1,), families=["kernels"], n_variants_per_family=6, n_configs=4,
                                 ops=("Conv", "Relu"), prune_ratios=(0.0,), protocol=TINY, devices={1: DEV},
                                 campaign="layers-kernels", progress=False)
        assert rep.stored > 0
        recs = list(store.iter_records(kind="layer"))
        assert {r.family for r in recs} == {"kernels"}
        assert {spec_from_dict(r.extra()["spec"]) for r in recs} <= set(sample_variants("kernels", 6, 0))
        # and one family's models beside them
        run_model_campaign(store, threads=(1,), specs=[_spec()], plans_per_model=2, protocol=TINY,
                           devices={1: DEV}, progress=False)
    samples = load_samples(db)
    assert len(samples.layers) == rep.stored and {s.campaign for s in samples.layers} == {"layers-kernels"}
    (split,) = make_splits(samples, "family:squeezenet")
    assert len(split.train.layers) == rep.stored  # the probes belong to no model family: never held out


def test_a_users_onnx_layers_are_measured_and_load_as_training_samples(tiny_onnx, tmp_path):
    from perfpredict.samples import load_samples

    db = tmp_path / "u.db"
    kw = dict(threads=(1,), models=[tiny_onnx], n_configs=50, prune_ratios=(0.0,), protocol=TINY, devices={1: DEV},
              progress=False)
    with open_store(db) as store:
        rep = run_layer_campaign(store, **kw)
        recs = list(store.iter_records(kind="layer"))
        assert rep.stored == len(recs) > 0 and rep.extra["configs"] == 5  # conv (bn folded), relu, pool, flatten, fc
        name = os.path.splitext(os.path.basename(tiny_onnx))[0]
        assert {(r.family, r.model_name) for r in recs} == {(name, name)}
        ex = recs[0].extra()
        assert "spec" not in ex and "node" not in ex and ex["onnx"] == tiny_onnx
        assert ex["layer_node"]["name"] == ex["onnx_node"]
        assert ex["layer_node"]["op"] == json.loads(recs[0].node_json)["op"]
        assert run_layer_campaign(store, **kw).stored == 0  # resumes: nothing measured twice
    os.remove(tiny_onnx)  # the records keep each node: the store stays usable without the file
    layers = load_samples(db, kinds=("layer",)).layers
    assert len(layers) == len(recs)
    ops = {s.template.node_names[0]: s for s in layers}
    assert {"conv", "relu", "gap", "flatten", "fc"} <= set(ops) and ops["gap"].family == name
    with open_store(tmp_path / "v.db") as store:
        with pytest.raises(PerfPredictError, match="no such ONNX file"):
            run_layer_campaign(store, **kw)


def test_zoo_families_are_measured_beside_a_users_onnx_only_when_named(tiny_onnx, cache, tmp_path):
    with open_store(tmp_path / "s.db") as store:
        run_layer_campaign(store, threads=(1,), models=[tiny_onnx], families=["squeezenet"], n_variants_per_family=0,
                           n_configs=8, ops=("Conv",), prune_ratios=(0.0,), protocol=TINY, devices={1: DEV},
                           progress=False)
        fams = {r.family for r in store.iter_records(kind="layer")}
    assert "squeezenet" in fams and len(fams) == 2


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
        rep = run_model_campaign(store, threads=(1,), models=[tiny_onnx], specs=[_spec()], plans_per_model=1,
                                 protocol=TINY, devices={1: DEV}, progress=False, layer_campaign=None, beacon=False,
                                 memory=False)
        recs = list(store.iter_records(kind="model"))
    assert rep.extra["models"] == 2 and {r.family for r in recs} == {"tiny", "squeezenet"}
    assert {("spec" in r.extra(), "graph" in r.extra()) for r in recs} == {(True, False), (False, True)}
