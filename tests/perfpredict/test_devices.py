"""DeviceSpec schema, validation, example boards and describe_host."""

from __future__ import annotations

import json

import pytest
import torch

from perfpredict.devices import (
    REFERENCE_LAYERS,
    DeviceSpec,
    describe_host,
    from_neusight,
    list_example_boards,
    load_device,
    load_example_board,
)
from perfpredict.errors import BoardError, PerfPredictError

MINIMAL = {"schema_version": 1, "name": "b", "kind": "cpu"}


def write_board(tmp_path, d, name="board.json"):
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return p


def test_example_boards_load_and_round_trip(tmp_path):
    names = list_example_boards()
    assert names == ["jetson_nano_cpu", "raspberry_pi_4", "snapdragon_865", "xeon_gold_6240"]
    for n in names:
        spec = load_example_board(n)
        assert spec.name == n and spec.kind == "cpu" and spec.source
        assert spec.peak_gflops_fp32 is None and not spec.fingerprint  # spec sheets only
        assert load_device(spec.to_dict()) == spec
        spec.save(tmp_path / f"{n}.json")
        assert load_device(tmp_path / f"{n}.json") == spec
    sd = load_example_board("snapdragon_865")
    assert sum(c.count for c in sd.clusters) == sd.cores == 8
    assert {"asimddp", "fp16"} <= set(sd.isa_features)
    xeon = load_example_board("xeon_gold_6240")
    assert (xeon.cores, xeon.threads, xeon.l3_kb) == (18, 36, 25344.0)
    assert "avx512_vnni" in xeon.isa_features


def test_unknown_example_board_lists_available():
    with pytest.raises(BoardError, match="available: jetson_nano_cpu"):
        load_example_board("pi5")


def test_minimal_board_and_defaults():
    spec = load_device(MINIMAL)
    assert spec == DeviceSpec(name="b", kind="cpu")
    assert spec.to_dict() == MINIMAL


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"cores": -2}, "board.json: field 'cores' must be a positive integer, got -2"),
        ({"cores": True}, "field 'cores' must be a positive integer"),
        ({"kind": "tpu"}, "field 'kind' must be one of cpu, gpu, npu, got 'tpu'"),
        ({"freq_mhz_max": 2.6}, r"field 'freq_mhz_max' must be a number in \[50, 10000\] \(MHz\), got 2.6"),
        ({"memory_gb": 0}, r"field 'memory_gb' must be a positive number up to 100000 \(GB\), got 0"),
        ({"isa_features": "neon"}, "field 'isa_features' must be a list of lower-case strings"),
        ({"isa_features": ["NEON"]}, "field 'isa_features' must be a list of lower-case strings"),
        ({"fingerprint": {"conv": -1}}, "field 'fingerprint' entry 'conv' must be a positive latency"),
        ({"name": ""}, "field 'name' must be a non-empty string"),
        ({"schema_version": 2}, "schema_version 2 is newer than this perfpredict supports"),
        ({"cores": 4, "threads": 2}, r"field 'threads' \(2\) must be >= 'cores' \(4\)"),
        ({"freq_mhz_min": 2000, "freq_mhz_max": 1000}, "field 'freq_mhz_min' .* must be <= 'freq_mhz_max'"),
        ({"cores": 4, "clusters": [{"core": "a", "count": 2}]}, "counts add up to 2, but 'cores' is 4"),
        ({"clusters": [{"core": "a"}]}, r"clusters\[0\] is missing required key 'count'"),
        ({"clusters": [{"core": "a", "count": 1, "mhz": 3}]}, r"clusters\[0\] has unknown key\(s\) mhz"),
    ],
)
def test_bad_fields_give_one_clear_error(tmp_path, patch, message):
    with pytest.raises(BoardError, match=message):
        load_device(write_board(tmp_path, {**MINIMAL, **patch}))


