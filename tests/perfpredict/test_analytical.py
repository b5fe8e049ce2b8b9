"""The roofline model: additive decomposition equals predict, device defaults and errors, monotonicity."""

from __future__ import annotations

import numpy as np
import pytest

from perfpredict.analytical import RooflineModel, device_rates
from perfpredict.devices import load_device, load_example_board
from perfpredict.errors import BoardError
from perfpredict.graph import load_onnx
from perfpredict.plan import Choice, default_plan
from perfpredict.predictor import NodeCostModel, Predictor, channel_sources, interaction_pairs


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    from tests.optimiser.models import make_residual_model

    return load_onnx(make_residual_model(tmp_path_factory.mktemp("m") / "resid.onnx"))


@pytest.fixture(scope="module")
def board():
    return load_example_board("raspberry_pi_4")


def test_implements_both_protocols():
    m = RooflineModel()
    assert isinstance(m, Predictor) and isinstance(m, NodeCostModel)


def test_additive_terms_sum_to_predict(graph, board):
    from optimiser.space import SearchSpace

    space = SearchSpace(graph)
    model = RooflineModel()
    opts = {n: space.options[n] for n in space.nodes}
    unary = model.node_costs(graph, board, opts)
    pairs = [(s, d, model.edge_costs(graph, board, s, d, opts[s], opts[d])) for s, d in model.cost_pairs(graph)]
    rows = space.sample(np.random.default_rng(0), 64)
    pred = model.predict(graph, space.decode_many(rows), board)
    for row, lat in zip(rows, pred.latency_ms):
        total = sum(unary[n][row[i]] for i, n in enumerate(space.nodes))
        total += sum(m[row[space.pos[s]], row[space.pos[d]]] for s, d, m in pairs)
        assert total == pytest.approx(lat, rel=1e-9)
    assert np.all(pred.peak_mem_bytes > 0)


def test_pruning_and_int8_reduce_predicted_cost(graph, board):
    model = RooflineModel()
    base = default_plan(graph)
    pruned = base.with_choice("conv2", Choice("conv.onednn", "NCHW", "fp32", 0.5))
    slow = base.with_choice("conv2", Choice("conv.reference", "NCHW", "fp32", 0.0))
    p = model.predict(graph, [base, pruned, slow], board)
    assert p.latency_ms[1] < p.latency_ms[0] < p.latency_ms[2]
    assert p.peak_mem_bytes[1] < p.peak_mem_bytes[0]


def test_batched_over_graph_sequences(graph, board):
    model = RooflineModel()
    plans = [default_plan(graph)] * 3
    a = model.predict(graph, plans, board)
    b = model.predict([graph] * 3, plans, board)
    assert np.allclose(a.latency_ms, b.latency_ms) and len(a) == 3


def test_device_defaults_and_errors():
    rpi = device_rates(load_example_board("raspberry_pi_4"))
    assert "peak_gflops_fp32" in rpi.defaulted and rpi.gflops_fp32 > 0 and rpi.bandwidth_gbs > 0
    measured = load_device({"schema_version": 1, "name": "m", "kind": "cpu", "peak_gflops_fp32": 100.0,
                            "mem_bw_triad_gbs": 10.0})
    r = device_rates(measured)
    assert r.gflops_fp32 == 100.0 and r.bandwidth_gbs == 10.0 and "peak_gflops_fp32" not in r.defaulted
    bare = load_device({"schema_version": 1, "name": "bare", "kind": "cpu"})
    with pytest.raises(BoardError, match="bare"):
        device_rates(bare)
    with pytest.raises(BoardError):
        RooflineModel().predict(load_onnx_cached(), [default_plan(load_onnx_cached())], bare)


_cached = {}


def load_onnx_cached():
    if "g" not in _cached:
        import tempfile
        from pathlib import Path

        from tests.optimiser.models import make_residual_model

        _cached["g"] = load_onnx(make_residual_model(Path(tempfile.mkdtemp()) / "r.onnx"))
    return _cached["g"]


def test_channel_sources_follow_pruning(graph):
    src = channel_sources(graph)
    assert src["conv2"] == {"conv1": 1.0}          # conv1 -> relu1 -> conv2
    assert set(src["conv4"]) == {"conv1", "conv3"}  # through the residual add
    pairs = interaction_pairs(graph)
    assert ("conv1", "conv2") in pairs and ("conv3", "conv4") in pairs


def test_int8_depthwise_fallback_is_costed_at_its_share_of_the_peak(tmp_path):
    from perfpredict.primitives.quantized import DEPTHWISE_FALLBACK_SHARE
    from tests.perfpredict.test_features import DEVICE, _pointwise_depthwise

    g = _pointwise_depthwise(tmp_path / "pwdw.onnx")
    costs = RooflineModel()._costs(g, DEVICE)
    dw = [n.name for n in g.nodes].index("dw")
    int8 = Choice("conv.int8", "NHWC", "int8")
    fast, slow = costs.node_ms(dw, int8, 0.5), costs.node_ms(dw, int8, 14 / 16)
    node = g.nodes[dw]
    expected = 2.0 * node.macs * 14 / 16 / (costs.rates.gops_int8 * 1e9 * DEPTHWISE_FALLBACK_SHARE) * 1e3
    assert slow == pytest.approx(expected, rel=0.05) and slow > 100 * fast
    assert costs.node_ms(dw, Choice("conv.onednn"), 14 / 16) < 2 * costs.node_ms(dw, Choice("conv.onednn"), 1.0)


def test_a_swish_is_free_only_after_a_primitive_that_applies_it(board):
    from perfpredict.runtime.executor import fusion_patterns
    from tests.perfpredict.synthetic import zoo_graph

    g = zoo_graph("efficientnet")
    f = next(f for f in fusion_patterns(g) if f.activation == "swish")
    model = RooflineModel()
    convs = [Choice("conv.dnnl", "NHWC", "fp32"), Choice("conv.onednn", "NHWC", "fp32"),
             Choice("conv.dnnl_int8", "NHWC", "int8")]
    for act in f.nodes:  # the Sigmoid and the Mul, both tied to the conv's layout and precision in a search
        opts = [Choice(default_plan(g).choices[act].primitive, "NHWC", "fp32")]
        costs = model.edge_costs(g, board, f.producer, act, convs, opts)
        assert costs[0, 0] == 0.0 and costs[1, 0] > 0.0 and costs[2, 0] > 0.0  # int8 conv, fp32 activation


def test_int8_activation_bytes_follow_the_kernel():
    # one byte per element where the int8 kernel keeps its input's scale; float traffic where it requantises
    from perfpredict.analytical import INT8_CONCAT_FALLBACK_SCALE, int8_activation_scale
    from tests.perfpredict.synthetic import zoo_graph

    g = zoo_graph("densenet")
    first = {n.op: n for n in reversed(g.nodes)}
    assert int8_activation_scale(first["Relu"], "NCHW") == 0.25
    assert int8_activation_scale(first["Conv"], "NHWC") == 0.25
    assert int8_activation_scale(first["BatchNormalization"], "NHWC") == 1.0
    assert int8_activation_scale(first["Concat"], "NHWC") == 1.0
    assert int8_activation_scale(first["Concat"], "NCHW") == INT8_CONCAT_FALLBACK_SCALE
