"""What the chains save on the plans a store holds, and how stale its model records are (a figure, not a test).

The shipped stores' model records were measured with one Python step per op (``dispatch_revision`` 1); the runtime
now runs runs of oneDNN calls, and the conversions between them, in one C call each (revisions 3 to 5,
:mod:`perfpredict.runtime.chain`). This benchmark draws a seeded sample of a store's model records, rebuilds each as
its campaign built it (:func:`perfpredict.profile.rebuild_model_record`: zoo graph, plan, seeded input, int8
calibration), and times the chained pass against the step-per-op pass in interleaved steady-state turns (both on
this machine, in the same minutes). Per record it keeps both medians, the Python steps of each pass and the plan's
kind; the table gives, by precision mix and thread count, the median time ratio (chained / a step per op) and the
time saved per Python step the chains remove: a least-squares slope through the origin of saving against steps
removed, with its R^2. A record's stored median is kept too, but it was measured on another day.

    .venv/bin/python benchmarks/bench_chain_saving.py [--store datasets/xeon2.db] [--sample 60] [--seed 0]
        [--out benchmarks/results/chain_saving.json]

Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import add_timing_options, timing_kwargs, write_results  # noqa: E402
from perfpredict.dataset import MEMORY_CAMPAIGN, NOISE_CAMPAIGN, open_store  # noqa: E402
from perfpredict.measure import measure_interleaved, torch_threads  # noqa: E402
from perfpredict.plan import Plan  # noqa: E402
from perfpredict.profile import rebuild_model_record  # noqa: E402


def plan_kind(plan: Plan) -> str:
    """fp32, int8 or mixed: the precisions of a plan's choices."""
    precisions = {c.precision for c in plan.choices.values()}
    return "mixed" if len(precisions) > 1 else (precisions.pop() if precisions else "fp32")


def sample_records(store_path: str, n: int, seed: int) -> list:
    """A seeded sample of ``n`` model records with a zoo spec and a latency, split evenly over the plan kinds."""
    with open_store(store_path, create=False) as store:
        recs = [r for r in store.iter_records(kind="model")
                if r.campaign not in (NOISE_CAMPAIGN, MEMORY_CAMPAIGN) and r.median_ms and "spec" in r.extra()]
    by_kind = defaultdict(list)
    for r in recs:
        by_kind[plan_kind(Plan.from_dict(json.loads(r.plan_json)) if r.plan_json else Plan({}))].append(r)
    rng = random.Random(f"bench_chain_saving:{seed}")
    chosen = []
    kinds = sorted(by_kind)
    for i, k in enumerate(kinds):
        share = n // len(kinds) + (1 if i < n % len(kinds) else 0)
        chosen += [(k, r) for r in rng.sample(by_kind[k], min(share, len(by_kind[k])))]
    chosen.sort(key=lambda kr: (kr[1].model_name or "", kr[1].key))  # consecutive records of a model share its graph
    return chosen


def bench_record(kind: str, rec, graphs: dict, args: argparse.Namespace) -> dict:  # noqa: ANN001
    chained, xs = rebuild_model_record(rec, graphs)
    stepped, ys = rebuild_model_record(rec, graphs, chain=False)
    fns = {"chained": lambda: chained.forward(*xs), "step per op": lambda: stepped.forward(*ys)}
    with torch_threads(rec.threads):
        stats = measure_interleaved(fns, warmup=3, min_repeats=5, max_repeats=args.max_repeats,
                                    time_cap_s=args.time_cap, threads=rec.threads, seed=0, **timing_kwargs(args))
    return {"key": rec.key, "model": rec.model_name, "family": rec.family, "threads": rec.threads, "kind": kind,
            "steps": len(stepped._fast_steps), "chained_steps": len(chained._fast_steps),
            "median_ms": {k: s.median_ms for k, s in stats.items()},
            "ci95_rel": {k: s.ci95_rel for k, s in stats.items()}, "stored_ms": rec.median_ms}


def _slope(rows: list[dict]) -> tuple[float, float]:
    """Least-squares µs saved per Python step removed (through the origin) and its R^2."""
    x = np.array([r["steps"] - r["chained_steps"] for r in rows], dtype=float)
    y = np.array([(r["median_ms"]["step per op"] - r["median_ms"]["chained"]) * 1e3 for r in rows])
    if not len(x) or not np.any(x):
        return float("nan"), float("nan")
    c = float(x @ y / (x @ x))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return c, (1.0 - float(np.sum((y - c * x) ** 2)) / ss_tot) if ss_tot > 0 else float("nan")


def _table(rows: list[dict]) -> str:
    lines = ["| precisions | threads | records | Python steps (chained), median | chained / a step per op, median "
             "(range) | µs saved per step removed | R^2 |", "|---|---|---|---|---|---|---|"]
    groups = defaultdict(list)
    for r in rows:
        groups[(r["kind"], r["threads"])].append(r)
        groups[("all", r["threads"])].append(r)
    for (kind, threads), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] == "all", kv[0])):
        ratio = [r["median_ms"]["chained"] / r["median_ms"]["step per op"] for r in rs]
        c, r2 = _slope(rs)
        lines.append(f"| {kind} | {threads} | {len(rs)} | {np.median([r['steps'] for r in rs]):.0f} "
                     f"({np.median([r['chained_steps'] for r in rs]):.0f}) | {np.median(ratio):.3f} "
                     f"({min(ratio):.2f}–{max(ratio):.2f}) | {c:.1f} | {r2:.2f} |")
    worst = max(max(r["ci95_rel"].values()) for r in rows) if rows else float("nan")
    lines += ["", f"Medians of interleaved steady-state turns; the widest 95% CI of a median is ±{100 * worst:.1f}%."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default="datasets/xeon2.db", help="measurement store whose model records to rebuild")
    ap.add_argument("--sample", type=int, default=60, help="model records to time (default 60)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/chain_saving.json")
    add_timing_options(ap, time_cap=1.0)
    args = ap.parse_args(argv)
    if args.sample < 1:
        ap.error(f"--sample must be at least 1, got {args.sample}")
    chosen = sample_records(args.store, args.sample, args.seed)
    rows, graphs = [], {}
    for i, (kind, rec) in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {rec.model_name} {kind} {rec.threads}t ...", file=sys.stderr, flush=True)
        rows.append(bench_record(kind, rec, graphs, args))
    write_results(args.out, {"store": args.store, "sample": args.sample, "seed": args.seed, "rows": rows},
                  _table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
