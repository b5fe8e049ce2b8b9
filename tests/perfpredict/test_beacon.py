"""The beacon: its timing stored beside model records, the noise floor of beacon-normalised latencies, and the
``"beacon"`` latency target."""

from __future__ import annotations

import json

import pytest

from perfpredict.beacon import BEACON_ID, Beacon, beacon_extra, beacon_ms, drift_problem, normalised_ms
from perfpredict.dataset import make_record, noise_recheck_record, open_store
from perfpredict.errors import DatasetError
from perfpredict.devices import load_example_board
from perfpredict.measure import latency_stats
from perfpredict.samples import load_samples

from .synthetic import synthetic_samples, write_synthetic_store

XEON = load_example_board("xeon_gold_6240")


def _model(i, median, beacon, threads=1):
    extra = {} if beacon is None else {"beacon": beacon_extra(latency_stats([beacon] * 8))}
    return make_record(kind="model", device=XEON, campaign="c", threads=threads, stats=latency_stats([median] * 8),
                       graph_id=f"g{i}", model_name="m", family="f", plan_json={"schema_version": 1, "choices": {}},
                       extra=extra)


def test_beacon_ms_reads_only_the_current_beacon():
    assert beacon_ms({"beacon": beacon_extra(latency_stats([4.0] * 5))}) == 4.0
    assert beacon_ms({}) is None and beacon_ms({"beacon": "x"}) is None
    assert beacon_ms({"beacon": {"id": "another@64:default:v0", "median_ms": 4.0}}) is None
    assert beacon_ms({"beacon": {"id": BEACON_ID, "median_ms": 0.0}}) is None
    assert normalised_ms(3.0, beacon=6.0, reference=4.0) == pytest.approx(2.0)


def test_beacon_call_runs_the_reference_model_once_built():
    b = Beacon()
    call = b.call(1)
    assert b.call(1) is call  # built once per thread count
    assert tuple(call().shape) == (1, 1000)


def test_store_noise_of_normalised_latencies_cancels_a_machine_wide_drift(tmp_path):
    with open_store(tmp_path / "n.db") as store:
        originals = [_model(i, 10.0 + i, beacon=5.0) for i in range(4)] + [_model(9, 7.0, beacon=None)]
        store.append_many(originals)
        # re-checked an hour later on a machine 20% slower: every model and the beacon with it
        for o in originals[:4]:
            store.append(noise_recheck_record(o, latency_stats([o.median_ms * 1.2] * 8),
                                              beacon=beacon_extra(latency_stats([6.0] * 8))))
        store.append(noise_recheck_record(originals[4], latency_stats([7.0] * 8)))  # no beacon either time
        noise = store.noise("model")
        assert noise["n"] == 5 and noise["within_10pct"] == pytest.approx(0.2)  # raw: only the beaconless one
        assert noise["beacon"]["n"] == 4 and noise["beacon"]["within_5pct"] == 1.0
        assert noise["beacon"]["median_rel_diff"] == pytest.approx(0.0, abs=1e-12)
        assert noise["beacon"]["raw"]["within_10pct"] == 0.0  # the same four re-checks, not normalised
        assert store.beacon_references() == {(originals[0].device_json, 1): 5.0}  # not the re-checks' beacons


