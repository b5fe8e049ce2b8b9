"""Featurisation: vocabularies and fallbacks, plan columns (pruning, fusion, conversions), devices."""

import math
import warnings
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from perfpredict.analytical import memory_cost
from perfpredict.devices import load_device, load_example_board
from perfpredict.features import (DEVICE_COLUMNS, PLAN_COLUMNS, STATIC_COLUMNS, FeatureError, FeatureSpace,
                                  FeatureWarning, Normaliser, build_template, device_rates, device_vector,
                                  encode_plans, featurise, plan_node_features, template_for)
from perfpredict.graph import load_onnx
from perfpredict.graph_json import (graph_from_json, graph_to_json, node_from_json, node_to_json, pack_graph,
                                    single_node_graph, unpack_graph)
from perfpredict.models import load_model
from perfpredict.plan import Choice, Plan, default_plan
from perfpredict.primitives.conv import ONEDNN_BLOCK, blocked_as, onednn_block

DEVICE = load_device({"schema_version": 1, "name": "t", "kind": "cpu", "arch": "x86_64", "cores": 2, "threads": 2,
                      "isa_features": ["avx2", "fma"], "peak_gflops_fp32": 80.0, "peak_gops_int8": 160.0,
                      "mem_bw_triad_gbs": 16.0, "threads_used": 2})


