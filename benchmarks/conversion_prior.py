"""What a layout conversion or a (de)quantisation costs inside a model, per machine, against the GNN's prior.

The runtime converts a tensor read in another layout (NCHW <-> NHWC, ``.contiguous(memory_format=...)``) or
precision (fp32 <-> int8) than its producer wrote it, in front of its first reader; the analytical prior
(:attr:`perfpredict.features.PlanFeatures.prior_ms`) prices each conversion at its fp32 bytes read and written at the
bandwidth plus a step's fixed cost. This script reads the ``step-times`` records of every store given (each model
record's forward pass timed step by step, a conversion in the group of the node that reads it; ``perfpredict profile
steps``), rebuilds each record's schedule (:func:`~perfpredict.runtime.executor.make_schedule`, on the pruned graph)
to know which conversions each group holds and their fp32 bytes, and pairs every group that converts with the same
group (same model, threads, nodes and choices) timed in plans where it converts nothing: the difference is what its
conversions cost. Per store it fits, by least squares over those pairs, ``extra ms = sum over kinds of cost[kind] x
(2 x fp32 bytes / bandwidth) + per_step x steps`` (kinds: a layout conversion into NHWC, into NCHW, a quantisation,
a dequantisation; the bandwidth is that of the machine that timed the steps), so ``cost`` is 1 where the prior is
right; and reports per kind and size bin the median of the pairs' extra time over the prior's. The last line gives
the median of each cost over the stores not named by ``--exclude``. Priced into both priors as a feature schema
(commit 3af9458), those costs made leave-one-family-out accuracy worse and were taken out again (README, *Conversions
priced by kind*).

    .venv/bin/python benchmarks/conversion_prior.py --data datasets/xeon2.db datasets/zen3.db --exclude zen3 \\
        --out benchmarks/results/conversion_prior.json

writes OUT.json (with the machine) and OUT.md and prints the Markdown (a few minutes a store).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import write_results  # noqa: E402
from perfpredict.dataset import STEPS_CAMPAIGN, open_store  # noqa: E402
from perfpredict.features import device_rates  # noqa: E402
from perfpredict.runtime.executor import make_schedule, resolve_plan  # noqa: E402
from perfpredict.runtime.pruning import prune_graph  # noqa: E402
from perfpredict.samples import graph_of, load_samples  # noqa: E402

KINDS = ("layout:NHWC", "layout:NCHW", "quantize", "dequantize")
SIZE_BINS = (0, 3e4, 1e5, 3e5, 1e6, float("inf"))  # fp32 bytes converted per group


def group_conversions(sample, groups: list) -> list[dict[str, float]]:
    """Per step group (``groups``: [ms, [node, ...]] each) the fp32 bytes it converts by kind and its conversion
    steps, from the record's schedule (its plan on the pruned graph, as the runtime ran it)."""
    graph = graph_of(sample)
    choices = dict(resolve_plan(graph, sample.plan).choices)
    ratios = {n: c.prune for n, c in choices.items() if c.prune > 0}
    graph = prune_graph(graph, ratios).graph if ratios else graph
    schedule = make_schedule(graph, choices)
    where = {node: g for g, (_, nodes) in enumerate(groups) for node in nodes}
    out = [defaultdict(float) for _ in groups]
    for c in schedule.conversions:
        g = where.get(c.consumer)
        if g is None:
            continue
        kind = f"layout:{c.target}" if c.kind == "layout" else c.kind
        out[g][kind] += 4.0 * float(np.prod(graph.tensor_shapes[c.tensor]))
        out[g]["steps"] += 1.0
    return out


def step_rows(path: str, progress: bool = False) -> list[dict]:
    """One row per step group of every model record of the store with step times: the group's identity (model,
    threads, nodes, their choices), its ms, its conversions (:func:`group_conversions`) and the prior's price of
    2 fp32 bytes and of one step on the machine that timed it."""
    with open_store(path, create=False) as store:
        timed = store.step_times()
        machines = {d.device_id: d for d in store.devices()}
        campaigns = {r.extra().get("original_campaign") for r in store.iter_records(campaign=STEPS_CAMPAIGN)}
    samples = load_samples(path, kinds=("model",), campaigns=sorted(c for c in campaigns if c))
    rows = []
    todo = [s for s in samples.models if s.key in timed]
    if progress:
        from tqdm import tqdm

        todo = tqdm(todo, desc=Path(path).stem, unit="rec", leave=False)
    for s in todo:
        device_id, groups = timed[s.key][0]
        rates = device_rates(machines.get(device_id, s.device), s.threads)
        for g, conv in enumerate(group_conversions(s, groups)):
            nodes = tuple(groups[g][1])
            choice = tuple((c.primitive, c.layout, c.precision, c.prune)
                           for c in (s.plan.choices.get(n) for n in nodes) if c is not None)
            rows.append({"group": (s.model_name, s.threads, nodes, choice), "ms": float(groups[g][0]),
                         "byte_ms": 2.0 / (rates.bandwidth_gbs * 1e6), "step_ms": rates.overhead_ms,
                         **{k: conv.get(k, 0.0) for k in (*KINDS, "steps")}})
    return rows


