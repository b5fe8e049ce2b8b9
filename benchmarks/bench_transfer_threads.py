"""Transfer between measured devices: 1-thread and 2-thread execution as two devices, or two machines.

Reads whole-model measurements (kind "model") from a measurement store, pairs the records of the same
graph and plan measured with ``--source-threads`` on ``--source-device`` and ``--target-threads`` on
``--target-device`` (device names as `perfpredict dataset info` lists them, device ids where two machines share a
name, or a description's hash prefix where one machine was described twice; default: any), and asks:
knowing every source latency (the proxy device), how well is the target latency predicted (``measured_ratio``:
the median of target / source latency over the pairs; ``median_ratio``: of predicted / measured)

* k = 0: zero-shot from device features - the source latency scaled by the ratio of the two boards'
  fingerprints (geometric mean over their shared reference layers; 1 when either board lacks one);
* k > 0: with k target measurements, calibrated by :func:`perfpredict.transfer.calibrate` (scale,
  log-linear, isotonic; chosen by leave-one-out CV). Shots are chosen by
  :func:`perfpredict.transfer.choose_shots` ("chosen", deterministic) and at random ("random", mean over
  ``--repeats`` draws); the remaining pairs are the test set.

With ``--predictor``, the source column is instead that predictor's prediction for the target board
(zero-shot from the board's features), calibrated the same way - the path `perfpredict transfer` takes; k = 0
also reports ``proxy_scaled``, the prediction for the source board scaled by the fingerprint ratio (what
`perfpredict transfer -k 0 --proxy-device SOURCE_BOARD` does). Pairs whose target record ran, before fusion
revision 2, an activation the runtime now folds are left out in that mode.

Run only when the store has data for both sides (the profiling campaign writes both thread counts; merge
two machines' stores with `perfpredict dataset merge` for a cross-machine run, or give the target's store with
``--target-store`` where the two machines share a device id, as the proxy's AMD host measured busy and quiet does):

    .venv/bin/python benchmarks/bench_transfer_threads.py --store datasets/proxy.db --shots 0,5,10,20 --json
    .venv/bin/python benchmarks/bench_transfer_threads.py --store merged.db --source-device A --target-device B \
        --source-threads 2 --target-threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from perfpredict.dataset import NOISE_CAMPAIGN, open_store
from perfpredict.devices import DeviceSpec
from perfpredict.metrics import clean
from perfpredict.transfer import calibrate, choose_shots, fingerprint_ratio, transfer_metrics


def _latency(r, stat: str) -> float:
    if stat == "median":
        return float(r.median_ms)
    v = json.loads(r.extra_json).get(f"{stat}_ms")
    return float(v) if v else float(r.median_ms)


def _pairs(store_path: str, src: tuple[str | None, int], dst: tuple[str | None, int],
           target_store: str | None = None):
    """(source, target) model records of the same graph and plan; ``src``/``dst`` are (device, threads), the
    target's read from ``target_store`` when given."""
    out: list[dict[tuple[str, str], object]] = [{}, {}]
    for side, (device, t), path in zip(out, (src, dst), (store_path, target_store or store_path)):
        with open_store(path, create=False) as store:
            for r in store.iter_records(kind="model", threads=t, device=device):
                if r.campaign == NOISE_CAMPAIGN or r.median_ms is None or r.median_ms <= 0:
                    continue
                plan = json.dumps(json.loads(r.plan_json), sort_keys=True) if r.plan_json else ""
                side.setdefault((r.graph_id, plan), r)
    keys = sorted(set(out[0]) & set(out[1]))
    return [(out[0][k], out[1][k]) for k in keys]


def _predict_one(pred, graph, plan, board) -> float:
    """The predictor's latency on ``board``; NaN where it does not predict for that board (an adapted checkpoint
    answers for its own target only)."""
    from perfpredict.transfer import TransferError

    try:
        return float(pred.predict(graph, [plan], board).latency_ms[0])
    except TransferError:
        return float("nan")


