"""oneDNN's own timing of the calls a chained forward pass makes."""

from __future__ import annotations

import numpy as np
import pytest

from perfpredict.runtime import build_executable
from perfpredict.runtime.dnnl_profile import DnnlCall, parse_verbose, profile_calls, summarise_calls
from tests.perfpredict.runtime.nets import residual_se_graph
from tests.perfpredict.runtime.test_chain import _chains, _plan

LINES = [
    "onednn_verbose,info,prim_template:operation,engine,primitive,implementation,prop_kind,memory_descriptors,"
    "attributes,auxiliary,problem_desc,exec_time",
    "onednn_verbose,exec,cpu,convolution,jit_int8:avx512_core_vnni,forward_inference,src_u8::blocked:acdb::f0 "
    "dst_u8::blocked:acdb::f0,attr-scratchpad:user attr-post-ops:eltwise_swish:1 ,alg:convolution_direct,"
    "g72mb1_ic72oc72_ih56oh56kh3sh1dh0ph1_iw56ow56kw3sw1dw0pw1,0.107",
    "onednn_verbose,1701.5,exec,cpu,convolution,brgconv_1x1:avx512_core_vnni,forward_inference,src_u8 dst_u8,"
    "attr-scratchpad:user attr-post-ops:eltwise_logistic:1 ,alg:convolution_direct,"
    "mb1_ic96oc4_ih1oh1kh1sh1dh0ph0_iw1ow1kw1sw1dw0pw0,0.003",
    "onednn_verbose,exec,cpu,binary,jit:uni,undef,src_u8 src_f32 dst_u8,attr-scratchpad:user "
    "attr-post-ops:binary_add:f32:2 ,alg:binary_mul,1x16x112x112:1x16x1x1,0.061",
    "onednn_verbose,create:cache_miss,cpu,convolution,jit:avx512_core,forward_inference,src_f32 dst_f32,,"
    "alg:convolution_direct,mb1_ic3oc16_ih224oh112kh3sh2dh0ph1_iw224ow112kw3sw2dw0pw1,0.5",
    "onednn_verbose,exec,cpu,convolution,jit:avx512_core_amx,forward_inference,src_u8 dst_u8,attr-scratchpad:user ,"
    "alg:convolution_direct,mb1_ic40oc120_ih28oh28kh3sh1dh0ph1_iw28ow28kw3sw1dw0pw1,0.075",
]


def test_the_exec_lines_become_calls_with_their_shape_class_and_epilogue():
    calls = parse_verbose(LINES)
    assert [c.kind for c in calls] == ["convolution", "convolution", "binary", "convolution"]  # no header, no create
    dw, se, gate, conv = calls
    assert (dw.impl, dw.ms, dw.shape_class, dw.epilogue) == ("jit_int8:avx512_core_vnni", 0.107, "depthwise",
                                                             "eltwise_swish")
    assert (se.shape_class, se.epilogue) == ("1x1 on a 1x1 map", "eltwise_logistic")  # after a timestamp
    assert (gate.shape_class, gate.epilogue, gate.problem) == ("", "binary_add", "1x16x112x112:1x16x1x1")
    assert (conv.shape_class, conv.epilogue) == ("3x3", "")


def test_calls_are_summed_per_pass_by_kind_implementation_shape_and_epilogue():
    calls = parse_verbose(LINES) * 4  # two passes of two copies each
    rows = summarise_calls(calls, passes=2)
    assert [r["ms"] for r in rows] == sorted((r["ms"] for r in rows), reverse=True)
    dw = next(r for r in rows if r["shape"] == "depthwise")
    assert dw["calls"] == 2 and dw["ms"] == pytest.approx(0.214) and dw["us_per_call"] == pytest.approx(107)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)


def test_a_chained_pass_reports_every_call_of_its_chains():
    net = residual_se_graph(hw=16)
    exe = build_executable(net, _plan(net, "fp32"))
    assert _chains(exe)
    xs = exe.prepare_input(np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32))
    exe.forward(*xs)
    calls = profile_calls(lambda: exe.forward(*xs), passes=3)
    assert len(calls) % 3 == 0 and len(calls) // 3 >= sum(exe.chains)
    assert all(isinstance(c, DnnlCall) and c.ms >= 0 for c in calls) and sum(c.ms for c in calls) > 0
    assert {c.kind for c in calls} >= {"convolution"}
    exe.forward(*xs)  # verbose is off again and standard output is back
    with pytest.raises(ValueError, match="at least 1"):
        profile_calls(lambda: None, passes=0)
