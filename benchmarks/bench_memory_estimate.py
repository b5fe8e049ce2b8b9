"""How close the analytical peak-memory estimate comes to the measured peak (a figure, not a test).

For each zoo model and plan kind, :func:`perfpredict.runtime.estimate_peak_memory` against the allocator
measurement (:func:`perfpredict.runtime.measurement.measure_memory`: deployed weights + the peak of the bytes
torch's allocator holds during a forward pass, after a warm-up pass). Plan kinds: ``default``; ``nhwc`` (the
default primitives in NHWC where they have it); ``packed`` (every convolution on ``conv.onednn_packed``, NHWC);
``int8`` (every node with an int8 primitive at int8, NHWC). Each plan is measured twice, on two builds, and the
largest difference between the two is reported (the measurement's own noise).

With ``--store``, the estimate is also compared with every allocator-measured model record of a profiling
store (the sampled plans of the campaigns: mixed primitives, layouts, int8 and pruning, at the campaigns'
resolutions and thread counts), without measuring anything again; reported overall and per family.

    .venv/bin/python benchmarks/bench_memory_estimate.py [--models ...] [--resolution 64]
        [--store datasets/xeon.db] [--out benchmarks/results/memory_estimate.json]

Memory does not depend on machine load, so this can run beside other work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import write_results  # noqa: E402
from optimiser.space import SearchSpace, SpaceConfig  # noqa: E402
from perfpredict.models import load_model  # noqa: E402
from perfpredict.primitives.conv import blocked_as, onednn_block  # noqa: E402
from perfpredict.runtime import calibrate, calibration_inputs, estimate_peak_memory  # noqa: E402
from perfpredict.runtime.measurement import measure_memory  # noqa: E402
from perfpredict.samples import graph_of, load_samples  # noqa: E402

MODELS = ("alexnet", "densenet121", "efficientnet_b0", "googlenet", "mnasnet", "mobilenet_v1", "mobilenet_v2",
          "mobilenet_v3_small", "resnet18", "shufflenet_v2", "squeezenet1_1", "vgg11")
KINDS = ("default", "nhwc", "packed", "int8")


def plans_of(graph) -> dict:  # noqa: ANN001 - Graph
    """The four plan kinds of the module docstring."""
    sp = SearchSpace(graph, SpaceConfig(allow_prune=False))
    nhwc = sp.uniform_layout_indices("NHWC")
    return {"default": None, "nhwc": sp.decode(nhwc),
            "packed": sp.decode(sp.with_primitive(nhwc, "conv.onednn_packed")),
            "int8": sp.decode(sp.uniform_layout_indices("NHWC", precision="int8"))}


def _table(title: str, groups: dict[str, np.ndarray]) -> list[str]:
    lines = [f"| {title} | n | MAPE % | median abs error % | max abs error % | within 5 % | mean signed error % |",
             "|---|---|---|---|---|---|---|"]
    for name, errs in groups.items():
        a = np.abs(errs)
        lines.append(f"| {name} | {len(a)} | {100 * a.mean():.2f} | {100 * np.median(a):.2f} | {100 * a.max():.2f} | "
                     f"{100 * (a <= 0.05).mean():.0f}% | {100 * errs.mean():+.2f} |")
    return lines


def store_rows(store: str) -> list[dict]:
    """Estimate against every allocator-measured model record of ``store`` (nothing is measured again), with the
    oneDNN block of the record's machine (AVX-512 or not), not this one's."""
    samples = load_samples(store, memory_method="allocator")
    rows = []
    for s in samples.models:
        if s.peak_mem_bytes is None:
            continue
        with blocked_as(onednn_block(s.device.isa_features)):
            est = estimate_peak_memory(graph_of(s), s.plan).total
        rows.append({"model": s.model_name, "family": s.family, "threads": s.threads, "estimated_bytes": est,
                     "measured_bytes": s.peak_mem_bytes, "rel_err": est / s.peak_mem_bytes - 1})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models")
    ap.add_argument("--resolution", type=int, default=64, help="input height/width (default 64)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--store", default=None, help="also compare with the allocator records of this store")
    ap.add_argument("--out", default="benchmarks/results/memory_estimate.json")
    args = ap.parse_args(argv)

    rows = []
    for model in args.models.split(","):
        graph, _ = load_model(model, resolution=args.resolution)
        cal = calibrate(graph, None, inputs=calibration_inputs(graph, n=2, seed=0))
        for kind, plan in plans_of(graph).items():
            est = estimate_peak_memory(graph, plan)
            first, second = (measure_memory(graph, plan, threads=args.threads, calibration=cal) for _ in range(2))
            rows.append({"model": model, "plan": kind, "estimated_bytes": est.total, "measured_bytes": first.peak_bytes,
                         "weight_bytes": first.weight_bytes, "run_peak_bytes": first.run_peak_bytes,
                         "rel_err": est.total / first.peak_bytes - 1,
                         "repeat_rel_diff": abs(second.peak_bytes - first.peak_bytes) / first.peak_bytes})
            print(f"{model:20s} {kind:8s} estimated {est.total / 1e6:9.3f} MB  "
                  f"measured {first.peak_bytes / 1e6:9.3f} MB"
                  f"  {100 * rows[-1]['rel_err']:+6.2f}%", file=sys.stderr, flush=True)
    lines = [f"Analytical peak memory vs the allocator measurement ({len(rows)} plans, {args.resolution}x"
             f"{args.resolution}, {args.threads} thread(s)); largest difference between two measurements of a plan: "
             f"{100 * max(r['repeat_rel_diff'] for r in rows):.3f}%", ""]
    errs = {kind: np.array([r["rel_err"] for r in rows if kind in ("all", r["plan"])]) for kind in KINDS + ("all",)}
    lines += _table("plan kind", {k: v for k, v in errs.items() if len(v)})
    stored = store_rows(args.store) if args.store else []
    if stored:
        families = sorted({r["family"] for r in stored})
        groups = {f: np.array([r["rel_err"] for r in stored if r["family"] == f]) for f in families}
        groups["all"] = np.array([r["rel_err"] for r in stored])
        lines += ["", f"Against the {len(stored)} allocator-measured model records of `{args.store}` (the campaigns' "
                  "sampled plans):", ""] + _table("family", groups)
    write_results(args.out, {"resolution": args.resolution, "threads": args.threads, "rows": rows,
                             "store": args.store, "store_rows": stored}, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
