"""`perfpredict optimise` and `perfpredict validate`: end to end on a small model, and one-line errors."""

from __future__ import annotations

import contextlib
import json

import pytest

from cli.main import main
from perfpredict.graph import load_onnx
from perfpredict.plan import Choice, Plan, validate_plan
from tests.optimiser.models import make_residual_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_residual_model(tmp_path_factory.mktemp("cli") / "resid.onnx")


def _one_line_error(capsys, code, expected_code):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == expected_code
    assert len(err) == 1 and err[0].startswith("perfpredict") and "Traceback" not in err[0]
    return err[0]


def test_optimise_json_end_to_end(model, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["optimise", model, "--device-features", "raspberry_pi_4", "--predictor", "roofline",
                 "--trials", "24", "--no-measure", "--max-accuracy-drop", "100", "--calibration-samples", "2",
                 "-o", str(out), "--json"])
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["trials"] == 24 and rep["best"]["feasible"]
    assert "fidelity" in rep["accuracy_model"] and rep["space"]["precisions"] == ["fp32", "int8"]
    plan = Plan.load(out / "plan.json")
    validate_plan(load_onnx(model), plan)
    assert {"plan", "report", "trials", "pareto_csv", "pareto_png"} <= set(rep["files"])


def test_a_second_run_in_the_same_directory_says_it_resumed(model, tmp_path, capsys):
    args = ["optimise", model, "--device-features", "raspberry_pi_4", "--predictor", "roofline", "--trials", "16",
            "--no-measure", "--no-progress", "-o", str(tmp_path), "--json"]
    for strategy, resumed in (("qlearning", "Q-table"), ("tpe", "Optuna study")):
        assert main([*args, "--strategy", strategy]) == 0
        assert not any(n.startswith("resumed from") for n in json.loads(capsys.readouterr().out)["notes"])
        assert main([*args, "--strategy", strategy]) == 0
        notes = [n for n in json.loads(capsys.readouterr().out)["notes"] if n.startswith("resumed from")]
        assert len(notes) == 1 and notes[0].startswith(f"resumed from {resumed}"), notes


def test_exact_strategy_and_text_output(model, tmp_path, capsys):
    code = main(["optimise", model, "--device-features", "raspberry_pi_4", "--predictor", "roofline",
                 "--strategy", "exact", "--no-measure", "--memory-budget", "1000", "-o", str(tmp_path)])
    assert code == 0
    text = capsys.readouterr().out
    assert "exact search" in text and "speedup over default" in text


def test_validate_measures_a_plan(model, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["optimise", model, "--device-features", "raspberry_pi_4", "--predictor", "roofline",
                 "--trials", "8", "--no-measure", "-o", str(out), "--json"]) == 0
    capsys.readouterr()
    code = main(["validate", model, "--plan", str(out / "plan.json"), "--device-features", "raspberry_pi_4",
                 "--predictor", "roofline", "--threads", "1", "--json"])
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["plan"]["measured_ms"] > 0 and rep["default"]["measured_ms"] > 0 and rep["speedup_measured"] > 0
    assert "breakdown" not in rep


def test_validate_breaks_the_plan_down_by_primitive(model, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    graph = load_onnx(model)
    Plan({n.name: Choice("conv.dnnl", "NHWC", "fp32") for n in graph.nodes if n.op == "Conv"}).save(plan)
    args = ["validate", model, "--plan", str(plan), "--device-features", "raspberry_pi_4", "--predictor", "roofline",
            "--threads", "1", "--breakdown"]
    assert main(args + ["--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    rows = rep["breakdown"]
    groups = {r["group"]: r for r in rows}
    convs = sum(1 for n in graph.nodes if n.op == "Conv")
    assert groups["conv.dnnl fp32 NHWC"]["steps"] == convs and "layout" in groups
    assert sum(r["share"] for r in rows) == pytest.approx(1.0) and all(r["ms"] > 0 for r in rows)
    chains = rep["chains"]["chains"]  # each chain runs its calls as one step of the forward pass
    assert rep["chains"]["forward_steps"] == sum(r["steps"] for r in rows) - sum(chains) + len(chains)
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "where the plan's time goes" in text and "conv.dnnl fp32 NHWC" in text
    assert ("chain(s) of oneDNN calls" in text) == bool(chains)


@pytest.mark.parametrize("argv,code,needle", [
    (["optimise", "{model}", "--device-features", "raspberry_pi_4", "--stratgy", "tpe"], 2, "unrecognized"),
    (["optimise", "{model}", "--device-features", "raspberry_pi_4", "--strategy", "annealing"], 2, "invalid choice"),
    (["optimise", "{model}", "--device-features", "raspberry_pi_4", "--trials", "0"], 2, "positive integer"),
    (["optimise", "{model}", "--device-features", "{bad_board}", "--no-measure"], 1, "bad.json"),
    (["optimise", "{model}", "--device-features", "{bare_board}", "--predictor", "roofline", "--no-measure"], 1,
     "peak_gflops_fp32"),
    (["optimise", "nosuchmodel.onnx", "--device-features", "raspberry_pi_4"], 1, "nosuchmodel"),
    (["optimise", "{model}", "--device-features", "raspberry_pi_4", "--predictor", "roofline", "--lossless",
      "--max-accuracy-drop", "1", "--no-measure"], 1, "lossless"),
    (["optimise", "{model}", "--device-features", "raspberry_pi_4", "--predictor", "roofline", "--no-measure",
      "--prune-ratios", "0,x"], 1, "prune-ratios"),
    (["optimise", "{model}", "--device-features", "raspberry_pi_4", "--predictor", "nosuchckpt"], 1, "nosuchckpt"),
    (["validate", "{model}", "--device-features", "raspberry_pi_4", "--plan", "{missing_plan}"], 1, "no such plan"),
])
def test_bad_input_gives_one_line_error(model, tmp_path, capsys, argv, code, needle):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"schema_version": 1, "name": "bare", "kind": "cpu"}))
    subst = {"model": model, "bad_board": str(bad), "bare_board": str(bare),
             "missing_plan": str(tmp_path / "missing.json")}
    args = [a.format(**subst) for a in argv] + ["-o", str(tmp_path / "o")] if argv[0] == "optimise" else \
        [a.format(**subst) for a in argv]
    with pytest.raises(SystemExit) if code == 2 else contextlib.nullcontext() as exc:
        rc = main(args)
    if code == 2:
        rc = exc.value.code
    err = _one_line_error(capsys, rc, code)
    assert needle in err


def test_dataset_records_the_threads_measured_with(model, tmp_path, capsys):
    import torch

    from perfpredict.dataset import open_store

    db = tmp_path / "m.db"
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        code = main(["optimise", model, "--device-features", "raspberry_pi_4", "--measure", "--predictor",
                     "roofline", "--trials", "4", "--dataset", str(db), "-o", str(tmp_path / "o"), "--json"])
    finally:
        torch.set_num_threads(before)
    assert code == 0
    capsys.readouterr()
    records = list(open_store(db).iter_records(kind="model"))
    assert records and {r.threads for r in records} == {2}
    # the records carry the model's graph: training reads them although the model is no zoo spec
    from perfpredict.samples import load_samples

    samples = load_samples(db).models
    assert len(samples) == len(records) and {s.template.graph_id for s in samples} == {records[0].graph_id}
