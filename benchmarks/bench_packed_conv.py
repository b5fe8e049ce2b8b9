"""conv.onednn_packed against conv.onednn in NHWC over the stored layer records (a figure, not a test).

Pairs the two primitives' layer records of each convolution configuration at each thread count (same
device, same node, same prune ratio, both fp32 NHWC) in a measurement store and reports the mean and
median time ratio (packed / plain) and how often the packed kernel is faster, per thread count.

    .venv/bin/python benchmarks/bench_packed_conv.py [--data datasets/xeon.db]
        [--out benchmarks/results/packed_conv.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import write_results  # noqa: E402
from perfpredict.dataset import open_store  # noqa: E402

PLAIN, PACKED = "conv.onednn", "conv.onednn_packed"


def paired_ratios(path: str) -> dict[int, list[float]]:
    """threads -> packed / plain median-latency ratios over the configurations measured with both."""
    times: dict[tuple, dict[str, float]] = {}
    store = open_store(path, create=False)
    for r in store.iter_records(kind="layer"):
        if r.primitive in (PLAIN, PACKED) and r.layout == "NHWC" and r.precision == "fp32":
            key = (r.device_name, r.threads, r.node_json, r.prune)
            times.setdefault(key, {})[r.primitive] = r.median_ms
    out: dict[int, list[float]] = {}
    for (_, threads, _, _), t in times.items():
        if PLAIN in t and PACKED in t:
            out.setdefault(threads, []).append(t[PACKED] / t[PLAIN])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="datasets/xeon.db", help="measurement store (default datasets/xeon.db)")
    ap.add_argument("--out", default="benchmarks/results/packed_conv.json")
    args = ap.parse_args(argv)
    ratios = paired_ratios(args.data)
    if not ratios:
        print(f"{args.data}: no configuration measured with both {PLAIN} and {PACKED} in NHWC", file=sys.stderr)
        return 1
    rows = [{"threads": t, "pairs": len(v), "mean_ratio": statistics.fmean(v), "median_ratio": statistics.median(v),
             "packed_faster": sum(x < 1.0 for x in v)} for t, v in sorted(ratios.items())]
    table = "\n".join(["| threads | configurations | mean packed/plain | median packed/plain | packed faster |",
                       "|---|---|---|---|---|"]
                      + [f"| {r['threads']} | {r['pairs']} | {r['mean_ratio']:.3f} | {r['median_ratio']:.3f} | "
                         f"{r['packed_faster']} |" for r in rows])
    write_results(args.out, {"data": args.data, "rows": rows}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
