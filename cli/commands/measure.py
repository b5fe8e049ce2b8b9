"""`perfpredict measure`: run a model under a plan on this machine; latency, peak memory, optional ORT check."""

from __future__ import annotations

import argparse

from cli.argtypes import nonneg_int, positive_float, positive_int
from cli.output import print_json, print_table, warn_if_busy
from perfpredict.errors import MeasurementError


def register(sub: argparse._SubParsersAction) -> None:
    """Add `measure`."""
    p = sub.add_parser("measure", help="measure a model's latency and peak memory on this machine",
                       description="Build MODEL (an ONNX file or a zoo model name) under a plan with the runtime, "
                                   "time it with the measurement protocol (warm-up, repeats until the median's 95%% "
                                   "CI is within the target, time cap) and measure its peak memory (by torch's "
                                   "allocator, or the resident set in a subprocess), next to the analytical estimate.")
    p.add_argument("model", help="an .onnx file or a zoo model name (see `perfpredict zoo list`)")
    p.add_argument("--plan", default=None, help="plan.json (default: the default plan)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch intra-op threads (default: torch's setting)")
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="input height/width for a zoo model (default 224)")
    p.add_argument("--target-ci", type=positive_float, default=0.02,
                   help="relative 95%% CI of the median to reach (default 0.02)")
    p.add_argument("--time-cap-s", type=positive_float, default=2.0,
                   help="seconds of timed repeats at most (default 2)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--memory-method", choices=("allocator", "rss"), default="allocator",
                   help="peak memory from torch's allocator (exact, repeatable; default) or the resident set of a "
                        "subprocess (also sees memory outside torch; a few percent of noise)")
    p.add_argument("--check", action="store_true", help="compare outputs (and latency) with ONNX Runtime")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the random input (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=_measure)


def _stats_dict(stats) -> dict:
    return {"median_ms": stats.median_ms, "iqr_ms": stats.iqr_ms, "mean_ms": stats.mean_ms, "min_ms": stats.min_ms,
            "cv": stats.cv, "n_repeats": stats.n_repeats, "ci95_rel": stats.ci95_rel if stats.ci95_rel != float("inf")
            else None, "stable": stats.stable, "threads": stats.threads, "warmup": stats.warmup}


def _measure(args: argparse.Namespace) -> int:
    import numpy as np

    from perfpredict.models import load_model
    from perfpredict.plan import Plan
    from perfpredict.runtime import estimate_peak_memory, measure_plan

    if args.resolution is not None and args.resolution < 32:  # argparse checked the numbers positive
        raise MeasurementError(f"--resolution must be at least 32, got {args.resolution}")
    graph, onnx_path = load_model(args.model, resolution=args.resolution)
    plan = Plan.load(args.plan) if args.plan else None
    warn_if_busy(args.threads)
    stats, mem = measure_plan(graph, plan, threads=args.threads, memory=not args.no_memory,
                              target_ci=args.target_ci, time_cap_s=args.time_cap_s, seed=args.seed,
                              memory_method=args.memory_method)
    est = estimate_peak_memory(graph, plan)
    out: dict = {
        "model": args.model, "graph": graph.name, "graph_id": graph.graph_id, "nodes": len(graph.nodes),
        "input_shape": list(graph.input_shape), "plan": plan.name if plan and plan.name else
        ("default" if plan is None else args.plan), "threads": stats.threads,
        "latency": _stats_dict(stats),
        "memory": {
            "measured_peak_bytes": mem.peak_bytes if mem else None,
            "measured_weight_bytes": mem.weight_bytes if mem else None,
            "measured_run_peak_bytes": mem.run_peak_bytes if mem else None,
            "method": mem.method if mem else None,
            "estimated_peak_bytes": est.total, "estimated_weights": est.weights,
            "estimated_activations": est.activations, "estimated_workspace": est.workspace,
            "estimate_rel_diff": (est.total - mem.peak_bytes) / mem.peak_bytes if mem and mem.peak_bytes else None,
        },
    }
    if args.check:
        out["check"] = _check(graph, plan, onnx_path, args, np)
    if args.json:
        print_json(out)
        return 0
    lat = out["latency"]
    ci = "n/a" if lat["ci95_rel"] is None else f"±{100 * lat['ci95_rel']:.1f}%"
    rows = [("latency median", f"{lat['median_ms']:.4g} ms"),
            ("spread (IQR / CV)", f"{lat['iqr_ms']:.3g} ms / {100 * lat['cv']:.1f}%"),
            ("repeats / CI95 of median", f"{lat['n_repeats']} / {ci}{'' if lat['stable'] else ' (NOT stable)'}"),
            ("threads", lat["threads"])]
    m = out["memory"]
    if m["measured_peak_bytes"] is not None:
        rows.append(("peak memory measured", f"{m['measured_peak_bytes'] / 2**20:.2f} MiB (weights "
                                             f"{m['measured_weight_bytes'] / 2**20:.2f} + run "
                                             f"{m['measured_run_peak_bytes'] / 2**20:.2f}; {m['method']})"))
    rows.append(("peak memory estimated", f"{m['estimated_peak_bytes'] / 2**20:.2f} MiB"))
    if m["estimate_rel_diff"] is not None:
        rows.append(("estimate vs measured", f"{100 * m['estimate_rel_diff']:+.1f}%"))
    if "check" in out:
        c = out["check"]
        rows.append(("ONNX Runtime max rel. error", f"{c['max_rel_err']:.3g}"))
        rows.append(("ONNX Runtime latency median", f"{c['ort_median_ms']:.4g} ms"))
    print(f"{graph.name} ({len(graph.nodes)} nodes, input {'x'.join(map(str, graph.input_shape))}, "
          f"graph_id {graph.graph_id})")
    print_table(["measure", "value"], rows)
    return 0


def _check(graph, plan, onnx_path, args, np) -> dict:
    from perfpredict.measure import measure_latency
    from perfpredict.runtime import check_against_ort, ort_run, ort_session

    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal(tuple(graph.input_shape), dtype=np.float32)
    err = check_against_ort(graph, plan, onnx_path, x, threads=args.threads)
    session = ort_session(onnx_path, args.threads)
    ort_stats = measure_latency(lambda: ort_run(session, x), target_ci=args.target_ci, time_cap_s=args.time_cap_s)
    return {"max_rel_err": err, "ort_median_ms": ort_stats.median_ms, "ort_latency": _stats_dict(ort_stats)}
