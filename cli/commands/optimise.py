"""`perfpredict optimise` (search a deployment plan on predicted costs) and `perfpredict validate`
(measure a plan on this machine and compare with the prediction)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.argtypes import add_zero_shot, nonneg_float, nonneg_int, positive_float, positive_int
from cli.output import add_progress_option, print_json, print_table, slow_path_note, warn_if_busy

STRATEGIES = ("qlearning", "tpe", "nsga2", "random", "exact")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="ONNX file or zoo model name (see `perfpredict zoo list`)")
    p.add_argument("--device-features", required=True, metavar="BOARD",
                   help="board.json (DeviceSpec), the name of a shipped example board, or 'local' for this "
                        "machine (described once at --threads and cached; see --redescribe)")
    p.add_argument("--redescribe", action="store_true",
                   help="with 'local': measure this machine again instead of reading its cached description")
    p.add_argument("--predictor", default=None, metavar="P",
                   help="'roofline' (analytical model), or a checkpoint path / name under trained_models/ "
                        "(default: the shipped 'proxy' checkpoint when present, else roofline)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="threads the deployment (and the measurements) use (default: all)")
    add_zero_shot(p)
    p.add_argument("--resolution", type=positive_int, default=None, help="input resolution of a zoo model")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `optimise` and `validate`."""
    p = sub.add_parser(
        "optimise", help="search per-layer primitive, layout, precision and pruning on predicted costs",
        description="Search a deployment plan for MODEL on the device: per layer, the primitive, data layout, "
                    "precision (fp32/int8) and prune ratio, on predicted latency and memory. The search is "
                    "lossless (fp32, no pruning) unless --max-accuracy-drop or --calibration allows a drop. "
                    "With --device-features local the plans are also run on this machine (the final plan, the "
                    "default plan, and every K trials with --validate-every) and the measured-fastest is kept. "
                    "Writes plan.json, report.json/txt, trials.csv and pareto.csv/png under -o.")
    _add_common(p)
    add_progress_option(p)
    p.add_argument("--strategy", choices=STRATEGIES, default="qlearning",
                   help="search strategy (default qlearning; exact = ILP optimum of an additive predictor)")
    p.add_argument("--trials", type=positive_int, default=300, metavar="N", help="plans to evaluate (default 300)")
    p.add_argument("--batch", type=positive_int, default=8, metavar="N",
                   help="plans asked and predicted per batch (default 8)")
    p.add_argument("--objective", action="append", choices=("latency", "memory", "accuracy"), default=None,
                   help="objective to minimise (default latency); repeat for a multi-objective (Pareto) search")
    p.add_argument("--latency-budget", type=positive_float, default=None, metavar="MS",
                   help="latency budget in ms")
    p.add_argument("--memory-budget", type=positive_float, default=None, metavar="MB",
                   help="peak-memory budget in MB")
    p.add_argument("--max-accuracy-drop", type=nonneg_float, default=None, metavar="PCT",
                   help="allowed accuracy drop in percentage points (enables int8 and pruning)")
    p.add_argument("--lossless", action="store_true", help="fp32 only, no pruning (the default without a drop)")
    p.add_argument("--prune-ratios", default="0,0.25,0.5", metavar="R,R",
                   help="prune ratios offered to prunable layers (default 0,0.25,0.5)")
    p.add_argument("--calibration", default=None, metavar="DATA.npz",
                   help="calibration data: 'inputs' (N x C x H x W) and optional 'labels'; measures real "
                        "accuracy (labels) or fidelity to fp32 (no labels); implies a 1-point budget by default")
    p.add_argument("--calibration-samples", type=positive_int, default=16, metavar="N",
                   help="inputs used for accuracy (the first N of --calibration, or N seeded random inputs "
                        "without it; default 16)")
    p.add_argument("--validate-every", type=nonneg_int, default=0, metavar="K",
                   help="measure the incumbent plan on this machine every K trials and, when a prediction is "
                        "off by more than 15%%, rescale later predictions by the measured / predicted ratio "
                        "(from the first plan; from the third where the predictor trained on this machine) "
                        "(default 0: only the final plan is measured)")
    p.add_argument("--polish-rounds", type=nonneg_int, default=20, metavar="N",
                   help="after the trials, move the best plan by single changes (one node's primitive, layout and "
                        "precision, or one prune group's ratio) while the predicted cost falls, at most N rounds "
                        "(default 20; 0 turns it off)")
    p.add_argument("--refine-nodes", type=nonneg_int, default=3, metavar="N",
                   help="when plans run on this machine: after the search, measure other implementations of the "
                        "plan's N costliest nodes (same precision and pruning) beside it and keep a change that is "
                        "faster in two rounds (default 3; 0 turns it off)")
    p.add_argument("--no-measure", action="store_true", help="do not run plans on this machine at all")
    p.add_argument("--measure", action="store_true",
                   help="run plans on this machine although the board is a file (use when it describes this "
                        "machine); with 'local' they are run by default")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage URL for tpe/nsga2 (default: sqlite:///OUTDIR/optuna.db)")
    p.add_argument("--study", default=None, metavar="NAME",
                   help="Optuna study name to create or resume (default: derived from model and space)")
    p.add_argument("--dataset", default=None, metavar="STORE.sqlite",
                   help="append the measurements taken to this measurement store (the records carry the model's "
                        "graph: perfpredict train and transfer learn from them)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default 0)")
    p.add_argument("-o", "--outdir", default=None, metavar="OUTDIR",
                   help="output directory (default runs/optimise-MODEL)")
    p.set_defaults(func=_optimise)

    v = sub.add_parser("validate", help="measure a plan on this machine and compare with its prediction",
                       description="Run MODEL under --plan (and the default plan) on this machine with the "
                                   "runtime and print predicted versus measured latency.")
    _add_common(v)
    v.add_argument("--plan", required=True, metavar="PLAN.json", help="the plan to measure")
    v.add_argument("--memory", action="store_true", help="also measure peak memory (slower: a subprocess)")
    v.add_argument("--breakdown", action="store_true",
                   help="also time each step of the plan on its own and print where the time goes, summed by "
                        "primitive (with precision and layout) and by conversion")
    v.set_defaults(func=_validate)


def _ratios(text: str) -> tuple[float, ...]:
    from perfpredict.errors import PerfPredictError

    try:
        vals = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise PerfPredictError(f"--prune-ratios '{text}' is not a comma-separated list of numbers, "
                               "e.g. 0,0.25,0.5") from None
    return vals or (0.0,)


def _load(args: argparse.Namespace):
    from optimiser.run import resolve_predictor
    from perfpredict.devices import resolve_device
    from perfpredict.models import load_model

    graph, _ = load_model(args.model, resolution=args.resolution)
    device = resolve_device(args.device_features, args.threads, refresh=args.redescribe)
    predictor, name = resolve_predictor(args.predictor, args.threads, device, args.zero_shot)
    return graph, device, predictor, name


def _optimise(args: argparse.Namespace) -> int:
    from optimiser.report import summary_lines
    from optimiser.run import OptimiseOptions, optimise

    graph, device, predictor, name = _load(args)
    outdir = Path(args.outdir) if args.outdir else Path("runs") / f"optimise-{graph.name}"
    opts = OptimiseOptions(
        strategy=args.strategy, trials=args.trials, batch_size=args.batch,
        objectives=tuple(dict.fromkeys(args.objective or ["latency"])), latency_budget_ms=args.latency_budget,
        memory_budget_mb=args.memory_budget, max_accuracy_drop_pct=args.max_accuracy_drop, lossless=args.lossless,
        prune_ratios=_ratios(args.prune_ratios), calibration=args.calibration,
        calibration_samples=args.calibration_samples, validate_every=args.validate_every,
        polish_rounds=args.polish_rounds, refine_nodes=args.refine_nodes,
        measure=(args.device_features == "local" or args.measure) and not args.no_measure, threads=args.threads,
        storage=args.storage, study=args.study, outdir=outdir,
        seed=args.seed, dataset=args.dataset, progress=not (args.json or args.no_progress))
    outcome = optimise(graph, device, opts, predictor, name)
    if args.json:
        print_json(outcome.report)
    else:
        print("\n".join(summary_lines(outcome.report)))
    return 130 if outcome.result.interrupted else 0


def _validate(args: argparse.Namespace) -> int:
    from optimiser.run import validate_on_device
    from perfpredict.plan import Plan, validate_plan
    from perfpredict.primitives.quantized import depthwise_fallback_nodes

    graph, device, predictor, name = _load(args)
    plan = Plan.load(args.plan)
    validate_plan(graph, plan)  # bad input is an error before any warning about the machine
    warn_if_busy(args.threads)
    rows = validate_on_device(graph, plan, device, predictor, threads=args.threads, memory=args.memory)
    slow = [n for n, _ in depthwise_fallback_nodes(graph, plan)]
    steps, chains = _breakdown(graph, plan, args.threads) if args.breakdown else (None, None)
    if args.json:
        extra = {} if steps is None else {"breakdown": steps, "chains": chains}
        print_json({"model": graph.name, "device": device.name, "predictor": name, "plan": args.plan,
                    "measured_on_target": args.device_features == "local", "int8_depthwise_slow_path": slow,
                    **rows, **extra})
        return 0
    print(f"{graph.name} on {device.name} (predictor {name}), plan {args.plan}")
    table = []
    for label in ("plan", "default"):
        r = rows[label]
        table.append([label, r["predicted_ms"], r["measured_ms"], f"{100 * r['rel_error']:.1f}%",
                      r["predicted_mem_bytes"] / 1e6,
                      "-" if r["measured_mem_bytes"] is None else r["measured_mem_bytes"] / 1e6])
    print_table(["plan", "predicted ms", "measured ms", "error", "predicted MB", "measured MB"], table)
    print(f"speedup over default: measured {rows['speedup_measured']:.3g}x, predicted {rows['speedup_predicted']:.3g}x")
    if args.device_features != "local":
        print(f"note: measured on this machine; the predictions are for {device.name}")
    if slow:
        print(slow_path_note(args.plan, slow))
    if steps is not None:
        print(f"\nwhere the plan's time goes (each step timed on its own, median of {_STEP_REPEATS} passes; "
              f"sum {sum(r['ms'] for r in steps):.3g} ms):")
        print_table(["primitive / conversion", "steps", "ms", "share", "us per step"],
                    [[r["group"], r["steps"], r["ms"], f"{100 * r['share']:.1f}%", 1e3 * r["ms"] / r["steps"]]
                     for r in steps])
        if chains["chains"]:
            print(f"the forward pass runs them in {chains['forward_steps']} steps: {len(chains['chains'])} chain(s) "
                  f"of oneDNN calls and conversions, each one C call ({', '.join(map(str, chains['chains']))} calls), "
                  "so it can take less than the sum")
    return 0


_STEP_REPEATS = 30


def _breakdown(graph, plan, threads: int | None) -> tuple[list[dict], dict]:  # noqa: ANN001
    """The plan's step times on this machine, summed by primitive and conversion (see Executable.step_times), and
    how its forward pass chains them (Executable.chains)."""
    import numpy as np

    from perfpredict.runtime import breakdown, build_executable

    exe = build_executable(graph, plan, threads=threads)
    x = np.random.default_rng(0).standard_normal(graph.input_shape).astype(np.float32)
    chains = {"forward_steps": exe.forward_steps, "chains": exe.chains}
    return breakdown(exe.step_times(x, repeats=_STEP_REPEATS)), chains
