"""Fixed cost per convolution call, ours against ONNX Runtime, and its share of the gap between them (a figure,
not a test).

Chains of ``n`` tiny convolutions (1x1 kernel, 8 channels, 1x1 pixels: almost no arithmetic) are exported to
ONNX for two lengths; both runtimes run both chains (ours with every convolution on ``conv.onednn_packed``
(oneDNN through torch) and, separately, on ``conv.dnnl`` (oneDNN through its C API), both NHWC; ONNX
Runtime's default session), and the slope between the lengths is the fixed cost of one convolution call -
dispatch, descriptor set-up, thread hand-off - with each runtime's per-run cost cancelled out. Then, per zoo
model, the same plans and ONNX Runtime are timed in steady-state interleaved turns, and the gap that remains
with conv.dnnl is set against (number of convolutions) x (difference of its per-call cost and ORT's).

    .venv/bin/python benchmarks/bench_dispatch.py [--threads 2] [--out benchmarks/results/dispatch.json]

Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import MODELS, add_timing_options, timing_kwargs, write_results  # noqa: E402
from perfpredict.graph import Graph, load_onnx  # noqa: E402
from perfpredict.measure import measure_interleaved  # noqa: E402
from perfpredict.models import load_model  # noqa: E402
from perfpredict.plan import Choice, Plan  # noqa: E402
from perfpredict.primitives import candidates, get_primitive  # noqa: E402
from perfpredict.runtime import build_executable, ort_session  # noqa: E402

PRIMITIVES = {"packed": "conv.onednn_packed", "dnnl": "conv.dnnl"}


def conv_chain(n: int, channels: int, path: Path) -> Path:
    """An ONNX model of ``n`` 1x1 convolutions on a (1, channels, 1, 1) input, written to ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(n)
    nodes, inits, prev = [], [], "x"
    for i in range(n):
        w = (rng.standard_normal((channels, channels, 1, 1)) / channels).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"y{i}"], kernel_shape=[1, 1]))
        prev = f"y{i}"
    shape = [1, channels, 1, 1]
    g = helper.make_graph(nodes, f"chain{n}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, shape)], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def conv_plan(graph: Graph, conv: str) -> Plan:
    """Every convolution on the primitive ``conv`` (NHWC), every other node on its best-ranked fp32 primitive,
    in NHWC where that primitive has it."""
    choices = {}
    for n in graph.nodes:
        if any(p.name == conv for p in candidates(n, layout="NHWC", precision="fp32")):
            choices[n.name] = Choice(conv, "NHWC")
        else:
            prim = candidates(n, precision="fp32")[0]
            choices[n.name] = Choice(prim.name, "NHWC" if "NHWC" in get_primitive(prim.name).layouts else "NCHW")
    return Plan(choices)


def time_runtimes(graph: Graph, onnx_path: Path, args: argparse.Namespace) -> dict[str, float]:
    """Steady-state interleaved medians (ms) of our plans (every conv on each of :data:`PRIMITIVES`) and
    ONNX Runtime on ``graph``."""
    x = np.random.default_rng(0).standard_normal(graph.input_shape).astype(np.float32)
    calls = {}
    for label, conv in PRIMITIVES.items():
        exe = build_executable(graph, conv_plan(graph, conv), threads=args.threads)
        calls[label] = partial(exe.forward, *exe.prepare_input(x))
    sess = ort_session(onnx_path, threads=args.threads)
    feeds = {sess.get_inputs()[0].name: x}
    stats = measure_interleaved({**calls, "ort": lambda: sess.run(None, feeds)},
                                warmup=3, min_repeats=5, max_repeats=args.max_repeats, time_cap_s=args.time_cap,
                                threads=args.threads, seed=0, **timing_kwargs(args))
    return {k: s.median_ms for k, s in stats.items()} | {f"{k}_iqr": s.iqr_ms for k, s in stats.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lengths", default="1,65", help="the two chain lengths (default 1,65)")
    ap.add_argument("--channels", type=int, default=8)
    add_timing_options(ap)
    ap.add_argument("--out", default="benchmarks/results/dispatch.json")
    args = ap.parse_args(argv)
    short, long_ = (int(v) for v in args.lengths.split(","))

    chains = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (short, long_):
            path = conv_chain(n, args.channels, Path(tmp) / f"chain{n}.onnx")
            chains[n] = time_runtimes(load_onnx(path, name=f"chain{n}"), path, args)
            print(f"chain of {n}: " + ", ".join(f"{k} {v:.4f} ms" for k, v in chains[n].items()), file=sys.stderr)
    labels = (*PRIMITIVES, "ort")
    per_call_us = {k: 1e3 * (chains[long_][k] - chains[short][k]) / (long_ - short) for k in labels}
    excess_us = per_call_us["dnnl"] - per_call_us["ort"]
    print("per conv call: " + ", ".join(f"{k} {v:.1f} us" for k, v in per_call_us.items()), file=sys.stderr)

    rows = []
    for model in [m for m in args.models.split(",") if m]:
        graph, onnx_path = load_model(model)
        convs = sum(1 for n in graph.nodes if n.op == "Conv")
        t = time_runtimes(graph, onnx_path, args)
        gap = t["dnnl"] - t["ort"]
        explained = convs * excess_us / 1e3
        rows.append({"model": model, "convs": convs, **{f"{k}_ms": t[k] for k in labels}, "gap_ms": gap,
                     "per_call_excess_ms": explained, "share_of_gap": explained / gap if gap > 0 else None,
                     "iqr_ms": {k: t[f"{k}_iqr"] for k in labels}})
        print(f"{model}: {convs} convs, " + ", ".join(f"{k} {t[k]:.2f} ms" for k in labels), file=sys.stderr)

    lines = [f"Fixed cost per convolution call ({args.threads} threads; slope between chains of {short} and {long_} "
             f"tiny convs): oneDNN through torch (conv.onednn_packed) {per_call_us['packed']:.1f} us, oneDNN "
             f"through its C API (conv.dnnl) {per_call_us['dnnl']:.1f} us, ONNX Runtime {per_call_us['ort']:.1f} us.",
             "", "| model | convs | all conv.onednn_packed ms | all conv.dnnl ms | ONNX Runtime ms | gap (dnnl) ms "
             "| convs x excess per call ms | share of gap |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = f"{100 * r['share_of_gap']:.0f}%" if r["share_of_gap"] is not None else "-"
        lines.append(f"| {r['model']} | {r['convs']} | {r['packed_ms']:.2f} | {r['dnnl_ms']:.2f} | {r['ort_ms']:.2f} "
                     f"| {r['gap_ms']:.2f} | {r['per_call_excess_ms']:.2f} | {share} |")
    write_results(args.out, {"threads": args.threads, "lengths": [short, long_], "channels": args.channels,
                             "chains": {str(k): v for k, v in chains.items()}, "per_call_us": per_call_us,
                             "rows": rows}, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
