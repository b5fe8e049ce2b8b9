"""Latency / peak-memory trade-off on this machine: what a 2x lower peak memory costs in latency (a figure).

For each model a two-objective search (latency x peak memory, Q-learning, 300 trials, the shipped predictor,
``--max-drop`` points of fidelity loss allowed, as `perfpredict optimise MODEL --device-features local
--objective latency --objective memory --max-accuracy-drop D` runs it) yields a predicted Pareto front. From
the feasible plans it evaluated we take

* ``fastest``:   the plans of lowest predicted latency (the default plan among them);
* ``half-mem``:  the plans of lowest predicted latency among those predicted to need at most half the default
                 plan's peak memory (none when no such plan was found);

the ``--validate`` (default 3) best predicted of each, and measure them with the default plan on this machine,
keeping the measured fastest of each kind (the on-device validation `perfpredict optimise` does for its final
plans): latency round-robin (perfpredict.measure, 50 ms idle before each timed call) and peak memory by torch's
allocator (perfpredict.runtime.measure_plan: deployed weights + the allocator's peak during a forward pass).
Reported: measured memory ratio default / half-mem and the latency cost of half-mem over fastest.

    .venv/bin/python benchmarks/bench_memory.py [--models resnet18,mobilenet_v2,squeezenet1_1,efficientnet_b0]
        [--threads 2] [--trials 300] [--max-drop 1.0] [--validate 3] [--out benchmarks/results/memory.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import plan_calls, run_and_write, search_parser, timing_kwargs  # noqa: E402
from optimiser.run import OptimiseOptions, optimise  # noqa: E402
from perfpredict.measure import measure_interleaved  # noqa: E402
from perfpredict.models import load_model  # noqa: E402
from perfpredict.plan import default_plan  # noqa: E402
from perfpredict.runtime import measure_plan  # noqa: E402

def _pick(result, k: int) -> dict:  # noqa: ANN001 - optimiser.loop.SearchResult
    """The ``k`` predicted-fastest plans overall and at half memory, among the default and the feasible evaluated
    plans (distinct plans, best first)."""
    space = result.problem.space
    d = result.default_costs
    cands, seen = [], set()
    for plan, c in [(default_plan(space.graph), d)] + [(space.decode(idx), c) for idx, c in
                                                        zip(result.archive_idx, result.archive_costs) if c.feasible]:
        if plan.key not in seen:
            seen.add(plan.key)
            cands.append((plan, c))
    cands.sort(key=lambda pc: pc[1].latency_ms)
    picked = {"default_predicted": {"latency_ms": d.latency_ms, "peak_mem_bytes": d.peak_mem_bytes}}
    for label, pool in (("fastest", cands), ("half-mem", [pc for pc in cands
                                                           if pc[1].peak_mem_bytes <= 0.5 * d.peak_mem_bytes])):
        picked[label] = [{"plan": plan, "latency_ms": c.latency_ms, "peak_mem_bytes": c.peak_mem_bytes,
                          "accuracy_drop_pct": c.accuracy_drop_pct} for plan, c in pool[:k]]
    return picked


def bench_model(model: str, device, predictor, pname: str, workdir: Path, args) -> dict:  # noqa: ANN001
    graph, _ = load_model(model)
    opts = OptimiseOptions(trials=args.trials, threads=args.threads, objectives=("latency", "memory"),
                           max_accuracy_drop_pct=args.max_drop, measure=False, progress=False, seed=0,
                           polish_rounds=args.polish_rounds,
                           outdir=workdir / model)
    outcome = optimise(graph, device, opts, predictor, pname)
    picked = _pick(outcome.result, args.validate)
    plans = {"default": default_plan(graph)}
    for label in ("fastest", "half-mem"):
        plans |= {f"{label}#{i}": c["plan"] for i, c in enumerate(picked[label])}
    x = np.random.default_rng(0).standard_normal(graph.input_shape).astype(np.float32)
    fns = plan_calls(graph, plans, args.threads, x)
    lat = measure_interleaved(fns, warmup=3, min_repeats=5, max_repeats=args.max_repeats, time_cap_s=args.time_cap,
                              threads=args.threads, seed=0, **timing_kwargs(args))
    row = {"model": model, "threads": args.threads, "front_points": outcome.report["pareto"]["points"],
           "plans": {}, "validated": {}}
    kept = {"default": ("default", picked["default_predicted"])}
    for label in ("fastest", "half-mem"):
        runs = [(f"{label}#{i}", c) for i, c in enumerate(picked[label])]
        row["validated"][label] = [{"predicted_ms": c["latency_ms"], "measured_ms": lat[name].median_ms}
                                   for name, c in runs]
        if runs:
            kept[label] = min(runs, key=lambda nc: lat[nc[0]].median_ms)
    for label, (name, pred) in kept.items():
        plan = plans[name]
        _, mem = measure_plan(graph, plan, threads=args.threads, memory=True, max_repeats=5, time_cap_s=0.5)
        row["plans"][label] = {"measured_ms": lat[name].median_ms, "iqr_ms": lat[name].iqr_ms,
                               "measured_peak_mem_bytes": float(mem.peak_bytes),
                               "predicted_ms": pred.get("latency_ms"),
                               "predicted_peak_mem_bytes": pred.get("peak_mem_bytes"),
                               "int8_nodes": sum(c.precision == "int8" for c in plan.choices.values()),
                               "pruned_nodes": sum(c.prune > 0 for c in plan.choices.values())}
    p = row["plans"]
    if "half-mem" in p:
        row["memory_ratio_measured"] = p["default"]["measured_peak_mem_bytes"] / p["half-mem"]["measured_peak_mem_bytes"]
        row["latency_cost_vs_fastest"] = p["half-mem"]["measured_ms"] / p["fastest"]["measured_ms"] - 1.0
    return row


def _table(rows: list[dict]) -> str:
    lines = ["| model | default ms / MB | fastest ms / MB | half-mem ms / MB | memory ratio (measured) "
             "| latency cost vs fastest |", "|---|---|---|---|---|---|"]
    for r in rows:
        def cell(k: str) -> str:
            v = r["plans"].get(k)
            return "none found" if v is None else f"{v['measured_ms']:.2f} / {v['measured_peak_mem_bytes'] / 2**20:.1f}"
        ratio = f"{r['memory_ratio_measured']:.2f}x" if "memory_ratio_measured" in r else "-"
        cost = f"{100 * r['latency_cost_vs_fastest']:+.1f}%" if "latency_cost_vs_fastest" in r else "-"
        lines.append(f"| {r['model']} | {cell('default')} | {cell('fastest')} | {cell('half-mem')} | {ratio} | {cost} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = search_parser(__doc__.splitlines()[0], "benchmarks/results/memory.json")
    ap.add_argument("--validate", type=int, default=3, help="plans of each kind measured on this machine (default 3)")
    return run_and_write(ap.parse_args(argv), bench_model, _table)


if __name__ == "__main__":
    sys.exit(main())
