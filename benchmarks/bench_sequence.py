"""How much of a plan's time is oneDNN's own, and how that compares with ONNX Runtime (a figure, not a test).

Per zoo model and precision, the whole-graph NHWC plan of ``bench_fusion.py`` (every convolution on ``conv.dnnl``,
or ``conv.dnnl_int8`` at int8; MaxPool on ``maxpool.dnnl``, squeeze-excite gates on ``mul.dnnl``, the classifier on
``gemm.dnnl``) is run once while its oneDNN convolution calls are recorded
(:func:`perfpredict.primitives.dnnl.recorded_calls`). Then three things are timed in steady-state interleaved turns:

- ``forward``: the plan's forward pass as this runtime runs it, runs of consecutive oneDNN convolutions in one C call
  each (:mod:`perfpredict.runtime.chain`);
- ``forward, a step per op``: the same pass with one Python step per op (``build_executable(..., chain=False)``);
- ``oneDNN calls``: the recorded convolution calls replayed back to back in one C call, on the same tensors
  (:func:`perfpredict.primitives.dnnl.call_chain`): oneDNN's own time for them, with no Python, no allocation and
  no other op between them. The replay keeps every recorded tensor alive at once, where the forward pass reuses
  freed memory, so it touches more memory than the forward pass does: if anything, it is slower than the same
  calls would be without the runtime;
- ``ORT``: ONNX Runtime's default session (fp32) on the same input.

The forward pass minus the replay is what the runtime adds and what the other ops cost; the replay against ONNX
Runtime is how far oneDNN's kernels, called one layer at a time, are from ONNX Runtime's whole model; the two forward
passes, what the chains save.

    .venv/bin/python benchmarks/bench_sequence.py [--models mobilenet_v2,squeezenet1_1,efficientnet_b0,resnet18]
        [--precisions fp32,int8] [--threads 2] [--out benchmarks/results/sequence.json]

Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_fusion import whole_graph_plan  # noqa: E402
from benchmarks.harness import add_timing_options, timing_kwargs, write_results  # noqa: E402
from perfpredict.measure import measure_interleaved  # noqa: E402
from perfpredict.models import load_model  # noqa: E402
from perfpredict.primitives.dnnl import call_chain, recorded_calls  # noqa: E402
from perfpredict.runtime import build_executable, ort_session  # noqa: E402

MODELS = "mobilenet_v2,squeezenet1_1,efficientnet_b0,resnet18"


def bench_model(model: str, precision: str, args: argparse.Namespace) -> dict:
    graph, onnx_path = load_model(model)
    x = np.random.default_rng(0).standard_normal(graph.input_shape).astype(np.float32)
    plan = whole_graph_plan(graph, precision, gemm="gemm.dnnl")
    exe = build_executable(graph, plan, threads=args.threads, calibration=[x] if precision == "int8" else None)
    stepped = build_executable(graph, plan, threads=args.threads, calibration=exe.calibration, chain=False)
    xs = exe.prepare_input(x)
    with recorded_calls() as calls:
        stepped.forward(*xs)
    chain = call_chain(calls)
    sess = ort_session(onnx_path, threads=args.threads)
    feeds = {sess.get_inputs()[0].name: x}
    fns = {"forward": lambda: exe.forward(*xs), "forward, a step per op": lambda: stepped.forward(*xs),
           "oneDNN calls": chain, "ORT": lambda: sess.run(None, feeds)}
    stats = measure_interleaved(fns, warmup=3, min_repeats=5, max_repeats=args.max_repeats, time_cap_s=args.time_cap,
                                threads=args.threads, seed=0, **timing_kwargs(args))
    med = {k: s.median_ms for k, s in stats.items()}
    return {"model": model, "precision": precision, "threads": args.threads, "calls": len(calls),
            "steps": len(exe.schedule.ops), "chained_steps": len(exe._fast_steps), "median_ms": med, "ci95_rel": {k: s.ci95_rel for k, s in stats.items()},
            "calls_share": med["oneDNN calls"] / med["forward"], "rest_ms": med["forward"] - med["oneDNN calls"]}


def _table(rows: list[dict]) -> str:
    lines = ["| model | precision | steps (chained) | oneDNN conv calls | forward ms | a step per op ms "
             "| the calls back to back ms | rest ms | ORT fp32 ms | calls vs ORT | forward vs ORT |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["median_ms"]
        lines.append(f"| {r['model']} | {r['precision']} | {r['steps']} ({r['chained_steps']}) | {r['calls']} | "
                     f"{m['forward']:.2f} | {m['forward, a step per op']:.2f} | {m['oneDNN calls']:.2f} | "
                     f"{r['rest_ms']:.2f} | {m['ORT']:.2f} | {m['ORT'] / m['oneDNN calls']:.2f}x | "
                     f"{m['ORT'] / m['forward']:.2f}x |")
    worst = max(max(r["ci95_rel"].values()) for r in rows) if rows else float("nan")
    lines += ["", f"Medians of interleaved steady-state turns; the widest 95% CI of a median is ±{100 * worst:.1f}%. "
                  "'vs ORT' above 1: faster than ONNX Runtime."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=MODELS, help=f"comma-separated zoo models (default {MODELS})")
    ap.add_argument("--precisions", default="fp32,int8", help="comma-separated: fp32, int8 (default both)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/sequence.json")
    add_timing_options(ap)
    args = ap.parse_args(argv)
    precisions = [p for p in args.precisions.split(",") if p]
    bad = sorted(set(precisions) - {"fp32", "int8"})
    if bad:
        ap.error(f"--precisions takes fp32 and int8, not {', '.join(bad)}")
    rows = []
    for model in [m for m in args.models.split(",") if m]:
        for precision in precisions:
            print(f"{model} {precision}: timing ...", file=sys.stderr, flush=True)
            rows.append(bench_model(model, precision, args))
    write_results(args.out, {"rows": rows}, _table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
