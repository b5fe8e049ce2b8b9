"""The swish benchmark's count of the swish passes a plan runs."""

from __future__ import annotations

from benchmarks import bench_swish
from perfpredict.primitives.dnnl import library
from perfpredict.runtime import build_executable
from tests.perfpredict.runtime.nets import swish_se_graph
from tests.perfpredict.runtime.test_chain import _plan


def test_it_finds_each_convolution_whose_swish_is_our_own_pass_and_times_it():
    net = swish_se_graph(hw=8, channels=32)
    exe = build_executable(net, _plan(net, "fp32"))
    sizes = bench_swish.swish_sizes(exe)
    if library().pp_quant_isa() != 2:  # no AVX-512: the swishes are oneDNN post-ops
        assert sizes == []
        return
    assert sizes == [16 * 8 * 8, 32 * 8 * 8]  # conv1's and conv2's outputs
    us = bench_swish.time_pass(sizes, threads=1, repeats=3)
    assert len(us) == 2 and all(t > 0 for t in us)
