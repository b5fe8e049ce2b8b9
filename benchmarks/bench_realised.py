"""Realised speedup of optimised plans on this machine (a figure, not a test).

For each model, two searches run through :func:`optimiser.run.optimise` exactly as ``perfpredict optimise
MODEL --device-features local --threads T`` runs them (the shipped predictor by default, Q-learning,
300 trials, the final plans measured and the measured-fastest kept):

* ``lossless``  fp32, no pruning;
* ``lossy``     int8 and pruning allowed within --max-drop points of accuracy; the zoo models carry random
                weights, so "accuracy" is fidelity: 100 x top-1 disagreement with the fp32 model on seeded
                calibration inputs (the measured drop, top-1 agreement and SQNR of the kept plan are reported).

When optimise's on-device refinement (``--refine-nodes``) changed a plan, the plan it started from is timed too
(``@unrefined``; ``refinement_speedup``: its time over the refined plan's).

Then the default plan, both optimised plans and ONNX Runtime's default session (same thread count) are timed
round-robin with perfpredict.measure.measure_interleaved in steady-state turns (``--settle`` seconds idle so that
the previous candidate's spinning thread pool does not share the cores, ``--block-warmup`` untimed calls, then
``--block`` timed calls) and in lockstep (every candidate in every round, until every median's 95% CI is within 2%
or the time cap), so that the ratios come from the same minutes; the dependency-free baseline (C reference loops
for conv/gemm), a hundred times slower, is timed after them on its own. Prints a table and writes JSON with the
machine, every LatencyStats and the kept plans.

``--versus P`` runs both searches again with a second predictor (checkpoint) and times its two plans in the same
rounds: two checkpoints compared by the plans they find, in one session, so that the VM's drift between runs
does not decide (``versus`` columns: the second predictor's plan time over the first's).

    .venv/bin/python benchmarks/bench_realised.py [--models resnet18,mobilenet_v2,squeezenet1_1,efficientnet_b0]
        [--threads 2] [--trials 300] [--max-drop 1.0] [--predictor proxy] [--versus CHECKPOINT] [--no-baseline]
        [--out benchmarks/results/realised.json]

Run it on a quiet machine.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_runtime import baseline_plan  # noqa: E402
from benchmarks.harness import plan_calls, run_and_write, search_parser, timing_kwargs  # noqa: E402
from optimiser.run import OptimiseOptions, optimise, resolve_predictor  # noqa: E402
from perfpredict.measure import measure_interleaved  # noqa: E402
from perfpredict.models import load_model  # noqa: E402
from perfpredict.plan import default_plan  # noqa: E402
from perfpredict.runtime import ort_session  # noqa: E402


def _search(graph, device, predictor, name, args, outdir: Path, lossless: bool,  # noqa: ANN001
            polish_rounds: int | None = None):
    opts = OptimiseOptions(trials=args.trials, threads=args.threads, lossless=lossless,
                           max_accuracy_drop_pct=None if lossless else args.max_drop, outdir=outdir, progress=False,
                           seed=0, polish_rounds=args.polish_rounds if polish_rounds is None else polish_rounds,
                           refine_nodes=args.refine_nodes)
    outcome = optimise(graph, device, opts, predictor, name)
    plan = outcome.chosen_plan or outcome.result.best_plan
    refined = outcome.refinement is not None and outcome.refinement.plan is not None
    acc = outcome.measured_accuracy.as_dict() if outcome.measured_accuracy is not None else None
    default = default_plan(graph).choices
    changed = sum(1 for n, c in plan.choices.items() if c != default.get(n))
    return plan, {"report": outcome.report, "accuracy": acc, "nodes_changed": changed,
                  "int8_nodes": sum(c.precision == "int8" for c in plan.choices.values()),
                  "pruned_nodes": sum(c.prune > 0 for c in plan.choices.values()), "plan": plan.to_dict(),
                  "unrefined_plan": outcome.refinement.start if refined else None}


@functools.lru_cache(maxsize=None)
def _versus(name: str, threads: int, zero_shot: str):  # noqa: ANN202
    """The second predictor of ``--versus``, resolved once (routed as the first)."""
    from perfpredict.devices import local_device

    return resolve_predictor(name, threads, local_device(threads), zero_shot)


def bench_model(model: str, device, predictor, pname: str, workdir: Path, args) -> dict:  # noqa: ANN001
    threads = args.threads
    graph, onnx_path = load_model(model)
    lossless, info_lossless = _search(graph, device, predictor, pname, args, workdir / model / "lossless", True)
    lossy, info_lossy = _search(graph, device, predictor, pname, args, workdir / model / "lossy", False)
    x = np.random.default_rng(0).standard_normal(graph.input_shape).astype(np.float32)
    plans = {"default": default_plan(graph), "lossless": lossless, "int8+prune": lossy}
    for label, info in (("lossless", info_lossless), ("int8+prune", info_lossy)):  # what the refinement changed
        unrefined = info.pop("unrefined_plan")
        if unrefined is not None:
            plans[f"{label}@unrefined"] = unrefined
    versus = {}
    if args.versus:
        vpred, vname = _versus(args.versus, threads, args.zero_shot)
        vpolish = args.versus_polish_rounds
        plans["lossless@versus"], versus["lossless"] = _search(graph, device, vpred, vname, args,
                                                              workdir / model / "v-lossless", True, vpolish)
        plans["int8+prune@versus"], versus["lossy"] = _search(graph, device, vpred, vname, args,
                                                             workdir / model / "v-lossy", False, vpolish)
        versus["predictor"] = vname
    fns = plan_calls(graph, plans, threads, x)
    sess = ort_session(onnx_path, threads=threads)
    feeds = {sess.get_inputs()[0].name: x}
    fns["ort"] = lambda: sess.run(None, feeds)
    timing = dict(warmup=3, min_repeats=5, max_repeats=args.max_repeats, time_cap_s=args.time_cap, threads=threads,
                  seed=0, **timing_kwargs(args))
    stats = measure_interleaved(fns, lockstep=True, **timing)
    if not args.no_baseline:
        stats.update(measure_interleaved(plan_calls(graph, {"baseline": baseline_plan(graph)}, threads, x), **timing))
    med = {k: s.median_ms for k, s in stats.items()}
    refinement = {label: med[f"{label}@unrefined"] / med[label] for label in ("lossless", "int8+prune")
                  if f"{label}@unrefined" in med}
    if versus:
        versus["lossless_ratio"] = med["lossless@versus"] / med["lossless"]
        versus["lossy_ratio"] = med["int8+prune@versus"] / med["int8+prune"]
    return {"model": model, "threads": threads, "versus": versus or None, "refinement_speedup": refinement,
            "stats": {k: dataclasses.asdict(s) for k, s in stats.items()},
            "median_ms": med,
            "speedup_lossless_vs_default": med["default"] / med["lossless"],
            "speedup_lossless_vs_ort": med["ort"] / med["lossless"],
            "speedup_lossy_vs_ort": med["ort"] / med["int8+prune"],
            "speedup_lossy_vs_default": med["default"] / med["int8+prune"],
            "lossless": info_lossless, "lossy": info_lossy}


def _num(v) -> float:  # noqa: ANN001
    return float("nan") if v is None else float(v)


def _table(rows: list[dict]) -> str:
    head = ("| model | thr | default ms | lossless ms | int8+prune ms | ORT ms | baseline ms | lossless/default "
            "| lossless vs ORT | int8+prune vs ORT | drop (pts) | top-1 agr. | faithful | SQNR dB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        m = r["median_ms"]
        acc = r["lossy"]["accuracy"] or {}
        lines.append(
            f"| {r['model']} | {r['threads']} | {m['default']:.2f} | {m['lossless']:.2f} | {m['int8+prune']:.2f} | "
            f"{m['ort']:.2f} | {m.get('baseline', float('nan')):.0f} | {r['speedup_lossless_vs_default']:.2f}x | "
            f"{r['speedup_lossless_vs_ort']:.2f}x | {r['speedup_lossy_vs_ort']:.2f}x | "
            f"{acc.get('drop_pct', float('nan')):.2f} | {acc.get('top1_agreement', float('nan')):.3f} | "
            f"{_num(acc.get('faithful')):.3f} | "
            f"{acc.get('sqnr_db', float('nan')):.1f} |")
    vs = [r for r in rows if r.get("versus")]
    if vs:
        lines += ["", f"versus `{vs[0]['versus']['predictor']}` (its plans' time over the first predictor's, "
                      "same rounds):", "",
                  "| model | lossless ms | versus ms | ratio | int8+prune ms | versus ms | ratio |",
                  "|---|---|---|---|---|---|---|"]
        for r in vs:
            m, v = r["median_ms"], r["versus"]
            lines.append(f"| {r['model']} | {m['lossless']:.2f} | {m['lossless@versus']:.2f} | "
                         f"{v['lossless_ratio']:.2f} | {m['int8+prune']:.2f} | {m['int8+prune@versus']:.2f} | "
                         f"{v['lossy_ratio']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = search_parser(__doc__.splitlines()[0], "benchmarks/results/realised.json")
    ap.add_argument("--no-baseline", action="store_true", help="skip the (slow) C reference baseline")
    ap.add_argument("--versus", default=None, metavar="PREDICTOR",
                    help="also search with this predictor and time its plans in the same rounds")
    ap.add_argument("--versus-polish-rounds", type=int, default=None, metavar="N",
                    help="--polish-rounds of the --versus searches (default: --polish-rounds); with --versus the "
                         "shipped checkpoint and 0, it times plans found with and without polishing")
    return run_and_write(ap.parse_args(argv), bench_model, _table)


if __name__ == "__main__":
    sys.exit(main())
