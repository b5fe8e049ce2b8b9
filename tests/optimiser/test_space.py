"""The search space: legality of every option, encodings, prune groups, tied activations, restrictions."""

from __future__ import annotations

import numpy as np
import pytest

from perfpredict.errors import PerfPredictError, PlanError
from perfpredict.plan import default_plan, validate_plan
from perfpredict.primitives import candidates

from optimiser.space import SearchSpace, SpaceConfig


@pytest.fixture(scope="module")
def space(resid_graph):
    return SearchSpace(resid_graph)


def test_sampled_plans_are_legal(space, resid_graph):
    rng = np.random.default_rng(0)
    for row in space.sample(rng, 200):
        plan = space.decode(row)
        validate_plan(resid_graph, plan)
        assert space.is_consistent(row)


def test_encode_decode_round_trip(space):
    rng = np.random.default_rng(1)
    for row in space.sample(rng, 50):
        assert np.array_equal(space.encode(space.decode(row)), row)
    for row in space.sample(rng, 20):
        assert np.array_equal(space.from_variables(space.to_variables(row)), row)


def test_default_plan_is_index_zero(space, resid_graph):
    assert np.array_equal(space.encode(default_plan(resid_graph)), space.default_indices())


def test_options_follow_the_registry(space, resid_graph):
    for node in resid_graph.nodes:
        names = {p.name for p in candidates(node)}
        for c in space.options[node.name]:
            assert c.primitive in names
            if c.precision == "int8":
                assert any(p.name == c.primitive and "int8" in p.precisions for p in candidates(node))


def test_prune_groups_share_one_ratio(space):
    # conv1 and conv3 meet at the residual Add: one group
    assert any({"conv1", "conv3"} <= set(g) for g in space.groups)
    rng = np.random.default_rng(2)
    for row in space.sample(rng, 100):
        plan = space.decode(row)
        for g in space.groups:
            assert len({plan.choices[m].prune for m in g}) == 1
    bad = space.default_indices()
    c1 = space.pos["conv1"]
    bad[c1] = next(k for k, c in enumerate(space.options["conv1"]) if c.prune > 0 and c.primitive == "conv.onednn")
    assert not space.is_consistent(bad)
    with pytest.raises(PlanError):
        space.encode(space.decode(bad))


def test_only_prunable_nodes_get_ratios(space, resid_graph):
    for node in resid_graph.nodes:
        ratios = {c.prune for c in space.options[node.name]}
        if node.op != "Conv" or node.name not in space.group_of:
            assert ratios == {0.0}, node.name


def test_tied_activation_follows_producer(space):
    r1 = space.pos["relu1"]
    assert r1 in space.tied and r1 not in space.free
    rng = np.random.default_rng(3)
    for row in space.sample(rng, 50):
        plan = space.decode(row)
        assert plan.choices["relu1"].precision == plan.choices["conv1"].precision
        assert plan.choices["relu1"].layout == plan.choices["conv1"].layout


def test_uniform_layout_moves_every_node_that_can(space, resid_graph):
    idx = space.uniform_layout_indices("NHWC")
    assert space.is_consistent(idx)
    plan = space.decode(idx)
    validate_plan(resid_graph, plan)
    default = default_plan(resid_graph)
    for node in resid_graph.nodes:
        c, d = plan.choices[node.name], default.choices[node.name]
        assert (c.primitive, c.precision, c.prune) == (d.primitive, "fp32", 0.0)  # only the layout changes
        if any(p.name == d.primitive for p in candidates(node, layout="NHWC", precision="fp32")):
            assert c.layout == "NHWC", node.name


def test_lossless_and_restrictions(resid_graph):
    sp = SearchSpace(resid_graph, SpaceConfig(lossless=True))
    assert not sp.groups
    assert all(c.precision == "fp32" and c.prune == 0.0 for opts in sp.options.values() for c in opts)
    small = SearchSpace(resid_graph, SpaceConfig(lossless=True, layouts=("NCHW",),
                                                 primitives=("conv.onednn", "conv.winograd")))
    for name in small.nodes:
        for c in small.options[name]:
            assert c.layout == "NCHW" or c == small.options[name][0]
            if c.primitive.startswith("conv."):
                assert c.primitive in ("conv.onednn", "conv.winograd")
    # nodes with one option are fixed
    assert all(small.sizes[i] > 1 for i in small.free)
    assert len(small.free) < len(sp.free)


def test_bad_config_is_a_user_error():
    with pytest.raises(PerfPredictError, match="prune ratios"):
        SpaceConfig(prune_ratios=(0.0, 1.5))
    with pytest.raises(PerfPredictError, match="layouts"):
        SpaceConfig(layouts=("NCWH",))


