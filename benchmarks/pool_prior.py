"""How far the GNN's analytical prior is from the measured time of each pooling kernel, per machine.

The prior (:attr:`perfpredict.features.PlanFeatures.prior_ms`) prices a node by its FLOPs over the compute rate plus
its bytes over the bandwidth plus a fixed cost. A pool does almost no arithmetic, so its prior is mostly its bytes
over the bandwidth; a kernel that walks each window in scalar code runs far slower than that. This script reads the
pooling layer records (each kernel timed alone) of every store given, prices each at a feature schema that knows
no primitive (``--reference-schema``, default 12) and at the current one, and reports per store, op, primitive,
layout, precision and thread count the median (10th, 90th percentile) of measured / prior, and the *memory
slowdown*: the measured time less the prior's other terms, over the prior's memory term (bytes over bandwidth, read
off as the prior's change when the board's bandwidth doubles). The next table pools, per (primitive, layout), the
group medians of the stores not named by ``--exclude``.

A kernel that loads every window element slows with the elements it loads per byte it moves (the *window ratio*:
output elements x kernel area over the elements read and written; 0.8 for a 2x2 window at stride 2, 1.8 for 3x3 at
stride 2, about 4.5 for 3x3 at stride 1). The last table fits, per store, primitive, layout, precision and thread
count, ``slowdown = per_byte + per_window_byte x window ratio`` by least squares to the median slowdown of each
window ratio (where there are two or more), and gives the median of each coefficient over the fits of the stores
not excluded: what :data:`perfpredict.analytical.MEMORY_COSTS` holds.

    .venv/bin/python benchmarks/pool_prior.py --data datasets/xeon.db datasets/xeon2.db datasets/amd.db \\
        datasets/zen5.db datasets/proxy.db datasets/zen3.db --exclude zen3 --out benchmarks/results/pool_prior.json

writes OUT.json (with the machine) and OUT.md and prints the Markdown (about a minute a store).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import write_results  # noqa: E402
from perfpredict.features import FeatureSpace, device_rates, encode_plans, plan_node_features  # noqa: E402
from perfpredict.samples import load_samples  # noqa: E402

POOL_OPS = ("MaxPool", "AveragePool")


def _prior_ms(sample, space: FeatureSpace, device) -> float:
    arrays = encode_plans(sample.template, [sample.choices], space)
    return float(plan_node_features(sample.template, arrays, space, device, sample.threads).prior_ms[0, 0])


def pool_rows(samples, spaces: dict[str, FeatureSpace]) -> list[dict]:
    """One row per single-node pooling layer sample: its kernel, threads, measured ms, per space the prior, and
    the reference prior's memory term (``memory_ms``: twice what doubling the board's bandwidth takes off it)."""
    rows = []
    for s in samples:
        if len(s.template.ops) != 1 or s.template.ops[0] not in POOL_OPS:
            continue
        (choice,) = s.choices.values()
        if choice.prune:
            continue
        row = {"op": s.template.ops[0], "primitive": choice.primitive, "layout": choice.layout,
               "precision": choice.precision, "threads": s.threads, "family": s.family, "measured_ms": s.latency_ms}
        for name, space in spaces.items():
            row[f"prior_{name}"] = _prior_ms(s, space, s.device)
        bw = device_rates(s.device, s.threads).bandwidth_gbs
        fast = replace(s.device, mem_bw_triad_gbs=2.0 * bw, mem_bw_copy_gbs=2.0 * bw)
        row["memory_ms"] = 2.0 * (row["prior_reference"] - _prior_ms(s, spaces["reference"], fast))
        tpl = s.template
        row["window_ratio"] = float(4.0 * tpl.flops[0] / (tpl.bytes_in[0] + tpl.bytes_out[0]))
        rows.append(row)
    return rows


def memory_slowdown(row: dict) -> float:
    """The measured time less the reference prior's other terms, over its memory term."""
    return (row["measured_ms"] - row["prior_reference"] + row["memory_ms"]) / row["memory_ms"]


def group_ratios(rows: list[dict], value) -> dict[tuple, np.ndarray]:
    """(op, primitive, layout, precision, threads) -> ``value(row)`` of its rows."""
    out = defaultdict(list)
    for r in rows:
        out[(r["op"], r["primitive"], r["layout"], r["precision"], r["threads"])].append(value(r))
    return {k: np.array(v) for k, v in out.items()}


def fit_costs(rows: list[dict]) -> dict[tuple, dict]:
    """(primitive, layout, precision, threads) -> the least-squares ``per_byte``, ``per_window_byte`` of
    ``slowdown = per_byte + per_window_byte x window ratio`` over the median slowdown of each window ratio (rounded to
    0.01), where rows show two or more window ratios."""
    points: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        key = (r["primitive"], r["layout"], r["precision"], r["threads"])
        points[key][round(r["window_ratio"], 2)].append(memory_slowdown(r))
    out = {}
    for key, by_ratio in points.items():
        if len(by_ratio) < 2:
            continue
        x = np.array(sorted(by_ratio))
        y = np.array([np.median(by_ratio[v]) for v in x])
        (per_byte, per_window), *_ = np.linalg.lstsq(np.stack([np.ones_like(x), x], axis=1), y, rcond=None)
        out[key] = {"per_byte": float(per_byte), "per_window_byte": float(per_window),
                    "window_ratios": {float(v): float(m) for v, m in zip(x, y)}}
    return out


