"""Data-movement primitives (concat/split/slice/flatten/reshape/transpose/pad/softmax .torch) against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perfpredict.primitives import get_primitive
from tests.perfpredict.primitives.single_op import OpCase, kernel_output, load_case, rel_err, run_case, single

S = (1, 8, 6, 6)


def i64(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


CASES = [
    single("concat_c", "Concat", ("x", "y"), extra_inputs={"y": (1, 3, 6, 6)}, axis=1),
    single("concat_h", "Concat", ("x", "y"), extra_inputs={"y": (1, 8, 2, 6)}, axis=-2),
    single("concat3", "Concat", ("x", "y", "x"), extra_inputs={"y": (1, 5, 6, 6)}, axis=1),
    single("split_c", "Split", ("x", "sp"), consts={"sp": i64(3, 5)}, outputs=("a", "b"), axis=1),
    single("split_w", "Split", ("x", "sp"), consts={"sp": i64(2, 4)}, outputs=("a", "b"), axis=3),
    single("slice_c", "Slice", ("x", "st", "en", "ax"), consts={"st": i64(2), "en": i64(6), "ax": i64(1)}),
    single("slice_hw_step", "Slice", ("x", "st", "en", "ax", "sp"),
           consts={"st": i64(1, 0), "en": i64(-1, 100), "ax": i64(2, 3), "sp": i64(2, 2)}),
    single("slice_neg_step", "Slice", ("x", "st", "en", "ax", "sp"),
           consts={"st": i64(-1), "en": i64(-100), "ax": i64(3), "sp": i64(-1)}),
    single("flatten", "Flatten", axis=1),
    single("flatten_axis2", "Flatten", axis=2),
    single("reshape_flat", "Reshape", ("x", "sh"), consts={"sh": i64(1, -1)}),
    single("transpose", "Transpose", perm=[0, 2, 3, 1]),
    OpCase("channel_shuffle", (
        ("Reshape", ("x", "s5"), ("r5",), {}),
        ("Transpose", ("r5",), ("t5",), {"perm": [0, 2, 1, 3, 4]}),
        ("Reshape", ("t5", "s4"), ("out",), {}),
    ), {"x": S}, consts={"s5": i64(1, 2, 4, 6, 6), "s4": i64(1, 8, 6, 6)}),
    single("pad_const", "Pad", ("x", "p", "v"), consts={"p": i64(0, 0, 1, 2, 0, 0, 2, 1), "v": np.float32(0.5)}),
    single("pad_zero", "Pad", ("x", "p"), consts={"p": i64(0, 0, 1, 1, 0, 0, 1, 1)}),
    single("pad_reflect", "Pad", ("x", "p"), consts={"p": i64(0, 0, 2, 1, 0, 0, 1, 2)}, mode="reflect"),
    single("pad_edge", "Pad", ("x", "p"), consts={"p": i64(0, 0, 1, 1, 0, 0, 2, 2)}, mode="edge"),
    single("pad_crop", "Pad", ("x", "p"), consts={"p": i64(0, 0, -1, 0, 0, 0, 0, -2)}),
    single("softmax_c", "Softmax", axis=1),
    single("softmax_2d", "Softmax", shape=(2, 10), axis=-1),
]
INT8 = {"concat_c", "concat_h", "concat3", "split_c", "split_w", "slice_c", "slice_hw_step", "slice_neg_step",
        "flatten", "flatten_axis2", "reshape_flat", "transpose", "channel_shuffle", "pad_const", "pad_zero",
        "pad_reflect", "pad_edge", "pad_crop"}
NCHW_ONLY = {"flatten.torch", "reshape.torch", "transpose.torch", "softmax.torch"}


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_fp32_matches_onnxruntime(case, layout):
    ours, ref = run_case(case, layout)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        assert rel_err(a, b) <= 1e-4


@pytest.mark.parametrize("case", [c for c in CASES if c.id in INT8], ids=lambda c: c.id)
def test_int8_close_to_fp32(case):
    for layout in ("NCHW", "NHWC"):
        ours, ref = run_case(case, layout, "int8")
        for a, b in zip(ours, ref):
            assert a.shape == b.shape
            assert rel_err(a, b) < 0.06, layout


def test_layout_declarations():
    for name in NCHW_ONLY:
        assert get_primitive(name).layouts == ("NCHW",)
    for name in ("concat.torch", "split.torch", "slice.torch", "pad.torch"):
        assert set(get_primitive(name).layouts) == {"NCHW", "NHWC"}
    assert get_primitive("softmax.torch").precisions == ("fp32",)


@pytest.mark.parametrize("case_id", ["concat_c", "concat_h", "pad_const", "pad_reflect", "pad_edge"])
def test_nhwc_kernel_keeps_channels_last(case_id):
    case = next(c for c in CASES if c.id == case_id)
    assert kernel_output(case, "NHWC").is_contiguous(memory_format=torch.channels_last)


def test_split_and_slice_are_views():
    x = torch.randn(S)
    case = next(c for c in CASES if c.id == "split_c")
    graph = load_case(case)
    from perfpredict.runtime.executor import node_weights
    from perfpredict.runtime.kernel import BuildContext

    node = graph.nodes[0]
    a, b = get_primitive("split.torch").build(node, node_weights(graph, node), BuildContext())(x)
    assert a.data_ptr() == x.data_ptr() and tuple(b.shape) == (1, 5, 6, 6)


def test_transpose_output_is_contiguous():
    case = next(c for c in CASES if c.id == "transpose")
    assert kernel_output(case, "NCHW").is_contiguous()


def test_nchw_only_ops_get_a_layout_conversion_in_an_nhwc_plan():
    from perfpredict.runtime import build_executable
    from tests.perfpredict.primitives.single_op import plan_for

    case = OpCase("relu_flatten", (("Relu", ("x",), ("r",), {}), ("Flatten", ("r",), ("out",), {"axis": 1})),
                  {"x": S})
    graph = load_case(case)
    exe = build_executable(graph, plan_for(graph, "NHWC"))
    assert [(c.kind, c.source, c.target, c.consumer) for c in exe.conversions] == \
        [("layout", "NCHW", "NHWC", graph.nodes[0].name), ("layout", "NHWC", "NCHW", graph.nodes[1].name)]


@pytest.mark.parametrize("axis,layout", [(1, "NCHW"), (1, "NHWC"), (2, "NCHW"), (2, "NHWC")])
def test_int8_concat_workspace_against_the_allocator(axis, layout):
    from perfpredict.measure import allocated_peak_of
    from perfpredict.runtime.executor import node_weights
    from perfpredict.runtime.kernel import BuildContext, QParams

    other = (1, 16, 20, 20) if axis == 1 else (1, 32, 4, 20)
    case = single("concat_big", "Concat", ("x", "y"), (1, 32, 20, 20), extra_inputs={"y": other}, axis=axis)
    graph = load_case(case)
    node = graph.nodes[0]
    prim = get_primitive("concat.torch")
    ctx = BuildContext(layout=layout, precision="int8", out_qparams=QParams(0.05, 128))
    kernel = prim.build(node, node_weights(graph, node), ctx)
    fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
    xs = [torch.quantize_per_tensor(torch.randn(s), scale, zp, torch.quint8).contiguous(memory_format=fmt)
          for s, scale, zp in (((1, 32, 20, 20), 0.04, 120), (other, 0.07, 131))]
    with torch.inference_mode():
        out = kernel(*xs)
        extra = allocated_peak_of(lambda: kernel(*xs)) - out.numel()  # beyond the quint8 output
    # quantized::cat joins channels-last inputs along the channels directly, else it goes through fp32
    assert prim.workspace_bytes(node, "int8", layout) == extra
    assert prim.workspace_bytes(node, "fp32", layout) == 0
