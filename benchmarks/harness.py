"""Shared plumbing of the benchmarks that search and then measure on this machine (bench_realised,
bench_memory): the model loop with the local device and a predictor, timed callables of plans, and the
JSON + Markdown result files."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from benchmarks.bench_runtime import machine
from optimiser.run import resolve_predictor
from perfpredict.devices import describe_host
from perfpredict.graph import Graph
from perfpredict.plan import Plan
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
    ap.add_argument("--time-cap", type=float, default=5.0, help="seconds of timing per candidate")
    ap.add_argument("--max-repeats", type=int, default=100, help="timed repeats per candidate at most")
    ap.add_argument("--settle", type=float, default=0.05, help="idle seconds before each timed run (default 0.05)")
    ap.add_argument("--out", default=out, help=f"result JSON (and .md beside it; default {out})")
    return ap


def plan_calls(graph: Graph, plans: Mapping[str, Plan], threads: int, x: np.ndarray) -> dict[str, Callable[[], Any]]:
    """A zero-argument forward pass of each plan on input ``x`` (built once, input prepared once)."""
    fns = {}
    for label, plan in plans.items():
        exe = build_executable(graph, plan, threads=threads)
        xs = exe.prepare_input(x)
        fns[label] = (lambda exe=exe, xs=xs: exe.forward(*xs))
    return fns


def run_models(models: str, threads: int, predictor: str | None,
               bench_model: Callable[..., dict]) -> tuple[list[dict], str]:
    """``bench_model(model, device, predictor, predictor_name, workdir)`` for each comma-separated model, on
    this machine described once (quick) and the named (or shipped) predictor; returns (rows, predictor name)."""
    device = describe_host(threads=threads, quick=True)
    pred, pname = resolve_predictor(predictor, threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in [m for m in models.split(",") if m]:
            print(f"{model}: searching and measuring ...", file=sys.stderr, flush=True)
            rows.append(bench_model(model, device, pred, pname, Path(tmp)))
    return rows, pname


def write_results(out: str | Path, payload: dict, table: str) -> None:
    """Print ``table`` and write ``out`` (JSON: the machine, ``payload`` and the table) and ``out``.md."""
    print(table)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), **payload, "table": table}, indent=1, default=str))
    out.with_suffix(".md").write_text(table + "\n")
    print(f"wrote {out}", file=sys.stderr)
