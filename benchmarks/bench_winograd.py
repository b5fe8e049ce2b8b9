"""What ``conv.winograd4`` gains in whole models, where the layer records say it wins (a figure, not a test).

Per zoo model, the whole-graph NHWC ``conv.dnnl`` plan (every convolution on ``conv.dnnl``, every other node on its
first-ranked primitive, NHWC where it has it: ``bench_dispatch.conv_plan``) against the same plan with
``conv.winograd4`` on the 3x3 stride-1 convolutions whose output is ``--min-height`` to ``--max-height`` high
(default 15 to 56: the band where ``bench_conv_pair.py --base conv.dnnl --candidate conv.winograd4`` finds it faster
on the Zen 5 VM's layer records), and on all of them. Outputs are checked against the first plan's (1e-4 relative),
then the plans and ONNX Runtime's default session are timed in steady-state interleaved turns, and each plan's
moved layers are timed step by step (:meth:`perfpredict.runtime.Executable.step_times`, median of 50 passes).

    .venv/bin/python benchmarks/bench_winograd.py [--models resnet18,squeezenet1_1,vgg11,googlenet] [--threads 2]
        [--out benchmarks/results/winograd4.json]

Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_dispatch import conv_plan  # noqa: E402
from benchmarks.harness import add_timing_options, timing_kwargs, write_results  # noqa: E402
from perfpredict.graph import Graph  # noqa: E402
from perfpredict.measure import measure_interleaved  # noqa: E402
from perfpredict.models import load_model  # noqa: E402
from perfpredict.plan import Choice, Plan  # noqa: E402
from perfpredict.primitives import get_primitive  # noqa: E402
from perfpredict.runtime import build_executable, max_rel_err, ort_session  # noqa: E402

WINOGRAD = "conv.winograd4"


def winograd_nodes(graph: Graph, lo: int, hi: int) -> list[str]:
    """The nodes ``conv.winograd4`` runs whose output height is in [lo, hi]."""
    prim = get_primitive(WINOGRAD)
    return [n.name for n in graph.nodes if prim.applies(n) and lo <= n.out_shape[2] <= hi]


def with_winograd(plan: Plan, nodes: list[str]) -> Plan:
    """``plan`` with ``nodes`` moved to ``conv.winograd4`` (NHWC)."""
    return Plan({**plan.choices, **{n: Choice(WINOGRAD, "NHWC") for n in nodes}})


def bench_model(model: str, args: argparse.Namespace) -> dict:
    graph, onnx_path = load_model(model)
    x = np.random.default_rng(0).standard_normal(graph.input_shape).astype(np.float32)
    base = conv_plan(graph, "conv.dnnl")
    band = winograd_nodes(graph, args.min_height, args.max_height)
    every = winograd_nodes(graph, 1, 1 << 30)
    plans = {"conv.dnnl": base, "winograd4 in band": with_winograd(base, band),
             "winograd4 on all": with_winograd(base, every)}
    exes = {k: build_executable(graph, p, threads=args.threads) for k, p in plans.items()}
    ref = exes["conv.dnnl"].run(x)
    for k, exe in exes.items():
        err = max_rel_err(exe.run(x), ref)
        if err > 1e-4:
            raise SystemExit(f"{model} {k}: output differs from the conv.dnnl plan's by {err:.2e}")
    steps = {}
    for k in ("conv.dnnl", "winograd4 in band"):
        by_name = {st.name: st.ms for st in exes[k].step_times(x, repeats=50)}
        steps[k] = sum(by_name[n] for n in band)
    calls = {k: partial(exe.forward, *exe.prepare_input(x)) for k, exe in exes.items()}
    sess = ort_session(onnx_path, threads=args.threads)
    feeds = {sess.get_inputs()[0].name: x}
    calls["ort"] = lambda: sess.run(None, feeds)
    stats = measure_interleaved(calls, warmup=3, min_repeats=5, max_repeats=args.max_repeats,
                                time_cap_s=args.time_cap, threads=args.threads, seed=0, **timing_kwargs(args))
    med = {k: s.median_ms for k, s in stats.items()}
    return {"model": model, "threads": args.threads, "band_nodes": len(band), "all_nodes": len(every),
            "median_ms": med, "ci95_rel": {k: s.ci95_rel for k, s in stats.items()},
            "band_steps_ms": steps,
            "gain_band": med["conv.dnnl"] / med["winograd4 in band"],
            "gain_all": med["conv.dnnl"] / med["winograd4 on all"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,squeezenet1_1,vgg11,googlenet")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-height", type=int, default=15, help="lowest output height moved (default 15)")
    ap.add_argument("--max-height", type=int, default=56, help="highest output height moved (default 56)")
    add_timing_options(ap, time_cap=5.0)
    ap.add_argument("--out", default="benchmarks/results/winograd4.json")
    args = ap.parse_args(argv)
    rows = []
    for model in [m for m in args.models.split(",") if m]:
        print(f"{model} ...", file=sys.stderr)
        rows.append(bench_model(model, args))
    table = "\n".join(
        [f"conv.winograd4 in whole-graph conv.dnnl NHWC plans ({args.threads} threads; in band: outputs "
         f"{args.min_height}-{args.max_height} high), medians in ms:", "",
         "| model | layers in band / all | conv.dnnl | in band | on all | ONNX Runtime | gain in band | gain on all | "
         "band layers' steps ms (conv.dnnl -> winograd4) |",
         "|---|---|---|---|---|---|---|---|---|"]
        + [f"| {r['model']} | {r['band_nodes']} / {r['all_nodes']} | {r['median_ms']['conv.dnnl']:.2f} | "
           f"{r['median_ms']['winograd4 in band']:.2f} | {r['median_ms']['winograd4 on all']:.2f} | "
           f"{r['median_ms']['ort']:.2f} | {r['gain_band']:.3f}x | {r['gain_all']:.3f}x | "
           f"{r['band_steps_ms']['conv.dnnl']:.2f} -> {r['band_steps_ms']['winograd4 in band']:.2f} |" for r in rows])
    write_results(args.out, {"threads": args.threads, "min_height": args.min_height, "max_height": args.max_height,
                             "rows": rows}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
