"""End-to-end latency of the runtime against a dependency-free baseline and ONNX Runtime (a figure, not a test).

For each model (batch 1, 224x224 by default) and each thread count, three candidates are timed
round-robin with perfpredict.measure.measure_interleaved in steady-state turns (--settle idle seconds,
--block-warmup untimed calls, --block timed calls; see benchmarks/harness.timing_kwargs), rounds until
the median's 95% CI is within --target-ci or --time-cap seconds per candidate; --repeats N fixes the count:

* ``default``   the default plan (conv.onednn, gemm.blas, torch ops; Relu/Clip fused), fp32 NCHW;
* ``baseline``  conv.reference and gemm.reference (plain C loops, single-threaded) wherever they apply,
                every other op its default;
* ``ort``       ONNX Runtime's default CPU session on the same ONNX file, intra-op threads = the same count.

Prints a table (median and IQR in ms) and writes JSON with the machine (CPU model, core count, load
average, torch / onnxruntime / numpy versions) and every LatencyStats.

    .venv/bin/python benchmarks/bench_runtime.py [--models resnet18,mobilenet_v2,squeezenet1_1]
        [--threads 1 2] [--resolution 224] [--time-cap 5] [--repeats N] [--out benchmarks/results/runtime.json]

Run it on a quiet machine: other processes on the same cores distort every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import add_timing_options, machine, timing_kwargs  # noqa: E402
from perfpredict import zoo  # noqa: E402
from perfpredict.graph import Graph, load_onnx  # noqa: E402
from perfpredict.measure import LatencyStats, measure_interleaved  # noqa: E402
from perfpredict.plan import Choice, Plan, default_choice  # noqa: E402
from perfpredict.primitives import get_primitive  # noqa: E402
from perfpredict.runtime import build_executable, ort_session  # noqa: E402

DEFAULT_MODELS = ("resnet18", "mobilenet_v2", "squeezenet1_1")
BASELINE = {"Conv": "conv.reference", "Gemm": "gemm.reference", "MatMul": "gemm.reference"}


def baseline_plan(graph: Graph) -> Plan:
    """conv.reference / gemm.reference wherever they apply (NCHW fp32), every other node its default."""
    choices = {}
    for node in graph.nodes:
        name = BASELINE.get(node.op)
        if name is not None and get_primitive(name).supports(node, "NCHW", "fp32"):
            choices[node.name] = Choice(name, "NCHW", "fp32")
        else:
            choices[node.name] = default_choice(node)
    return Plan(choices, name="baseline", graph_id=graph.graph_id)


def bench_model(name: str, resolution: int, threads: int, args: argparse.Namespace,
                folder: Path) -> dict[str, LatencyStats]:
    """LatencyStats of the default plan, the baseline plan and ORT for one model at one thread count."""
    spec = zoo.get_spec(name).with_input_shape((1, 3, resolution, resolution))
    path = folder / f"{name}-{resolution}.onnx"
    if not path.exists():
        zoo.export_onnx(spec, path)
    graph = load_onnx(path, name=name)
    x = np.random.default_rng(0).standard_normal(graph.input_shape).astype(np.float32)
    default = build_executable(graph, threads=threads)
    baseline = build_executable(graph, baseline_plan(graph), threads=threads)
    xs_d, xs_b = default.prepare_input(x), baseline.prepare_input(x)
    sess = ort_session(path, threads=threads)
    feeds = {sess.get_inputs()[0].name: x}
    fns = {"default": lambda: default.forward(*xs_d), "baseline": lambda: baseline.forward(*xs_b),
           "ort": lambda: sess.run(None, feeds)}
    if args.repeats:
        kw = dict(min_repeats=args.repeats, max_repeats=args.repeats, time_cap_s=1e9)
    else:
        kw = dict(min_repeats=args.min_repeats, max_repeats=args.max_repeats, time_cap_s=args.time_cap,
                  target_ci=args.target_ci)
    return measure_interleaved(fns, warmup=args.warmup, threads=threads, seed=0, **timing_kwargs(args), **kw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated zoo model names")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default: 1 2)")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=0, help="fixed repeat count (overrides the CI rule)")
    parser.add_argument("--min-repeats", type=int, default=5)
    parser.add_argument("--target-ci", type=float, default=0.02)
    add_timing_options(parser, time_cap=5.0)
    parser.add_argument("--out", default="benchmarks/results/bench_runtime.json")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in zoo.list_models()]
    if unknown:
        print(f"unknown models {unknown}; known: {', '.join(zoo.list_models())}", file=sys.stderr)
        return 1

    rows = []
    header = f"{'model':<16}{'thr':>4}  {'default ms (IQR)':>20}{'baseline ms (IQR)':>22}{'ORT ms (IQR)':>20}" \
             f"{'base/def':>10}{'ORT/def':>9}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp:
        for name in models:
            for threads in args.threads:
                stats = bench_model(name, args.resolution, threads, args, Path(tmp))
                d, b, o = stats["default"], stats["baseline"], stats["ort"]
                print(f"{name:<16}{threads:>4}  {d.median_ms:>11.2f} ({d.iqr_ms:>6.2f}){b.median_ms:>13.2f} "
                      f"({b.iqr_ms:>6.2f}){o.median_ms:>11.2f} ({o.iqr_ms:>6.2f})"
                      f"{b.median_ms / d.median_ms:>10.2f}{o.median_ms / d.median_ms:>9.2f}", flush=True)
                rows.append({"model": name, "threads": threads, "resolution": args.resolution, "batch": 1,
                             **{k: dataclasses.asdict(v) for k, v in stats.items()}})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    unstable = [f"{r['model']}/{r['threads']}t/{k}" for r in rows for k in ("default", "baseline", "ort")
                if not r[k]["stable"]]
    payload = {"machine": machine(), "config": vars(args), "results": rows, "unstable": unstable}
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    if unstable:
        print(f"note: CI target not reached for {', '.join(unstable)}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
