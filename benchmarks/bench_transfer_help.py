"""Transfer to unseen devices on HELP's NAS-Bench-201 / FBNet latency tables, device folds held out in turn.

The reserved meta-test devices are not in the public copy, so devices available here are held out in
folds: HELP's meta-valid devices together (titanx_*, gold_6240), then HELP's meta-train devices in
groups of three (``--folds grouped``, default) or one at a time (``--folds lodo``). For each fold the
multi-device GNN trains on every other device but one validation device (left out of training; used to
pick the kept epoch), then each held-out device is fitted from its 10 reference architectures plus k
random shots and scored on 1,000 query architectures (HELP's protocol, see
:class:`perfpredict.external.help.TransferProtocol`). HELP's published 10-shot Spearman on its meta-test
devices: mean 0.932 (0.802 to 0.989); HELP's 10-shot = our k = 10 (10 reference + 10 shots).

    .venv/bin/python benchmarks/bench_transfer_help.py --space nasbench201 --ceiling \
        -o benchmarks/results/transfer_help_nasbench201.json
    # the references of --ceiling alone (no training; every fold's test devices):
    .venv/bin/python benchmarks/bench_transfer_help.py --references-only -o benchmarks/results/help_references_nasbench201.json
    # devices measured here (benchmarks/collect_nb201_latency.py) held out, trained on all of HELP's:
    .venv/bin/python benchmarks/bench_transfer_help.py --data benchmarks/results/nb201_h200 \
        --test-devices h200_1,h200_32,h200_256,xeon_emr_16t --ceiling -o benchmarks/results/transfer_help_h200.json
    # the reserved meta-test devices, from a folder with HELP's layout:
    .venv/bin/python benchmarks/bench_transfer_help.py --data RESERVED_DIR \
        --test-devices titan_rtx_256,gold_6226,fpga,pixel2,raspi4,eyeriss -o reserved.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from perfpredict.external import with_copy
from perfpredict.external.help import HELP_PUBLISHED, HELP_SPLITS, HELP_TRAIN_POOL, TransferProtocol, \
    evaluate_transfer, load_help
from perfpredict.metrics import clean
from perfpredict.transfer import MultiDeviceConfig

GROUPS = {"nasbench201": [["1080ti_1", "silver_4114", "pixel3"], ["1080ti_32", "silver_4210r", "essential_ph_1"],
                          ["1080ti_256", "samsung_a50", "samsung_s7"]],
          "fbnet": [["1080ti_1", "silver_4114", "pixel3"], ["1080ti_32", "silver_4210r", "essential_ph_1"],
                    ["1080ti_64", "samsung_a50", "samsung_s7"]]}
VALIDATION = ("2080ti_32", "titanxp_32", "silver_4210r")


def folds(space: str, devices: list[str], mode: str) -> list[list[str]]:
    meta_valid = [d for d in HELP_SPLITS[space]["meta_valid"] if d in devices]
    if mode == "lodo":
        return [meta_valid] + [[d] for d in HELP_SPLITS[space]["meta_train"] if d in devices]
    return [meta_valid] + [[d for d in g if d in devices] for g in GROUPS[space]]


def ceiling(data, devices: list[str], pool: int, queries: int, train: int = 5000, seed: int = 0) -> dict:
    """Context, not transfer: same-device references (not bounds). Spearman, on the same trimmed queries, of
    models trained on the device's *own* measurements (one-hot edge ops for NB201, op indices for FBNet): a
    gradient-boosted model on ``train`` archs (``"gbm"``), and with every arch outside the queries (``"all"``,
    14,625 for NB201) a gradient-boosted model (``"gbm_all"``) and a ridge regression on the one-hot features and
    their pairwise products (``"ridge_pairs_all"``, alpha by leave-one-out). Where these agree, about that much
    of the device's ranking is what its measurement noise lets any model of the architecture recover. Also the
    measured device (of those measured on every arch) whose own latencies rank the queries most alike
    (``"best_other_device"``, ``"best_other_device_spearman"``): a proxy device with perfect predictions. And the
    median absolute 5-fold cross-validated residual (log ms) of a gradient-boosted model on all the device's archs,
    on the queries and on the others (``"cv_residual_queries"``, ``"cv_residual_others"``): measurements noisier in
    the queries than elsewhere cap every predictor's score on them."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.preprocessing import PolynomialFeatures

    from perfpredict.external.help import FBNET_OPS
    from perfpredict.nasbench201 import OPS, edge_ops
    from perfpredict.transfer import transfer_metrics

    if data.space == "nasbench201":
        feats = np.array([[float(o == op) for o in edge_ops(a) for op in OPS] for a in data.archs])
    else:
        feats = np.array([[float(o == j) for o in a for j in range(len(FBNET_OPS))] for a in data.archs])
    pairs = PolynomialFeatures(2, interaction_only=True, include_bias=False).fit_transform(feats)
    q = np.arange(pool, min(len(data), pool + queries))
    rest = np.setdiff1d(np.arange(len(data)), q)
    tr = np.random.default_rng(seed).choice(rest, min(train, len(rest)), replace=False)
    models = {"gbm": (tr, feats, lambda: HistGradientBoostingRegressor(max_iter=300, random_state=seed)),
              "gbm_all": (rest, feats, lambda: HistGradientBoostingRegressor(max_iter=300, random_state=seed)),
              "ridge_pairs_all": (rest, pairs, lambda: RidgeCV(alphas=np.logspace(-3, 3, 13)))}
    out = {}
    complete = [o for o in data.devices if data.complete(o)]  # the proxies a reference may compare with
    for d in devices:
        y = data.latency(d)
        keep = q[np.argsort(y[q], kind="stable")][int(len(q) * 0.1):int(len(q) * 0.9)]
        out[d] = {}
        for name, (idx, x, make) in models.items():
            ok = idx[y[idx] > 0]
            model = make().fit(x[ok], np.log(y[ok]))
            out[d][name] = transfer_metrics(np.exp(model.predict(x[keep])), y[keep])["spearman"]
        # measurement noise of the queries against the rest: 5-fold cross-validated residuals of a GBM on all the
        # device's archs (log ms), their median absolute value on the queries and elsewhere
        ok = np.flatnonzero(y > 0)
        resid = np.abs(np.log(y[ok]) - cross_val_predict(
            HistGradientBoostingRegressor(max_iter=300, random_state=seed), feats[ok], np.log(y[ok]),
            cv=KFold(5, shuffle=True, random_state=seed)))
        in_q = np.isin(ok, q)
        out[d]["cv_residual_queries"] = float(np.median(resid[in_q]))
        out[d]["cv_residual_others"] = float(np.median(resid[~in_q]))
        others = {o: transfer_metrics(data.latency(o)[keep], y[keep])["spearman"] for o in complete if o != d}
        if others:
            best = max(others, key=others.get)
            out[d]["best_other_device"], out[d]["best_other_device_spearman"] = best, others[best]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", choices=["nasbench201", "fbnet"], default="nasbench201")
    ap.add_argument("--data", action="append", default=None, help="HELP-layout folder(s) (default: the copy)")
    ap.add_argument("--folds", choices=["grouped", "lodo"], default="grouped")
    ap.add_argument("--only-fold", type=int, default=None, help="run one fold (index) only")
    ap.add_argument("--test-devices", default=None, help="one fold with these comma-separated test devices (e.g. the "
                                                         "reserved ones, from --data), training on all others")
    ap.add_argument("--shots", default="0,5,10,20")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train-archs", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ceiling", action="store_true", help="also report the same-device reference (see ceiling())")
    ap.add_argument("--references-only", action="store_true",
                    help="only the references of --ceiling for the folds' test devices (seconds; no training)")
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args(argv)
    data = load_help(args.space, with_copy(args.data, "HELP"))  # devices the folders lack come from the copy
    shots = [int(s) for s in args.shots.split(",")]
    proto = TransferProtocol(pool=HELP_TRAIN_POOL[args.space], queries=args.queries, train_archs=args.train_archs,
                             repeats=args.repeats)
    cfg = MultiDeviceConfig(epochs=args.epochs, seed=args.seed, outlier_ratio=10.0)
    if args.test_devices:
        chosen = [[d.strip() for d in args.test_devices.split(",") if d.strip()]]
        for d in chosen[0]:
            data.latency(d)
    else:
        all_folds = folds(args.space, list(data.devices), args.folds)
        chosen = [all_folds[args.only_fold]] if args.only_fold is not None else all_folds
    t0 = time.time()
    if args.references_only:
        devs = [d for test in chosen for d in test]
        out = {"space": args.space, "test_devices": devs, "protocol": proto.to_dict(),
               **reference_fields(ceiling(data, devs, proto.pool, proto.queries, seed=args.seed)),
               "seconds": round(time.time() - t0, 1)}
        _write(out, args.output)
        _print_references(out)
        return 0
    out = {"space": args.space, "folds": [], "per_device": {}, "help_published": HELP_PUBLISHED.get(args.space)}
    for test in chosen:
        val = next(v for v in VALIDATION if v in data.devices and v not in test)
        partial = [d for d in data.devices if d not in test and not data.complete(d)]
        if partial:
            print(f"not training on {', '.join(partial)}: measured on part of the space only", flush=True)
        train = [d for d in data.devices if d not in test and d != val and d not in partial] + [val]
        res = evaluate_transfer(data, train, test, shots=shots, seed=args.seed, val_device=val, protocol=proto,
                                config=cfg, progress=True)
        out["folds"].append({k: res[k] for k in ("test_devices", "val_device", "train_devices", "summary",
                                                  "source_fit_spearman", "seconds", "protocol", "model")})
        out["per_device"].update(res["results"])
        print(f"fold {test}: " + ", ".join(f"k={k} rho {v['spearman']:.3f} MAPE {v['mape']:.1f}%"
                                           for k, v in res["summary"].items()), flush=True)
    devs = list(out["per_device"])
    out["summary"] = {str(k): {m: float(np.mean([out["per_device"][d][str(k)][m] for d in devs]))
                               for m in ("spearman", "mape", "within_10", "spearman_all", "mape_all", "within_10_all")}
                      for k in shots}
    for k in shots:
        out["summary"][str(k)]["spearman_min"] = float(min(out["per_device"][d][str(k)]["spearman"] for d in devs))
    if args.ceiling:
        out.update(reference_fields(ceiling(data, devs, proto.pool, proto.queries, seed=args.seed)))
    out["seconds"] = round(time.time() - t0, 1)
    _write(out, args.output)
    print(f"\n{'device':<16}" + "".join(f"  k={k:<3} rho   MAPE  w10 " for k in shots))
    for d in devs:
        print(f"{d:<16}" + "".join(f"  {out['per_device'][d][str(k)]['spearman']:.3f} {out['per_device'][d][str(k)]['mape']:5.1f} "
                                  f"{out['per_device'][d][str(k)]['within_10']:4.0f}" for k in shots))
    print(f"{'MEAN':<16}" + "".join(f"  {out['summary'][str(k)]['spearman']:.3f} {out['summary'][str(k)]['mape']:5.1f} "
                                  f"{out['summary'][str(k)]['within_10']:4.0f}" for k in shots))
    if args.ceiling:
        _print_references(out)
    return 0