def pairs(rows: list[dict]) -> list[dict]:
    """Each group timed with conversions, less the median time of the same group timed without any."""
    by_group = defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)
    out = []
    for rs in by_group.values():
        bare = [r["ms"] for r in rs if not r["steps"]]
        if not bare:
            continue
        base = float(np.median(bare))
        out += [{**r, "extra_ms": r["ms"] - base} for r in rs if r["steps"]]
    return out


def fit(ps: list[dict]) -> dict[str, float]:
    """Least-squares cost per kind (in units of the prior's 2 fp32 bytes at the bandwidth) and ms per step."""
    x = np.array([[p[k] * p["byte_ms"] for k in KINDS] + [p["steps"]] for p in ps])
    y = np.array([p["extra_ms"] for p in ps])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return {**{k: float(c) for k, c in zip(KINDS, coef)}, "per_step_ms": float(coef[-1])}


def by_size(ps: list[dict]) -> list[dict]:
    """Pairs of one conversion kind only, per size bin: median of extra / prior (the prior's bytes and steps)."""
    out = []
    for kind in KINDS:
        only = [p for p in ps if p[kind] and all(not p[k] for k in KINDS if k != kind)]
        for lo, hi in zip(SIZE_BINS, SIZE_BINS[1:]):
            sel = [p for p in only if lo <= p[kind] < hi]
            if len(sel) < 5:
                continue
            ratio = [p["extra_ms"] / (p[kind] * p["byte_ms"] + p["steps"] * p["step_ms"]) for p in sel]
            out.append({"kind": kind, "bytes": [lo, hi], "pairs": len(sel), "extra_over_prior": float(np.median(ratio))})
    return out


def summarise(by_store: dict[str, list[dict]], exclude: set[str]) -> tuple[dict, str]:
    """Per-store fits and size bins, and the median fit of the stores not excluded."""
    fits = {store: fit(ps) for store, ps in by_store.items() if len(ps) > len(KINDS)}
    bins = {store: by_size(ps) for store, ps in by_store.items()}
    lines = ["Fitted cost of each conversion kind (1: the prior's 2 fp32 bytes at the bandwidth is right) and fixed "
             "ms per conversion step (the prior charges the board's per-step overhead), per store", "",
             f"| store | pairs | {' | '.join(KINDS)} | ms per step |", "|---|---|" + "---|" * (len(KINDS) + 1)]
    for store, f in fits.items():
        lines.append(f"| {store} | {len(by_store[store])} | " + " | ".join(f"{f[k]:.2f}" for k in KINDS)
                     + f" | {f['per_step_ms']:.4f} |")
    lines += ["", "Pairs with one conversion kind only: median extra time over the prior's price of it, by fp32 bytes "
              "converted", "", "| store | kind | bytes | pairs | extra / prior |", "|---|---|---|---|---|"]
    for store, rows in bins.items():
        lines += [f"| {store} | {b['kind']} | {b['bytes'][0]:.0f}-{b['bytes'][1]:.0f} | {b['pairs']} | "
                  f"{b['extra_over_prior']:.2f} |" for b in rows]
    kept = [s for s in fits if s not in exclude]
    costs = {k: float(np.median([fits[s][k] for s in kept])) for k in KINDS} if kept else {}
    if kept:
        lines += ["", f"Median over {', '.join(kept)}: " + ", ".join(f"{k} {v:.2f}" for k, v in costs.items())]
    return {"fits": fits, "by_size": bins, "pooled_stores": kept, "costs": costs}, "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", required=True, help="measurement stores (SQLite files) with step times")
    ap.add_argument("--exclude", nargs="*", default=[], help="stores (file stems) left out of the pooled costs")
    ap.add_argument("--out", default="benchmarks/results/conversion_prior.json", help="result JSON (and .md beside)")
    args = ap.parse_args(argv)
    by_store = {}
    for path in args.data:
        by_store[Path(path).stem] = pairs(step_rows(path, progress=sys.stderr.isatty()))
        print(f"{path}: {len(by_store[Path(path).stem])} converting groups paired", file=sys.stderr)
    payload, table = summarise(by_store, set(args.exclude))
    write_results(args.out, {"args": vars(args), **payload}, table)


if __name__ == "__main__":
    main()