def test_beacon_latency_target_scales_to_the_typical_speed_and_skips_records_without_one(tmp_path):
    source = synthetic_samples(plans_per_graph=2, variants=1)
    path = write_synthetic_store(tmp_path / "s.db", source, extra_records=False)
    beacons = [4.0, 5.0, 6.0]  # the store's median beacon: 5 ms
    with open_store(path) as store:
        recs = list(store.iter_records(kind="model"))
        extra = [{**r.extra(), "beacon": beacon_extra(latency_stats([beacons[i % 3]] * 8))} for i, r in
                 enumerate(recs[:6])]
        store.append_many([make_record(kind="model", device=r.device(), campaign="with-beacon", threads=r.threads,
                                       stats=latency_stats([r.median_ms] * 8), graph_id=r.graph_id,
                                       plan_json=json.loads(r.plan_json),
                                       model_name=r.model_name, family=r.family, extra=e)
                           for r, e in zip(recs, extra)])
    plain = load_samples(path, kinds=("model",))
    normed = load_samples(path, kinds=("model",), latency_stat="beacon")
    assert normed.skipped["no beacon timing"] == len(recs)  # the synthetic campaign timed none
    assert len([s for s in normed.models if s.latency_ms is not None]) == 6
    got = sorted(s.latency_ms for s in normed.models if s.latency_ms is not None)
    want = sorted(r.median_ms * 5.0 / beacons[i % 3] for i, r in enumerate(recs[:6]))
    assert got == pytest.approx(want)
    assert normed.data_hash != plain.data_hash and normed.latency_stat == "beacon"
    only = load_samples(path, kinds=("model",), campaigns=["with-beacon"])
    assert len(only.models) == 6 and only.skipped["not in the chosen campaigns"] == len(recs)


def test_drift_problem_names_a_changed_machine_or_threading_and_passes_ordinary_drift():
    store = {1: 12.0, 2: 9.4}
    assert drift_problem({1: 14.0, 2: 11.0}, store) is None  # a slower hour: both thread counts move together
    assert drift_problem({1: 13.0}, store) is None  # one thread count known so far
    assert drift_problem({1: 13.0, 4: 3.0}, store) is None  # no reference at 4 threads: nothing to compare
    # two threads slower than one, as under another OpenMP wait policy: caught by the ratio, though each time alone
    # is within the tolerance
    msg = drift_problem({1: 14.0, 2: 21.0}, store)
    assert msg is not None and "2-thread / 1-thread" in msg and "OMP_WAIT_POLICY" in msg
    msg = drift_problem({1: 40.0}, store)
    assert msg is not None and "3.33x" in msg and "1 thread(s)" in msg
    assert "0.25x" in drift_problem({1: 3.0}, store)
    assert drift_problem({1: 40.0}, store, tolerance=4.0) is None


def test_campaigns_that_timed_the_same_plans_again_average_into_one_sample(tmp_path):
    source = synthetic_samples(plans_per_graph=2, variants=1)
    path = write_synthetic_store(tmp_path / "s.db", source, extra_records=False)
    with open_store(path) as store:
        recs = list(store.iter_records(kind="model"))
        # the first six plans timed again in a second session, 21% slower (beacon-normalised: the beacon ran alike)
        store.append_many([make_record(kind="model", device=r.device(), campaign=camp, threads=r.threads,
                                       stats=latency_stats([r.median_ms * f] * 8), graph_id=r.graph_id,
                                       plan_json=json.loads(r.plan_json), model_name=r.model_name, family=r.family,
                                       extra={**r.extra(), "beacon": beacon_extra(latency_stats([5.0] * 8))})
                           for camp, f, chosen in (("first", 1.0, recs[:6]), ("again", 1.21, recs[:4]))
                           for r in chosen])
    one = load_samples(path, kinds=("model",), latency_stat="beacon", campaigns=["first"])
    both = load_samples(path, kinds=("model",), latency_stat="beacon", campaigns=["first+again"])
    assert len(one.models) == len(both.models) == 6  # the four timed twice are one sample each
    assert both.skipped["timed again in first+again (averaged into one sample)"] == 4
    assert {s.campaign for s in both.models} == {"first"} and both.data_hash != one.data_hash
    base = {s.key: s.latency_ms for s in one.models}
    ratios = sorted(s.latency_ms / base[s.key] for s in both.models)
    assert ratios == pytest.approx([1.0, 1.0, 1.1, 1.1, 1.1, 1.1])  # the geometric mean of 1 and 1.21
    # the order of the names says whose record stands for the pair
    again = load_samples(path, kinds=("model",), latency_stat="beacon", campaigns=["again+first"])
    assert sorted(s.campaign for s in again.models) == ["again"] * 4 + ["first"] * 2
    with pytest.raises(DatasetError, match="names a campaign on each side"):
        load_samples(path, kinds=("model",), campaigns=["first+"])
