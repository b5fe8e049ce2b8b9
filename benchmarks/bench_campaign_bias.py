"""How far a checkpoint's predictions sit from each measurement campaign of a store (a look at stored records, no
timing).

A store gathers campaigns measured on different days and with different revisions of the runtime: the fusions it
makes (``fusion_revision``), how its forward pass dispatches the steps (``dispatch_revision``: one Python call per
step, or runs of oneDNN calls chained in C), and the VM's speed that day. A checkpoint trained on all of them
predicts one blend. For each campaign with model records this reports the revisions its records name, when it was
measured, and the checkpoint's error on it: the median predicted / measured ratio (overall and per thread count),
the MAPE and share within 10%, and the MAPE left after dividing each prediction by its campaign's median ratio
(what one scale per campaign would remove). Records the training loader skips are left out (see
:func:`perfpredict.samples.load_samples`); the records are the checkpoint's training data or not, as the store
is.

    .venv/bin/python benchmarks/bench_campaign_bias.py --data datasets/xeon2.db [--predictor trained_models/proxy]
        [--out benchmarks/results/campaign_bias_xeon2.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import write_results  # noqa: E402
from perfpredict.dataset import open_store  # noqa: E402
from perfpredict.errors import DatasetError  # noqa: E402
from perfpredict.gnn_predictor import load_predictor  # noqa: E402
from perfpredict.samples import load_samples  # noqa: E402


def _revisions(store, campaign: str) -> dict:  # noqa: ANN001
    """The runtime revisions the campaign's model records name (None: recorded before the field existed) and the
    first and last timestamps."""
    fusion, dispatch, stamps = Counter(), Counter(), []
    for r in store.iter_records(kind="model", campaign=campaign):
        extra = json.loads(r.extra_json or "{}")
        fusion[str(extra.get("fusion_revision"))] += 1
        dispatch[str(extra.get("dispatch_revision"))] += 1
        stamps.append(r.timestamp)
    return {"fusion_revision": dict(fusion), "dispatch_revision": dict(dispatch),
            "first": min(stamps, default=None), "last": max(stamps, default=None)}


def _errors(log_ratio: np.ndarray) -> dict:
    err = np.abs(np.expm1(log_ratio))
    centred = np.abs(np.expm1(log_ratio - np.median(log_ratio)))
    return {"n": int(log_ratio.size), "median_ratio": float(np.exp(np.median(log_ratio))),
            "mape": float(100 * err.mean()), "within_10": float(100 * (err <= 0.10).mean()),
            "mape_one_scale": float(100 * centred.mean()), "within_10_one_scale": float(100 * (centred <= 0.10).mean())}


def campaign_bias(predictor, data: str) -> dict:  # noqa: ANN001
    """Per campaign of ``data``: revisions, dates and the predictor's errors (overall and per thread count)."""
    store = open_store(data, create=False)
    campaigns = [c for c in store.info()["by_campaign"] if c != "none"]
    out = {}
    for campaign in campaigns:
        try:
            samples = load_samples(data, kinds=("model",), campaigns=[campaign])
        except DatasetError:  # no usable model record (a layer campaign)
            continue
        groups = defaultdict(list)
        for s in samples.models:
            if s.latency_ms:
                groups[(s.template.graph_id, s.device.name, s.threads)].append(s)
        if not groups:
            continue
        by_threads = defaultdict(list)
        for group in groups.values():
            first = group[0]
            pred = predictor.predict_plans(first.template, [s.plan for s in group], first.device, first.threads)
            for s, p in zip(group, np.asarray(pred.latency_ms, dtype=float)):
                by_threads[s.threads].append(float(np.log(p / s.latency_ms)))
        every = np.concatenate([np.asarray(v) for v in by_threads.values()])
        out[campaign] = {**_revisions(store, campaign), **_errors(every),
                         "by_threads": {str(t): _errors(np.asarray(v)) for t, v in sorted(by_threads.items())}}
    return out


def _table(rows: dict) -> str:
    lines = ["| campaign | fusion rev. | dispatch rev. | measured | records | predicted / measured (1 t / 2 t) | MAPE | "
             "within 10% | MAPE, one scale per campaign |", "|---|---|---|---|---|---|---|---|---|"]
    for c, r in rows.items():
        threads = " / ".join(f"{r['by_threads'][t]['median_ratio']:.2f}" for t in ("1", "2") if t in r["by_threads"])
        lines.append(f"| {c} | {', '.join(r['fusion_revision'])} | {', '.join(r['dispatch_revision'])} | "
                     f"{(r['first'] or '')[:10]} | {r['n']} | {r['median_ratio']:.3f} ({threads}) | {r['mape']:.1f}% | "
                     f"{r['within_10']:.1f}% | {r['mape_one_scale']:.1f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="measurement store")
    ap.add_argument("--predictor", default="trained_models/proxy", help="checkpoint (default trained_models/proxy)")
    ap.add_argument("--out", default="benchmarks/results/campaign_bias.json")
    args = ap.parse_args(argv)
    rows = campaign_bias(load_predictor(args.predictor), args.data)
    write_results(args.out, {"data": args.data, "predictor": args.predictor, "campaigns": rows}, _table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
