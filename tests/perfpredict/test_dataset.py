"""The append-only measurement store: schema, keys, resume after SIGKILL, info and export."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from perfpredict.dataset import (
    MEMORY_CAMPAIGN,
    NOISE_CAMPAIGN,
    Record,
    make_record,
    memory_method_of,
    memory_remeasure_record,
    noise_recheck_record,
    open_store,
    record_key,
    remeasured_key,
)
from perfpredict.devices import load_example_board
from perfpredict.errors import DatasetError
from perfpredict.measure import latency_stats

PI = load_example_board("raspberry_pi_4")
XEON = load_example_board("xeon_gold_6240")


def layer(i=0, device=PI, campaign="c", threads=1, median=1.0, **kw):
    return make_record(kind="layer", device=device, campaign=campaign, threads=threads,
                       stats=latency_stats([median] * 8), node_json={"op": "Conv", "i": i},
                       primitive="conv.im2col", layout="NCHW", precision="fp32", prune=0.0, family="resnet",
                       **kw)  # fmt: skip


def model(i=0, device=PI, campaign="c", threads=1, median=10.0):
    return make_record(kind="model", device=device, campaign=campaign, threads=threads,
                       stats=latency_stats([median] * 8), graph_id=f"g{i}", model_name="mobilenet_v2",
                       family="mobilenet", plan_json={"schema_version": 1, "choices": {}},
                       peak_mem_bytes=1000 + i, est_mem_bytes=900)  # fmt: skip


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "m.db")
    yield s
    s.close()


def test_round_trip_and_keys(store, tmp_path):
    recs = [layer(0), layer(1), model(0)]
    assert store.append_many(recs) == 3
    assert list(store.iter_records()) == recs
    assert list(store.iter_records(kind="model")) == [recs[2]]
    assert store.has(recs[0].key) and not store.has("nope")
    assert store.keys(campaign="c") == {r.key for r in recs} and store.keys(campaign="other") == set()
    assert recs[2].device() == PI and recs[0].extra() == {}
    assert [d.name for d in store.devices()] == ["raspberry_pi_4"]
    store.close()
    with open_store(f"sqlite:///{tmp_path / 'm.db'}") as again:  # sqlite URL, absolute path
        assert len(again) == 3


def test_records_of_two_machines_that_share_a_name_are_told_apart_by_device_id(store):
    import dataclasses

    twin = dataclasses.replace(XEON, freq_mhz_max=XEON.freq_mhz_max + 100)  # another machine, the same name
    assert twin.name == XEON.name and twin.device_id != XEON.device_id
    a, b = model(0, device=XEON), model(1, device=twin)
    store.append_many([a, b])
    assert list(store.iter_records(device=XEON.name)) == [a, b]
    assert list(store.iter_records(device=twin.device_id)) == [b]
    assert list(store.iter_records(device=XEON.device_id, kind="model")) == [a]
    assert store.info()["by_device_id"] == {XEON.device_id: 1, twin.device_id: 1}


def test_memory_remeasure_records(store):
    orig = model(0)
    assert memory_method_of(orig) == "rss" and memory_method_of(layer(0)) is None  # untagged figures: resident set
    again = memory_remeasure_record(orig, peak_bytes=1500, weight_bytes=1000, run_peak_bytes=500)
    assert again.campaign == MEMORY_CAMPAIGN and again.key != orig.key and again.median_ms is None
    assert (again.graph_id, again.threads, again.plan_json) == (orig.graph_id, orig.threads, None)  # plan: the original's
    assert again.extra()["original_key"] == orig.key and memory_method_of(again) == "allocator"
    assert again.peak_mem_bytes == 1500 and again.extra()["mem"] == {"weights": 1000, "run_peak": 500,
                                                                       "method": "allocator"}
    assert store.append_many([orig, again]) == 2
    assert store.has_memory_method("allocator") and store.has_memory_method("rss")
    with pytest.raises(DatasetError, match="only model records"):
        memory_remeasure_record(layer(0), peak_bytes=1, weight_bytes=1, run_peak_bytes=0)


def test_has_memory_method_reads_compact_and_spaced_json(store):
    # the profiler writes extra_json compact, make_record spaced: both must be recognised
    import dataclasses

    compact = dataclasses.replace(model(1), extra_json='{"mem":{"method":"allocator"}}')
    assert not store.has_memory_method("allocator")
    store.append(compact)
    assert store.has_memory_method("allocator") and not store.has_memory_method("rss")
    store.append(model(2))  # untagged: the resident-set methods
    assert store.has_memory_method("rss")


def test_append_only(store):
    r = layer(0)
    assert store.append(r)
    with pytest.raises(DatasetError, match="already stored"):
        store.append(r)
    assert store.append(r, if_exists="skip") is False
    with pytest.raises(DatasetError, match="if_exists must be 'error' or 'skip'"):
        store.append(r, if_exists="replace")
    for sql in ("UPDATE records SET median_ms = 0", "DELETE FROM records", "DELETE FROM devices"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store._conn.execute(sql)
    # a batch is one transaction: a duplicate inside it leaves the store unchanged
    with pytest.raises(DatasetError, match="already stored"):
        store.append_many([layer(1), r])
    assert len(store) == 1


def test_record_key_identity():
    a = record_key(kind="layer", device=PI, threads=1, campaign="c", node_json='{"a": 1, "b": [1, 2]}', prune=0)
    b = record_key(kind="layer", device=PI.device_id, threads=1, campaign="c", node_json={"b": [1, 2], "a": 1},
                   prune=0.0)  # fmt: skip
    assert a == b and len(a) == 32
    assert a != record_key(kind="layer", device=PI, threads=2, campaign="c", node_json={"a": 1, "b": [1, 2]}, prune=0)
    assert a != record_key(kind="layer", device=XEON, threads=1, campaign="c", node_json={"a": 1, "b": [1, 2]}, prune=0)
    assert layer(3).key == record_key(kind="layer", device=PI, threads=1, campaign="c",
                                      node_json={"op": "Conv", "i": 3}, primitive="conv.im2col", layout="NCHW",
                                      precision="fp32", prune=0.0, family="resnet")  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kind": "op"}, "record field 'kind' must be one of layer, model"),
        ({"threads": 0}, "record field 'threads' must be a positive integer"),
        ({"median_ms": -1.0}, "record field 'median_ms' must be a number >= 0"),
        ({"stable": 1}, "record field 'stable' must be true, false or None"),
        ({"node_json": None}, "layer records need node_json"),
        ({"median_ms": None}, "needs median_ms or peak_mem_bytes"),
    ],
)
def test_record_validation(change, message):
    d = {**layer(0).__dict__, **change}
    with pytest.raises(DatasetError, match=message):
        Record(**d)


def test_invalid_json_and_device_rejected_at_append(store):
    with pytest.raises(DatasetError, match="field 'extra_json' is not valid JSON"):
        store.append(Record(**{**layer(0).__dict__, "extra_json": "{bad"}))
    with pytest.raises(DatasetError, match="field 'device_json' is not a valid DeviceSpec"):
        store.append(Record(**{**layer(0).__dict__, "device_json": '{"name": "x"}'}))
    assert len(store) == 0


def test_open_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such store"):
        open_store(tmp_path / "none.db", create=False)
    with pytest.raises(DatasetError, match="accepted forms are a file path, sqlite:///relative.db"):
        open_store("postgres://host/db")
    with pytest.raises(DatasetError, match="directory .* does not exist"):
        open_store(tmp_path / "nodir" / "x.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(DatasetError, match="cannot open as a perfpredict store"):
        open_store(junk)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(DatasetError, match="not a perfpredict store"):
        open_store(other)


def test_newer_schema_refused(tmp_path):
    open_store(tmp_path / "v.db").close()
    con = sqlite3.connect(tmp_path / "v.db")
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(DatasetError, match="schema_version 99 is newer than this perfpredict supports"):
        open_store(tmp_path / "v.db")


def test_info_counts_and_noise_floor(store):
    originals = [layer(i, median=1.0) for i in range(4)] + [model(0, device=XEON, threads=4)]
    store.append_many(originals)
    for orig, new in zip(originals, (1.01, 1.04, 1.08, 1.5)):  # within 5%: 2 of 4, within 10%: 3 of 4
        store.append(noise_recheck_record(orig, latency_stats([new] * 8)))
    info = store.info()
    assert info["records"] == 9 and info["devices"] == 2
    assert info["by_kind"] == {"layer": 8, "model": 1}
    assert info["by_device"] == {"raspberry_pi_4": 8, "xeon_gold_6240": 1}
    assert info["by_threads"] == {"1": 8, "4": 1}
    assert info["by_family"] == {"mobilenet": 1, "resnet": 8}
    assert info["by_campaign"] == {"c": 5, NOISE_CAMPAIGN: 4}
    assert info["by_campaign_device"] == {"c": {"raspberry_pi_4": 4, "xeon_gold_6240": 1},
                                          NOISE_CAMPAIGN: {"raspberry_pi_4": 4}}
    assert info["with_peak_mem"] == 1 and info["unstable"] == 0
    noise = info["noise"]
    assert noise["n"] == 4 and noise["within_5pct"] == 0.5 and noise["within_10pct"] == 0.75
    assert noise["orphans"] == 0 and 0 < noise["truth_mape"] < noise["median_rel_diff"] + 0.2
    assert info["noise_by_kind"]["layer"]["n"] == 4 and "model" not in info["noise_by_kind"]  # no model re-checked
    assert store.noise("model") is None and store.noise("layer")["within_10pct"] == 0.75
    assert info["noise_by_campaign"] == {"c": noise}  # every re-checked original is of campaign c
    assert store.noise("layer", "c") == store.noise("layer") and store.noise(campaign="elsewhere") is None
    with pytest.raises(DatasetError, match="kind must be 'layer', 'model' or None"):
        store.noise("models")
    json.dumps(info)  # serialisable for `dataset info --json`
    recheck = next(store.iter_records(campaign=NOISE_CAMPAIGN))
    assert recheck.extra()["original_key"] == originals[0].key and recheck.node_json == originals[0].node_json


def test_merge_appends_missing_records_only(store, tmp_path):
    other_dev = XEON
    with open_store(tmp_path / "other.db") as other:
        other.append_many([layer(0), layer(5, device=other_dev), model(3, device=other_dev)])
        store.append_many([layer(0), model(0)])
        assert store.merge_from(other, batch=2) == 2  # layer(0) is already stored
        assert store.merge_from(other) == 0  # idempotent: a second (or resumed) merge adds nothing
    assert len(store) == 4 and len(store.devices()) == 2
    assert store.info()["by_kind"] == {"layer": 2, "model": 2}


def test_merge_keeps_a_remeasurement_of_the_same_device_under_another_description(store, tmp_path):
    # the same machine (same static facts, so the same device_id and record keys) measured again under other
    # conditions has a description of its own: both measurements are kept
    busy = dataclasses.replace(PI, peak_gflops_fp32=10.0)
    idle = dataclasses.replace(PI, peak_gflops_fp32=40.0)
    assert busy.device_id == idle.device_id
    store.append_many([layer(0, device=busy, median=2.0), layer(1, device=busy)])
    with open_store(tmp_path / "idle.db") as other:
        idle_layer = layer(0, device=idle, median=1.0)
        recheck = noise_recheck_record(idle_layer, latency_stats([1.1] * 5), repeat=0)
        other.append_many([idle_layer, layer(2, device=idle), recheck])
        assert store.has(idle_layer.key)
        assert store.merge_from(other, batch=1) == 3
        assert store.merge_from(other) == 0  # idempotent
    assert len(store) == 5 and len(store.devices()) == 2
    kept = {r.key: r for r in store.iter_records()}
    assert kept[idle_layer.key].median_ms == 2.0  # nothing stored is changed
    idle_hash = hashlib.sha256(idle.to_json(indent=None).encode()).hexdigest()[:32]
    new_key = remeasured_key(idle_layer.key, idle_hash)
    assert kept[new_key].median_ms == 1.0
    assert kept[recheck.key].extra()["original_key"] == new_key  # the re-check follows its original
    # the two descriptions share a name and a device_id; a hash prefix selects one
    labels = list(store.info()["by_description"])
    assert len(labels) == 2 and any(label.startswith(idle_hash[:12]) and "40 GFLOP/s" in label for label in labels)
    assert len(list(store.iter_records(device=busy.device_id))) == 5
    assert {r.median_ms for r in store.iter_records(device=idle_hash[:8], campaign="c")} == {1.0}


def test_info_of_empty_store(store):
    info = store.info()
    assert info["records"] == 0 and info["by_kind"] == {} and info["noise"] is None


def test_export_csv_and_parquet(store, tmp_path):
    import pandas as pd

    store.append_many([layer(0), layer(1), model(0)])
    df = store.to_dataframe(kind="layer")
    assert len(df) == 2 and list(df["median_ms"]) == [1.0, 1.0] and df["stable"].all()
    assert store.export(tmp_path / "out.csv") == 3
    assert len(pd.read_csv(tmp_path / "out.csv")) == 3
    pytest.importorskip("pyarrow")
    assert store.export(tmp_path / "out.parquet", device="raspberry_pi_4") == 3
    back = pd.read_parquet(tmp_path / "out.parquet")
    assert set(back["kind"]) == {"layer", "model"} and back["peak_mem_bytes"].notna().sum() == 1
    with pytest.raises(DatasetError, match="accepted: .csv, .parquet"):
        store.export(tmp_path / "out.xlsx")
    with pytest.raises(DatasetError, match="unknown filter"):
        store.to_dataframe(colour="red")


WRITER = textwrap.dedent(
    """
    import sys
    from perfpredict.dataset import make_record, open_store, record_key
    from perfpredict.devices import load_example_board
    from perfpredict.measure import latency_stats

    db, n = sys.argv[1], int(sys.argv[2])
    dev = load_example_board("raspberry_pi_4")
    store = open_store(db)
    for i in range(n):
        if store.has(record_key(kind="layer", device=dev, threads=1, campaign="kill", node_json={"i": i})):
            continue
        stats = latency_stats([i + 1.0] * 8)
        store.append(make_record(kind="layer", device=dev, campaign="kill", threads=1, node_json={"i": i},
                                 stats=stats, extra={"i": i, "pad": "x" * 4000}))
        print(i, flush=True)
    """
)


def test_sigkill_mid_campaign_then_resume(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    db = tmp_path / "kill.db"
    n = 800
    proc = subprocess.Popen([sys.executable, str(script), str(db), str(n)], stdout=subprocess.PIPE, text=True)
    for _ in range(100):  # let it get well into the loop, then kill it mid-append
        assert proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    with open_store(db, create=False) as store:
        assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        recs = list(store.iter_records())
        done = len(recs)
        assert 100 <= done < n
        for r in recs:  # complete records only, each exactly as written
            i = r.extra()["i"]
            assert json.loads(r.node_json) == {"i": i} and r.median_ms == i + 1.0 and r.n_repeats == 8
        assert sorted(r.extra()["i"] for r in recs) == list(range(done))

    resumed = subprocess.run([sys.executable, str(script), str(db), str(n)], capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    written = [int(x) for x in resumed.stdout.split()]
    assert written == list(range(done, n))  # skipped every key already present
    with open_store(db, create=False) as store:
        assert len(store) == n and len(store.keys(campaign="kill")) == n