def test_uniform_layout_with_costs_takes_each_nodes_cheapest_option_in_that_layout(space, resid_graph):
    rng = np.random.default_rng(0)
    unary = [rng.random(space.sizes[i]) for i in range(len(space.nodes))]
    idx = space.uniform_layout_indices("NHWC", unary)
    assert space.is_consistent(idx)
    plan = space.decode(idx)
    validate_plan(resid_graph, plan)
    for i, name in enumerate(space.nodes):
        if i in space.tied:
            continue
        legal = [k for k, c in enumerate(space.options[name])
                 if (c.layout, c.precision, c.prune) == ("NHWC", "fp32", 0.0)]
        if legal:
            assert idx[i] == min(legal, key=lambda k: unary[i][k]), name


@pytest.mark.parametrize("with_costs", [False, True])
def test_uniform_precision_moves_every_node_that_has_int8(space, resid_graph, with_costs):
    from perfpredict.runtime import build_executable
    from perfpredict.runtime.executor import layout_matters

    unary = [np.random.default_rng(1).random(space.sizes[i]) for i in range(len(space.nodes))] if with_costs \
        else None
    idx = space.uniform_layout_indices("NHWC", unary, precision="int8")
    assert space.is_consistent(idx)
    plan = space.decode(idx)
    validate_plan(resid_graph, plan)
    moved = 0
    for i, node in enumerate(resid_graph.nodes):
        c = plan.choices[node.name]
        int8 = [k for k, o in enumerate(space.options[node.name]) if o.precision == "int8" and o.prune == 0.0
                and (o.layout == "NHWC" or not layout_matters(node.out_shape))]
        if i in space.tied or not int8:
            continue
        assert (c.precision, c.prune) == ("int8", 0.0), node.name
        moved += 1
        if with_costs:
            assert space.options[node.name].index(c) == min(int8, key=lambda k: unary[i][k])
    assert moved >= 3
    x = np.random.default_rng(0).standard_normal(resid_graph.tensor_shapes[resid_graph.inputs[0]]).astype(np.float32)
    assert np.all(np.isfinite(build_executable(resid_graph, plan).run(x)))


def test_with_primitive_moves_every_node_that_offers_it(resid_graph):
    sp = SearchSpace(resid_graph, SpaceConfig(lossless=True))
    base = sp.uniform_layout_indices("NHWC")
    alts = sp.alternative_primitives(base)
    assert "conv.onednn_packed" in alts
    assert all(sp.options[n][int(base[i])].primitive not in alts for i, n in enumerate(sp.nodes))
    idx = sp.with_primitive(base, "conv.onednn_packed")
    assert sp.is_consistent(idx)
    plan = sp.decode(idx)
    validate_plan(resid_graph, plan)
    for i, node in enumerate(resid_graph.nodes):
        before, after = sp.options[node.name][int(base[i])], plan.choices[node.name]
        assert (after.layout, after.precision, after.prune) == (before.layout, before.precision, before.prune)
        offers = any(c.primitive == "conv.onednn_packed" and c.layout == before.layout for c in sp.options[node.name])
        if i not in sp.tied:
            assert after.primitive == "conv.onednn_packed" if offers else after == before, node.name
    assert sum(c.primitive == "conv.onednn_packed" for c in plan.choices.values()) >= 2
    assert "conv.onednn_packed" not in sp.alternative_primitives(idx)


def test_primitive_families_move_every_op_to_one_library():
    """conv.dnnl and maxpool.dnnl are one implementation (oneDNN's C API): the family anchor moves both; in the
    int8 plan, whose convolutions already run on conv.dnnl_int8, the family still offers maxpool.dnnl."""
    from perfpredict.models import load_model

    graph, _ = load_model("squeezenet1_1", resolution=32)
    sp = SearchSpace(graph, SpaceConfig(lossless=False))
    nhwc = sp.uniform_layout_indices("NHWC")
    families = sp.primitive_families(nhwc)
    assert families["dnnl"] == ["conv.dnnl", "maxpool.dnnl"]
    assert all(len(ps) + 1 > 1 for ps in families.values())
    idx = nhwc
    for p in families["dnnl"]:
        idx = sp.with_primitive(idx, p)
    plan = sp.decode(idx)
    validate_plan(graph, plan)
    ops = {n.name: n.op for n in graph.nodes}
    assert all(c.primitive == "conv.dnnl" for n, c in plan.choices.items() if ops[n] == "Conv")
    assert all(c.primitive == "maxpool.dnnl" for n, c in plan.choices.items() if ops[n] == "MaxPool")
    int8 = sp.uniform_layout_indices("NHWC", precision="int8")
    assert "maxpool.dnnl" in sp.primitive_families(int8)["dnnl"]
