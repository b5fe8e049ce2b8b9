"""Shared plumbing of the benchmarks that search and then measure on this machine (bench_realised,
bench_memory): the model loop with the local device and a predictor, timed callables of plans, and the
JSON + Markdown result files."""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from optimiser.run import OptimiseOptions, resolve_predictor
from perfpredict.devices import local_device
from perfpredict.graph import Graph
from perfpredict.plan import Plan
from perfpredict.proxy_route import ROUTES
from perfpredict.runtime import build_executable


MODELS = ("resnet18", "mobilenet_v2", "squeezenet1_1", "efficientnet_b0")


def search_parser(description: str, out: str) -> argparse.ArgumentParser:
    """The options both benchmarks share: models, threads, trials, accuracy budget, predictor, timing, output."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--max-drop", type=float, default=1.0, help="accuracy-drop budget in points (default 1)")
    ap.add_argument("--predictor", default=None, help="predictor name or checkpoint (default: the shipped one)")
    ap.add_argument("--zero-shot", choices=ROUTES, default="proxy",
                    help="on a machine the predictor did not train on: through the nearest trained device (default, "
                         "as perfpredict optimise) or from the board's features")
    ap.add_argument("--polish-rounds", type=int, default=OptimiseOptions.polish_rounds, metavar="N",
                    help=f"optimise's --polish-rounds for the searches (default {OptimiseOptions.polish_rounds}, "
                         "optimise's default)")
    ap.add_argument("--refine-nodes", type=int, default=OptimiseOptions.refine_nodes, metavar="N",
                    help=f"optimise's --refine-nodes (default {OptimiseOptions.refine_nodes}, optimise's default; "
                         "0: no on-device refinement)")
    add_timing_options(ap, time_cap=5.0)
    ap.add_argument("--out", default=out, help=f"result JSON (and .md beside it; default {out})")
    return ap


def machine() -> dict[str, object]:
    """CPU model, logical cores, load average and library versions of this machine."""
    import onnxruntime
    import torch

    cpu = platform.processor() or ""
    ident: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key = line.split(":", 1)[0].strip().lower()
            if key in ("model name", "cpu model") and "name" not in ident:
                cpu = ident["name"] = line.split(":", 1)[1].strip()
            elif key in ("cpu family", "model") and key not in ident:
                ident[key] = line.split(":", 1)[1].strip()
            if len(ident) == 3:
                break
    except OSError:
        pass
    if "cpu family" in ident and "model" in ident:  # "AMD EPYC" names two generations of VM here
        cpu = f"{cpu} (family {ident['cpu family']} model {ident['model']})"
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = []
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "load_average": load, "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "platform": platform.platform()}


def add_timing_options(ap: argparse.ArgumentParser, time_cap: float = 3.0) -> None:
    """The timing budget (``--time-cap`` seconds and ``--max-repeats`` per candidate) and the interleaving
    options of comparisons across runtimes (see :func:`timing_kwargs`)."""
    ap.add_argument("--time-cap", type=float, default=time_cap, help="seconds of timing per candidate")
    ap.add_argument("--max-repeats", type=int, default=100, help="timed repeats per candidate at most")
    ap.add_argument("--settle", type=float, default=0.05, help="idle seconds before each turn (default 0.05)")
    ap.add_argument("--block", type=int, default=5, help="timed calls back to back per turn (default 5)")
    ap.add_argument("--block-warmup", type=int, default=2, help="untimed calls before each turn's timed ones (default 2)")
    ap.add_argument("--block-warmup-s", type=float, default=0.0,
                    help="and untimed calls until this many seconds of the turn have passed (default 0: none)")


def timing_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """measure_interleaved's turn options from the parsed :func:`add_timing_options`: steady-state blocks.

    A single timed call per turn, right after another runtime's turn, measures how fast that runtime's
    thread pool wakes up rather than the model (benchmarks/bench_interleave.py shows by how much); untimed
    calls first and blocks of timed calls give the steady state.
    """
    return {"settle_s": args.settle, "block": args.block, "block_warmup": args.block_warmup,
            "block_warmup_s": args.block_warmup_s}


def add_plan_options(ap: argparse.ArgumentParser) -> None:
    """``--plan`` and ``--from-realised``: the plan a single-model benchmark times (see :func:`plan_from_args`)."""
    ap.add_argument("--plan", default=None, metavar="PLAN.json",
                    help="the plan to time (default: the model's default plan), e.g. a plan.json that perfpredict "
                         "optimise wrote")
    ap.add_argument("--from-realised", default=None, metavar="RESULT.json:KIND",
                    help="the plan bench_realised.py kept for --model, KIND lossless or int8+prune (e.g. "
                         "benchmarks/results/realised_xeon2_refine.json:int8+prune)")


def plan_from_args(args: argparse.Namespace, graph: Graph) -> Plan:
    """The plan :func:`add_plan_options` names for ``args.model``: ``--plan``, the plan a bench_realised result kept
    (``--from-realised``), else the default plan."""
    from perfpredict.plan import default_plan

    if args.plan and args.from_realised:
        raise SystemExit("give --plan or --from-realised, not both")
    if not args.from_realised:
        return Plan.load(args.plan) if args.plan else default_plan(graph)
    path, _, kind = args.from_realised.rpartition(":")
    rows = [r for r in json.loads(Path(path).read_text())["rows"] if r["model"] == args.model]
    if not rows or kind not in ("lossless", "int8+prune"):
        raise SystemExit(f"--from-realised {args.from_realised}: need a bench_realised result holding "
                         f"{args.model} and KIND lossless or int8+prune")
    return Plan.from_dict(rows[0]["lossless" if kind == "lossless" else "lossy"]["plan"])


def without(graph: Graph, plan: Plan, threads: int, rewrite: str, nothing: Any) -> Any:
    """``plan`` built (an Executable) with the chain rewrite ``perfpredict.runtime.chain.<rewrite>`` finding
    ``nothing`` to do: what that rewrite saves, timed against the plan as built."""
    from perfpredict.runtime import chain

    real = getattr(chain, rewrite)
    setattr(chain, rewrite, lambda *args: nothing)
    try:
        return build_executable(graph, plan, threads=threads)
    finally:
        setattr(chain, rewrite, real)


def builds_parser(description: str, model: str, out: str) -> argparse.ArgumentParser:
    """The options of a benchmark that times builds of one plan against ONNX Runtime (:func:`against_ort`):
    ``--model``, the plan (:func:`add_plan_options`), ``--threads``, the timing options and ``--out``."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default=model)
    add_plan_options(ap)
    ap.add_argument("--threads", type=int, default=2)
    add_timing_options(ap)
    ap.add_argument("--out", default=out)
    return ap


