"""Structured pruning: coupling groups, error cases, and exact equivalence with zeroed channels."""

from __future__ import annotations

import numpy as np
import pytest

from perfpredict.errors import PlanError
from perfpredict.graph import Graph
from perfpredict.plan import Choice, Plan, default_choice
from perfpredict.runtime import build_executable, prune_graph, prune_groups
from perfpredict.runtime.pruning import unprunable_reasons
from tests.perfpredict.runtime.nets import residual_se_graph
from tests.perfpredict.runtime.plans import int8_plan, prune_plan


def zeroed_like_pruned(graph: Graph, kept: dict[str, np.ndarray]) -> Graph:
    """``graph`` with the pruned channels' filters, biases and affine entries set to zero (nothing removed).

    Every zoo activation maps 0 to 0 (relu, relu6, hardswish, swish, SE gating x * gate), so this graph must
    compute exactly what the pruned graph computes.
    """
    inits = dict(graph.initializers)
    for node in graph.nodes:
        t = node.outputs[0]
        if t not in kept:
            continue
        drop = np.ones(graph.tensor_shapes[t][1], dtype=bool)
        drop[kept[t]] = False
        if node.op in ("Conv", "Gemm"):
            w = inits[node.inputs[1]].copy()
            if node.op == "Gemm" and not node.attrs.get("trans_b", 0):
                w[:, drop] = 0
            else:
                w[drop] = 0
            inits[node.inputs[1]] = w
            if len(node.inputs) > 2 and node.inputs[2] in inits:
                b = inits[node.inputs[2]].copy()
                b[..., drop] = 0
                inits[node.inputs[2]] = b
        elif node.op == "BatchNormalization":
            for p in node.inputs[1:3]:
                a = inits[p].copy()
                a[drop] = 0
                inits[p] = a
    return Graph(graph.name, graph.nodes, graph.inputs, graph.outputs, inits, graph.tensor_shapes)


def _ratios(graph: Graph, ratio: float) -> dict[str, float]:
    return {g.members[0]: ratio for g in prune_groups(graph)}


