"""The layer campaign on a tiny zoo model and a user's ONNX file: records, resume after SIGKILL, skips."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from perfpredict.dataset import NOISE_CAMPAIGN, open_store
from perfpredict.errors import PerfPredictError
from perfpredict.primitives import get_primitive
from perfpredict.profile import (
    Protocol,
    SkipLog,
    collect_layer_configs,
    isolate_node,
    layer_candidates,
    run_layer_campaign,
    run_model_campaign,
    run_noise,
)
from perfpredict.zoo import spec_from_dict
from tests.perfpredict.profile.tiny import DEV, TINY, tiny_spec


def test_layer_configs_isolate_and_prune(cache):
    configs = collect_layer_configs([tiny_spec()], 6, seed=0, ops=("Conv", "Relu"))
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
    configs = collect_layer_configs([tiny_spec()], 50, seed=0, primitives=wanted)
    assert configs and all(c.op == "Conv" and get_primitive("conv.winograd4").applies(c.node) for c in configs)
    for cfg in configs:
        assert {c.primitive for c in layer_candidates(cfg.node, (0.0,), wanted)} == set(wanted)
    with open_store(tmp_path / "s.db") as store, pytest.raises(PerfPredictError, match="unknown primitive 'conv.x'"):
        run_layer_campaign(store, threads=(1,), specs=[tiny_spec()], n_configs=1, primitives=("conv.x",),
                           protocol=TINY, devices={1: DEV}, progress=False)


def test_layer_campaign_records_resume_and_skips(cache, tmp_path):
    db = tmp_path / "s.db"
    with open_store(db) as store:
        kw = dict(threads=(1,), specs=[tiny_spec()], n_configs=3, ops=("Conv", "MaxPool"), prune_ratios=(0.0, 0.5),
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
            assert spec_from_dict(ex["spec"]) == tiny_spec() and ex["min_ms"] <= r.median_ms
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
        rep = run_layer_campaign(store, threads=(1,), specs=[tiny_spec()], n_configs=8,
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
        run_model_campaign(store, threads=(1,), specs=[tiny_spec()], plans_per_model=2, protocol=TINY,
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
