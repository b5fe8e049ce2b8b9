"""`perfpredict bench`: benchmarks on public data, e.g. transfer to unseen devices on HELP's latency tables."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.argtypes import nonneg_int, positive_int
from cli.output import add_progress_option, print_json, print_table
from perfpredict.errors import PerfPredictError


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None


_HELP_ONLY = {"val_device": None, "queries": 1000, "repeats": 5, "train_archs": 2000, "epochs": 25, "save_model": None}
"""Options of the HELP spaces (and their defaults): given with --space neusight they would do nothing."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add `bench transfer`."""
    p = sub.add_parser("bench", help="benchmarks on public multi-device data",
                       description="Benchmarks on public data sets (read in place, never copied).")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCH_COMMAND", required=True)
    t = bsub.add_parser(
        "transfer", help="transfer to unseen devices on HELP latency tables (NAS-Bench-201 / FBNet) or NeuSight's "
                         "per-operator GPU latencies",
        description="HELP spaces (nasbench201, fbnet): train the multi-device GNN on --train-devices, then for each "
                    "--test-device fit it from the 10 reference architectures plus k random shots and score 1,000 "
                    "query architectures (HELP's protocol: queries are archs [pool, pool+queries), shots come from "
                    "[0, pool) without the target's top/bottom 10%; metrics on queries without their top/bottom 10% "
                    "and on all). --space neusight: per operator, a regressor trained on the --train-devices GPUs "
                    "predicts each --test-device GPU from its spec JSON (k = 0) and with k shots (CV-chosen "
                    "calibration), scored on its other rows; GPUs by full name or family (e.g. A100).")
    t.add_argument("--data", action="append", default=None, metavar="DIR",
                   help="folder(s) with HELP's layout (data/<space>/latency/<device>.pt, <space>/<device>.pt or "
                        "derived_csv/<space>_latency_ms.csv) or, for --space neusight, NeuSight's "
                        "(**/<op>/**/<GPU>.csv, **/device_configs/*.json); repeatable, first wins, then the copy under "
                        "$PERFPREDICT_EXTERNAL (so a folder of reserved test devices needs no training devices)")
    t.add_argument("--space", choices=["nasbench201", "fbnet", "neusight"], default="nasbench201")
    t.add_argument("--ops", type=_csv, default=None, help="NeuSight operators (--space neusight; default all: "
                                                          "conv,linear,relu,add)")
    t.add_argument("--train-devices", type=_csv, required=True, help="comma-separated source devices")
    t.add_argument("--test-devices", type=_csv, required=True, help="comma-separated target devices")
    t.add_argument("--val-device", default=None, help="device left out of training for early stopping (default: "
                                                      "the last training device)")
    t.add_argument("--shots", type=_ints, default=[0, 5, 10, 20], help="shot counts (default 0,5,10,20)")
    t.add_argument("--queries", type=positive_int, default=_HELP_ONLY["queries"],
                   help="query architectures (default %(default)s)")
    t.add_argument("--repeats", type=positive_int, default=_HELP_ONLY["repeats"],
                   help="shot draws per device and k (default %(default)s)")
    t.add_argument("--train-archs", type=positive_int, default=_HELP_ONLY["train_archs"],
                   help="architectures the GNN trains on (default %(default)s)")
    t.add_argument("--epochs", type=positive_int, default=_HELP_ONLY["epochs"],
                   help="GNN training epochs (default %(default)s)")
    t.add_argument("--seed", type=nonneg_int, default=0)
    t.add_argument("--save-model", default=None, metavar="DIR", help="also save the trained multi-device model as "
                                                                     "a predictor checkpoint")
    t.add_argument("-o", "--output", default=None, help="also write the full results JSON here")
    t.add_argument("--json", action="store_true", help="print the full results as JSON")
    add_progress_option(t)
    t.set_defaults(func=_transfer)


