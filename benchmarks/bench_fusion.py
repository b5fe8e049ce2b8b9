"""What folding the residual Add into the convolution, and running MaxPool and the squeeze-excite gates on oneDNN,
gain, plan for plan (a figure, not a test).

Per zoo model, two whole-graph NHWC plans: every convolution on ``conv.dnnl`` (fp32), and on ``conv.dnnl_int8``
(int8, every node that has an int8 primitive at int8); every other node on its first-ranked primitive, MaxPool on
``maxpool.dnnl`` and the gate products of squeeze-excite blocks on ``mul.dnnl``. Each is built four ways and timed
with ONNX Runtime's default session in steady-state interleaved turns: as this runtime runs it; with the fusions
of revision 2 (the residual Add a node of its own, ``build_executable(..., fusion_revision=2)``); with MaxPool on
``maxpool.torch``; with the gates on ``mul.torch``; and with every fp32 Gemm (the classifier) on ``gemm.dnnl``
instead of ``gemm.blas`` (the gain column: "as run now" over that one, above 1 when gemm.dnnl is faster). Outputs are checked against ONNX Runtime first (fp32: 1e-4
relative).

    .venv/bin/python benchmarks/bench_fusion.py [--threads 2] [--out benchmarks/results/fusion.json]

Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import MODELS, add_timing_options, timing_kwargs, write_results  # noqa: E402
from perfpredict.graph import Graph  # noqa: E402
from perfpredict.measure import measure_interleaved  # noqa: E402
from perfpredict.models import load_model  # noqa: E402
from perfpredict.plan import Choice, Plan  # noqa: E402
from perfpredict.primitives import candidates  # noqa: E402
from perfpredict.primitives.dnnl_binary import gate_operand  # noqa: E402
from perfpredict.runtime import build_executable, max_rel_err, ort_run, ort_session  # noqa: E402

CONVS = {"fp32": "conv.dnnl", "int8": "conv.dnnl_int8"}
VARIANTS = ("now", "no_residual_fold", "maxpool_torch", "gate_torch", "gemm_dnnl")


def whole_graph_plan(graph: Graph, precision: str, maxpool: str = "maxpool.dnnl", gate: str = "mul.dnnl",
                     gemm: str | None = None) -> Plan:
    """Every Conv on :data:`CONVS` ``[precision]``, every MaxPool on ``maxpool``, every squeeze-excite gate product on
    ``gate``, every fp32 Gemm on ``gemm`` where given and it applies, every other node on its first-ranked NHWC
    primitive at ``precision`` where it has one (else its first-ranked fp32 one)."""
    choices = {}
    for n in graph.nodes:
        prec = precision if candidates(n, precision=precision) else "fp32"
        if gemm is not None and prec == "fp32" and any(c.name == gemm for c in candidates(n, precision="fp32")):
            choices[n.name] = Choice(gemm, "NCHW", "fp32")
        elif n.op == "Conv":
            choices[n.name] = Choice(CONVS[prec], "NHWC", prec)
        elif n.op == "MaxPool":
            choices[n.name] = Choice(maxpool, "NHWC", prec)
        elif gate_operand(n) is not None:
            choices[n.name] = Choice(gate, "NHWC", prec)
        else:
            c = candidates(n, layout="NHWC", precision=prec) or candidates(n, precision=prec)
            choices[n.name] = Choice(c[0].name, "NHWC" if "NHWC" in c[0].layouts else c[0].layouts[0], prec)
    return Plan(choices)


def time_model(model: str, precision: str, args: argparse.Namespace) -> dict:
    graph, onnx_path = load_model(model)
    x = np.random.default_rng(0).standard_normal(graph.input_shape).astype(np.float32)
    calib = [x] if precision == "int8" else None
    builds = {
        "now": build_executable(graph, whole_graph_plan(graph, precision), threads=args.threads, calibration=calib),
        "no_residual_fold": build_executable(graph, whole_graph_plan(graph, precision), threads=args.threads,
                                             calibration=calib, fusion_revision=2),
        "maxpool_torch": build_executable(graph, whole_graph_plan(graph, precision, "maxpool.torch"),
                                          threads=args.threads, calibration=calib),
        "gate_torch": build_executable(graph, whole_graph_plan(graph, precision, gate="mul.torch"),
                                       threads=args.threads, calibration=calib),
        "gemm_dnnl": build_executable(graph, whole_graph_plan(graph, precision, gemm="gemm.dnnl"),
                                      threads=args.threads, calibration=calib),
    }
    sess = ort_session(onnx_path, threads=args.threads)
    ref = ort_run(sess, x)[0]
    errs = {k: max_rel_err(exe.run(x), ref) for k, exe in builds.items()}
    if precision == "fp32" and max(errs.values()) > 1e-4:
        raise SystemExit(f"{model}: outputs differ from ONNX Runtime: {errs}")
    calls = {k: partial(exe.forward, *exe.prepare_input(x)) for k, exe in builds.items()}
    feeds = {sess.get_inputs()[0].name: x}
    stats = measure_interleaved({**calls, "ort": lambda: sess.run(None, feeds)}, warmup=3, min_repeats=5,
                                max_repeats=args.max_repeats, time_cap_s=args.time_cap, threads=args.threads,
                                seed=0, **timing_kwargs(args))
    now = builds["now"]
    return {"model": model, "precision": precision, **{f"{k}_ms": s.median_ms for k, s in stats.items()},
            "iqr_ms": {k: s.iqr_ms for k, s in stats.items()}, "max_rel_err_vs_ort": errs,
            "residual_folds": sum(op.fused_residual for op in now.schedule.ops),
            "maxpools": sum(1 for n in graph.nodes if n.op == "MaxPool"),
            "gates": sum(1 for n in graph.nodes if gate_operand(n) is not None)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models")
    ap.add_argument("--precisions", default="fp32,int8", help="comma-separated: fp32, int8")
    ap.add_argument("--threads", type=int, default=2)
    add_timing_options(ap)
    ap.add_argument("--out", default="benchmarks/results/fusion.json")
    args = ap.parse_args(argv)

    rows = []
    for model in [m for m in args.models.split(",") if m]:
        for precision in args.precisions.split(","):
            r = time_model(model, precision, args)
            rows.append(r)
            print(f"{model} {precision}: " + ", ".join(f"{k} {r[f'{k}_ms']:.3f} ms" for k in (*VARIANTS, "ort")),
                  file=sys.stderr)
    lines = ["| model | plan | residual folds | MaxPools | gates | as run now ms | residual Add apart ms "
             "| MaxPool on torch ms | gates on torch ms | fp32 Gemm on gemm.dnnl ms | ONNX Runtime fp32 ms | fold gain "
             "| oneDNN pool gain | oneDNN gate gain | gemm.dnnl gain |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {CONVS[r['precision']]} | {r['residual_folds']} | {r['maxpools']} "
                     f"| {r['gates']} | {r['now_ms']:.2f} | {r['no_residual_fold_ms']:.2f} "
                     f"| {r['maxpool_torch_ms']:.2f} | {r['gate_torch_ms']:.2f} | {r['gemm_dnnl_ms']:.2f} "
                     f"| {r['ort_ms']:.2f} "
                     f"| {r['no_residual_fold_ms'] / r['now_ms']:.3f}x | {r['maxpool_torch_ms'] / r['now_ms']:.3f}x "
                     f"| {r['gate_torch_ms'] / r['now_ms']:.3f}x | {r['now_ms'] / r['gemm_dnnl_ms']:.3f}x |")
    write_results(args.out, {"threads": args.threads, "rows": rows}, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
