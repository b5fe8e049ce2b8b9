"""Search quality on predicted costs: gap to the exact optimum versus trials, per strategy and model.

For each zoo model the full search space (primitive x layout x precision x prune ratio per layer) is
costed by the roofline model on a board (its latency is exactly additive, so the ILP of
``optimiser.strategies.exact`` gives the true optimum). Each strategy (Q-learning, TPE, NSGA-II,
random search) runs with several seeds; we record the best predicted latency after 10, 30, 100, 300
and 1000 trials as the gap to the optimum (%), the number of trials to get within 5% and 1%, and the
ratio of random search's trials-to-5% to each strategy's ("> x" when random search never got there,
i.e. a lower bound). Finally, the wall time of a 300-trial Q-learning search on resnet50 with the
default predictor (the shipped checkpoint when present, else the roofline model; ``--predictor`` for
another), through the search loop, is measured.

Usage (slow at full size; the machine should be quiet):

    .venv/bin/python benchmarks/bench_search.py                       # 6 models, 4 strategies, 3 seeds, 1000
    .venv/bin/python benchmarks/bench_search.py --quick               # 5 models, 2 seeds, 300 trials
    .venv/bin/python benchmarks/bench_search.py --models resnet18 --strategies qlearning,random --seeds 1

Writes ``OUT/bench_search.json`` and ``OUT/bench_search.md`` (default OUT: runs/bench_search).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import machine  # noqa: E402

CHECKPOINTS = (10, 30, 100, 300, 1000)
MODELS = ("resnet18", "mobilenet_v2", "squeezenet1_1", "efficientnet_b0", "mnasnet", "resnet50")
STRATEGIES = ("qlearning", "tpe", "nsga2", "random")


def _setup(model: str, board, lossless: bool):
    from optimiser.objectives import Evaluator, Objective, additive_costs
    from optimiser.space import SearchSpace, SpaceConfig
    from optimiser.strategies.exact import solve_exact
    from perfpredict.analytical import RooflineModel
    from perfpredict.models import load_model

    graph, _ = load_model(model)
    t = time.perf_counter()
    space = SearchSpace(graph, SpaceConfig(lossless=lossless))
    roof = RooflineModel()
    add = additive_costs(space, roof, board)
    exact = solve_exact(space, add)
    ev = Evaluator(space, roof, board, Objective())
    default = ev(space.default_indices()[None])[0].latency_ms
    info = {"free_nodes": len(space.free), "log10_plans": round(space.log10_size, 1),
            "optimum_ms": exact.objective, "default_ms": default, "exact_seconds": exact.info["seconds"],
            "exact_optimal": exact.optimal, "setup_seconds": round(time.perf_counter() - t, 2)}
    return space, add, roof, exact.objective, info


def _run(space, add, roof, board, strategy: str, seed: int, trials: int, batch: int, optimum: float):
    from optimiser.objectives import Evaluator, Objective
    from optimiser.strategies import Problem, make_strategy

    ev = Evaluator(space, roof, board, Objective())
    prob = Problem(space, Objective(), ev, add, True, n_trials=trials, seed=seed)
    strat = make_strategy(strategy, prob)
    curve = []
    t = time.perf_counter()
    while strat.told < trials:
        cands = strat.ask(min(batch, trials - strat.told))
        if not cands:
            break
        costs = ev(np.stack([c.indices for c in cands]))
        strat.tell(cands, costs)
        best = strat.best[1].latency_ms
        curve += [100.0 * (best / optimum - 1.0)] * len(cands)
    return np.array(curve), time.perf_counter() - t


def _first(curve: np.ndarray, within: float) -> float:
    hit = np.flatnonzero(curve <= within + 1e-9)
    return float(hit[0] + 1) if len(hit) else float("inf")


def _wall_time_resnet50(board, trials: int = 300, predictor_name: str | None = None) -> dict:
    """Wall time of a Q-learning search on resnet50's full space with ``predictor_name`` (default: the default
    predictor), via the loop."""
    from optimiser.loop import SearchConfig, run_search
    from optimiser.run import OptimiseOptions, build_search, resolve_predictor
    from optimiser.space import SearchSpace
    from optimiser.strategies import make_strategy
    from perfpredict.models import load_model

    graph, _ = load_model("resnet50")
    predictor, name = resolve_predictor(predictor_name)
    t = time.perf_counter()
    import tempfile

    # a fresh output directory: a Q-table left by an earlier run would be resumed
    opts = OptimiseOptions(trials=trials, measure=False, progress=False, outdir=Path(tempfile.mkdtemp()))
    prob, ev, space = build_search(graph, board, predictor, opts, space=SearchSpace(graph))
    strat = make_strategy("qlearning", prob)
    setup = time.perf_counter() - t
    res = run_search(prob, strat, ev, SearchConfig(trials=trials, progress=False))
    return {"predictor": name, "trials": res.trials, "setup_seconds": round(setup, 2),
            "search_seconds": round(res.seconds, 2), "total_seconds": round(time.perf_counter() - t, 2),
            "best_ms": res.best_costs.latency_ms, "default_ms": res.default_costs.latency_ms}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--board", default="raspberry_pi_4")
    ap.add_argument("--lossless", action="store_true", help="search fp32 unpruned plans only")
    ap.add_argument("--quick", action="store_true", help="5 models, 2 seeds, 300 trials")
    ap.add_argument("--skip-wall-time", action="store_true")
    ap.add_argument("--predictor", default=None,
                    help="checkpoint (path or name under trained_models/) for the resnet50 wall time (default: the "
                         "default predictor)")
    ap.add_argument("--out", default="runs/bench_search")
    args = ap.parse_args(argv)
    if args.quick:
        args.models = ",".join(MODELS[:5])
        args.seeds, args.trials = 2, 300
    from perfpredict.devices import load_device, load_example_board

    board = load_example_board(args.board) if not Path(args.board).exists() else load_device(args.board)
    models = [m for m in args.models.split(",") if m]
    strategies = [s for s in args.strategies.split(",") if s]
    checkpoints = [c for c in CHECKPOINTS if c <= args.trials]
    out = {"board": board.name, "trials": args.trials, "seeds": args.seeds, "batch": args.batch,
           "lossless": args.lossless, "host": platform.node(), "python": platform.python_version(),
           "machine": machine(), "models": {}}
    for model in models:
        space, add, roof, optimum, info = _setup(model, board, args.lossless)
        print(f"{model}: {info}", flush=True)
        res = {"space": info, "strategies": {}}
        for strategy in strategies:
            curves, secs = [], []
            for seed in range(args.seeds):
                curve, s = _run(space, add, roof, board, strategy, seed, args.trials, args.batch, optimum)
                curves.append(curve)
                secs.append(s)
            gaps = {c: float(np.median([cv[min(c, len(cv)) - 1] for cv in curves])) for c in checkpoints}
            to5 = float(np.median([_first(cv, 5.0) for cv in curves]))
            to1 = float(np.median([_first(cv, 1.0) for cv in curves]))
            res["strategies"][strategy] = {"median_gap_pct": gaps, "trials_to_5pct": to5, "trials_to_1pct": to1,
                                           "seconds_per_run": float(np.median(secs))}
            print(f"  {strategy:9s} gap% {', '.join(f'{c}:{g:.2f}' for c, g in gaps.items())}  to5% {to5:g}  "
                  f"to1% {to1:g}  {np.median(secs):.1f}s/run", flush=True)
        rnd = res["strategies"].get("random")
        if rnd is not None:
            for strategy, r in res["strategies"].items():
                if r["trials_to_5pct"] == float("inf"):
                    r["ratio_vs_random_5pct"] = None
                elif rnd["trials_to_5pct"] == float("inf"):
                    r["ratio_vs_random_5pct"] = f"> {args.trials / r['trials_to_5pct']:.3g}"
                else:
                    r["ratio_vs_random_5pct"] = rnd["trials_to_5pct"] / r["trials_to_5pct"]
        out["models"][model] = res
    if not args.skip_wall_time:
        out["resnet50_wall_time"] = _wall_time_resnet50(board, predictor_name=args.predictor)
        print(f"resnet50 300-trial Q-learning wall time: {out['resnet50_wall_time']}", flush=True)
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "bench_search.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    (dest / "bench_search.md").write_text(_markdown(out, checkpoints) + "\n")
    print(f"wrote {dest / 'bench_search.json'} and {dest / 'bench_search.md'}")
    return 0


def _markdown(out: dict, checkpoints: list[int]) -> str:
    lines = [f"# Search quality on predicted costs ({out['board']}, {out['seeds']} seeds, batch {out['batch']})", "",
             "| model | strategy | " + " | ".join(f"gap@{c}" for c in checkpoints) + " | to 5% | to 1% | vs random |",
             "|---|---|" + "---|" * (len(checkpoints) + 3)]
    for model, res in out["models"].items():
        for strategy, r in res["strategies"].items():
            ratio = r.get("ratio_vs_random_5pct")
            ratio = "-" if ratio is None else (ratio if isinstance(ratio, str) else f"{ratio:.3g}x")
            lines.append(f"| {model} | {strategy} | " + " | ".join(f"{r['median_gap_pct'][c]:.2f}%"
                                                               for c in checkpoints)
                         + f" | {r['trials_to_5pct']:g} | {r['trials_to_1pct']:g} | {ratio} |")
    if "resnet50_wall_time" in out:
        w = out["resnet50_wall_time"]
        lines += ["", f"resnet50, 300-trial Q-learning search with {w['predictor']}: {w['total_seconds']} s "
                      f"(setup {w['setup_seconds']} s, search {w['search_seconds']} s)"]
    if "machine" in out:
        m = out["machine"]
        lines += ["", f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, load average "
                      f"{' '.join(m['load_average'])}; torch {m['torch']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