def _predictor_columns(predictor_path: str, pairs, boards: list[DeviceSpec]) -> tuple[np.ndarray, np.ndarray]:
    """The predictor's latency for every pair's graph and plan on each of ``boards`` [pairs, boards], and which
    pairs to keep: not those whose target record ran, before a fusion revision, nodes the runtime now folds (the
    predictor describes the plan as it runs now)."""
    from perfpredict.features import template_for
    from perfpredict.models import graph_from_spec
    from perfpredict.plan import Plan
    from perfpredict.samples import folded_since
    from perfpredict.transfer import load_any_predictor
    from perfpredict.zoo import spec_from_dict

    pred = load_any_predictor(predictor_path)
    out, keep = [], []
    graphs = {}
    for src, dst in pairs:
        if src.graph_id not in graphs:  # rebuild the zoo model (canonical or variant) the record was measured on
            graphs[src.graph_id] = graph_from_spec(spec_from_dict(json.loads(src.extra_json)["spec"]))
        graph = graphs[src.graph_id]
        if graph.graph_id != src.graph_id:
            raise SystemExit(f"model '{src.model_name}' does not rebuild graph {src.graph_id}; cannot use --predictor")
        plan = Plan.from_dict(json.loads(src.plan_json)) if src.plan_json else Plan()
        out.append([_predict_one(pred, graph, plan, b) for b in boards])
        revision = json.loads(dst.extra_json).get("fusion_revision", 1)
        keep.append(folded_since(template_for(graph), plan, revision) is None)
    return np.array(out), np.array(keep)


