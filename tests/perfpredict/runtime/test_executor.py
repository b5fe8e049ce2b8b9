"""The executor: plan resolution, fusion, layout and precision conversions, freeing, threads, inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perfpredict.errors import GraphError, PlanError
from perfpredict.graph import load_onnx
from perfpredict.plan import Choice, Plan
from perfpredict.runtime import build_executable, check_against_ort, max_rel_err, ort_run, ort_session
from perfpredict.runtime.executor import layout_matters, make_schedule
from tests.conftest import make_conv_model
from tests.perfpredict.runtime.nets import residual_se_graph, residual_se_net


@pytest.fixture
def net():
    return residual_se_graph()


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((1, 3, 12, 12)).astype(np.float32)


def _ort(x):
    import onnxruntime as ort

    sess = ort.InferenceSession(residual_se_net().SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_default_plan_matches_onnxruntime_and_fuses_relus(net, x):
    exe = build_executable(net)
    assert max_rel_err(exe.run(x), _ort(x)) <= 1e-4
    # relu3 follows an Add, so it stays a node of its own; the others follow a conv
    assert exe.fused == {"relu1": "conv1", "relu2": "conv2", "se_relu": "se1", "dw_relu": "dw"}
    assert set(exe.plan.choices) == {n.name for n in net.nodes}
    assert "relu1" not in [op.name for op in exe.schedule.ops]


def test_relu_is_not_fused_when_the_conv_output_has_another_reader():
    from tests.perfpredict.primitives.single_op import OpCase, load_case

    w = np.random.default_rng(0).standard_normal((4, 4, 1, 1)).astype(np.float32)
    case = OpCase("two_readers", (("Conv", ("x", "w"), ("c",), {"kernel_shape": [1, 1]}),
                                  ("Relu", ("c",), ("r",), {}),
                                  ("Add", ("c", "r"), ("out",), {})), {"x": (1, 4, 3, 3)}, consts={"w": w})
    assert build_executable(load_case(case)).fused == {}


def _swish_case(second_reader: bool = False):
    from tests.perfpredict.primitives.single_op import OpCase, load_case

    w = np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype(np.float32) / 6
    nodes = (("Conv", ("x", "w"), ("c",), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
             ("Sigmoid", ("c",), ("s",), {}),
             ("Mul", ("c", "s"), ("m",), {}),
             ("HardSwish", ("m",), ("h",), {}),
             ("Conv", ("h", "w2"), ("c2",), {"kernel_shape": [1, 1]}),
             ("HardSwish", ("c2",), ("g",), {}),
             ("Conv", ("g", "w3"), ("c3",), {"kernel_shape": [1, 1]}),
             ("Sigmoid", ("c3",), ("out",), {}))
    if second_reader:  # the conv output is read by one more node: not a swish pattern
        nodes = nodes[:3] + (("Add", ("m", "c"), ("a",), {}),) + (("HardSwish", ("a",), ("h",), {}),) + nodes[4:]
    w2 = np.random.default_rng(1).standard_normal((6, 8, 1, 1)).astype(np.float32) / 3
    w3 = np.random.default_rng(2).standard_normal((5, 6, 1, 1)).astype(np.float32) / 3
    return load_case(OpCase("swish", nodes, {"x": (1, 4, 9, 9)}, consts={"w": w, "w2": w2, "w3": w3}))


def _all(graph, primitive: str, layout: str = "NHWC", precision: str = "fp32") -> Plan:
    from perfpredict.primitives import candidates

    choices = {}
    for n in graph.nodes:
        if n.op == "Conv":
            choices[n.name] = Choice(primitive, layout, precision)
        else:
            choices[n.name] = Choice(candidates(n, layout, precision)[0].name, layout, precision)
    return Plan(choices)


def test_swish_hardswish_and_sigmoid_fold_into_primitives_with_those_epilogues():
    from perfpredict.runtime.executor import fusion_patterns

    g = _swish_case()
    names = {n.op + str(i): n.name for i, n in enumerate(g.nodes)}
    assert [(f.producer, f.nodes, f.activation) for f in fusion_patterns(g)] == [
        (names["Conv0"], (names["Sigmoid1"], names["Mul2"]), "swish"),
        (names["Conv4"], (names["HardSwish5"],), "hardswish"), (names["Conv6"], (names["Sigmoid7"],), "sigmoid")]
    x = np.random.default_rng(2).standard_normal((1, 4, 9, 9)).astype(np.float32)
    ref = build_executable(g, fuse=False).run(x)
    for prim in ("conv.dnnl", "conv.onednn_packed"):
        exe = build_executable(g, _all(g, prim))
        assert exe.fused == {names["Sigmoid1"]: names["Conv0"], names["Mul2"]: names["Conv0"],
                             names["HardSwish5"]: names["Conv4"], names["Sigmoid7"]: names["Conv6"]}
        ops = [op.fused_activation for op in exe.schedule.ops if op.kind == "node"]
        assert ops == ["swish", None, "hardswish", "sigmoid"]  # the HardSwish after the Mul has no conv before it
        assert max_rel_err(exe.run(x), ref) <= 1e-5
    # conv.onednn has no eltwise epilogue: nothing folds, the result is the same
    assert build_executable(g, _all(g, "conv.onednn")).fused == {}
    # a swish whose parts run at another precision than the conv stays separate nodes
    plan = _all(g, "conv.dnnl")
    mixed = Plan({**plan.choices, names["Sigmoid1"]: Choice("sigmoid.torch", "NHWC", "int8")})
    assert set(build_executable(g, mixed, calibration=x).fused) == {names["HardSwish5"], names["Sigmoid7"]}


def test_int8_swish_folds_into_conv_dnnl_int8_with_the_mul_output_grid():
    g = _swish_case()
    x = np.random.default_rng(2).standard_normal((1, 4, 9, 9)).astype(np.float32)
    ref = build_executable(g, fuse=False).run(x)
    exe = build_executable(g, _all(g, "conv.dnnl_int8", precision="int8"), calibration=x)
    assert len(exe.fused) == 4
    assert max_rel_err(exe.run(x), ref) < 0.05


def test_a_conv_output_read_by_more_than_the_swish_is_not_folded():
    from perfpredict.runtime.executor import fusion_patterns

    assert [f.activation for f in fusion_patterns(_swish_case(second_reader=True))] == ["hardswish", "sigmoid"]


def _residual_case(onnx: bool = False):
    from tests.perfpredict.primitives.single_op import OpCase, load_case, make_model

    rng = np.random.default_rng(3)
    w1, w2, w3, w4, w5 = (rng.standard_normal(s).astype(np.float32) / 4
                          for s in ((8, 4, 3, 3), (8, 8, 3, 3), (8, 8, 1, 1), (8, 8, 1, 1), (8, 8, 3, 3)))
    k3, k1 = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, {"kernel_shape": [1, 1]}
    nodes = (("Conv", ("x", "w1"), ("c1",), k3),
             ("Relu", ("c1",), ("r1",), {}),
             ("Conv", ("r1", "w2"), ("c2",), k3),
             ("Add", ("c2", "r1"), ("a1",), {}),  # a block: conv, residual add, relu
             ("Relu", ("a1",), ("o1",), {}),
             ("Conv", ("o1", "w3"), ("c3",), k1),
             ("Conv", ("o1", "w5"), ("c5",), k3),  # made after c3: c3 cannot read it, c5 can read c3
             ("Add", ("c3", "c5"), ("a2",), {}),
             ("Conv", ("a2", "w4"), ("c4",), k1),
             ("Add", ("a2", "c4"), ("out",), {}))  # the residual first, no activation, a graph output
    case = OpCase("residual", nodes, {"x": (1, 4, 9, 9)}, consts={"w1": w1, "w2": w2, "w3": w3, "w4": w4, "w5": w5})
    return make_model(case) if onnx else load_case(case)


def test_residual_adds_fold_into_convolutions_that_add_residuals():
    from perfpredict.runtime.executor import fusion_patterns

    g = _residual_case()
    names = {n.op + str(i): n.name for i, n in enumerate(g.nodes)}
    tensors = {n.name: n.outputs[0] for n in g.nodes}
    assert [(f.producer, f.nodes, f.activation, f.residual) for f in fusion_patterns(g)] == [
        (names["Conv0"], (names["Relu1"],), "relu", None),
        (names["Conv2"], (names["Add3"], names["Relu4"]), "relu", tensors[names["Relu1"]]),
        (names["Conv6"], (names["Add7"],), None, tensors[names["Conv5"]]),
        (names["Conv8"], (names["Add9"],), None, tensors[names["Add7"]])]
    x = np.random.default_rng(2).standard_normal((1, 4, 9, 9)).astype(np.float32)
    ref = build_executable(g, fuse=False).run(x)
    exe = build_executable(g, _all(g, "conv.dnnl"))
    assert set(exe.fused) == {names[k] for k in ("Relu1", "Add3", "Relu4", "Add7", "Add9")}
    assert [op.fused_residual for op in exe.schedule.ops if op.kind == "node"] == [False, True, False, True, True]
    assert max_rel_err(exe.run(x), ref) <= 1e-5
    import onnxruntime as ort

    sess = ort.InferenceSession(_residual_case(onnx=True).SerializeToString(), providers=["CPUExecutionProvider"])
    assert max_rel_err(exe.run(x), sess.run(None, {"x": x})[0]) <= 1e-5
    # the runtime of fusion revision 2 folded no residual
    old = build_executable(g, _all(g, "conv.dnnl"), fusion_revision=2)
    assert set(old.fused) == {names["Relu1"]} and max_rel_err(old.run(x), ref) <= 1e-5
    # conv.onednn adds no residual: only the Relu after the first convolution folds
    assert set(build_executable(g, _all(g, "conv.onednn")).fused) == {names["Relu1"]}
    # an Add at another precision than its convolution stays a node of its own
    plan = _all(g, "conv.dnnl")
    mixed = Plan({**plan.choices, names["Add3"]: Choice("add.torch", "NHWC", "int8")})
    exe = build_executable(g, mixed, calibration=x)
    assert set(exe.fused) == {names[k] for k in ("Relu1", "Add7", "Add9")}
    assert max_rel_err(exe.run(x), ref) < 0.05


def test_int8_residual_add_folds_into_conv_dnnl_int8_on_the_outputs_grid():
    g = _residual_case()
    x = np.random.default_rng(2).standard_normal((1, 4, 9, 9)).astype(np.float32)
    ref = build_executable(g, fuse=False).run(x)
    exe = build_executable(g, _all(g, "conv.dnnl_int8", precision="int8"), calibration=x)
    assert sum(op.fused_residual for op in exe.schedule.ops) == 3
    assert max_rel_err(exe.run(x), ref) < 0.05
    # the same plan with nothing folded agrees with the folded one to a few quantisation steps
    assert max_rel_err(exe.run(x), build_executable(g, _all(g, "conv.dnnl_int8", precision="int8"),
                                                    calibration=x, fuse=False).run(x)) < 0.05


def test_fusion_is_skipped_across_precisions(net, x):
    plan = Plan({"relu2": Choice("relu.torch", "NCHW", "int8")})
    exe = build_executable(net, plan, calibration=x)
    assert "relu2" not in exe.fused
    kinds = [(c.tensor, c.kind) for c in exe.conversions]
    assert kinds == [("c2", "quantize"), ("r2", "dequantize")]
    assert max_rel_err(exe.run(x), _ort(x)) < 0.05


def test_layout_conversions_are_inserted_once_per_variant(net, x):
    # conv2 in NHWC reads r1 (NCHW from conv1) -> one conversion; the Add (NCHW) reads conv3 (NHWC) -> one back
    plan = Plan({"conv2": Choice("conv.onednn", "NHWC"), "relu2": Choice("relu.torch", "NHWC"),
                 "conv3": Choice("conv.onednn", "NHWC")})
    exe = build_executable(net, plan)
    conv = [(c.tensor, c.source, c.target, c.consumer) for c in exe.conversions]
    assert conv == [("r1", "NCHW", "NHWC", "conv2"), ("c3", "NHWC", "NCHW", "add")]
    assert max_rel_err(exe.run(x), _ort(x)) <= 1e-4


def test_shared_conversion_for_two_consumers(x):
    g = residual_se_graph()
    # maxpool output m is read by the GAP and by the Mul; run both in NHWC and the pool in NCHW
    plan = Plan({"gap": Choice("globalaveragepool.torch", "NHWC"), "se_mul": Choice("mul.torch", "NHWC")})
    exe = build_executable(g, plan)
    m_conv = [c for c in exe.conversions if c.tensor == "m"]
    assert len(m_conv) == 1 and m_conv[0].consumer == "gap"
    assert max_rel_err(exe.run(x), _ort(x)) <= 1e-4


def test_no_conversion_for_tensors_whose_layouts_coincide():
    assert not layout_matters((1, 8, 1, 1)) and not layout_matters((1, 1, 5, 5)) and not layout_matters((1, 10))
    assert layout_matters((1, 8, 2, 2))
    g = residual_se_graph()
    # gap output (1, 8, 1, 1) is produced in NCHW and read by se1 in NHWC: no conversion needed
    exe = build_executable(g, Plan({"se1": Choice("conv.onednn", "NHWC")}))
    assert exe.conversions == []


def test_every_intermediate_is_freed_after_its_last_reader(net):
    for plan in (None, Plan({"conv2": Choice("conv.onednn", "NHWC")})):
        exe = build_executable(net, plan)
        sched = exe.schedule
        freed = [s for op in sched.ops for s in op.frees]
        assert sorted(freed) == sorted(set(range(len(sched.slots))) - set(sched.output_slots))
        last_read = {}
        for i, op in enumerate(sched.ops):
            for s in op.inputs:
                last_read[s] = i
        for i, op in enumerate(sched.ops):
            for s in op.frees:
                assert last_read.get(s, i) == i or s in op.outputs


def test_int8_plan_quantises_once_and_dequantises_at_the_output(net, x):
    plan = Plan({n.name: Choice({"Conv": "conv.int8", "Gemm": "gemm.int8"}.get(n.op, f"{n.op.lower()}.torch"),
                                "NCHW", "int8") for n in net.nodes})
    exe = build_executable(net, plan, calibration=x)
    assert [(c.tensor, c.kind) for c in exe.conversions] == [("x", "quantize"), ("y", "dequantize")]
    assert exe.calibration is not None
    out = exe.run(x)
    assert out.dtype == np.float32 and out.shape == (1, 10)
    assert max_rel_err(out, _ort(x)) < 0.1


def test_step_times_cover_every_step_and_the_breakdown_sums_them(net, x, monkeypatch):
    from perfpredict.runtime import breakdown

    plan = Plan({n.name: Choice({"Conv": "conv.dnnl_int8", "Gemm": "gemm.int8"}.get(n.op, f"{n.op.lower()}.torch"),
                                "NHWC" if n.op == "Conv" else "NCHW", "int8") for n in net.nodes})
    exe = build_executable(net, plan, calibration=x)
    # a fake clock: every step takes one tick of 1 ms, so the medians are exact
    ticks = iter(range(10**6))
    monkeypatch.setattr("perfpredict.runtime.executor.time.perf_counter", lambda: next(ticks) * 1e-3)
    steps = exe.step_times(x, repeats=3, warmup=1)
    assert [(st.kind, st.name) for st in steps] == [(op.kind, op.name) for op in exe.schedule.ops]
    assert all(st.ms == pytest.approx(1.0) for st in steps)
    kinds = {st.kind for st in steps}
    assert {"node", "quantize", "dequantize", "layout"} <= kinds
    convs = [st for st in steps if st.primitive == "conv.dnnl_int8"]
    assert convs and all(st.group == "conv.dnnl_int8 int8 NHWC" for st in convs)
    rows = breakdown(steps)
    assert sum(r["steps"] for r in rows) == len(steps)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert [r["ms"] for r in rows] == sorted((r["ms"] for r in rows), reverse=True)
    assert {"group": "conv.dnnl_int8 int8 NHWC", "steps": len(convs), "ms": pytest.approx(float(len(convs))),
            "share": pytest.approx(len(convs) / len(steps))} in rows
    with pytest.raises(GraphError, match="repeats >= 1"):
        exe.step_times(x, repeats=0)


def test_step_groups_put_each_step_with_the_node_it_serves(net, x):
    from perfpredict.runtime import StepTime, step_groups

    plan = Plan({n.name: Choice({"Conv": "conv.dnnl_int8", "Gemm": "gemm.int8"}.get(n.op, f"{n.op.lower()}.torch"),
                                "NHWC" if n.op == "Conv" else "NCHW", "int8") for n in net.nodes})
    exe = build_executable(net, plan, calibration=x)
    ops = exe.schedule.ops
    steps = [StepTime(op.kind, op.name, float(2 ** k)) for k, op in enumerate(ops)]  # each step's own bit
    groups = step_groups(exe.schedule, steps)
    assert [nodes[0] for _, nodes in groups] == [op.name for op in ops if op.kind == "node"]
    names = [n for _, nodes in groups for n in nodes]
    assert sorted(names) == sorted(n.name for n in net.nodes)  # every node once: folded ones with their producer
    assert exe.fused and all(nodes.index(act) > 0 for act, prod in exe.fused.items()
                             for _, nodes in groups if nodes[0] == prod)
    for ms, nodes in groups:  # a node's own step, and the conversions it is the first to read
        k = next(i for i, op in enumerate(ops) if op.kind == "node" and op.name == nodes[0])
        bits = [i for i in range(len(ops)) if int(ms) >> i & 1]
        assert k in bits and all(ops[i].kind != "node" and set(ops[i].outputs) & set(ops[k].inputs)
                                 for i in bits if i != k)
    unread = sum(st.ms for st in steps) - sum(ms for ms, _ in groups)
    assert unread == sum(2.0 ** i for i, op in enumerate(ops) if op.kind != "node" and not any(
        set(op.outputs) & set(o.inputs) for o in ops[i + 1:] if o.kind == "node"))
    with pytest.raises(GraphError, match="one time per scheduled step"):
        step_groups(exe.schedule, steps[:-1])


def test_threads_are_set_for_the_run_and_restored(net, x, monkeypatch):
    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    before = torch.get_num_threads()
    want = 2 if before != 2 else 1
    exe = build_executable(net, threads=want)
    assert calls == [want, before]  # the kernels are built at the run's thread count
    exe.run(x)
    assert calls == [want, before, want, before]
    assert torch.get_num_threads() == before


def test_packed_weights_are_packed_for_the_run_thread_count(tmp_path):
    # a squeeze-excite reduce conv (1152 -> 48 channels on one pixel): oneDNN picks another weight format at 1
    # thread than at 2, so weights packed at 2 threads were reordered again on every 1-thread call
    from perfpredict.measure import allocated_peak_of

    g = load_onnx(make_conv_model(tmp_path / "se.onnx", cin=1152, cout=48, k=1, pad=0, hw=1, with_bn=False))
    plan = Plan({"conv": Choice("conv.onednn_packed", "NHWC")})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        exe = build_executable(g, plan, threads=1)
        xs = exe.prepare_input(np.ones((1, 1152, 1, 1), np.float32))
        exe.forward(*xs)
        peak = allocated_peak_of(lambda: exe.forward(*xs))
    finally:
        torch.set_num_threads(before)
    assert peak < 1152 * 48 * 4 / 2  # well under the weights: nothing is reordered per call


def test_inputs_numpy_tensor_and_wrong_shape(net, x):
    exe = build_executable(net)
    a = exe.run(x)
    b = exe.forward(*exe.prepare_input(torch.from_numpy(x)))
    assert isinstance(b, torch.Tensor)
    np.testing.assert_array_equal(a, b.numpy())
    with pytest.raises(GraphError, match=r"expects an input of shape \[1, 3, 12, 12\]"):
        exe.run(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(GraphError, match="takes 1 input"):
        exe.run(x, x)


def test_trace_returns_every_tensor(net, x):
    exe = build_executable(net, fuse=False)
    values = exe.trace(x)
    assert set(values) == {t for n in net.nodes for t in n.outputs} | {"x"}


def test_illegal_plans_are_rejected(net):
    with pytest.raises(PlanError, match="'nope'"):
        build_executable(net, Plan({"nope": Choice("relu.torch")}))
    with pytest.raises(PlanError, match="flatten"):
        build_executable(net, Plan({"flatten": Choice("flatten.torch", "NHWC")}))
    with pytest.raises(PlanError, match="winograd"):
        build_executable(net, Plan({"se1": Choice("conv.winograd")}))  # 1x1 conv
    with pytest.raises(PlanError, match="threads"):
        build_executable(net, threads=0)


def test_schedule_without_kernels(net):
    choices = {n.name: Choice("conv.onednn" if n.op == "Conv" else ("gemm.blas" if n.op == "Gemm" else
                                                                     f"{n.op.lower()}.torch")) for n in net.nodes}
    sched = make_schedule(net, choices)
    assert [op.name for op in sched.ops if op.kind == "node"] == \
        [n.name for n in net.nodes if n.name not in sched.fused]


def test_check_against_ort_on_a_file(tmp_path):
    path = make_conv_model(tmp_path / "tiny.onnx")
    graph = load_onnx(path)
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    assert check_against_ort(graph, None, path, x) <= 1e-4
    plan = Plan({"conv": Choice("conv.reference"), "fc": Choice("gemm.reference")})
    assert check_against_ort(graph, plan, path, x) <= 1e-4
    assert ort_run(ort_session(path), x)[0].shape == (1, 10)
    batch2 = load_onnx(path, batch=2)
    x2 = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    nhwc = Plan({"conv": Choice("conv.onednn", "NHWC")})
    assert check_against_ort(batch2, nhwc, path, x2) <= 1e-4
    with pytest.raises(GraphError, match="no such ONNX file"):
        ort_session(tmp_path / "missing.onnx")


def test_int8_concat_inputs_read_by_nothing_else_are_quantised_on_the_concats_grid():
    from perfpredict.runtime.executor import concat_ties
    from tests.perfpredict.runtime.nets import fire_graph

    net = fire_graph()
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    plan = Plan({n.name: Choice("concat.torch" if n.op == "Concat" else "conv.dnnl_int8" if n.op == "Conv"
                                else "relu.torch", "NHWC", "int8") for n in net.nodes})
    exe = build_executable(net, plan, calibration=[x], chain=False)
    ties = concat_ties(exe.schedule)
    assert ties == {"ar1": "cat1", "br1": "cat1", "ar2": "cat2", "br2": "cat2"}
    values = exe.trace(x)
    for t, cat in ties.items():
        assert (values[t].q_scale(), values[t].q_zero_point()) == (values[cat].q_scale(), values[cat].q_zero_point())
    assert values["sr1"].q_scale() != values["cat1"].q_scale()  # the squeeze keeps its own grid


def test_an_int8_convolution_folding_a_swish_gets_its_own_outputs_grid(zoo_model, monkeypatch):
    # efficientnet's convolutions fold a swish: at int8 each is given the calibrated grid of its own output before
    # the swish (calibration traces the graph unfused), which conv.dnnl_int8 quantises onto and maps through a
    # table of the swish where the CPU looks codes up fast; the pass stays as faithful as with the post-op
    import perfpredict.primitives.dnnl as dnnl_mod
    from perfpredict.runtime import calibrate
    from tests.perfpredict.runtime.test_chain import _plan

    graph, _ = zoo_model("efficientnet_b0")
    convs = [n for n in graph.nodes if n.op == "Conv"]
    plan = _plan(graph, "int8")  # every Conv on conv.dnnl_int8, every other node int8 where it can be
    calib = calibrate(graph, plan)
    seen = {}
    real = dnnl_mod.swish_table

    def spy(ctx):
        seen[len(seen)] = ctx.pre_activation_qparams
        return real(ctx)

    monkeypatch.setattr(dnnl_mod, "swish_table", spy)
    exe = build_executable(graph, plan, calibration=calib)
    swish_convs = [n for n in convs if any(exe.fused.get(m.name) == n.name and m.op == "Mul" for m in graph.nodes)]
    assert swish_convs and len(seen) >= len(swish_convs)
    grids = {calib.qparams(n.outputs[0]) for n in swish_convs}
    assert grids <= set(seen.values())
    monkeypatch.setattr(dnnl_mod, "swish_table", lambda ctx: None)
    post_op = build_executable(graph, plan, calibration=calib)
    x = np.random.default_rng(0).standard_normal(graph.input_shape).astype(np.float32)
    ref = build_executable(graph, None).run(x)
    err = lambda y: float(np.abs(y - ref).max() / np.abs(ref).max())  # noqa: E731
    assert err(exe.run(x)) <= 1.5 * err(post_op.run(x)) + 0.01


def test_a_calibration_without_the_unfused_outputs_keeps_the_swish_a_post_op(zoo_model):
    from perfpredict.runtime import calibrate
    from perfpredict.runtime.calibration import Calibration
    from tests.perfpredict.runtime.test_chain import _plan

    graph, _ = zoo_model("efficientnet_b0")
    plan = _plan(graph, "int8")
    full = calibrate(graph, plan)
    exe = build_executable(graph, plan, calibration=full)
    swish_convs = {n.name for n in graph.nodes if n.op == "Conv"
                   and any(exe.fused.get(m.name) == n.name and m.op == "Mul" for m in graph.nodes)}
    raw = {n.outputs[0] for n in graph.nodes if n.name in swish_convs}
    partial = Calibration({t: r for t, r in full.ranges.items() if t not in raw}, full.method, full.n_inputs)
    x = np.random.default_rng(0).standard_normal(graph.input_shape).astype(np.float32)
    assert np.isfinite(build_executable(graph, plan, calibration=partial).run(x)).all()