def _transfer_neusight(args: argparse.Namespace) -> int:
    from perfpredict.external import with_copy
    from perfpredict.external.neusight import OPERATORS, evaluate_transfer

    given = [f"--{k.replace('_', '-')}" for k, v in _HELP_ONLY.items() if getattr(args, k) != v]
    if given:
        raise PerfPredictError(f"{', '.join(given)} apply to the HELP spaces (nasbench201, fbnet), not to "
                               "--space neusight")

    ops = args.ops or list(OPERATORS)
    unknown = [o for o in ops if o not in OPERATORS]
    if unknown:
        raise PerfPredictError(f"--ops: unknown NeuSight operator(s) {', '.join(unknown)}; accepted: "
                               f"{', '.join(OPERATORS)}")
    res = evaluate_transfer(ops, with_copy(args.data, "NeuSight"), gpus=args.train_devices + args.test_devices,
                            shots=args.shots, seed=args.seed, test_gpus=args.test_devices)
    res.update(train_devices=args.train_devices, test_devices=args.test_devices)
    if args.output:
        Path(args.output).write_text(json.dumps(res, indent=2, default=float) + "\n")
    if args.json:
        print_json(res)
        return 0
    rows = [(op, gpu, k, m["mape"], m["within_10"], m["spearman"],
             ",".join(f"{a}:{b:g}" for a, b in m.get("methods", {}).items()))
            for op, r in res["results"].items() for gpu, row in r["per_gpu"].items()
            for k, m in row.items() if k.isdigit()]
    print_table(["op", "GPU", "k", "MAPE %", "within 10%", "spearman", "methods"], rows)
    return 0


def _transfer(args: argparse.Namespace) -> int:
    from perfpredict.external import with_copy
    from perfpredict.external.help import HELP_PUBLISHED, TransferProtocol, evaluate_transfer, load_help
    from perfpredict.transfer import MultiDeviceConfig

    if args.space == "neusight":
        return _transfer_neusight(args)
    if args.ops:
        raise PerfPredictError("--ops applies to --space neusight only")

    if args.queries < 1 or args.repeats < 1 or args.train_archs < 1 or args.epochs < 1:
        raise PerfPredictError("--queries, --repeats, --train-archs and --epochs must be positive")
    devices = list(dict.fromkeys(args.train_devices + args.test_devices +
                                 ([args.val_device] if args.val_device else [])))
    # devices not in the given folders come from the default copy (e.g. training devices)
    data = load_help(args.space, with_copy(args.data, "HELP"), devices)
    train = list(args.train_devices)
    if args.val_device and args.val_device not in train:
        train.append(args.val_device)
    from perfpredict.external.help import HELP_TRAIN_POOL

    proto = TransferProtocol(pool=HELP_TRAIN_POOL[args.space], queries=args.queries, train_archs=args.train_archs,
                             repeats=args.repeats)
    res = evaluate_transfer(data, train, args.test_devices, shots=args.shots, seed=args.seed,
                            val_device=args.val_device or train[-1], protocol=proto,
                            config=MultiDeviceConfig(epochs=args.epochs, seed=args.seed, outlier_ratio=10.0),
                            progress=not args.no_progress,
                            save_model=args.save_model)
    if args.space in HELP_PUBLISHED:
        res["help_published"] = HELP_PUBLISHED[args.space]
    if args.output:
        Path(args.output).write_text(json.dumps(res, indent=2, default=float) + "\n")
    if args.json:
        print_json(res)
        return 0
    rows = []
    for dev, per_k in res["results"].items():
        for k, m in per_k.items():
            rows.append((dev, k, m["spearman"], m["mape"], m["within_10"], m["spearman_all"],
                         ",".join(f"{a}:{b:g}" for a, b in m["methods"].items())))
    for k, m in res["summary"].items():
        rows.append(("MEAN", k, m["spearman"], m["mape"], m["within_10"], m["spearman_all"], ""))
    print_table(["device", "k", "spearman", "MAPE %", "within 10%", "spearman (all)", "methods"], rows)
    print(f"\ntrained on {', '.join(res['train_devices'])}; validation device {res['val_device']}; "
          f"{res['seconds']} s")
    return 0
