"""`perfpredict predict`: predicted latency and peak memory of a model under one or many plans."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.argtypes import add_zero_shot, positive_int
from cli.output import print_json, print_table, slow_path_note


def register(sub: argparse._SubParsersAction) -> None:
    """Add `predict`."""
    p = sub.add_parser("predict", help="predict latency (ms) and peak memory (MB) of a model under plans",
                       description="Predict without running: MODEL is an .onnx file or a zoo model name; each "
                                   "--plan is a plan JSON (none: the default plan); all plans go in one batch.")
    p.add_argument("model", help="ONNX file or zoo model name (see `perfpredict zoo list`)")
    p.add_argument("--plan", action="append", default=[], metavar="PLAN.json", help="plan file; repeat for many")
    p.add_argument("--device-features", required=True, metavar="BOARD",
                   help="board.json (DeviceSpec), the name of a shipped example board, or 'local' for this "
                        "machine (described once at --threads and cached)")
    p.add_argument("--predictor", default="proxy", help="checkpoint path or name under trained_models/ "
                                                        "(default proxy)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="threads the deployment uses (default: the board's threads_used, threads or cores)")
    add_zero_shot(p)
    p.add_argument("--resolution", type=positive_int, default=None, help="input resolution of a zoo model")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=_predict)


def _predict(args: argparse.Namespace) -> int:
    from perfpredict.devices import resolve_device
    from perfpredict.gnn_predictor import load_predictor
    from perfpredict.models import load_model
    from perfpredict.plan import Plan, default_plan, validate_plan
    from perfpredict.primitives.quantized import depthwise_fallback_nodes
    from perfpredict.proxy_route import isa_note, route_predictor, thread_range_note

    device = resolve_device(args.device_features, args.threads)
    source = load_predictor(args.predictor)
    predictor, route = route_predictor(source, device, args.threads, args.zero_shot)
    notes = [n for n in (thread_range_note(source, device, args.threads),
                         isa_note(source, device, args.threads) if args.zero_shot == "proxy" else None) if n]
    graph, _ = load_model(args.model, resolution=args.resolution)
    plans, names = [], []
    for path in args.plan:
        plan = Plan.load(path)
        validate_plan(graph, plan)
        plans.append(plan)
        names.append(plan.name or Path(path).stem)
    if not plans:
        plans, names = [default_plan(graph)], ["default"]
    pred = predictor.predict(graph, plans, device, threads=args.threads)
    rows = [{"plan": n, "latency_ms": float(lat), "peak_mem_mb": float(mem) / 1e6,
             "int8_depthwise_slow_path": [name for name, _ in depthwise_fallback_nodes(graph, plan)]}
            for n, plan, lat, mem in zip(names, plans, pred.latency_ms, pred.peak_mem_bytes)]
    if args.json:
        print_json({"model": graph.name, "graph_id": graph.graph_id, "device": device.name,
                    "threads": args.threads or device.threads_used or device.threads or device.cores,
                    "predictor": str(getattr(predictor, "source_path", args.predictor)),
                    "zero_shot": route.to_dict() if route else {"route": "board"}, "notes": notes,
                    "predictions": rows})
        return 0
    print(f"{graph.name} on {device.name} (predictor {args.predictor})")
    if route is not None:
        print(f"note: {route.describe()}")
    for n in notes:
        print(f"note: {n}")
    print_table(["plan", "latency ms", "peak MB"], [[r["plan"], r["latency_ms"], r["peak_mem_mb"]] for r in rows])
    for r in rows:
        if r["int8_depthwise_slow_path"]:
            print(slow_path_note(r["plan"], r["int8_depthwise_slow_path"]))
    return 0
