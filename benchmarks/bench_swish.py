"""What an fp32 plan's swish costs on this machine, and what revision 5's squeeze-excite changes save (a figure,
not a test).

On a CPU with AVX-512, ``conv.dnnl`` applies a folded swish as our own pass over its output after the oneDNN call
(``pp_swish_f32`` in ``perfpredict/primitives/_dnnl.c``), a chain computes a GlobalAveragePool of that output in
the same pass (``perfpredict.runtime.chain._mean_folds``), and a gate product that reads its input for the last
time writes over it (``chain._in_place``; dispatch revision 5). For one model and plan this times, round-robin in
lockstep steady-state turns (``perfpredict.measure.measure_interleaved``): the plan as the runtime builds it, the
same plan with the pools left as calls of their own, with the gate products writing apart, and ONNX Runtime's
default session. Then the swish pass alone, once over a buffer of each such convolution's output size (median of
``--repeats`` calls): nanoseconds per value and its sum over one forward pass.

    .venv/bin/python benchmarks/bench_swish.py [--model efficientnet_b0]
        [--from-realised benchmarks/results/realised_xeon2_refine.json:lossless | --plan PLAN.json]
        [--threads 2] [--out benchmarks/results/swish.json]

Run it on a quiet machine.
"""

from __future__ import annotations

import ctypes
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import against_ort, builds_parser, model_plan_input, without, write_results  # noqa: E402
from perfpredict.measure import torch_threads  # noqa: E402
from perfpredict.primitives.dnnl import library  # noqa: E402
from perfpredict.runtime import build_executable  # noqa: E402


def swish_sizes(exe) -> list[int]:  # noqa: ANN001
    """The output sizes (values) of the convolutions whose swish is our own pass, in the order the forward pass runs
    them (in its chains or as steps of their own)."""
    sizes = []
    for fn, *_ in exe._fast_steps:
        links = getattr(fn, "links", None)
        if links is None:
            links = [fn.link] if getattr(fn, "link", None) is not None else []
        for link in links:
            p = link.primitive
            if link.kind == 0 and getattr(p, "own_swish", False):
                sizes.append(int(np.prod(p.out_shape)))
    return sizes


def time_pass(sizes: list[int], threads: int, repeats: int) -> list[float]:
    """Median microseconds of one ``pp_swish_f32`` call over each size, on seeded normal values."""
    lib, isa = library(), library().pp_quant_isa()
    rng = np.random.default_rng(0)
    out = []
    with torch_threads(threads):
        for n in sizes:
            x = rng.standard_normal(n).astype(np.float32)
            t = []
            for _ in range(repeats + 3):
                y = x.copy()
                t0 = time.perf_counter()
                lib.pp_swish_f32(isa, y.ctypes.data_as(ctypes.c_void_p), n)
                t.append(time.perf_counter() - t0)
            out.append(float(np.median(t[3:])) * 1e6)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = builds_parser(__doc__.splitlines()[0], "efficientnet_b0", "benchmarks/results/swish.json")
    ap.add_argument("--repeats", type=int, default=50, help="calls of the swish pass per size (default 50)")
    args = ap.parse_args(argv)

    graph, onnx_path, plan, x = model_plan_input(args)
    folded = build_executable(graph, plan, threads=args.threads)
    builds = {"as built": folded, "pools as calls": without(graph, plan, args.threads, "_mean_folds", {}),
              "products apart": without(graph, plan, args.threads, "_in_place", {})}
    _, stats, lines = against_ort(builds, onnx_path, x, args)
    sizes = swish_sizes(folded)
    us = time_pass(sizes, args.threads, args.repeats)
    values = sum(sizes)
    lines += ["", f"swish passes of our own: {len(sizes)} per forward pass, {values} values, "
              f"{sum(us) / 1e3:.3f} ms alone ({sum(us) * 1e3 / max(values, 1):.3f} ns per value)"]
    table = "\n".join(lines)
    write_results(args.out, {"model": args.model, "plan": args.plan or args.from_realised or "default",
                             "threads": args.threads, "stats": {k: dataclasses.asdict(s) for k, s in stats.items()},
                             "swish_sizes": sizes, "swish_us": us}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
