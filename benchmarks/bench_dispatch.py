"""Fixed cost per convolution call, ours against ONNX Runtime, and its share of the gap between them (a figure,
not a test).

Chains of ``n`` tiny convolutions (1x1 kernel, 8 channels, 1x1 pixels: almost no arithmetic) are exported to
ONNX for two lengths; both runtimes run both chains (ours with the all-``conv.onednn_packed`` NHWC plan, ONNX
Runtime's default session), and the slope between the lengths is the fixed cost of one convolution call -
dispatch, descriptor set-up, thread hand-off - with each runtime's per-run cost cancelled out. Then, per zoo
model, the same all-packed plan and ONNX Runtime are timed in steady-state interleaved turns, and the measured
gap is set against (number of convolutions) x (difference of the per-call costs).

    .venv/bin/python benchmarks/bench_dispatch.py [--threads 2] [--out benchmarks/results/dispatch.json]

Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
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

PACKED = "conv.onednn_packed"


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


def packed_plan(graph: Graph) -> Plan:
    """Every convolution on conv.onednn_packed (NHWC), every other node on its best-ranked fp32 primitive, in
    NHWC where that primitive has it."""
    choices = {}
    for n in graph.nodes:
        if any(p.name == PACKED for p in candidates(n, layout="NHWC", precision="fp32")):
            choices[n.name] = Choice(PACKED, "NHWC")
        else:
            prim = candidates(n, precision="fp32")[0]
            choices[n.name] = Choice(prim.name, "NHWC" if "NHWC" in get_primitive(prim.name).layouts else "NCHW")
    return Plan(choices)


def time_pair(graph: Graph, onnx_path: Path, args: argparse.Namespace) -> dict[str, float]:
    """Steady-state interleaved medians (ms) of our all-packed plan and ONNX Runtime on ``graph``."""
    x = np.random.default_rng(0).standard_normal(graph.input_shape).astype(np.float32)
    exe = build_executable(graph, packed_plan(graph), threads=args.threads)
    xs = exe.prepare_input(x)
    sess = ort_session(onnx_path, threads=args.threads)
    feeds = {sess.get_inputs()[0].name: x}
    stats = measure_interleaved({"ours": lambda: exe.forward(*xs), "ort": lambda: sess.run(None, feeds)},
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
            chains[n] = time_pair(load_onnx(path, name=f"chain{n}"), path, args)
            print(f"chain of {n}: " + ", ".join(f"{k} {v:.4f} ms" for k, v in chains[n].items()), file=sys.stderr)
    per_call_us = {k: 1e3 * (chains[long_][k] - chains[short][k]) / (long_ - short) for k in ("ours", "ort")}
    excess_us = per_call_us["ours"] - per_call_us["ort"]
    print(f"per conv call: ours {per_call_us['ours']:.1f} us, ONNX Runtime {per_call_us['ort']:.1f} us",
          file=sys.stderr)

    rows = []
    for model in [m for m in args.models.split(",") if m]:
        graph, onnx_path = load_model(model)
        convs = sum(1 for n in graph.nodes if n.op == "Conv")
        t = time_pair(graph, onnx_path, args)
        gap = t["ours"] - t["ort"]
        explained = convs * excess_us / 1e3
        rows.append({"model": model, "convs": convs, "ours_ms": t["ours"], "ort_ms": t["ort"], "gap_ms": gap,
                     "per_call_excess_ms": explained, "share_of_gap": explained / gap if gap > 0 else None,
                     "iqr_ms": {"ours": t["ours_iqr"], "ort": t["ort_iqr"]}})
        print(f"{model}: {convs} convs, ours {t['ours']:.2f} ms, ORT {t['ort']:.2f} ms", file=sys.stderr)

    lines = [f"Fixed cost per convolution call ({args.threads} threads; slope between chains of {short} and {long_} "
             f"tiny convs): ours {per_call_us['ours']:.1f} us, ONNX Runtime {per_call_us['ort']:.1f} us.", "",
             "| model | convs | ours (all packed, NHWC) ms | ONNX Runtime ms | gap ms | convs x excess per call ms "
             "| share of gap |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        share = f"{100 * r['share_of_gap']:.0f}%" if r["share_of_gap"] is not None else "-"
        lines.append(f"| {r['model']} | {r['convs']} | {r['ours_ms']:.2f} | {r['ort_ms']:.2f} | {r['gap_ms']:.2f} | "
                     f"{r['per_call_excess_ms']:.2f} | {share} |")
    write_results(args.out, {"threads": args.threads, "lengths": [short, long_], "channels": args.channels,
                             "chains": {str(k): v for k, v in chains.items()}, "per_call_us": per_call_us,
                             "rows": rows}, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
