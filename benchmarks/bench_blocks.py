"""What running a chain's own tensors in oneDNN's blocked format saves a plan on this machine (a figure, not a test).

Where a chain's channel concats join parts whose channels fill whole blocks of 16, the runtime runs the chain's own
fp32 tensors in oneDNN's nChw16c format, in which each part of such a concat is a contiguous range of its output: the
convolutions that make the parts write straight into it and the concat makes no call; after a stem that writes blocks,
the pointwise and depthwise convolutions that follow read them too, where that spares the stem's reorder
(``perfpredict.runtime.chain._on_blocks``; dispatch revision 6). For one model and plan this times, round-robin in
lockstep steady-state turns (``perfpredict.measure.measure_interleaved``): the plan as the runtime builds it, the same
plan with its chains channels-last, the same plan with no stem through blocks either (``chain._stems``: a
convolution of few input channels from planar input into blocks, with or without a max pool after it), and ONNX
Runtime's default session. Then oneDNN's own time of each build's calls
(``perfpredict.runtime.dnnl_profile.profile_calls``, median over ``--passes`` passes of each call), summed by kind:
whether the convolutions and pools are slower in blocks than channels-last and what the changes of format cost; and
the concats each build still copies (since commit 22f5540 by ``_dnnl.c``, not by oneDNN).

    .venv/bin/python benchmarks/bench_blocks.py [--model squeezenet1_1]
        [--from-realised benchmarks/results/realised_xeon2_dispatch5c.json:lossless | --plan PLAN.json]
        [--threads 2] [--passes 50] [--out benchmarks/results/blocks.json]

Run it on a quiet machine.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import against_ort, builds_parser, model_plan_input, without, write_results  # noqa: E402
from perfpredict.measure import torch_threads  # noqa: E402
from perfpredict.runtime import build_executable  # noqa: E402
from perfpredict.runtime.dnnl_profile import profile_calls  # noqa: E402

KINDS = ("convolution", "pooling", "reorder", "binary")
"""The oneDNN primitive kinds whose time is summed (the concats that remain calls are ``_dnnl.c``'s own copies, which
oneDNN does not see: :func:`concat_copies` counts them)."""


def concat_copies(exe) -> int:  # noqa: ANN001
    """How many channel concats the chains of ``exe`` (an Executable) copy per forward pass (C kind 2)."""
    return sum(k == 2 for fn, *_ in exe._fast_steps for k in getattr(fn, "kinds", ()))


def onednn_time(fn, threads: int, passes: int) -> dict[str, float]:  # noqa: ANN001
    """Microseconds of oneDNN's own time per forward pass of ``fn`` by primitive kind (each call's median over
    ``passes`` passes, summed), with the number of calls of each kind."""
    with torch_threads(threads):
        for _ in range(5):
            fn()
        calls = profile_calls(fn, passes)
    n = len(calls) // passes
    if n * passes != len(calls):
        raise SystemExit(f"the passes made different numbers of oneDNN calls ({len(calls)} over {passes} passes)")
    ms = np.array([c.ms for c in calls]).reshape(passes, n)
    median = np.median(ms, axis=0) * 1e3
    out: dict[str, float] = {}
    for kind in KINDS:
        picked = [i for i in range(n) if calls[i].kind == kind]
        out[f"{kind} us"] = float(median[picked].sum())
        out[f"{kind} calls"] = len(picked)
    out["all us"] = float(median.sum())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = builds_parser(__doc__.splitlines()[0], "squeezenet1_1", "benchmarks/results/blocks.json")
    ap.add_argument("--passes", type=int, default=50, help="profiled passes of each build (default 50)")
    args = ap.parse_args(argv)

    graph, onnx_path, plan, x = model_plan_input(args)
    builds = {"as built": build_executable(graph, plan, threads=args.threads),
              "channels-last chains": without(graph, plan, args.threads, "_on_blocks", None),
              "no stem through blocks": without(graph, plan, args.threads, "_stems", [])}
    ys = [e.run(x) for e in builds.values()]
    outs = [y if isinstance(y, tuple) else (y,) for y in ys]
    diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
               for other in outs[1:] for a, b in zip(outs[0], other))
    fns, stats, lines = against_ort(builds, onnx_path, x, args)
    profiles = {name: onednn_time(fns[name], args.threads, args.passes) for name in builds}
    lines += ["", f"oneDNN's own time per pass (median of each call over {args.passes} passes, us; calls):", "",
              "| build | " + " | ".join(KINDS) + " | all |", "|---|" + "---|" * (len(KINDS) + 1)]
    for name, p in profiles.items():
        lines.append(f"| {name} | " + " | ".join(f"{p[f'{k} us']:.0f} ({p[f'{k} calls']})" for k in KINDS)
                     + f" | {p['all us']:.0f} |")
    lines += ["", "channel concats copied per pass (not oneDNN calls): "
              + ", ".join(f"{name} {concat_copies(e)}" for name, e in builds.items()),
              "", f"largest difference between the builds' outputs: {diff:.2e}"]
    table = "\n".join(lines)
    write_results(args.out, {"model": args.model, "plan": args.plan or args.from_realised or "default",
                             "threads": args.threads, "stats": {k: dataclasses.asdict(s) for k, s in stats.items()},
                             "onednn": profiles, "concat_copies": {k: concat_copies(e) for k, e in builds.items()},
                             "max_abs_diff": diff}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
