"""Where the optimised plans spend their time on this machine (a figure, not a test).

For each model, the same two searches as ``bench_realised.py`` (lossless, and int8 and pruning within
--max-drop points of fidelity; the shipped predictor, Q-learning, 300 trials, the final plans measured and the
measured-fastest kept), then each kept plan's scheduled steps timed on their own
(:meth:`perfpredict.runtime.Executable.step_times`, median of --repeats passes) and summed by primitive
(with precision and layout) and by conversion, as ``perfpredict validate MODEL --plan P --breakdown`` prints
them.

    .venv/bin/python benchmarks/bench_breakdown.py [--models resnet18,mobilenet_v2,squeezenet1_1,efficientnet_b0]
        [--threads 2] [--repeats 50] [--out benchmarks/results/breakdown.json]

Run it on a quiet machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_realised import _search  # noqa: E402
from benchmarks.harness import run_and_write, search_parser  # noqa: E402
from perfpredict.models import load_model  # noqa: E402
from perfpredict.runtime import breakdown, build_executable  # noqa: E402


def bench_model(model: str, device, predictor, pname: str, workdir: Path, args) -> dict:  # noqa: ANN001
    graph, _ = load_model(model)
    x = np.random.default_rng(0).standard_normal(graph.input_shape).astype(np.float32)
    row = {"model": model, "threads": args.threads, "repeats": args.repeats}
    for label, lossless in (("lossless", True), ("int8+prune", False)):
        plan, info = _search(graph, device, predictor, pname, args, workdir / model / label, lossless)
        exe = build_executable(graph, plan, threads=args.threads)
        steps = exe.step_times(x, repeats=args.repeats)
        row[label] = {"sum_ms": sum(st.ms for st in steps), "groups": breakdown(steps),
                      "int8_nodes": info["int8_nodes"], "pruned_nodes": info["pruned_nodes"]}
    return row


def _table(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        for label in ("lossless", "int8+prune"):
            b = r[label]
            lines += [f"{r['model']}, {label} plan ({b['int8_nodes']} int8, {b['pruned_nodes']} pruned nodes; "
                      f"{r['threads']} threads): steps sum to {b['sum_ms']:.2f} ms", "",
                      "| primitive / conversion | steps | ms | share | us per step |", "|---|---|---|---|---|"]
            lines += [f"| {g['group']} | {g['steps']} | {g['ms']:.3f} | {100 * g['share']:.1f}% | "
                      f"{1e3 * g['ms'] / g['steps']:.1f} |" for g in b["groups"]]
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = search_parser(__doc__.splitlines()[0], "benchmarks/results/breakdown.json")
    ap.add_argument("--repeats", type=int, default=50, help="timed passes per plan (default 50)")
    return run_and_write(ap.parse_args(argv), bench_model, _table)


if __name__ == "__main__":
    sys.exit(main())
