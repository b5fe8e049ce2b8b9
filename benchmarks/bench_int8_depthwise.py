"""The int8 depthwise slow path: ``conv.int8`` on depthwise convolutions whose channel count is or is not a
multiple of 8 (a figure, not a test).

fbgemm runs a depthwise convolution through its specialised kernels only when the channel count is a
multiple of 8; any other count takes its generic grouped path, one small GEMM per channel. This script
measures both sides on synthetic layers (pairs of nearby channel counts, kernels 3/5/7, stride 1 and 2) with
the runtime's own ``conv.int8`` kernel in NHWC, round-robin with ``measure_interleaved``, and reports each
layer's time, its throughput as a share of the device's measured int8 peak (``peak_gops_int8`` of the local
board) and the slow/fast ratio of each pair. The median share over the slow layers is the figure that
:data:`perfpredict.primitives.quantized.DEPTHWISE_FALLBACK_SHARE` carries into the cost models.

    .venv/bin/python benchmarks/bench_int8_depthwise.py [--threads 1,2] [--time-cap 1]
        [--out benchmarks/results/int8_depthwise.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_primitives import make_layer, variants  # noqa: E402
from benchmarks.harness import write_results  # noqa: E402
from perfpredict.devices import local_device  # noqa: E402
from perfpredict.measure import measure_interleaved  # noqa: E402
from perfpredict.primitives.quantized import depthwise_fallback  # noqa: E402

# (fast channels, slow channels): nearby counts, the first a multiple of 8, the second not
PAIRS = ((56, 58), (112, 116), (120, 122), (176, 174), (240, 244))
KERNELS = (3, 5, 7)
STRIDES = (1, 2)
HW = 24
INT8 = "conv.int8 NHWC int8"  # the one candidate built of each layer


def int8_call(channels: int, k: int, stride: int):
    """The depthwise node and a zero-argument call of the runtime's conv.int8 kernel (NHWC) on it, with a
    pre-quantised input."""
    node, weights, x = make_layer("dw", channels, channels, k, stride, k // 2, channels, HW,
                                  seed=channels * 100 + k * 10 + stride)
    kernel, q, _ = variants(node, weights, x, labels=(INT8,))[INT8]
    return node, lambda: kernel(q)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--time-cap", type=float, default=1.0, help="seconds of timing per layer (default 1)")
    ap.add_argument("--out", default="benchmarks/results/int8_depthwise.json",
                    help="result JSON (and .md beside it)")
    args = ap.parse_args(argv)
    rows = []
    for threads in [int(t) for t in args.threads.split(",") if t]:
        peak = local_device(threads).peak_gops_int8
        if not peak:
            print("the local board has no measured peak_gops_int8", file=sys.stderr)
            return 1
        for k in KERNELS:
            for stride in STRIDES:
                layers = {}
                for pair in PAIRS:
                    for c in pair:
                        layers[c] = int8_call(c, k, stride)
                with torch.inference_mode():
                    stats = measure_interleaved({str(c): f for c, (_, f) in layers.items()}, threads=threads,
                                                time_cap_s=args.time_cap, target_ci=0.03, min_repeats=5,
                                                warmup=2)
                for fast, slow in PAIRS:
                    for c in (fast, slow):
                        node, s = layers[c][0], stats[str(c)]
                        gops = 2.0 * node.macs / (s.median_ms * 1e6)
                        rows.append({"threads": threads, "kernel": k, "stride": stride, "channels": c,
                                     "fallback": depthwise_fallback(node, c), "macs": node.macs,
                                     "median_ms": round(s.median_ms, 5), "ci95_rel": round(s.ci95_rel, 4),
                                     "n_repeats": s.n_repeats, "gops": round(gops, 4),
                                     "share_of_int8_peak": gops / peak,
                                     "slow_over_fast": None if c == fast else
                                     round(s.median_ms / stats[str(fast)].median_ms, 2)})
                print(f"{threads} thread(s), k={k}, stride {stride}: measured", file=sys.stderr)
    slow = [r for r in rows if r["fallback"]]
    summary = {"fallback_share_median": statistics.median(r["share_of_int8_peak"] for r in slow),
               "fallback_share_range": [min(r["share_of_int8_peak"] for r in slow),
                                        max(r["share_of_int8_peak"] for r in slow)],
               "slow_over_fast_median": statistics.median(r["slow_over_fast"] for r in slow),
               "slow_over_fast_range": [min(r["slow_over_fast"] for r in slow),
                                        max(r["slow_over_fast"] for r in slow)],
               "fast_path_wrongly_flagged": [r["channels"] for r in rows if not r["fallback"] and
                                             r["channels"] % 8]}
    lines = ["# conv.int8 on depthwise layers: channels a multiple of 8 or not", "",
             f"Synthetic depthwise layers at {HW}x{HW}, NHWC, pre-quantised input; median of interleaved repeats.",
             f"Slow path (channels not a multiple of 8): median {summary['fallback_share_median']:.2e} of the int8 "
             f"peak ({summary['fallback_share_range'][0]:.2e}-{summary['fallback_share_range'][1]:.2e}); "
             f"{summary['slow_over_fast_median']:.0f}x the time of the nearby multiple of 8 "
             f"({summary['slow_over_fast_range'][0]:.0f}-{summary['slow_over_fast_range'][1]:.0f}x).", "",
             "| threads | kernel | stride | channels | median ms | ci95 | GOP/s | share of int8 peak | slow/fast |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['threads']} | {r['kernel']} | {r['stride']} | {r['channels']} | {r['median_ms']:.3f} | "
                     f"{r['ci95_rel']:.1%} | {r['gops']:.2f} | {r['share_of_int8_peak']:.2e} | "
                     f"{'' if r['slow_over_fast'] is None else r['slow_over_fast']} |")
    write_results(args.out, {"rows": rows, "summary": summary}, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