def model_plan_input(args: argparse.Namespace) -> tuple[Graph, Path, Plan, np.ndarray]:
    """For :func:`builds_parser`'s ``args``: the zoo model (graph, ONNX path), the plan to time
    (:func:`plan_from_args`) and a seeded normal input."""
    from perfpredict.models import load_model

    graph, onnx_path = load_model(args.model)
    x = np.random.default_rng(0).standard_normal(graph.input_shape).astype(np.float32)
    return graph, Path(onnx_path), plan_from_args(args, graph), x


def against_ort(builds: Mapping[str, Any], onnx_path: str | Path, x: np.ndarray,
                args: argparse.Namespace) -> tuple[dict[str, Callable[[], Any]], dict[str, Any], list[str]]:
    """Executables ``builds`` (label -> Executable) of one plan and ONNX Runtime's default session of ``onnx_path``
    timed on ``x`` round-robin in lockstep steady-state turns (``perfpredict.measure.measure_interleaved``):
    (each label's zero-argument forward pass, ``"ort"`` included; each label's timing; a Markdown table of them)."""
    from perfpredict.measure import measure_interleaved
    from perfpredict.runtime import ort_session

    sess = ort_session(onnx_path, threads=args.threads)
    feeds = {sess.get_inputs()[0].name: x}
    fns = {name: forward_call(e, x) for name, e in builds.items()}
    fns["ort"] = lambda: sess.run(None, feeds)
    stats = measure_interleaved(fns, warmup=3, min_repeats=5, max_repeats=args.max_repeats, time_cap_s=args.time_cap,
                                threads=args.threads, seed=0, lockstep=True, **timing_kwargs(args))
    ort = stats["ort"].median_ms
    lines = [f"{args.model}, {args.threads} threads, plan {args.plan or args.from_realised or 'default'}:", "",
             "| forward pass | median ms | 95% CI half-width | over ONNX Runtime |", "|---|---|---|---|"]
    for k, st in stats.items():
        lines.append(f"| {k} | {st.median_ms:.3f} | {100 * st.ci95_rel:.1f}% | {st.median_ms / ort:.3f} |")
    return fns, stats, lines


def forward_call(exe: Any, x: np.ndarray) -> Callable[[], Any]:
    """A zero-argument forward pass of the Executable ``exe`` on input ``x`` (prepared once)."""
    xs = exe.prepare_input(x)
    return lambda: exe.forward(*xs)


def plan_calls(graph: Graph, plans: Mapping[str, Plan], threads: int, x: np.ndarray) -> dict[str, Callable[[], Any]]:
    """A zero-argument forward pass of each plan on input ``x`` (built once, input prepared once)."""
    return {label: forward_call(build_executable(graph, plan, threads=threads), x) for label, plan in plans.items()}


def run_models(models: str, threads: int, predictor: str | None,
               bench_model: Callable[..., dict], zero_shot: str = "proxy") -> tuple[list[dict], str]:
    """``bench_model(model, device, predictor, predictor_name, workdir)`` for each comma-separated model, on
    this machine's cached description (:func:`perfpredict.devices.local_device`) and the named (or shipped)
    predictor, routed as ``perfpredict optimise --zero-shot`` routes it; returns (rows, predictor name)."""
    device = local_device(threads)
    pred, pname = resolve_predictor(predictor, threads, device, zero_shot)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in [m for m in models.split(",") if m]:
            print(f"{model}: searching and measuring ...", file=sys.stderr, flush=True)
            rows.append(bench_model(model, device, pred, pname, Path(tmp)))
    return rows, pname


def run_and_write(args: argparse.Namespace, bench_model: Callable[..., dict],
                  table: Callable[[list[dict]], str]) -> int:
    """Run ``bench_model(..., args=args)`` over ``args.models`` (:func:`run_models`) and write the results
    with ``table(rows)`` (:func:`write_results`); the exit status."""
    rows, pname = run_models(args.models, args.threads, args.predictor, functools.partial(bench_model, args=args),
                             args.zero_shot)
    write_results(args.out, {"predictor": pname, "trials": args.trials, "max_drop_pct": args.max_drop, "rows": rows},
                  table(rows))
    return 0


def write_results(out: str | Path, payload: dict, table: str) -> None:
    """Print ``table`` and write ``out`` (JSON: the machine, ``payload`` and the table) and ``out``.md."""
    print(table)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), **payload, "table": table}, indent=1, default=str))
    out.with_suffix(".md").write_text(table + "\n")
    print(f"wrote {out}", file=sys.stderr)