def reference_fields(refs: dict) -> dict:
    """The result fields of :func:`ceiling`'s references."""
    return {"ceiling_spearman": {d: r["gbm"] for d, r in refs.items()},
            "ceiling_spearman_all": {d: {k: r[k] for k in ("gbm_all", "ridge_pairs_all")} for d, r in refs.items()},
            "cv_residual": {d: {"queries": r["cv_residual_queries"], "others": r["cv_residual_others"]}
                            for d, r in refs.items()},
            "best_other_device": {d: {k: r[k] for k in ("best_other_device", "best_other_device_spearman")}
                                  for d, r in refs.items() if "best_other_device" in r}}


def _write(out: dict, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(clean(out), indent=2) + "\n")


def _print_references(out: dict) -> None:
    print("same-device references (Spearman; GBM on 5000 own measurements / GBM on all / pairwise ridge on all): "
          + ", ".join(f"{d} {v:.3f} / {out['ceiling_spearman_all'][d]['gbm_all']:.3f} / "
                      f"{out['ceiling_spearman_all'][d]['ridge_pairs_all']:.3f}"
                      for d, v in out["ceiling_spearman"].items()))
    print("median |5-fold CV residual| of a GBM on all the device's archs (log), queries / others: " + ", ".join(
        f"{d} {r['queries']:.3f} / {r['others']:.3f}" for d, r in out["cv_residual"].items()))
    print("best other measured device (its own latencies): " + ", ".join(
        f"{d} {r['best_other_device']} {r['best_other_device_spearman']:.3f}" for d, r in out["best_other_device"].items()))


if __name__ == "__main__":
    sys.exit(main())