def test_unknown_and_missing_fields(tmp_path):
    with pytest.raises(BoardError, match=r"unknown field\(s\) colour; accepted fields: name, kind, schema_version"):
        load_device({**MINIMAL, "colour": "red"})
    with pytest.raises(BoardError, match=r"missing required field\(s\) name, kind"):
        load_device({"schema_version": 1})
    assert issubclass(BoardError, PerfPredictError)


def test_file_errors(tmp_path):
    with pytest.raises(BoardError, match="no such board file"):
        load_device(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(BoardError, match=r"bad.json: not valid JSON \(line 1"):
        load_device(bad)
    with pytest.raises(BoardError, match="must be a JSON object"):
        load_device(write_board(tmp_path, [1, 2]))


def test_device_id_ignores_measured_fields():
    base = load_example_board("raspberry_pi_4")
    measured = load_device({**base.to_dict(), "peak_gflops_fp32": 20.0, "fingerprint": {"x": 1.0}, "notes": "n"})
    assert measured.device_id == base.device_id
    assert load_device({**base.to_dict(), "cores": 2, "threads": 2}).device_id != base.device_id


def test_from_neusight_gpu_spec():
    spec = from_neusight(
        {"Device": "NVIDIA H100 80GB HBM3", "Dev_Mem": 80, "Mem_Bw": 3430, "Num_Sm": 132, "Core_Per_SM": 128,
         "Freq": 1980, "SingleFLOPs": 66908, "L2Cache": 50}
    )  # fmt: skip
    assert spec.kind == "gpu" and spec.gpu_sm_count == 132 and spec.gpu_memory_gb == 80
    assert spec.gpu_tflops_fp32 == pytest.approx(66.908)
    assert load_device(spec.to_dict()) == spec
    with pytest.raises(BoardError, match=r"unknown key\(s\) Foo"):
        from_neusight({"Device": "x", "Foo": 1})


def test_describe_host_quick_measures_and_restores_threads():
    before = torch.get_num_threads()
    spec = describe_host(threads=1, quick=True)
    assert torch.get_num_threads() == before
    assert spec.kind == "cpu" and spec.threads_used == 1
    assert spec.threads and spec.threads >= 1 and spec.memory_gb and spec.memory_gb > 0
    assert spec.peak_gflops_fp32 > 0.1 and spec.mem_bw_copy_gbs > 0.1 and spec.mem_bw_triad_gbs > 0.1
    assert spec.peak_gops_int8 is None or spec.peak_gops_int8 > 0
    assert tuple(spec.fingerprint) == REFERENCE_LAYERS
    assert all(v > 0 for v in spec.fingerprint.values())
    assert "quick" in spec.source
    assert load_device(json.loads(spec.to_json())) == spec


def test_local_device_is_measured_once_and_cached(tmp_path, monkeypatch):
    from perfpredict import devices

    if devices.static_host() is None:
        pytest.skip("this host cannot be described")
    monkeypatch.setenv("PERFPREDICT_CACHE", str(tmp_path))
    calls = []
    real = devices.describe_host

    def counting(threads=None, quick=False, name=None):
        calls.append((threads, quick))
        return real(threads=threads, quick=True)  # quick: the test checks the caching, not the figures

    monkeypatch.setattr(devices, "describe_host", counting)
    first = devices.local_device(1)
    assert calls == [(1, False)] and first.threads_used == 1
    assert devices.local_device(1) == first and devices.resolve_device("local", 1) == first  # from the cache
    assert len(calls) == 1
    again = devices.local_device(1, refresh=True)
    assert len(calls) == 2 and again.threads_used == 1
    (cached,) = (tmp_path / "devices").glob("*-1t-full-*.json")
    cached.write_text("{not json")  # a damaged cache file is measured again and replaced
    assert devices.local_device(1).threads_used == 1 and len(calls) == 3
    assert load_device(cached) == devices.local_device(1) and len(calls) == 3
    assert devices.resolve_device("raspberry_pi_4") == load_example_board("raspberry_pi_4")
