"""`perfpredict predict`: the note on int8 depthwise layers on fbgemm's slow path."""

from __future__ import annotations

import json

from cli.main import main
from perfpredict.plan import Choice, Plan
from tests.perfpredict.test_features import _pointwise_depthwise


def _plans(tmp_path):
    int8 = Choice("conv.int8", "NHWC", "int8")
    slow = Plan({"conv1": Choice("conv.onednn", prune=0.125), "dw": int8}, name="slow")  # 14 channels kept
    fast = Plan({"conv1": Choice("conv.onednn", prune=0.5), "dw": int8}, name="fast")  # 8 channels kept
    paths = []
    for plan in (slow, fast):
        paths.append(tmp_path / f"{plan.name}.json")
        plan.save(paths[-1])
    return [str(p) for p in paths]


def test_predict_names_int8_depthwise_layers_on_the_slow_path(tmp_path, capsys):
    model = str(tmp_path / "pwdw.onnx")
    _pointwise_depthwise(tmp_path / "pwdw.onnx")
    slow, fast = _plans(tmp_path)
    args = ["predict", model, "--plan", slow, "--plan", fast, "--device-features", "xeon_gold_6240"]
    assert main(args + ["--json"]) == 0
    rows = {r["plan"]: r for r in json.loads(capsys.readouterr().out)["predictions"]}
    assert rows["slow"]["int8_depthwise_slow_path"] == ["dw"] and rows["fast"]["int8_depthwise_slow_path"] == []
    assert rows["slow"]["latency_ms"] > rows["fast"]["latency_ms"]  # the shipped predictor costs the slow path
    assert main(args) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:") and "depthwise" in line]
    assert len(notes) == 1 and "plan slow" in notes[0] and "dw" in notes[0] and "multiple of 8" in notes[0]


def test_ops_the_predictor_never_saw_are_a_one_line_warning(tmp_path, capsys):
    import warnings

    from perfpredict.gnn import GNNConfig
    from perfpredict.gnn_predictor import GNNPredictor
    from perfpredict.train import TrainOptions
    from tests.perfpredict.synthetic import synthetic_samples

    samples = synthetic_samples(plans_per_graph=4, families=("resnet",), variants=1)
    GNNPredictor(GNNConfig(hidden=8, layers=1)).fit(samples, options=TrainOptions(epochs=1)).save(tmp_path / "p")
    warnings.onceregistry.clear()
    args = ["predict", "efficientnet_b0", "--resolution", "32", "--predictor", str(tmp_path / "p"),
            "--device-features", "xeon_gold_6240", "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["predictions"][0]["latency_ms"] > 0
    warning = [line for line in captured.err.splitlines() if "never appeared" in line]
    assert len(warning) == 1 and warning[0].startswith("perfpredict: warning: ") and "ops Sigmoid" in warning[0]