def _input(graph: Graph, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(graph.input_shape).astype(np.float32)


# --------------------------------------------------------------------------------------------- coupling


def test_groups_of_the_residual_se_net():
    groups = {g.members: g for g in prune_groups(residual_se_graph())}
    # conv1 and conv3 meet at the residual Add; se2 gates the same channels (Mul), the depthwise conv passes them
    assert set(groups) == {("conv1", "conv3", "se2"), ("conv2",), ("se1",), ("conv4",)}
    assert groups[("conv1", "conv3", "se2")].channels == 8
    assert groups[("conv4",)].channels == 6


def test_prune_propagates_through_depthwise_se_and_flatten():
    g = residual_se_graph()
    res = prune_graph(g, {"conv3": 0.5, "conv4": 0.5})
    pg = res.graph
    assert res.group_ratios[("conv1", "conv3", "se2")] == 0.5
    for name in ("conv1", "conv3", "se2", "dw"):
        assert pg.node(name).attrs["out_channels"] == 4, name
    assert pg.node("dw").attrs["groups"] == 4 and pg.node("dw").attrs["in_channels"] == 4
    assert pg.node("conv2").attrs["in_channels"] == 4 and pg.node("conv2").attrs["out_channels"] == 8
    assert pg.node("se1").attrs["in_channels"] == 4
    assert pg.node("conv4").attrs["out_channels"] == 3
    # Flatten -> Gemm: the classifier loses the 36 columns of every removed channel, keeps its 10 outputs
    assert pg.initializers["fc.w"].shape == (10, 3 * 36)
    assert pg.node("fc").out_shape == (1, 10)
    assert pg.macs < g.macs and pg.param_count < g.param_count
    x = _input(g)
    np.testing.assert_allclose(build_executable(pg).run(x),
                               build_executable(zeroed_like_pruned(g, res.kept)).run(x), rtol=1e-4, atol=1e-5)


def test_group_ratio_is_the_largest_member_ratio_and_channels_follow_summed_l1():
    g = residual_se_graph()
    res = prune_graph(g, {"conv1": 0.25, "se2": 0.75})
    assert res.group_ratios[("conv1", "conv3", "se2")] == 0.75
    kept = res.kept["c1"]
    assert len(kept) == 2  # 8 channels - round(0.75 * 8)
    score = sum(np.abs(g.initializers[f"{m}.w"]).reshape(8, -1).sum(1) for m in ("conv1", "conv3", "se2"))
    assert set(kept) == set(np.argsort(score)[-2:])


def test_each_member_keeps_a_channel_at_the_maximum_ratio():
    g = residual_se_graph()
    pg = prune_graph(g, _ratios(g, 0.9)).graph
    for n in pg.nodes:
        if n.op == "Conv":
            assert n.attrs["out_channels"] >= 1
    assert build_executable(pg).run(_input(g)).shape == (1, 10)


def test_plan_prune_on_a_graph_output_or_depthwise_conv_is_rejected():
    g = residual_se_graph()
    with pytest.raises(PlanError, match="'fc'"):
        build_executable(g, Plan({"fc": Choice("gemm.blas", prune=0.5)}))
    with pytest.raises(PlanError, match="'dw'"):
        build_executable(g, Plan({"dw": Choice("conv.onednn", prune=0.5)}))


def test_shufflenet_split_and_shuffle_block_their_producers(zoo_model):
    g, _ = zoo_model("shufflenet_v2")
    blocked = unprunable_reasons(g)
    assert blocked and all(("Split" in r) or ("Transpose" in r) or ("Reshape" in r) or ("graph output" in r)
                           for r in blocked.values())
    name = next(iter(blocked))
    c = default_choice(g.node(name))
    with pytest.raises(PlanError, match=f"'{name}'"):
        build_executable(g, Plan({name: Choice(c.primitive, prune=0.5)}))
    # the convs inside each branch stay prunable
    assert prune_groups(g)


def test_squeezenet_classifier_conv_is_blocked_by_the_graph_output(zoo_model):
    g, _ = zoo_model("squeezenet1_1")
    reasons = unprunable_reasons(g)
    assert len(reasons) == 1 and "graph output" in next(iter(reasons.values()))


def test_se_gate_conv_shares_a_group_with_the_trunk(zoo_model):
    g, _ = zoo_model("mobilenet_v3_small")
    member_group = {m: k for k, grp in enumerate(prune_groups(g)) for m in grp.members}
    producer = {o: n for n in g.nodes for o in n.outputs}

    def owner(tensor: str) -> str | None:  # first dense conv upstream through pass-through ops
        n = producer.get(tensor)
        while n is not None and not (n.op == "Conv" and n.attrs["groups"] == 1):
            n = producer.get(n.activation_inputs[0])
        return n.name if n is not None else None

    muls = [n for n in g.nodes if n.op == "Mul" and len(n.activation_inputs) == 2
            and len({g.tensor_shapes[t][2] for t in n.activation_inputs}) == 2]
    assert muls
    for mul in muls:
        a, b = (owner(t) for t in mul.activation_inputs)
        assert member_group[a] == member_group[b], mul.name


# --------------------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "googlenet", "densenet121",
                                  "shufflenet_v2", "squeezenet1_1", "mobilenet_v2"])
def test_pruned_model_equals_the_model_with_zeroed_channels(zoo_model, name):
    g, _ = zoo_model(name)
    res = prune_graph(g, _ratios(g, 0.5))
    assert res.kept and res.graph.macs < g.macs
    x = _input(g)
    pruned = build_executable(res.graph).run(x)
    zeroed = build_executable(zeroed_like_pruned(g, res.kept)).run(x)
    assert pruned.shape == zeroed.shape == tuple(g.tensor_shapes[g.outputs[0]])
    np.testing.assert_allclose(pruned, zeroed, rtol=1e-4, atol=1e-4 * float(np.abs(zeroed).max()))


def test_pruned_int8_plan_runs(zoo_model):
    g, _ = zoo_model("resnet18")
    exe = build_executable(g, prune_plan(g, 0.3, base=int8_plan(g, "NHWC")))
    assert exe.run(_input(g)).shape == (1, 1000)
    assert exe.graph.param_count < g.param_count
