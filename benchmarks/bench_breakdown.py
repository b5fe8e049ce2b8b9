"""Where the optimised plans spend their time on this machine (a figure, not a test).

For each model, the same two searches as ``bench_realised.py`` (lossless, and int8 and pruning within
--max-drop points of fidelity; the shipped predictor, Q-learning, 300 trials, the final plans measured and the
measured-fastest kept), then each kept plan's scheduled steps timed on their own
(:meth:`perfpredict.runtime.Executable.step_times`, median of --repeats passes) and summed by primitive
(with precision and layout) and by conversion, as ``perfpredict validate MODEL --plan P --breakdown`` prints
them. With ``--ort``, ONNX Runtime's own profiler times its kernels on the same model (the session
``bench_realised.py`` compares against, --repeats runs after 20 untimed ones, the median of each node's kernel
time) and its nodes are summed by op type beside ours: where the gap to ONNX Runtime lies, op by op.

Step times and profiled kernel times are not wall times: each step timed on its own carries a timer and a
thread-pool wake-up, and ONNX Runtime's profiler adds its own cost to every node. So the kept plans' whole forward
passes and a run of ONNX Runtime's session without the profiler are also timed, round-robin in steady-state turns
as ``bench_realised.py`` times them (``forward_ms``, ``run_ms``): the figures to hold the sums against.

The forward pass runs its oneDNN calls in chains, one C call each (``perfpredict.runtime.chain``), which the
per-step times do not see. With ``--onednn-passes N``, oneDNN's own verbose timing of every call it makes in N
forward passes of each plan (``perfpredict.runtime.dnnl_profile``) is summed by kind, implementation, shape class
(depthwise, 1x1, 1x1 on a 1x1 map, KxK) and epilogue (oneDNN's post-ops): where the chained pass spends its time.

    .venv/bin/python benchmarks/bench_breakdown.py [--models resnet18,mobilenet_v2,squeezenet1_1,efficientnet_b0]
        [--threads 2] [--repeats 50] [--ort] [--onednn-passes 20] [--out benchmarks/results/breakdown.json]

Run it on a quiet machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_realised import _search  # noqa: E402
from benchmarks.harness import run_and_write, search_parser, timing_kwargs  # noqa: E402
from perfpredict.measure import measure_interleaved  # noqa: E402
from perfpredict.models import load_model  # noqa: E402
from perfpredict.runtime import breakdown, build_executable, ort_session  # noqa: E402
from perfpredict.runtime.dnnl_profile import profile_calls, summarise_calls  # noqa: E402


def ort_breakdown(onnx_path: Path, x: np.ndarray, threads: int, repeats: int, workdir: Path) -> dict:
    """ONNX Runtime's kernel times by op type (its profiler; median per node over ``repeats`` runs)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling = True
    opts.profile_file_prefix = str(workdir / "ort_profile")
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(20 + repeats):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    per_node: dict[str, tuple[str, list[float]]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node.setdefault(e["name"], (e["args"].get("op_name", "?"), []))[1].append(e["dur"] / 1e3)
    groups: dict[str, list[float]] = {}
    for op, times in per_node.values():
        groups.setdefault(op, []).append(float(np.median(times[-repeats:])))
    rows = sorted(({"op": op, "nodes": len(v), "ms": sum(v)} for op, v in groups.items()), key=lambda r: -r["ms"])
    return {"kernels_ms": sum(r["ms"] for r in rows), "groups": rows}


def bench_model(model: str, device, predictor, pname: str, workdir: Path, args) -> dict:  # noqa: ANN001
    graph, onnx_path = load_model(model)
    x = np.random.default_rng(0).standard_normal(graph.input_shape).astype(np.float32)
    row = {"model": model, "threads": args.threads, "repeats": args.repeats}
    if args.ort:
        row["ort"] = ort_breakdown(onnx_path, x, args.threads, args.repeats, workdir)
    fns = {}
    for label, lossless in (("lossless", True), ("int8+prune", False)):
        plan, info = _search(graph, device, predictor, pname, args, workdir / model / label, lossless)
        exe = build_executable(graph, plan, threads=args.threads)
        steps = exe.step_times(x, repeats=args.repeats)
        row[label] = {"sum_ms": sum(st.ms for st in steps), "groups": breakdown(steps),
                      "int8_nodes": info["int8_nodes"], "pruned_nodes": info["pruned_nodes"]}
        xs = exe.prepare_input(x)
        fns[label] = (lambda exe=exe, xs=xs: exe.forward(*xs))  # the executable just timed, not a second build
        if args.onednn_passes:
            calls = profile_calls(fns[label], args.onednn_passes)
            row[label]["onednn"] = {"passes": args.onednn_passes, "chains": exe.chains,
                                    "ms_per_pass": sum(c.ms for c in calls) / args.onednn_passes,
                                    "groups": summarise_calls(calls, args.onednn_passes)}
    if args.ort:
        sess = ort_session(onnx_path, threads=args.threads)
        feeds = {sess.get_inputs()[0].name: x}
        fns["ort"] = lambda: sess.run(None, feeds)
    stats = measure_interleaved(fns, warmup=3, min_repeats=5, max_repeats=args.max_repeats, time_cap_s=args.time_cap,
                                threads=args.threads, seed=0, **timing_kwargs(args))
    for label in ("lossless", "int8+prune"):
        row[label]["forward_ms"] = stats[label].median_ms
    if args.ort:
        row["ort"]["run_ms"] = stats["ort"].median_ms
    return row


def _table(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        for label in ("lossless", "int8+prune"):
            b = r[label]
            lines += [f"{r['model']}, {label} plan ({b['int8_nodes']} int8, {b['pruned_nodes']} pruned nodes; "
                      f"{r['threads']} threads): steps sum to {b['sum_ms']:.2f} ms, the whole forward pass "
                      f"{b['forward_ms']:.2f} ms", "",
                      "| primitive / conversion | steps | ms | share | us per step |", "|---|---|---|---|---|"]
            lines += [f"| {g['group']} | {g['steps']} | {g['ms']:.3f} | {100 * g['share']:.1f}% | "
                      f"{1e3 * g['ms'] / g['steps']:.1f} |" for g in b["groups"]]
            lines.append("")
            if "onednn" in b:
                o = b["onednn"]
                lines += [f"{r['model']}, {label} plan, oneDNN's calls in the forward pass ({len(o['chains'])} chains "
                          f"of {', '.join(map(str, o['chains']))} calls; mean of {o['passes']} passes, oneDNN's "
                          f"verbose timing): {o['ms_per_pass']:.2f} ms per pass", "",
                          "| kind | implementation | shape | epilogue | calls | ms | share | us per call |",
                          "|---|---|---|---|---|---|---|---|"]
                lines += [f"| {g['kind']} | {g['impl']} | {g['shape']} | {g['epilogue'].replace('+', ' + ')} | "
                          f"{g['calls']:g} | {g['ms']:.3f} | {100 * g['share']:.1f}% | {g['us_per_call']:.1f} |"
                          for g in o["groups"]]
                lines.append("")
        if "ort" in r:
            o = r["ort"]
            lines += [f"{r['model']}, ONNX Runtime's kernels ({r['threads']} threads): sum {o['kernels_ms']:.2f} ms "
                      f"profiled, a run without the profiler {o['run_ms']:.2f} ms", "",
                      "| op | nodes | ms | us per node |", "|---|---|---|---|"]
            lines += [f"| {g['op']} | {g['nodes']} | {g['ms']:.3f} | {1e3 * g['ms'] / g['nodes']:.1f} |"
                      for g in o["groups"]]
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = search_parser(__doc__.splitlines()[0], "benchmarks/results/breakdown.json")
    ap.add_argument("--repeats", type=int, default=50, help="timed passes per plan (default 50)")
    ap.add_argument("--ort", action="store_true", help="also time ONNX Runtime's kernels by op type (its profiler)")
    ap.add_argument("--onednn-passes", type=int, default=0, metavar="N",
                    help="also sum oneDNN's own timing of its calls over N forward passes of each plan (its verbose "
                         "mode; default 0, off)")
    return run_and_write(ap.parse_args(argv), bench_model, _table)


if __name__ == "__main__":
    sys.exit(main())
