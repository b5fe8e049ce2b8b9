"""Stored records measured again: RSS memory by the allocator, step times."""

from __future__ import annotations

from dataclasses import replace

import pytest

from perfpredict.dataset import MEMORY_CAMPAIGN, memory_method_of, open_store
from perfpredict.errors import PerfPredictError
from perfpredict.profile import run_model_campaign, run_memory_remeasure, run_step_times, zoo_graph
from tests.perfpredict.profile.tiny import DEV, TINY, tiny_spec


def test_rss_memory_is_remeasured_by_the_allocator_and_attached_to_its_original(cache, tmp_path):
    from perfpredict.samples import load_samples

    db = tmp_path / "rss.db"
    with open_store(db) as store:
        run_model_campaign(store, threads=(1,), specs=[tiny_spec()], plans_per_model=2, protocol=TINY, devices={1: DEV},
                           progress=False, layer_campaign=None, memory_method="rss")
        originals = {r.key: r for r in store.iter_records(kind="model")}
        assert {memory_method_of(r) for r in originals.values()} == {"rss"}
        # measured by the worker subprocess (python -m perfpredict.profile --memory-worker): a figure for every plan
        assert all(r.peak_mem_bytes and r.peak_mem_bytes > 0 for r in originals.values())
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
        run_model_campaign(store, threads=(1, 2), specs=[tiny_spec()], plans_per_model=3, protocol=TINY,
                           devices={1: replace(DEV, threads_used=1), 2: replace(DEV, threads_used=2)},
                           progress=False, layer_campaign=None, campaign="m")
        originals = {r.key: r for r in store.iter_records(kind="model")}
        with pytest.raises(PerfPredictError, match="no records in campaign.*nope.*the store's campaigns: m"):
            run_step_times(store, campaigns=["nope"], progress=False)
        rep = run_step_times(store, threads=[1], repeats=2, progress=False)
        assert rep.stored == 3 and rep.threads == (1,) and rep.extra["steps_vs_record"]["n"] == 3
        timed = list(store.iter_records(campaign=STEPS_CAMPAIGN))
        assert {r.extra()["original_key"] for r in timed} == {k for k, r in originals.items() if r.threads == 1}
        graph, _ = zoo_graph(tiny_spec())
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


def test_a_users_onnx_records_are_rechecked_from_the_file_while_it_is_in_place(tiny_onnx, cache, tmp_path,
                                                                                 monkeypatch):
    """Noise re-checks and step times rebuild the records of a user's ONNX model from the file it was measured from
    (its absolute path, whatever folder the campaign ran in); a file that changed since fails each rebuild (counted),
    one that is gone is counted among the skips."""
    import os

    from perfpredict.dataset import NOISE_CAMPAIGN, STEPS_CAMPAIGN
    from perfpredict.profile import run_layer_campaign, run_noise
    from tests.conftest import make_conv_model

    with open_store(tmp_path / "u.db") as store:
        monkeypatch.chdir(os.path.dirname(tiny_onnx))  # measured by a relative path ...
        relative = os.path.basename(tiny_onnx)
        run_model_campaign(store, threads=(1,), models=[relative], plans_per_model=3, protocol=TINY, devices={1: DEV},
                           progress=False, layer_campaign=None)
        run_layer_campaign(store, threads=(1,), models=[relative], n_configs=4, ops=("Conv",), prune_ratios=(0.0,),
                           protocol=TINY, devices={1: DEV}, progress=False)
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")  # ... and re-checked from another folder
        originals = {r.key: r for r in store.iter_records()}
        assert {r.kind for r in originals.values()} == {"layer", "model"}
        assert all("spec" not in r.extra() and r.extra()["onnx"] == tiny_onnx for r in originals.values())
        rep = run_noise(store, sample=4, protocol=TINY, progress=False)
        assert rep.stored == 4 and not rep.skipped
        again = list(store.iter_records(campaign=NOISE_CAMPAIGN))
        assert sorted(originals[r.extra()["original_key"]].kind for r in again) == ["layer", "layer", "model", "model"]
        assert all(r.median_ms > 0 for r in again)
        steps = run_step_times(store, repeats=1, warmup=0, progress=False)
        assert steps.stored == 3 and not steps.skipped
        assert {r.extra()["original_key"] for r in store.iter_records(campaign=STEPS_CAMPAIGN)} == \
            {k for k, r in originals.items() if r.kind == "model"}
        # the file now holds another model: no record is rebuilt from it, each failure counted
        make_conv_model(tiny_onnx, cout=16)
        rep = run_noise(store, sample=2, kinds=("model",), repeat=1, protocol=TINY, progress=False)
        assert rep.stored == 0 and rep.skipped == {"rebuild failed: PerfPredictError": 2}
        os.remove(tiny_onnx)
        with pytest.raises(PerfPredictError, match=r"none has a zoo spec or a user's ONNX file still in place "
                                                   r"\(\d+ records of .*tiny.onnx, which is gone\)"):
            run_noise(store, sample=2, repeat=2, protocol=TINY, progress=False)
        assert run_step_times(store, progress=False).planned == 0
