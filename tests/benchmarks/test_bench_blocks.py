"""The blocks benchmark's count and timing of a plan's oneDNN calls by kind, with and without blocks."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench_blocks
from benchmarks.harness import without
from perfpredict.runtime import build_executable
from tests.perfpredict.runtime.nets import blocks_fire_graph
from tests.perfpredict.runtime.test_chain import _blocks_fast, _plan, _with_budget


def test_it_sums_onednns_calls_by_kind_for_the_plan_as_built_and_with_channels_last_chains(monkeypatch):
    _with_budget(monkeypatch, lambda schedule, live: 2 ** 62)
    net = blocks_fire_graph()
    plan = _plan(net, "fp32")
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    # the concats are views in blocks where oneDNN has fast kernels in them (AVX-512), else copies either way
    for exe, concats in ((build_executable(net, plan), 0 if _blocks_fast() else 2),
                         (without(net, plan, 1, "_on_blocks", None), 2)):
        xs = exe.prepare_input(x)
        t = bench_blocks.onednn_time(lambda: exe.forward(*xs), threads=1, passes=2)
        assert bench_blocks.concat_copies(exe) == concats
        assert t["convolution calls"] == 9 and t["pooling calls"] == 3
        assert t["all us"] == pytest.approx(sum(t[f"{k} us"] for k in bench_blocks.KINDS)) and t["all us"] > 0