def summarise(by_store: dict[str, list[dict]], exclude: set[str], reference: str) -> tuple[dict, str]:
    """The per-store table and the pooled one (group medians of the stores not excluded)."""
    def cell(a: np.ndarray) -> str:
        return f"{np.median(a):.2f} ({np.percentile(a, 10):.2f}-{np.percentile(a, 90):.2f})"

    values = {"reference": lambda r: r["measured_ms"] / r["prior_reference"],
              "current": lambda r: r["measured_ms"] / r["prior_current"], "slowdown": memory_slowdown}
    head = (f"measured / prior (schema {reference}) | measured / prior (current) | memory slowdown (schema "
            f"{reference}) |")
    lines = [f"| store | kernel | layout | precision | threads | n | {head}", "|---|---|---|---|---|---|---|---|---|"]
    pooled: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    groups = []
    for store, rows in by_store.items():
        ratios = {name: group_ratios(rows, f) for name, f in values.items()}
        for key in sorted(ratios["reference"]):
            op, prim, layout, prec, threads = key
            medians = {name: float(np.median(r[key])) for name, r in ratios.items()}
            groups.append({"store": store, "op": op, "primitive": prim, "layout": layout, "precision": prec,
                           "threads": threads, "n": len(ratios["reference"][key]), **medians})
            lines.append(f"| {store} | {prim} | {layout} | {prec} | {threads} | {len(ratios['reference'][key])} | "
                         + " | ".join(cell(ratios[name][key]) for name in values) + " |")
            if store not in exclude:
                for name, m in medians.items():
                    pooled[(prim, layout)][name].append(m)
    kept = [s for s in by_store if s not in exclude]
    lines += ["", f"Pooled over the groups (precision, threads) of {', '.join(kept)}: the median of the group medians "
              "(range).", "", f"| kernel | layout | groups | {head}", "|---|---|---|---|---|---|"]
    table = []
    for (prim, layout), v in sorted(pooled.items()):
        table.append({"primitive": prim, "layout": layout, "groups": len(v["reference"]),
                      **{name: float(np.median(x)) for name, x in v.items()}})
        lines.append(f"| {prim} | {layout} | {len(v['reference'])} | "
                     + " | ".join(f"{np.median(v[n]):.2f} ({min(v[n]):.2f}-{max(v[n]):.2f})" for n in values) + " |")
    fits: dict[tuple, list[dict]] = defaultdict(list)
    all_fits = []
    for store, rows in by_store.items():
        for (prim, layout, prec, threads), f in sorted(fit_costs(rows).items()):
            all_fits.append({"store": store, "primitive": prim, "layout": layout, "precision": prec,
                             "threads": threads, **f})
            if store not in exclude:
                fits[(prim, layout)].append(f)
    lines += ["", "Memory cost fitted per store, precision and threads (slowdown = per_byte + per_window_byte x window "
              f"ratio), the median over the fits of {', '.join(kept)} (range).", "",
              "| kernel | layout | fits | per_byte | per_window_byte |", "|---|---|---|---|---|"]
    costs = []
    for (prim, layout), v in sorted(fits.items()):
        a, b = [f["per_byte"] for f in v], [f["per_window_byte"] for f in v]
        costs.append({"primitive": prim, "layout": layout, "fits": len(v), "per_byte": float(np.median(a)),
                      "per_window_byte": float(np.median(b))})
        lines.append(f"| {prim} | {layout} | {len(v)} | {np.median(a):.1f} ({min(a):.1f}-{max(a):.1f}) | "
                     f"{np.median(b):.1f} ({min(b):.1f}-{max(b):.1f}) |")
    return {"groups": groups, "pooled": table, "pooled_stores": kept, "fits": all_fits, "costs": costs}, \
        "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", required=True, help="measurement stores (SQLite files)")
    ap.add_argument("--exclude", nargs="*", default=[], help="stores (file stems) left out of the pooled table")
    ap.add_argument("--reference-schema", type=int, default=12, help="the feature schema to compare with (default 12)")
    ap.add_argument("--out", default="benchmarks/results/pool_prior.json", help="result JSON (and .md beside it)")
    args = ap.parse_args(argv)
    current = FeatureSpace.current()
    spaces = {"reference": replace(current, schema_version=args.reference_schema), "current": current}
    by_store = {}
    for path in args.data:
        samples = load_samples(path, kinds=("layer",))
        by_store[Path(path).stem] = pool_rows(samples.layers, spaces)
        print(f"{path}: {len(by_store[Path(path).stem])} pooling layer records", file=sys.stderr)
    payload, table = summarise(by_store, set(args.exclude), str(args.reference_schema))
    write_results(args.out, {"args": vars(args), "current_schema": current.schema_version, **payload}, table)


if __name__ == "__main__":
    main()
