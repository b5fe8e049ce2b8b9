"""`perfpredict evaluate`: score predictors (trained per split, or a checkpoint) on a measurement store."""

from __future__ import annotations

import argparse
import sys

from cli.argtypes import add_campaigns, nonneg_int, positive_int
from cli.output import add_progress_option, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    """Add `evaluate`."""
    p = sub.add_parser("evaluate", help="score predictors on a measurement store (MAPE, RMSPE, within 5/10 %%, "
                                        "Spearman, Kendall)",
                       description="PREDICTOR is a kind trained afresh on each split's training part (gnn, "
                                   "gnn-ensemble: three GNNs of consecutive seeds averaged, flops, kernel-rf, "
                                   "kernel-gbm, roofline) or a checkpoint (path, or a name under "
                                   "trained_models/) scored as it is.")
    p.add_argument("--predictor", action="append", required=True, metavar="PREDICTOR",
                   help="kind or checkpoint; repeat to compare several")
    p.add_argument("--data", required=True, help="measurement store (path, sqlite:///path, or a name under datasets/)")
    p.add_argument("--split", default="random:0.2",
                   help="random:FRACTION[:SEED], family:NAME, family-layers:NAME (its models out, its layer records "
                        "kept), family-shots:NAME:K (its models out but the first K plans of each, as a new model "
                        "profiled with --plans-per-model K), lofo (each family in turn) or none (default random:0.2)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed of splits and training")
    p.add_argument("--epochs", type=positive_int, default=None, help="maximum GNN epochs when training kind gnn")
    p.add_argument("--latency-stat", choices=("median", "min", "beacon"), default="median",
                   help="latency target: the records' median (default), fastest timed repeat, or median scaled to the "
                        "store's typical machine speed by the beacon timed beside it (model records without one are "
                        "skipped; see perfpredict.beacon)")
    p.add_argument("--memory-method", choices=("auto", "allocator", "rss", "any"), default="auto",
                   help="peak-memory target: torch-allocator figures (exact), resident-set figures, allocator where there is one "
                        "else resident set, or auto (allocator when the store has any; default)")
    add_campaigns(p)
    p.add_argument("--work-dir", default=None, metavar="DIR",
                   help="where the results finished so far and the training under way are kept, so that the same "
                        "command after a kill goes on where it stopped (default: the evaluate folder of "
                        "perfpredict's cache, $PERFPREDICT_CACHE or ~/.cache/perfpredict; emptied when done)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_progress_option(p)
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from perfpredict.cache import cache_dir
    from perfpredict.gnn_predictor import load_predictor
    from perfpredict.samples import load_samples, parse_split
    from perfpredict.train import PREDICTOR_KINDS, TrainOptions, metrics_rows, resolve_dataset, run_evaluation

    parse_split(args.split)
    # a mistyped, empty or incompatible checkpoint fails before the store is loaded (minutes), not after
    checkpoints = {spec: load_predictor(spec) for spec in args.predictor if spec not in PREDICTOR_KINDS}
    samples = load_samples(resolve_dataset(args.data), progress=not args.no_progress, latency_stat=args.latency_stat,
                           memory_method=args.memory_method, campaigns=args.campaigns)
    opts = TrainOptions(seed=args.seed, **({"epochs": args.epochs} if args.epochs else {}))
    work_root = args.work_dir or cache_dir() / "evaluate"
    rows = run_evaluation(samples, args.predictor, args.split, args.seed, opts, progress=not args.no_progress,
                          checkpoints=checkpoints, work_root=work_root)
    if args.json:
        print_json({"data": samples.summary(), "split": args.split, "results": rows})
        return 0
    print_table(*metrics_rows([(f"{r['split']} {r['predictor']}", r["metrics"]) for r in rows]))
    for r in rows:
        if r["note"]:
            print(f"note ({r['split']} {r['predictor']}): {r['note']}", file=sys.stderr)
    return 0
