import json

import pytest

from perfpredict.errors import PlanError
from perfpredict.graph import load_onnx
from perfpredict.plan import Choice, Plan, default_plan, is_prunable, validate_plan
from tests.conftest import make_conv_model


@pytest.fixture
def graph(tiny_onnx):
    return load_onnx(tiny_onnx)


def test_default_plan_covers_every_node_and_validates(graph):
    plan = default_plan(graph)
    assert set(plan.choices) == {n.name for n in graph.nodes}
    assert plan.choices["conv"].primitive == "conv.onednn"
    validate_plan(graph, plan)


def test_json_round_trip(graph, tmp_path):
    plan = Plan({"conv": Choice("conv.winograd", "NCHW", "fp32", 0.0)}, name="w", graph_id=graph.graph_id)
    path = plan.save(tmp_path / "plan.json")
    data = json.loads(path.read_text())
    assert data["schema_version"] == 1 and data["choices"]["conv"]["primitive"] == "conv.winograd"
    again = Plan.load(path)
    assert again == plan and again.key == plan.key
    assert again.resolve(graph)["fc"] == default_plan(graph).choices["fc"]


@pytest.mark.parametrize("choice, message", [
    (Choice("conv.gemm1x1"), "does not apply; legal: conv.onednn"),
    (Choice("conv.nope"), "unknown primitive 'conv.nope'"),
    (Choice("conv.native", layout="NHWC"), "runs in layouts"),
    (Choice("conv.winograd", precision="int8"), "supports precisions"),
    (Choice("conv.onednn", prune=0.95), "outside"),
])
def test_illegal_choices_are_named(graph, choice, message):
    with pytest.raises(PlanError, match=message):
        validate_plan(graph, Plan({"conv": choice}))


def test_unknown_node_and_foreign_graph(graph):
    with pytest.raises(PlanError, match="does not have"):
        validate_plan(graph, Plan({"ghost": Choice("conv.onednn")}))
    with pytest.raises(PlanError, match="was made for graph 0{16}, not for .*; a plan of this model comes from "
                                        "`perfpredict optimise`"):
        validate_plan(graph, Plan({}, graph_id="0" * 16))


def test_prunability(graph, tmp_path):
    assert is_prunable(graph, graph.node("conv"))
    assert not is_prunable(graph, graph.node("fc"))  # produces the graph output
    dw = load_onnx(make_conv_model(tmp_path / "dw.onnx", cin=8, cout=8, groups=8, with_bn=False))
    assert not is_prunable(dw, dw.node("conv"))
    with pytest.raises(PlanError, match="cannot be pruned"):
        validate_plan(graph, Plan({"fc": Choice("gemm.blas", prune=0.5)}))


def test_bad_plan_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PlanError, match="not valid JSON"):
        Plan.load(bad)
    bad.write_text(json.dumps({"choices": {"conv": {"primitive": "conv.onednn", "speed": 3}}}))
    with pytest.raises(PlanError, match="unknown keys"):
        Plan.load(bad)
    bad.write_text(json.dumps({"schema_version": 7, "choices": {}}))
    with pytest.raises(PlanError, match="schema_version 7"):
        Plan.load(bad)
