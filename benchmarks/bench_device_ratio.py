"""How much slower one device runs the same plans than another, and where: a look at stored records (no timing).

Pairs the model records of two stores (``--source``, ``--target``) that measured the same graph under the same
plan at the same thread count (records the training loader skips are left out: see
:func:`perfpredict.samples.load_samples`), and reports the median target / source latency ratio per thread
count: overall, by quartile of the plan's milliseconds per node on the source (the first quartile is the most
dispatch-bound), by the convolution primitive most of the plan's convolutions use, and per family. It also fits
log(ratio) = a + b * (share of the plan's convolutions at int8) by least squares: exp(a) is the ratio of an all-fp32
plan, exp(b) how much further an all-int8 plan moves, beside the factor the two boards' measured peaks imply for it
((int8 peak ratio) / (fp32 peak ratio)). Whether the boards' peaks can correct a zero-shot prediction for int8 is
read from the two.

    .venv/bin/python benchmarks/bench_device_ratio.py --source datasets/xeon.db --target datasets/xeon2.db \
        --out benchmarks/results/device_ratio_xeon_xeon2.json
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import write_results  # noqa: E402
from perfpredict.samples import load_samples  # noqa: E402


def _main_conv(sample) -> str:  # noqa: ANN001
    convs = Counter(c.primitive for c in sample.plan.choices.values() if c.primitive.startswith("conv."))
    return convs.most_common(1)[0][0] if convs else "defaults"


def _int8_share(sample) -> float:  # noqa: ANN001
    convs = [c for c in sample.plan.choices.values() if c.primitive.startswith("conv.")]
    return sum(c.precision == "int8" for c in convs) / len(convs) if convs else 0.0


def _peak_factor(source, target) -> float | None:  # noqa: ANN001
    """(target int8 peak / source int8 peak) / (target fp32 peak / source fp32 peak) of two DeviceSpecs, inverted to
    a latency factor; None where a board lacks a peak."""
    peaks = (source.peak_gops_int8, target.peak_gops_int8, source.peak_gflops_fp32, target.peak_gflops_fp32)
    if not all(peaks):
        return None
    s8, t8, s32, t32 = peaks
    return (s8 / t8) / (s32 / t32)


def paired(source: str, target: str) -> list[dict]:
    """One row per (graph, plan, threads) measured in both stores: ratio, source ms per node, family, main conv, the
    share of convolutions at int8 and the boards' peak-implied factor for an all-int8 plan."""
    src = {(s.template.graph_id, s.plan.key, s.threads): s for s in load_samples(source, kinds=("model",)).models
           if s.latency_ms}
    rows = []
    for t in load_samples(target, kinds=("model",)).models:
        s = src.get((t.template.graph_id, t.plan.key, t.threads))
        if s is not None and t.latency_ms:
            rows.append({"ratio": t.latency_ms / s.latency_ms, "threads": s.threads, "family": s.family,
                         "ms_per_node": s.latency_ms / s.template.n_nodes, "main_conv": _main_conv(s),
                         "int8_share": _int8_share(s), "peak_factor": _peak_factor(s.device, t.device)})
    return rows


def summarise(rows: list[dict]) -> dict:
    """Median ratios per thread count: overall, by ms-per-node quartile, by main convolution primitive; per family."""
    out: dict = {"pairs": len(rows), "threads": {}}
    for th in sorted({r["threads"] for r in rows}):
        sub = [r for r in rows if r["threads"] == th]
        ratio = np.array([r["ratio"] for r in sub])
        mpn = np.array([r["ms_per_node"] for r in sub])
        edges = np.quantile(mpn, [0, 0.25, 0.5, 0.75, 1.0])
        quart = np.clip(np.searchsorted(edges, mpn, side="right") - 1, 0, 3)
        by_conv = defaultdict(list)
        for r in sub:
            by_conv[r["main_conv"]].append(r["ratio"])
        share = np.array([r["int8_share"] for r in sub])
        fit = None
        if np.ptp(share) > 0:
            (a, b), *_ = np.linalg.lstsq(np.stack([np.ones_like(share), share], 1), np.log(ratio), rcond=None)
            peak = [r["peak_factor"] for r in sub if r["peak_factor"] is not None]
            fit = {"fp32_ratio": float(np.exp(a)), "all_int8_factor": float(np.exp(b)),
                   "boards_peak_factor": float(np.median(peak)) if peak else None}
        out["threads"][th] = {
            "pairs": len(sub), "median_ratio": float(np.median(ratio)), "int8_fit": fit,
            "by_ms_per_node_quartile": [{"ms_per_node": [float(edges[q]), float(edges[q + 1])],
                                         "pairs": int((quart == q).sum()),
                                         "median_ratio": float(np.median(ratio[quart == q]))} for q in range(4)],
            "by_main_conv": {k: {"pairs": len(v), "median_ratio": float(np.median(v))}
                             for k, v in sorted(by_conv.items(), key=lambda kv: -len(kv[1]))},
        }
    fams = defaultdict(list)
    for r in rows:
        fams[r["family"]].append(r["ratio"])
    out["by_family"] = {f: float(np.median(v)) for f, v in sorted(fams.items())}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True, help="measurement store of the device compared against")
    ap.add_argument("--target", required=True, help="measurement store of the other device")
    ap.add_argument("--out", default="benchmarks/results/device_ratio.json")
    args = ap.parse_args(argv)
    rows = paired(args.source, args.target)
    if not rows:
        print(f"no plan measured in both {args.source} and {args.target}", file=sys.stderr)
        return 1
    res = summarise(rows)
    lines = [f"target / source latency, {args.target} against {args.source}: {res['pairs']} plans measured in both",
             "", "| threads | pairs | median | by ms/node quartile (most dispatch-bound first) | by main conv | "
             "all-int8 plan: fitted factor / boards' peaks |",
             "|---|---|---|---|---|---|"]
    for th, v in res["threads"].items():
        q = " / ".join(f"{x['median_ratio']:.2f}" for x in v["by_ms_per_node_quartile"])
        conv = ", ".join(f"{k} {x['median_ratio']:.2f} ({x['pairs']})" for k, x in v["by_main_conv"].items())
        f = v["int8_fit"]
        int8 = "n/a" if f is None else (f"x{f['all_int8_factor']:.2f} / " + (
            "n/a" if f["boards_peak_factor"] is None else f"x{f['boards_peak_factor']:.2f}"))
        lines.append(f"| {th} | {v['pairs']} | {v['median_ratio']:.2f} | {q} | {conv} | {int8} |")
    lines += ["", "per family: " + ", ".join(f"{f} {r:.2f}" for f, r in res["by_family"].items())]
    write_results(args.out, {"source": args.source, "target": args.target, **res}, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
