"""The benchmarks' shared options: every search benchmark's parser gives what the shared search reads."""

from __future__ import annotations

import argparse
import json

import pytest

from benchmarks import bench_breakdown, bench_memory, bench_realised
from benchmarks.harness import add_plan_options, plan_from_args, search_parser
from optimiser.run import OptimiseOptions
from perfpredict.plan import Choice, Plan, default_plan
from tests.perfpredict.runtime.nets import residual_se_graph


def test_the_shared_parser_carries_the_search_options():
    args = search_parser("x", "out.json").parse_args([])
    assert (args.trials, args.threads, args.max_drop) == (300, 2, 1.0)
    assert args.polish_rounds == OptimiseOptions.polish_rounds
    assert search_parser("x", "out.json").parse_args(["--polish-rounds", "0"]).polish_rounds == 0


@pytest.mark.parametrize("bench", [bench_breakdown, bench_memory, bench_realised])
def test_each_search_benchmark_accepts_the_shared_options(bench, monkeypatch):
    seen = {}

    def fake_run(args, *_):  # noqa: ANN001, ANN202
        seen["args"] = args
        return 0

    monkeypatch.setattr(bench, "run_and_write", fake_run)
    assert bench.main(["--models", "resnet18", "--polish-rounds", "3"]) == 0
    assert seen["args"].polish_rounds == 3 and seen["args"].models == "resnet18"



def test_the_breakdown_profiles_onednn_only_when_asked(monkeypatch):
    seen = []
    monkeypatch.setattr(bench_breakdown, "run_and_write", lambda args, *_: seen.append(args) or 0)
    assert bench_breakdown.main(["--models", "squeezenet1_1", "--onednn-passes", "5"]) == 0
    assert bench_breakdown.main(["--models", "squeezenet1_1"]) == 0
    assert [a.onednn_passes for a in seen] == [5, 0]


def test_a_single_model_benchmark_times_the_plan_it_is_given(tmp_path):
    graph = residual_se_graph()
    ap = argparse.ArgumentParser()
    add_plan_options(ap)

    def plan(*argv):
        args = ap.parse_args(list(argv))
        args.model = "residual_se"
        return plan_from_args(args, graph)

    assert plan() == default_plan(graph)
    mine = Plan({n.name: Choice("relu.torch", "NHWC", "fp32") if n.op == "Relu" else c
                 for n, c in zip(graph.nodes, default_plan(graph).choices.values())})
    mine.save(tmp_path / "plan.json")
    assert plan("--plan", str(tmp_path / "plan.json")) == mine
    result = tmp_path / "realised.json"
    result.write_text(json.dumps({"rows": [{"model": "residual_se", "lossless": {"plan": mine.to_dict()},
                                            "lossy": {"plan": default_plan(graph).to_dict()}}]}))
    assert plan("--from-realised", f"{result}:lossless") == mine
    assert plan("--from-realised", f"{result}:int8+prune") == default_plan(graph)
    for bad in (["--from-realised", f"{result}:fast"], ["--plan", "p.json", "--from-realised", f"{result}:lossless"]):
        with pytest.raises(SystemExit):
            plan(*bad)
