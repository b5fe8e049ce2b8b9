"""The benchmarks' shared options: every search benchmark's parser gives what the shared search reads."""

from __future__ import annotations

import pytest

from benchmarks import bench_breakdown, bench_memory, bench_realised
from benchmarks.harness import search_parser
from optimiser.run import OptimiseOptions


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