def _branch_model(path):
    """conv1 -> relu -> {conv2, conv3} -> add -> gap -> flatten -> fc."""
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [w("w1", 16, 3, 3, 3), w("w2", 16, 16, 3, 3), w("w3", 16, 16, 1, 1), w("fc_w", 10, 16), w("fc_b", 10)]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Conv", ["r1", "w3"], ["c3"], name="conv3", kernel_shape=[1, 1]),
        helper.make_node("Add", ["c2", "c3"], ["a"], name="add"),
        helper.make_node("GlobalAveragePool", ["a"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    g = helper.make_graph(nodes, "branch", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return load_onnx(path)


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    return _branch_model(tmp_path_factory.mktemp("feat") / "branch.onnx")


@pytest.fixture(scope="module")
def space():
    return FeatureSpace.current()


def _cols(pf, space, *names):
    base = len(space.primitives) + 1
    return [pf.plan[:, :, base + PLAN_COLUMNS.index(n)] for n in names]


def _feat(graph, space, plans, device=DEVICE, threads=None):
    tpl = template_for(graph)
    return tpl, plan_node_features(tpl, encode_plans(tpl, plans, space), space, device, threads)


def test_dimensions_and_column_names(graph, space):
    tpl, pf = _feat(graph, space, [Plan({})])
    assert pf.static.shape == (len(graph.nodes), space.static_dim)
    assert pf.plan.shape == (1, len(graph.nodes), space.plan_dim)
    assert len(space.column_names()) == space.node_dim == space.static_dim + space.plan_dim
    assert np.isfinite(pf.static).all() and np.isfinite(pf.plan).all()
    assert space.static_dim == len(space.ops) + 1 + len(STATIC_COLUMNS)
    assert set(["conv.winograd", "conv.int8", "gemm.blas"]) <= set(space.primitives)
    assert FeatureSpace.from_dict(space.to_dict()) == space


def test_unknown_op_and_primitive_go_to_other_with_warning(graph):
    small = FeatureSpace(ops=("Conv", "Gemm"), primitives=("conv.onednn",))
    tpl = template_for(graph)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        static = tpl.static_features(small)
        arr = encode_plans(tpl, [Plan({"fc": Choice("gemm.reference")})], small)
    messages = [str(w.message) for w in caught if issubclass(w.category, FeatureWarning)]
    assert any("'Relu'" in m for m in messages) and any("'gemm.reference'" in m for m in messages)
    relu = tpl.node_names.index("relu1")
    assert static[relu, len(small.ops)] == 1.0  # the 'other' op bucket
    assert arr.primitive[0, tpl.node_names.index("fc")] == len(small.primitives)  # the 'other' primitive


def test_a_clip_takes_the_relu_one_hots_from_schema_12_and_its_own_before(graph):
    # schema 12: a Clip (ReLU6) run by clip.torch is a clamp like a Relu run by relu.torch, so both its one-hots are
    # the Relu's; a schema-11 space keeps its columns
    clip = replace(graph, nodes=tuple(replace(n, op="Clip") if n.op == "Relu" else n for n in graph.nodes))
    i = [n.op for n in clip.nodes].index("Clip")
    new, old = FeatureSpace.current(), replace(FeatureSpace.current(), schema_version=11)
    assert new.schema_version >= 12
    assert np.array_equal(template_for(clip).static_features(new), template_for(graph).static_features(new))
    static = template_for(clip).static_features(old)
    assert static[i, old.ops.index("Clip")] == 1.0 and static[i, old.ops.index("Relu")] == 0.0
    assert not np.array_equal(static, template_for(graph).static_features(old))
    tpl = template_for(clip)
    assert tpl.default_choices[i].primitive == "clip.torch"
    feats = {s.schema_version: plan_node_features(tpl, encode_plans(tpl, [default_plan(clip)], s), s, DEVICE)
             for s in (new, old)}
    k = len(new.primitives) + 1
    onehot = {v: f.plan[0, i, :k] for v, f in feats.items()}
    assert onehot[new.schema_version][new.primitives.index("relu.torch")] == 1.0 and onehot[11].sum() == 1.0
    assert onehot[11][old.primitives.index("clip.torch")] == 1.0 and onehot[new.schema_version].sum() == 1.0
    # only the one-hot is aliased: the node's prior is still the Clip's own
    assert np.array_equal(feats[new.schema_version].prior_ms, feats[11].prior_ms)
    assert np.array_equal(feats[new.schema_version].plan[..., k:], feats[11].plan[..., k:])


def test_plan_naming_unknown_node_is_an_error(graph, space):
    with pytest.raises(FeatureError, match="nope"):
        encode_plans(template_for(graph), [Plan({"nope": Choice("conv.onednn")})], space)


def test_pruning_shrinks_the_node_and_its_consumers(graph, space):
    tpl, pf = _feat(graph, space, [Plan({}), Plan({"conv1": Choice("conv.onednn", prune=0.5)})])
    macs, keep_in, keep_out = _cols(pf, space, "log_eff_macs", "keep_in", "keep_out")
    i1, i2, i3 = (tpl.node_names.index(n) for n in ("conv1", "conv2", "conv3"))
    assert keep_out[1, i1] == pytest.approx(0.5) and keep_in[1, i2] == pytest.approx(0.5)
    assert keep_in[1, i3] == pytest.approx(0.5) and keep_out[1, i2] == pytest.approx(1.0)
    for i in (i1, i2, i3):
        assert math.expm1(macs[1, i]) == pytest.approx(0.5 * math.expm1(macs[0, i]), rel=1e-4)
    assert pf.memory_prior[1] < pf.memory_prior[0]
    assert pf.prior_ms[1].sum() < pf.prior_ms[0].sum()


def test_fusion_depends_on_matching_precision(graph, space):
    plans = [Plan({}), Plan({"conv1": Choice("conv.int8", "NCHW", "int8")})]
    tpl, pf = _feat(graph, space, plans)
    fused, has_fused, prec_conv = _cols(pf, space, "fused_now", "has_fused_now", "precision_conversions_in")
    r, c1 = tpl.node_names.index("relu1"), tpl.node_names.index("conv1")
    assert fused[0, r] == 1 and has_fused[0, c1] == 1
    assert pf.prior_ms[0, r] < 0.05 * pf.prior_ms[1, r]  # a fused activation costs almost nothing
    assert fused[1, r] == 0 and has_fused[1, c1] == 0  # int8 conv, fp32 relu: not fused
    assert prec_conv[1, r] == 1 and prec_conv[1, c1] == 1  # dequantise before relu, quantise the graph input


def test_conversion_is_shared_by_readers_of_the_same_variant(graph, space):
    both = Plan({"conv2": Choice("conv.onednn", "NHWC"), "conv3": Choice("conv.onednn", "NHWC")})
    one = Plan({"conv2": Choice("conv.onednn", "NHWC")})
    tpl, pf = _feat(graph, space, [Plan({}), one, both])
    (lay,) = _cols(pf, space, "layout_conversions_in")
    i2, i3, add = (tpl.node_names.index(n) for n in ("conv2", "conv3", "add"))
    assert lay[0].sum() == 0
    assert lay[1, i2] == 1 and lay[1, i3] == 0 and lay[1, add] == 1  # add (NCHW) reads conv2's NHWC output
    assert lay[2, i2] + lay[2, i3] == 1  # one conversion of relu1's output, shared


def test_a_reader_reuses_the_variant_another_readers_conversion_passes_through(graph, space):
    # conv2 (NHWC int8) has relu1's NCHW fp32 output relaid into NHWC fp32, then quantised; conv3 (NHWC fp32) reads
    # that intermediate as the runtime does (schema 15); schema 13 charged conv3 a relayout of its own
    plan = Plan({"conv2": Choice("conv.int8", "NHWC", "int8"), "conv3": Choice("conv.onednn", "NHWC")})
    i2, i3 = (template_for(graph).node_names.index(n) for n in ("conv2", "conv3"))
    for schema, conv3_relayouts in ((space.schema_version, 0), (13, 1)):
        s = replace(space, schema_version=schema)
        _, pf = _feat(graph, s, [plan])
        lay, prec, nbytes = _cols(pf, s, "layout_conversions_in", "precision_conversions_in", "log_conversion_bytes")
        assert (lay[0, i2], prec[0, i2]) == (1, 1)
        assert (lay[0, i3], prec[0, i3]) == (conv3_relayouts, 0) and (nbytes[0, i3] > 0) == bool(conv3_relayouts)


@pytest.mark.parametrize("family", ["densenet", "googlenet", "mobilenet_v2", "squeezenet"])
def test_conversions_are_those_the_runtime_schedules_in_front_of_each_node(family, space):
    # node by node, the layout and precision conversions of the runtime's schedule (a folded residual Add's at the
    # producer that reads the residual; the final one back to fp32 NCHW is output_conversion's); schema 13 counted
    # more on some of these plans (readers of intermediate variants) and put a folded Add's on the Add
    from perfpredict.runtime.executor import make_schedule, resolve_plan

    from .runtime.plans import int8_plan, random_plan
    from .synthetic import zoo_graph

    g = zoo_graph(family)
    plans = [int8_plan(g, "NHWC"), int8_plan(g, "NCHW")] + [random_plan(g, s, ("fp32", "int8")) for s in range(6)]
    tpl, pf = _feat(g, space, plans)
    lay, prec, nbytes = _cols(pf, space, "layout_conversions_in", "precision_conversions_in", "log_conversion_bytes")
    thirteen = replace(space, schema_version=13)
    old = _cols(_feat(g, thirteen, plans)[1], thirteen, "layout_conversions_in", "precision_conversions_in")
    index = {name: i for i, name in enumerate(tpl.node_names)}
    differed = 0
    for k, plan in enumerate(plans):
        want = np.zeros((2, len(index)))
        for c in make_schedule(g, resolve_plan(g, plan).choices).conversions:
            if c.consumer != "<output>":
                want[int(c.kind != "layout"), index[c.consumer]] += 1
        np.testing.assert_array_equal(np.stack([lay[k], prec[k]]), want)
        np.testing.assert_array_equal(nbytes[k] > 0, want.sum(axis=0) > 0)
        differed += not np.array_equal(np.stack([old[0][k], old[1][k]]), want)
    assert want.sum() > 0 and differed > 0


def test_layout_of_a_1x1_spatial_tensor_needs_no_conversion(graph, space):
    tpl, pf = _feat(graph, space, [Plan({"gap": Choice("globalaveragepool.torch", "NHWC")})])
    (lay,) = _cols(pf, space, "layout_conversions_in")
    assert lay[0, tpl.node_names.index("gap")] == 1  # reads the 16x16 add output in another layout
    assert lay[0, tpl.node_names.index("flatten")] == 0  # (1, 16, 1, 1): both layouts are the same memory


def test_batched_featurisation_equals_one_by_one(graph, space):
    plans = [Plan({}), Plan({"conv1": Choice("conv.onednn", "NHWC", prune=0.25)}),
             Plan({"conv2": Choice("conv.int8", "NCHW", "int8")})]
    _, batch = _feat(graph, space, plans)
    for k, p in enumerate(plans):
        _, one = _feat(graph, space, [p])
        np.testing.assert_allclose(batch.plan[k], one.plan[0], rtol=1e-6)
        assert batch.memory_prior[k] == pytest.approx(one.memory_prior[0])


def test_subset_is_measured_alone(graph, space):
    tpl = template_for(graph)
    sub = tpl.subset([tpl.node_names.index("conv2")])
    pf = plan_node_features(sub, encode_plans(sub, [{"conv2": Choice("conv.onednn", "NHWC")}], space), space, DEVICE)
    (lay,) = _cols(pf, space, "layout_conversions_in")
    assert sub.node_names == ("conv2",) and lay.sum() == 0
    np.testing.assert_allclose(pf.static[0], tpl.static_features(space)[tpl.node_names.index("conv2")])


def test_node_json_round_trip(graph, space):
    node = graph.node("conv2")
    back = node_from_json(node_to_json(node))
    assert back == node
    a = template_for(single_node_graph(node)).static_features(space)
    b = template_for(single_node_graph(back)).static_features(space)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(FeatureError):
        node_from_json({"op": "Conv"})


@pytest.mark.parametrize("family", ["shufflenet_v2", "efficientnet", "googlenet"])
def test_graph_json_keeps_the_structure_and_drops_the_weights(family, space):
    from .runtime.plans import random_plan
    from .synthetic import zoo_graph

    g = zoo_graph(family)
    back = unpack_graph(pack_graph(g))
    assert back.nodes == graph_from_json(graph_to_json(g)).nodes
    assert back.graph_id == g.graph_id and back.nodes == g.nodes and back.tensor_shapes == g.tensor_shapes
    assert (back.name, back.inputs, back.outputs) == (g.name, g.inputs, g.outputs)
    for name, w in g.initializers.items():
        assert back.initializers[name].shape == w.shape and back.initializers[name].dtype == w.dtype
    plans = [default_plan(g)] + [random_plan(g, s, ("fp32", "int8")) for s in range(3)]
    want_tpl, got_tpl = build_template(g), build_template(back)  # not template_for: it caches by graph_id
    want = plan_node_features(want_tpl, encode_plans(want_tpl, plans, space), space, DEVICE)
    got = plan_node_features(got_tpl, encode_plans(got_tpl, plans, space), space, DEVICE)
    np.testing.assert_array_equal(got_tpl.static_features(space), want_tpl.static_features(space))
    np.testing.assert_array_equal(got.plan, want.plan)
    np.testing.assert_array_equal(got.memory_prior, want.memory_prior)
    assert len(pack_graph(g)) < len(str(graph_to_json(g))) / 5
    with pytest.raises(FeatureError, match="packed graph is not readable"):
        unpack_graph("not base64!")
    with pytest.raises(FeatureError, match="not a graph description"):
        graph_from_json({"name": "x"})


def test_device_vector_and_rates():
    board = load_example_board("raspberry_pi_4")  # no measured figures, no fingerprint
    v = device_vector(board)
    assert v.shape == (len(DEVICE_COLUMNS),)
    fp = np.array([c.startswith("log_fp_") for c in DEVICE_COLUMNS])
    assert np.isnan(v[fp]).all() and np.isfinite(v[~fp]).all()
    one, two = device_rates(DEVICE, 1), device_rates(DEVICE, 2)
    assert two.gflops_fp32 == pytest.approx(2 * one.gflops_fp32) and two.gflops_fp32 == pytest.approx(80.0)
    assert device_vector(DEVICE, 1)[0] < device_vector(DEVICE, 2)[0]


def test_rates_follow_the_fingerprint_convolution():
    """With the fingerprint's 3x3 convolution timed, the prior's fp32 rate is the speed it shows and int8 keeps the
    board's int8 : fp32 ratio; a faster convolution on an equal matmul peak means a faster prior."""
    from perfpredict.features import FINGERPRINT_CONV, FINGERPRINT_CONV_FLOPS

    base = {**DEVICE.to_dict(), "peak_gflops_fp32": 100.0, "peak_gops_int8": 400.0, "threads_used": 2}
    plain = device_rates(load_device(base), 2)
    assert plain.gflops_fp32 == pytest.approx(100.0) and plain.gops_int8 == pytest.approx(400.0)
    fast = load_device({**base, "fingerprint": {FINGERPRINT_CONV: 0.5}})
    r = device_rates(fast, 2)
    assert r.gflops_fp32 == pytest.approx(FINGERPRINT_CONV_FLOPS / 0.5e-3 / 1e9)
    assert r.gops_int8 / r.gflops_fp32 == pytest.approx(4.0) and r.bandwidth_gbs == plain.bandwidth_gbs
    assert device_rates(fast, 1).gflops_fp32 == pytest.approx(r.gflops_fp32 / 2)  # measured at 2 threads
    slow = load_device({**base, "fingerprint": {FINGERPRINT_CONV: 1.0}})
    assert device_rates(slow, 2).gflops_fp32 == pytest.approx(r.gflops_fp32 / 2)


def test_normaliser_imputes_and_clips_devices():
    rows = np.stack([device_vector(DEVICE, 1), device_vector(DEVICE, 2)])
    norm = Normaliser.fit(np.ones((3, 2)), rows, np.ones((2, 4)))
    out = norm.device(device_vector(load_example_board("raspberry_pi_4")))
    assert np.isfinite(out).all()
    lo = (norm.dev_min - norm.dev_mean) / norm.dev_std
    hi = (norm.dev_max - norm.dev_mean) / norm.dev_std
    assert np.all(out >= lo - 1e-5) and np.all(out <= hi + 1e-5)
    back = Normaliser.from_dict(norm.to_dict())
    np.testing.assert_allclose(back.device(rows[0]), norm.device(rows[0]))


def test_normaliser_pins_node_columns_that_never_varied():
    import json

    train = np.array([[1.0, 0.0, 2.0], [3.0, 0.0, 2.0], [5.0, 0.0, 2.0]])  # columns 1 and 2 constant
    norm = Normaliser.fit(train, np.stack([device_vector(DEVICE, 1)]), np.ones((1, 4)))
    unseen = np.array([[3.0, 1.0, 7.0]])  # e.g. the one-hot of an op no training graph had
    out = norm.nodes(unseen)
    assert out[0, 0] == pytest.approx(0.0) and out[0, 1] == 0.0 and out[0, 2] == 0.0
    assert norm.nodes(np.array([[5.0, 0.0, 2.0]]))[0, 0] > 0
    back = Normaliser.from_dict(json.loads(json.dumps(norm.to_dict())))  # checkpoints store it as JSON
    np.testing.assert_array_equal(back.nodes(unseen), out)


def test_layer_rows_standardise_only_the_columns_the_model_rows_never_varied():
    models = np.array([[1.0, 0.0, 2.0], [3.0, 0.0, 2.0], [5.0, 0.0, 2.0]])  # columns 1 and 2 constant
    layers = np.array([[100.0, 0.0, 2.0], [-100.0, 1.0, 2.0]])  # column 1: an op only the measured layers have
    dev, mem = np.stack([device_vector(DEVICE, 1)]), np.ones((1, 4))
    plain, norm = Normaliser.fit(models, dev, mem), Normaliser.fit(models, dev, mem, layers)
    assert norm.node_mean[0] == plain.node_mean[0] and norm.node_std[0] == plain.node_std[0]  # the models' stats
    assert norm.node_mean[1] == 0.5 and norm.node_std[1] == 0.5  # unpinned by the layers
    assert np.isinf(norm.node_std[2]) and np.isinf(plain.node_std[1])  # still constant everywhere: pinned
    assert norm.nodes(np.array([[3.0, 1.0, 7.0]]))[0, 1] == pytest.approx(1.0)


def test_pruning_matches_the_runtime_channel_flow(space):
    from perfpredict.features import _keep_fractions
    from perfpredict.runtime.pruning import prune_graph

    from .synthetic import zoo_graph

    g = zoo_graph("resnet")
    tpl = template_for(g)
    rng = np.random.default_rng(0)
    prunable = np.flatnonzero(tpl.prunable)
    for _ in range(3):
        ratios = {tpl.node_names[i]: float(rng.choice([0.25, 0.5])) for i in prunable if rng.random() < 0.4}
        pruned = prune_graph(g, ratios).graph
        plan = Plan({k: Choice(tpl.default_choices[tpl.node_names.index(k)].primitive, prune=v)
                     for k, v in ratios.items()})
        _, keep_out = _keep_fractions(tpl, encode_plans(tpl, [plan], space).prune)
        for i, node in enumerate(g.nodes):
            if len(node.out_shape) >= 2:
                assert keep_out[0, i] == pytest.approx(pruned.node(node.name).out_shape[1] / node.out_shape[1])


def test_memory_prior_follows_the_runtime_estimate(space):
    import random

    from perfpredict.runtime.memory import estimate_peak_memory

    from .synthetic import random_plan, zoo_graph

    # random mixes of primitives, layouts, int8 and pruning: the prior replays the runtime's schedule on the
    # template (conversion chains, shared variants, pruned workspaces, int8 weights), so it is the estimate, with
    # oneDNN's blocked buffers at the device's block (8 channels on an AVX2-only CPU, 16 with AVX-512) wherever it
    # is featurised
    avx512 = replace(DEVICE, isa_features=(*DEVICE.isa_features, "avx512f"))
    assert (onednn_block(DEVICE.isa_features), onednn_block(avx512.isa_features)) == (8, 16)
    assert onednn_block(()) == onednn_block(("neon",)) == ONEDNN_BLOCK  # unknown: the machine at hand's
    differ = 0
    for family in ("mobilenet_v2", "resnet", "squeezenet", "googlenet", "densenet", "efficientnet", "shufflenet_v2"):
        g = zoo_graph(family)
        plans = [random_plan(g, random.Random(k)) for k in range(6)]
        priors = []
        for device in (DEVICE, avx512):
            _, pf = _feat(g, space, plans, device)
            priors.append(pf.memory_prior)
            for k, plan in enumerate(plans):
                with blocked_as(onednn_block(device.isa_features)):
                    est = estimate_peak_memory(g, plan)
                assert math.expm1(pf.memory[k, 0]) == pytest.approx(est.weights, rel=1e-6), (family, k)
                assert math.expm1(pf.memory[k, 1]) == pytest.approx(est.activations, rel=1e-6), (family, k)
                assert math.expm1(pf.memory[k, 2]) == pytest.approx(est.workspace, rel=1e-6), (family, k)
                assert pf.memory_prior[k] == pytest.approx(est.total, rel=1e-6), (family, k)
        differ += int((priors[0] != priors[1]).sum())
    assert differ > 0


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_memory_prior_counts_what_kernels_do_to_channel_split_views(space, precision):
    from perfpredict.primitives import candidates
    from perfpredict.runtime.memory import estimate_peak_memory

    from .synthetic import zoo_graph

    # whole-graph NHWC plans on ShuffleNetV2, whose channel splits are views that are not dense in NHWC: the
    # convolutions reading them copy them, an int8 Concat goes through fp32; the prior replays both rules
    g = zoo_graph("shufflenet_v2")
    plan = Plan({n.name: Choice(c[0].name, "NHWC", precision) for n in g.nodes
                 if (c := candidates(n, layout="NHWC", precision=precision))})
    _, pf = _feat(g, space, [plan, Plan({})])
    for k, p in enumerate((plan, Plan({}))):
        est = estimate_peak_memory(g, p)
        assert math.expm1(pf.memory[k, 2]) == pytest.approx(est.workspace, rel=1e-6)
        assert pf.memory_prior[k] == pytest.approx(est.total, rel=1e-6)

def _pointwise_depthwise(path, channels=16):
    """conv1 (1x1, 3 -> channels) -> dw (3x3 depthwise) -> conv3 (1x1, -> 8): the depthwise conv runs with
    conv1's kept channels."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((channels, 3, 1, 1)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((channels, 1, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal((8, channels, 1, 1)).astype(np.float32), "w3")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", kernel_shape=[1, 1]),
             helper.make_node("Conv", ["c1", "w2"], ["d"], name="dw", kernel_shape=[3, 3], pads=[1] * 4,
                              group=channels),
             helper.make_node("Conv", ["d", "w3"], ["y"], name="conv3", kernel_shape=[1, 1])]
    g = helper.make_graph(nodes, "pwdw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return load_onnx(path)


def test_int8_depthwise_fallback_prior_follows_the_kept_channels(tmp_path, space):
    from perfpredict.primitives.quantized import depthwise_fallback
    from perfpredict.runtime.pruning import prune_graph

    g = _pointwise_depthwise(tmp_path / "pwdw.onnx")
    dw = [n.name for n in g.nodes].index("dw")
    int8 = Choice("conv.int8", "NHWC", "int8")
    plans = [Plan({"dw": int8}),  # 16 channels: fbgemm's depthwise kernel
             Plan({"conv1": Choice("conv.onednn", prune=0.125), "dw": int8}),  # 14 kept: generic path
             Plan({"conv1": Choice("conv.onednn", prune=0.5), "dw": int8}),  # 8 kept: depthwise kernel
             Plan({"conv1": Choice("conv.onednn", prune=0.125), "dw": Choice("conv.onednn")})]  # fp32
    _, pf = _feat(g, space, plans)
    prior = pf.prior_ms[:, dw]
    assert prior[1] > 50 * prior[0] and prior[2] <= prior[0] and prior[3] < 2 * prior[0]
    # the network is told which path the node takes (schema 10), on that node only
    flag = pf.plan[:, :, len(space.primitives) + 1 + space.plan_columns.index("slow_path")]
    np.testing.assert_array_equal(flag[:, dw], [0, 1, 0, 0])
    assert flag.sum() == 1
    # the featuriser's kept channels are the ones the runtime's pruning leaves
    for plan, slow in ((plans[1], True), (plans[2], False)):
        ratios = {k: c.prune for k, c in plan.choices.items() if c.prune}
        assert depthwise_fallback(prune_graph(g, ratios).graph.node("dw")) is slow


def test_the_fallback_prior_prices_int8_ops_that_compute_in_float_at_their_float_bytes():
    # torch's quantised batch norm and cat requantise through float, so the price of such a node no network
    # corrects is not a quarter of its fp32 one; a one-byte op (Relu) and every fp32 node cost their prior
    from .synthetic import zoo_graph

    g = zoo_graph("densenet")
    at = {op: next(i for i, n in enumerate(g.nodes) if n.op == op) for op in ("BatchNormalization", "Relu", "Concat")}
    prim = {"BatchNormalization": "batchnormalization.torch", "Relu": "relu.torch", "Concat": "concat.torch"}
    plans = [Plan({g.nodes[i].name: Choice(prim[op], layout, "int8") for op, i in at.items()})
             for layout in ("NCHW", "NHWC")] + [default_plan(g)]
    pf = featurise(g, plans, DEVICE, FeatureSpace.current())
    prior, fallback = pf.prior_ms, pf.fallback_ms
    np.testing.assert_array_equal(fallback[:, at["Relu"]], prior[:, at["Relu"]])
    np.testing.assert_array_equal(fallback[2], prior[2])
    # schema 10 priced conversions by their bytes alone; 11 adds each conversion step's fixed cost to both prices
    old = featurise(g, plans, DEVICE, replace(FeatureSpace.current(), schema_version=10))
    np.testing.assert_allclose(fallback - prior, old.fallback_ms - old.prior_ms, rtol=1e-9, atol=1e-12)
    assert (prior >= old.prior_ms).all()
    for layout in (0, 1):
        assert old.fallback_ms[layout, at["BatchNormalization"]] > 1.25 * old.prior_ms[layout, at["BatchNormalization"]]
    # quantized::cat joins NHWC channels directly; in NCHW it goes through fp32 buffers and costs more again
    assert fallback[0, at["Concat"]] > fallback[1, at["Concat"]] > prior[1, at["Concat"]]


def test_every_supported_op_has_a_category_column():
    from perfpredict.features import OP_CATEGORIES
    from perfpredict.graph import SUPPORTED_OPS

    assert set(SUPPORTED_OPS) <= set(OP_CATEGORIES)
    assert {f"category_{c}" for c in OP_CATEGORIES.values()} <= set(STATIC_COLUMNS)


def test_ops_of_one_kind_share_their_category_column(graph, space):
    tpl = template_for(graph)
    static = tpl.static_features(space)
    base = len(space.ops) + 1
    conv = [i for i, op in enumerate(tpl.ops) if op == "Conv"]
    relu = tpl.ops.index("Relu")
    cols = {c: base + STATIC_COLUMNS.index(c) for c in ("category_conv", "category_unary", "category_binary")}
    assert all(static[i, cols["category_conv"]] == 1.0 and static[i, cols["category_unary"]] == 0.0 for i in conv)
    assert static[relu, cols["category_unary"]] == 1.0
    assert static[tpl.ops.index("Add"), cols["category_binary"]] == 1.0
    # every node is in exactly one category
    cat = [base + i for i, c in enumerate(STATIC_COLUMNS) if c.startswith("category_")]
    assert np.all(static[:, cat].sum(axis=1) == 1.0)


def test_swish_hardswish_and_residual_adds_fold_as_the_runtime_folds_them(space):
    from perfpredict.primitives import candidates
    from perfpredict.runtime.executor import find_fusions
    from perfpredict.runtime.memory import estimate_peak_memory

    from .synthetic import zoo_graph

    # whole-graph NHWC plans whose convolutions do (conv.dnnl, conv.dnnl_int8) or do not (conv.onednn) apply
    # swish, hardswish and a residual add as post-ops, and a mix with some Sigmoids and Adds at another precision:
    # fused_now is the runtime's fusion, and the memory prior is still the runtime's estimate (the folded Add's
    # residual read by the convolution)
    for family in ("efficientnet", "mobilenet_v3", "resnet", "mobilenet_v2"):
        g = zoo_graph(family)
        plans = []
        for conv, precision in (("conv.dnnl", "fp32"), ("conv.onednn", "fp32"), ("conv.dnnl_int8", "int8")):
            plans.append(Plan({n.name: Choice(conv if n.op == "Conv" else c[0].name, "NHWC", precision)
                               for n in g.nodes if (c := candidates(n, layout="NHWC", precision=precision))}))
        movable = [n.name for n in g.nodes if n.op in ("Sigmoid", "Add")][::2]  # every other one to int8
        plans.append(Plan({n.name: (Choice(f"{n.op.lower()}.torch", "NHWC", "int8") if n.name in movable
                                    else plans[0].choices[n.name]) for n in g.nodes if n.name in plans[0].choices}))
        tpl, pf = _feat(g, space, plans)
        (fused,) = _cols(pf, space, "fused_now")
        for k, plan in enumerate(plans):
            want = set(find_fusions(g, plan.resolve(g)))
            assert {tpl.node_names[i] for i in np.flatnonzero(fused[k])} == want, (family, k)
            assert pf.memory_prior[k] == pytest.approx(estimate_peak_memory(g, plan).total, rel=1e-6), (family, k)
        assert fused[0].sum() > fused[1].sum() and fused[2].sum() == fused[0].sum(), family
        assert 0 < fused[3].sum() < fused[0].sum(), family
        adds = [i for i, op in enumerate(tpl.ops) if op == "Add"]
        assert fused[0, adds].any() and not fused[1, adds].any(), family


def test_the_traits_prior_prices_each_primitive_by_its_kernel_traits():
    # conv.winograd4 does a quarter of the multiplications: its prior is below conv.dnnl's on a 56x56 3x3 layer,
    # and above it on a 7x7 one, where its transformed weights and tiles dominate; the first prior is the same for both
    graph = load_model("resnet18")[0]
    space = FeatureSpace.current()
    convs = [n for n in graph.nodes if n.op == "Conv" and n.attrs["kernel"] == (3, 3) and n.attrs["stride"] == (1, 1)]
    base = default_plan(graph)
    plans = [Plan({**base.choices, **{n.name: Choice(p, "NHWC") for n in convs}})
             for p in ("conv.dnnl", "conv.winograd4")]
    pf = featurise(graph, plans, DEVICE, space)
    col = len(space.primitives) + 1 + space.plan_columns.index("log_traits_prior_ms")
    first = len(space.primitives) + 1 + space.plan_columns.index("log_prior_ms")
    at = {n.out_shape[2]: i for i, n in enumerate(graph.nodes) if n in convs}
    assert pf.plan[1, at[56], col] < pf.plan[0, at[56], col] and pf.plan[1, at[7], col] > pf.plan[0, at[7], col]
    # up to schema 10 the first prior is the same for both; 11 adds the fixed cost of conversion steps no chain runs
    ten = featurise(graph, plans, DEVICE, replace(space, schema_version=10))
    np.testing.assert_array_equal(ten.plan[0, :, first], ten.plan[1, :, first])
    assert (pf.plan[:, :, first] >= ten.plan[:, :, first] - 1e-6).all()
    assert (pf.plan[:, :, first] > ten.plan[:, :, first] + 1e-3).any()
    old = featurise(graph, plans, DEVICE, replace(space, schema_version=8))
    assert old.plan.shape[2] == space.plan_dim - 3
    assert "log_traits_prior_ms" not in replace(space, schema_version=8).plan_columns
    np.testing.assert_array_equal(old.plan, ten.plan[:, :, :-2])
    nine = featurise(graph, plans, DEVICE, replace(space, schema_version=9))
    assert replace(space, schema_version=9).plan_columns == space.plan_columns[:-2]
    np.testing.assert_array_equal(nine.plan, ten.plan[:, :, :-1])


def test_from_schema_13_a_torch_max_pool_on_nchw_is_priced_by_its_bytes_and_window_elements_at_its_memory_cost():
    # torch loads an NCHW max pool's window elements in scalar code (analytical.MEMORY_COSTS): from schema 13 both
    # priors price its bytes and its window elements' bytes at that cost; channels-last, oneDNN's pool and every
    # other node keep their bytes at the bandwidth
    graph = load_model("resnet18")[0]
    space, twelve = FeatureSpace.current(), replace(FeatureSpace.current(), schema_version=12)
    i = [n.op for n in graph.nodes].index("MaxPool")
    node = graph.nodes[i]
    base = default_plan(graph)
    choices = [Choice("maxpool.torch", "NCHW"), Choice("maxpool.torch", "NCHW", "int8"),
               Choice("maxpool.torch", "NHWC"), Choice("maxpool.dnnl", "NHWC")]
    plans = [Plan({**base.choices, node.name: c}) for c in choices]
    new, old = featurise(graph, plans, DEVICE, space), featurise(graph, plans, DEVICE, twelve)
    cost = memory_cost("maxpool.torch", "NCHW")
    assert cost.per_byte > 1.0 and cost.per_window_byte > 0.0
    assert memory_cost("maxpool.torch", "NHWC") == memory_cost("maxpool.dnnl", "NHWC") == type(cost)(1.0, 0.0)
    bw = device_rates(DEVICE).bandwidth_gbs * 1e6
    for row, scale in ((0, 1.0), (1, 0.25)):  # int8 moves a byte per element
        nbytes, window = (node.bytes_in + node.bytes_out) * scale, node.flops * 4.0 * scale
        extra = ((cost.per_byte - 1.0) * nbytes + cost.per_window_byte * window) / bw
        assert new.prior_ms[row, i] - old.prior_ms[row, i] == pytest.approx(extra, rel=1e-9)
    others = np.arange(len(graph.nodes)) != i
    np.testing.assert_array_equal(new.prior_ms[:, others], old.prior_ms[:, others])
    np.testing.assert_array_equal(new.prior_ms[2:], old.prior_ms[2:])
    traits = len(space.primitives) + 1 + space.plan_columns.index("log_traits_prior_ms")
    assert (new.plan[:2, i, traits] > old.plan[:2, i, traits] + 1.0).all()
    np.testing.assert_array_equal(new.plan[2:, i, traits], old.plan[2:, i, traits])
    # only the priors move: every other column is schema 12's
    keep = np.ones(space.plan_dim, bool)
    keep[[len(space.primitives) + 1 + space.plan_columns.index(c) for c in ("log_prior_ms", "log_traits_prior_ms")]] = 0
    np.testing.assert_array_equal(new.plan[..., keep], old.plan[..., keep])


def _chained_by_runtime(graph, plan) -> set[str]:
    """The nodes whose steps the executable's forward pass runs inside a oneDNN chain."""
    from perfpredict.runtime import build_executable, calibrate, calibration_inputs

    cal = None
    if any(c.precision == "int8" for c in plan.choices.values()):
        cal = calibrate(graph, None, inputs=calibration_inputs(graph, n=2, seed=0))
    exe = build_executable(graph, plan, threads=1, calibration=cal)
    own = {id(s) for s in exe._fast_steps}
    return {op.name for op, s in zip(exe.schedule.ops, exe._steps) if op.kind == "node" and id(s) not in own}


@pytest.mark.parametrize("family", ["mobilenet_v2", "squeezenet", "resnet"])
def test_the_chained_column_marks_the_nodes_the_runtime_chains(family, space):
    # schema 11: where a plan's oneDNN steps follow one another the forward pass runs them in one C call; the
    # featuriser follows the runtime's rule (memory cuts aside), and a conversion inside a chain costs no step
    from perfpredict.primitives import candidates

    from .runtime.plans import int8_plan, random_plan
    from .synthetic import zoo_graph

    g = zoo_graph(family)
    fp32 = Plan({n.name: Choice(c[0].name, "NHWC") for n in g.nodes
                 if (c := candidates(n, layout="NHWC", precision="fp32"))} |
                {n.name: Choice("conv.dnnl", "NHWC") for n in g.nodes if n.op == "Conv"})
    plans = [fp32, int8_plan(g, "NHWC"), int8_plan(g, "NCHW"), default_plan(g)] \
        + [random_plan(g, seed, ("fp32", "int8")) for seed in range(3)]
    tpl, pf = _feat(g, space, plans)
    (chained,) = _cols(pf, space, "chained")
    chained = chained > 0.5
    both = apart = 0
    for k, plan in enumerate(plans):
        ours = {tpl.node_names[i] for i in np.flatnonzero(chained[k])}
        real = _chained_by_runtime(g, plan)
        both, apart = both + len(ours & real), apart + len(ours ^ real)
        if k >= 2 and k < 4:  # NCHW int8 and the default plan run nothing through oneDNN chains
            assert not ours and not real
    assert both > 20 and apart <= 0.1 * both
    assert chained[0].sum() > 5 and chained[1].sum() > 5
    # a conversion in front of a chained node is run by the chain: the prior adds no step cost for it (compared
    # where schema 10 converts the same: from schema 15 a folded Add's residual is converted for its producer, and
    # a reader may reuse a variant another reader's conversion passed through)
    ten = featurise(g, plans, DEVICE, replace(space, schema_version=10))
    conv_cols = ("layout_conversions_in", "precision_conversions_in", "log_conversion_bytes")
    same = np.all([a == b for a, b in zip(_cols(pf, space, *conv_cols),
                                          _cols(ten, replace(space, schema_version=10), *conv_cols))], axis=0)
    assert (chained & same).sum() > 10
    assert np.allclose(pf.prior_ms[chained & same], ten.prior_ms[chained & same])
    assert (pf.prior_ms[same] >= ten.prior_ms[same] - 1e-12).all()
