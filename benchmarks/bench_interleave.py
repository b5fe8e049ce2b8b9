"""How the interleaving protocol changes a comparison of our runtime with ONNX Runtime (a figure, not a test).

For one model at a fixed thread count, a plan (the default plan, or ``--plan``) and ONNX Runtime's session are
timed four ways with
perfpredict.measure.measure_interleaved: each alone (steady state), and interleaved with one timed call per
turn (no settle, and after ``--settle`` idle seconds) and in steady-state turns (``--settle``, then
``--block-warmup`` untimed and ``--block`` timed calls). Where an interleaved median departs from the
standalone one, the protocol, not the model, made the difference.

    .venv/bin/python benchmarks/bench_interleave.py [--model mobilenet_v2] [--plan PLAN.json] [--threads 2]
        [--out benchmarks/results/interleave.json]

A short plan (an optimised int8 one runs in about a millisecond) is the most exposed: its few untimed calls per
turn may not bring it back to steady state after the other runtime's turn.

Run it on a quiet machine.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import builds_parser, model_plan_input, plan_calls, timing_kwargs, write_results  # noqa: E402
from perfpredict.measure import measure_interleaved  # noqa: E402
from perfpredict.runtime import ort_session  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = builds_parser(__doc__.splitlines()[0], "mobilenet_v2", "benchmarks/results/interleave.json").parse_args(argv)

    graph, onnx_path, plan, x = model_plan_input(args)
    fns = plan_calls(graph, {"ours": plan}, args.threads, x)
    sess = ort_session(onnx_path, threads=args.threads)
    feeds = {sess.get_inputs()[0].name: x}
    fns["ort"] = lambda: sess.run(None, feeds)
    common = dict(warmup=3, min_repeats=5, max_repeats=args.max_repeats, time_cap_s=args.time_cap,
                  threads=args.threads, seed=0)
    steady = timing_kwargs(args)
    protocols = {
        "alone (steady state)": None,
        "interleaved, one call per turn": dict(settle_s=0.0),
        f"interleaved, one call per turn after {args.settle:g} s idle": dict(settle_s=args.settle),
        "interleaved, steady-state turns": steady,
    }
    rows = []
    for label, kw in protocols.items():
        if kw is None:
            stats = {k: measure_interleaved({k: f}, **common, **{**steady, "settle_s": 0.0})[k] for k, f in fns.items()}
        else:
            stats = measure_interleaved(fns, **common, **kw)
        rows.append({"protocol": label, "stats": {k: dataclasses.asdict(s) for k, s in stats.items()},
                     "median_ms": {k: s.median_ms for k, s in stats.items()}})
        print(f"{label}: " + ", ".join(f"{k} {s.median_ms:.2f} ms" for k, s in stats.items()), file=sys.stderr)
    table = "\n".join([f"| protocol ({args.model}, {args.threads} threads) | ours ms | ONNX Runtime ms | ratio |",
                       "|---|---|---|---|"]
                      + [f"| {r['protocol']} | {r['median_ms']['ours']:.2f} | {r['median_ms']['ort']:.2f} | "
                         f"{r['median_ms']['ours'] / r['median_ms']['ort']:.2f} |" for r in rows])
    write_results(args.out, {"model": args.model, "plan": args.plan or args.from_realised or "default", "threads": args.threads,
                             "rows": rows}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
