"""How far a checkpoint's predictions sit from each measurement campaign of a store (a look at stored records, no
timing).

A store gathers campaigns measured on different days and with different revisions of the runtime (the fusions it
makes, how its forward pass dispatches the steps: one Python call per step, or runs of oneDNN calls chained in C)
and the VM's speed that day. A checkpoint trained without session offsets predicts a blend of them; one trained
with them (:mod:`perfpredict.sessions`) predicts each device's reference session. For each campaign of a device at a
thread count this reports the dispatch revision its records name, when it was measured, and the checkpoint's
error on it: the median predicted / measured ratio, the MAPE and share within 10%, and the MAPE left after
dividing each prediction by the campaign's median ratio (what one scale per campaign would remove). With
``--split`` only the held-out part of that split is scored (the checkpoint's own split, on its model card, keeps
its training records out), and the records of the reference sessions of ``--references-of`` (by default the
predictor's own) are scored pooled as well, so two checkpoints can be held against the same records. Records the
training loader skips are left out (:func:`perfpredict.samples.load_samples`).

    .venv/bin/python benchmarks/bench_campaign_bias.py --data datasets/xeon2.db [--predictor trained_models/proxy]
        [--split random:0.2 --seed 0] [--references-of CHECKPOINT] [--out benchmarks/results/campaign_bias_xeon2.json]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import write_results  # noqa: E402
from perfpredict.gnn_predictor import load_predictor  # noqa: E402
from perfpredict.samples import load_samples, make_splits  # noqa: E402
from perfpredict.train import predict_samples, score_by_session  # noqa: E402


def _errors(log_ratio: np.ndarray) -> dict:
    err = np.abs(np.expm1(log_ratio))
    centred = np.abs(np.expm1(log_ratio - np.median(log_ratio)))
    return {"n": int(log_ratio.size), "median_ratio": float(np.exp(np.median(log_ratio))),
            "mape": float(100 * err.mean()), "within_10": float(100 * (err <= 0.10).mean()),
            "mape_one_scale": float(100 * centred.mean()), "within_10_one_scale": float(100 * (centred <= 0.10).mean())}


def campaign_bias(predictor, samples, training: dict | None = None) -> tuple[dict, dict | None]:  # noqa: ANN001
    """Per campaign of ``samples`` (device, threads, campaign): dispatch revisions, dates and the predictor's
    errors; and its metrics on the records of the reference sessions of the checkpoint whose training record is
    ``training`` (:func:`perfpredict.train.score_by_session`; None when that checkpoint has no session offsets)."""
    lat, mem = predict_samples(predictor, samples.models)
    by_session = score_by_session(samples.models, lat, mem, training or {})
    pooled = by_session["reference"] if by_session else None
    rows = defaultdict(list)
    for s, p in zip(samples.models, lat):
        if s.latency_ms and np.isfinite(p) and p > 0:
            rows[(s.device.name, s.device.device_id[:8], s.threads, s.campaign)].append(
                (float(np.log(p / s.latency_ms)), s))
    out = {}
    for (device, device_id, threads, campaign), items in sorted(rows.items()):
        stamps = [s.timestamp for _, s in items]
        out[f"{device_id}|{threads}|{campaign}"] = {
            "device": device, "device_id": device_id, "threads": threads, "campaign": campaign,
            "dispatch_revision": dict(Counter(str(s.dispatch_revision) for _, s in items)),
            "first": min(stamps), "last": max(stamps), **_errors(np.array([r for r, _ in items]))}
    return out, pooled


def _table(rows: dict) -> str:
    lines = ["| device (id) | threads | campaign | dispatch rev. | measured | records | predicted / measured | MAPE | "
             "within 10% | MAPE, one scale per campaign |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows.values():
        lines.append(f"| {r['device']} ({r['device_id']}) | {r['threads']} | {r['campaign']} | {', '.join(r['dispatch_revision'])} | "
                     f"{r['first'][:10]} | {r['n']} | {r['median_ratio']:.3f} | {r['mape']:.1f}% | "
                     f"{r['within_10']:.1f}% | {r['mape_one_scale']:.1f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="measurement store")
    ap.add_argument("--predictor", default="trained_models/proxy", help="checkpoint (default trained_models/proxy)")
    ap.add_argument("--split", default=None, help="score only the held-out part of this split (e.g. random:0.2)")
    ap.add_argument("--seed", type=int, default=0, help="seed of --split (default 0)")
    ap.add_argument("--references-of", default=None, metavar="CHECKPOINT",
                    help="also score the records of this checkpoint's reference sessions pooled (default: the "
                         "predictor's own, when it was trained with session offsets)")
    ap.add_argument("--out", default="benchmarks/results/campaign_bias.json")
    args = ap.parse_args(argv)
    predictor = load_predictor(args.predictor)
    owner = load_predictor(args.references_of) if args.references_of else predictor
    record = getattr(owner, "training", None) or {}
    samples = load_samples(args.data, kinds=("model",))
    if args.split:
        samples = make_splits(samples, args.split, args.seed)[0].test
    rows, pooled = campaign_bias(predictor, samples, record)
    table = _table(rows)
    if pooled:
        lat, rank = pooled["latency"], pooled["latency_ranking_within_model"]
        table += (f"\n\nThe reference sessions' records pooled ({lat['n']}): MAPE {lat['mape']:.2f}%, within 10% "
                  f"{lat['within_10']:.1f}%, Kendall {lat['kendall']:.3f}, Spearman {lat['spearman']:.3f}; the plans "
                  f"of each model ranked: mean Kendall {rank['kendall']:.3f} over {rank['groups']} groups.")
    write_results(args.out, {"data": args.data, "predictor": args.predictor, "split": args.split, "seed": args.seed,
                             "references_of": args.references_of or args.predictor, "reference_sessions":
                             record.get("reference_sessions") or [], "campaigns": rows,
                             "reference_pooled": pooled}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