def run(store: str, src: tuple[str | None, int], dst: tuple[str | None, int], shots: list[int], repeats: int,
        seed: int, predictor: str | None, stat: str = "median", target_store: str | None = None) -> dict:
    pairs = _pairs(store, src, dst, target_store)
    (src_dev, src_t), (dst_dev, dst_t) = src, dst
    if len(pairs) < max(shots) + 5:
        raise SystemExit(f"{store}: {len(pairs)} graph/plan pairs measured on both {src_dev or 'any device'} at "
                         f"{src_t} threads and {dst_dev or 'any device'} at {dst_t} threads; need at least "
                         f"{max(shots) + 5} (run the profiling campaign first)")
    x = np.array([_latency(s, stat) for s, _ in pairs])
    y = np.array([_latency(d, stat) for _, d in pairs])
    measured_ratio = float(np.median(y / x))  # how much slower the target runs the same plans (median)
    src_board, dst_board = pairs[0][0].device(), pairs[0][1].device()
    fp_ratio = fingerprint_ratio(dst_board, src_board)[0]
    ratio, proxy_scaled = fp_ratio, None  # zero-shot: the source column x ratio
    if predictor:
        cols, keep = _predictor_columns(predictor, pairs, [dst_board, src_board])
        pairs, x, y = [p for p, k in zip(pairs, keep) if k], cols[keep, 0], y[keep]
        proxy_scaled = cols[keep, 1] * fp_ratio  # the prediction on the source board, scaled (transfer's proxy_scale)
        ratio = 1.0
    macs = np.array([json.loads(s.extra_json).get("macs", 0) for s, _ in pairs], np.float64)
    feats = np.c_[np.log1p(macs)] if np.any(macs > 0) else None
    rng = np.random.default_rng(seed)
    results = {"pairs": len(pairs), "source_device": src_board.name, "target_device": dst_board.name,
               "source_device_id": src_board.device_id, "target_device_id": dst_board.device_id,
               "source_threads": src_t, "target_threads": dst_t,
               "source": "predictor " + predictor if predictor else f"measured {src_t}-thread latency",
               "statistic": stat, "measured_ratio": measured_ratio, "fingerprint_ratio": ratio,
               **({"proxy_fingerprint_ratio": fp_ratio} if predictor else {}),
               "shots": {}}
    for k in shots:
        if k == 0:
            results["shots"]["0"] = {"zero_shot": {**transfer_metrics(x * ratio, y),
                                                   "median_ratio": float(np.median(x * ratio / y))}}
            if proxy_scaled is not None and np.all(np.isfinite(proxy_scaled)):
                results["shots"]["0"]["proxy_scaled"] = {**transfer_metrics(proxy_scaled, y),
                                                         "median_ratio": float(np.median(proxy_scaled / y))}
            continue
        entry = {}
        pick = choose_shots(x, k, feats)
        rest = np.setdiff1d(np.arange(len(y)), pick)
        sel = calibrate(x[pick, None], y[pick])
        entry["chosen"] = {**transfer_metrics(sel.calibrator.predict(x[rest, None]), y[rest]), "method": sel.method}
        rows, methods = [], {}
        for _ in range(repeats):
            pick = rng.choice(len(y), k, replace=False)
            rest = np.setdiff1d(np.arange(len(y)), pick)
            sel = calibrate(x[pick, None], y[pick])
            m = transfer_metrics(sel.calibrator.predict(x[rest, None]), y[rest])
            rows.append([m["mape"], m["within_10"], m["spearman"]])
            methods[sel.method] = methods.get(sel.method, 0) + 1
        mean = np.nanmean(np.array(rows), axis=0)
        entry["random"] = {"mape": mean[0], "within_10": mean[1], "spearman": mean[2], "repeats": repeats,
                           "methods": methods}
        results["shots"][str(k)] = entry
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="measurement store (SQLite) with model records at both thread counts")
    ap.add_argument("--source-threads", type=int, default=1)
    ap.add_argument("--target-threads", type=int, default=2)
    ap.add_argument("--device", default=None, help="device name of both sides (default: any)")
    ap.add_argument("--source-device", default=None, help="device name or id of the source side (default: --device)")
    ap.add_argument("--target-device", default=None, help="device name or id of the target side (default: --device)")
    ap.add_argument("--target-store", default=None,
                    help="read the target side from this store instead (a device measured apart; default: --store)")
    ap.add_argument("--predictor", default=None, help="use this predictor's zero-shot prediction as the source column")
    ap.add_argument("--shots", default="0,5,10,20")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="latency statistic of each record (min_ms, kept in extra_json, is least affected by "
                         "preemption on a busy machine)")
    ap.add_argument("--both-directions", action="store_true", help="also transfer target -> source threads")
    ap.add_argument("-o", "--output", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    for path in (args.store, args.target_store):
        if path and not Path(path).is_file():
            print(f"{path}: no such store; run the profiling campaign first", file=sys.stderr)
            return 1
    shots = [int(s) for s in args.shots.split(",") if s.strip()]
    src = (args.source_device or args.device, args.source_threads)
    dst = (args.target_device or args.device, args.target_threads)
    if args.both_directions and args.target_store:
        print("--both-directions reads both sides from --store; drop --target-store", file=sys.stderr)
        return 2
    res = {"forward": run(args.store, src, dst, shots, args.repeats, args.seed, args.predictor, args.stat,
                          args.target_store)}
    if args.both_directions:
        res["backward"] = run(args.store, dst, src, shots, args.repeats, args.seed, args.predictor, args.stat)
    res = clean(res)
    if args.output:
        Path(args.output).write_text(json.dumps(res, indent=2) + "\n")
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    for direction, r in res.items():
        if r["source_device"] == r["target_device"] and r["source_device_id"] != r["target_device_id"]:
            r = {**r, "source_device": f"{r['source_device']} [{r['source_device_id']}]",
                 "target_device": f"{r['target_device']} [{r['target_device_id']}]"}
        print(f"{direction}: {r['source_device']} at {r['source_threads']} -> {r['target_device']} at "
              f"{r['target_threads']} threads, {r['pairs']} pairs, source: {r['source']}")
        for k, e in r["shots"].items():
            for mode, m in e.items():
                print(f"  k={k:>3} {mode:>9}: MAPE {m['mape']:.2f}%  within10 {m['within_10']:.1f}%  "
                      f"rho {m['spearman']:.3f}  {m.get('method') or m.get('methods') or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
