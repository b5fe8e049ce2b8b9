"""One convolution primitive against another over the stored layer records (a figure, not a test).

Pairs the two primitives' layer records of each convolution configuration at each thread count (same
device, same node, same prune ratio, both NHWC at ``--precision``) in a measurement store and reports the mean
and median time ratio (candidate / base) and how often the candidate is faster, per thread count, and per thread
count and output map size (the output's height, in bands: where a primitive wins is often a matter of map size).

    # conv.onednn_packed (weights reordered once) against conv.onednn (reordered every call)
    .venv/bin/python benchmarks/bench_conv_pair.py [--data datasets/xeon.db]
        [--out benchmarks/results/packed_conv.json]
    # conv.dnnl (oneDNN's C API) against conv.onednn_packed (the same oneDNN convolution through torch)
    .venv/bin/python benchmarks/bench_conv_pair.py --base conv.onednn_packed --candidate conv.dnnl
        --data datasets/xeon2.db --out benchmarks/results/dnnl_conv.json
    # Winograd F(4x4, 3x3) in C against oneDNN's direct convolution (zen5.db's layers-winograd4 campaign)
    .venv/bin/python benchmarks/bench_conv_pair.py --base conv.dnnl --candidate conv.winograd4
        --data datasets/zen5.db --out benchmarks/results/winograd4_conv_zen5.json
    # int8: oneDNN's C API against fbgemm
    .venv/bin/python benchmarks/bench_conv_pair.py --base conv.int8 --candidate conv.dnnl_int8 --precision int8
        --data datasets/xeon2.db --out benchmarks/results/dnnl_int8_conv.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import write_results  # noqa: E402
from perfpredict.dataset import open_store  # noqa: E402


BANDS = ((1, 7), (8, 14), (15, 28), (29, 56), (57, 1 << 30))
"""Output heights grouped for the per-size table (7x7 maps and smaller, up to 14, 28, 56, larger)."""


def _band(height: int) -> str:
    lo, hi = next(b for b in BANDS if b[0] <= height <= b[1])
    return f"{lo}-{hi}" if hi < 1 << 30 else f">{lo - 1}"


def paired_ratios(path: str, base: str, candidate: str, precision: str = "fp32") -> dict[tuple[int, str], list[float]]:
    """(threads, output-height band) -> candidate / base median-latency ratios over the configurations measured
    with both (NHWC, at ``precision``)."""
    times: dict[tuple, dict[str, float]] = {}
    store = open_store(path, create=False)
    for r in store.iter_records(kind="layer"):
        if r.primitive in (base, candidate) and r.layout == "NHWC" and r.precision == precision:
            key = (r.device_name, r.threads, r.node_json, r.prune)
            times.setdefault(key, {})[r.primitive] = r.median_ms
    out: dict[tuple[int, str], list[float]] = {}
    for (_, threads, node_json, _), t in times.items():
        if base in t and candidate in t:
            band = _band(json.loads(node_json)["output_shapes"][0][2])
            out.setdefault((threads, band), []).append(t[candidate] / t[base])
    return out


def _row(key: dict, v: list[float]) -> dict:
    return {**key, "pairs": len(v), "mean_ratio": statistics.fmean(v), "median_ratio": statistics.median(v),
            "candidate_faster": sum(x < 1.0 for x in v)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="datasets/xeon.db", help="measurement store (default datasets/xeon.db)")
    ap.add_argument("--base", default="conv.onednn", help="the primitive compared against (default conv.onednn)")
    ap.add_argument("--candidate", default="conv.onednn_packed", help="default conv.onednn_packed")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "int8"], help="default fp32")
    ap.add_argument("--out", default="benchmarks/results/packed_conv.json")
    args = ap.parse_args(argv)
    sized = paired_ratios(args.data, args.base, args.candidate, args.precision)
    ratios: dict[int, list[float]] = {}
    for (t, _), v in sized.items():
        ratios.setdefault(t, []).extend(v)
    if not ratios:
        print(f"{args.data}: no configuration measured with both {args.base} and {args.candidate} in NHWC at "
              f"{args.precision}", file=sys.stderr)
        return 1
    rows = [_row({"threads": t}, v) for t, v in sorted(ratios.items())]
    order = {_band(b[0]): i for i, b in enumerate(BANDS)}
    by_size = [_row({"threads": t, "output_height": band}, v)
               for (t, band), v in sorted(sized.items(), key=lambda kv: (kv[0][0], order[kv[0][1]]))]
    a, b = args.candidate, args.base
    head = f"| mean {a}/{b} | median {a}/{b} | {a} faster |"
    table = "\n".join([f"{a} against {b}, {args.precision} NHWC layer records of {args.data}:", "",
                       f"| threads | configurations {head}", "|---|---|---|---|---|"]
                      + [f"| {r['threads']} | {r['pairs']} | {r['mean_ratio']:.3f} | {r['median_ratio']:.3f} | "
                         f"{r['candidate_faster']} |" for r in rows]
                      + ["", "By output height:", "", f"| threads | output height | configurations {head}",
                         "|---|---|---|---|---|---|"]
                      + [f"| {r['threads']} | {r['output_height']} | {r['pairs']} | {r['mean_ratio']:.3f} | "
                         f"{r['median_ratio']:.3f} | {r['candidate_faster']} |" for r in by_size])
    write_results(args.out, {"data": args.data, "base": b, "candidate": a, "precision": args.precision, "rows": rows,
                             "by_output_height": by_size}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
