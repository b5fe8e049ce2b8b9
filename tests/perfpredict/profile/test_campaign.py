"""Shared campaign parts: the stored device description, one-line errors for bad arguments."""

from __future__ import annotations


import pytest

from perfpredict.dataset import make_record, open_store
from perfpredict.devices import load_example_board, static_host
from perfpredict.errors import PerfPredictError
from perfpredict.measure import latency_stats
from perfpredict.profile import campaign_device, run_layer_campaign, run_noise
from tests.perfpredict.profile.tiny import DEV, tiny_spec


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
            run_layer_campaign(store, threads=(0,), specs=[tiny_spec()], progress=False)
        with pytest.raises(PerfPredictError, match="no layer or model records"):
            run_noise(store, sample=3, progress=False)
