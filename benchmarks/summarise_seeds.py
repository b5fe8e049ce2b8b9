"""Summary of bench_predictor runs that differ only in ``--seed``: one predictor's figures per split and seed,
their mean and their range.

A single training per split moves with its seed (how the network extrapolates to a family it never saw depends
on the initial weights and on the epoch early stopping keeps), so a headline figure should be a mean over seeds.
The runs must share the measurement store (data hash) and the latency target; splits missing from any run are
left out and named. A random split is drawn with each run's seed, so its row averages over held-out sets too.

    .venv/bin/python benchmarks/summarise_seeds.py benchmarks/results/bench_predictor_xeon.json \
        benchmarks/results/bench_predictor_xeon_gnn_seed1.json --out benchmarks/results/bench_predictor_xeon_seeds

writes OUT.json and OUT.md and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

METRICS = (("latency", "mape", "latency MAPE %"), ("latency", "within_10", "latency within 10 %"),
           ("latency", "kendall", "latency Kendall"), ("memory", "mape", "memory MAPE %"))


def load_runs(paths: list[Path]) -> list[dict]:
    """The runs' JSON, checked to be comparable: same store, same latency target, distinct seeds."""
    runs = [json.loads(p.read_text()) for p in paths]
    for key in ("data_hash", "latency_stat"):
        values = {r["meta"][key] for r in runs}
        if len(values) > 1:
            raise SystemExit(f"summarise_seeds: the runs differ in {key} ({', '.join(sorted(map(str, values)))}); "
                             "only runs of the same store and target can be averaged")
    seeds = [r["meta"]["seed"] for r in runs]
    if len(set(seeds)) < len(seeds):
        raise SystemExit(f"summarise_seeds: two runs share a seed ({seeds}); give runs of distinct seeds")
    return runs


def split_key(name: str) -> str:
    """A split's name without its seed: ``random:0.2:1`` and ``random:0.2:0`` are the same split drawn with two
    seeds (each run draws its own held-out variants), shown as ``random:0.2``."""
    parts = name.split(":")
    return ":".join(parts[:2]) if parts[0] == "random" else name


def summarise(runs: list[dict], predictor: str) -> dict:
    """Per split (in the first run's order) and metric: the value at each seed, the mean, min and max."""
    tables = [{split_key(r["split"]): r["metrics"] for r in run["rows"] if r["predictor"] == predictor}
              for run in runs]
    order = [s for s in tables[0] if all(s in t for t in tables)]
    missing = sorted({s for t in tables for s in t} - set(order))
    rows = []
    for split in order:
        row = {"split": split}
        for target, key, _ in METRICS:
            values = [t[split][target][key] for t in tables]
            if any(v is None for v in values):
                row[f"{target}_{key}"] = None
                continue
            row[f"{target}_{key}"] = {"values": values, "mean": float(np.mean(values)),
                                      "min": float(np.min(values)), "max": float(np.max(values))}
        rows.append(row)
    return {"predictor": predictor, "seeds": [r["meta"]["seed"] for r in runs],
            "runs": [r["meta"].get("command") for r in runs], "data_hash": runs[0]["meta"]["data_hash"],
            "rows": rows, "missing_splits": missing}


def markdown(summary: dict) -> str:
    seeds = summary["seeds"]
    lines = [f"# {summary['predictor']} over seeds {', '.join(map(str, seeds))} (data hash {summary['data_hash']})",
             "", "Runs:", *[f"- `{c}`" for c in summary["runs"]], ""]
    if summary["missing_splits"]:
        lines += [f"Splits not in every run, left out: {', '.join(summary['missing_splits'])}.", ""]
    for target, key, title in METRICS:
        digits = 3 if key == "kendall" else 2
        lines += [f"## {title}", "", "| split | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | range |",
                  "|---|" + "---|" * (len(seeds) + 2)]
        for row in summary["rows"]:
            cell = row[f"{target}_{key}"]
            if cell is None:
                lines.append(f"| {row['split']} | " + " | ".join("n/a" for _ in seeds) + " | n/a | n/a |")
                continue
            vals = " | ".join(f"{v:.{digits}f}" for v in cell["values"])
            lines.append(f"| {row['split']} | {vals} | {cell['mean']:.{digits}f} | "
                         f"{cell['max'] - cell['min']:.{digits}f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="bench_predictor result JSON files, one per seed")
    ap.add_argument("--predictor", default="gnn", help="predictor kind to summarise (default gnn)")
    ap.add_argument("--out", type=Path, help="output path without suffix (.json and .md are written)")
    args = ap.parse_args(argv)
    for p in args.runs:
        if not p.is_file():
            raise SystemExit(f"summarise_seeds: no such result file: {p}")
    summary = summarise(load_runs(args.runs), args.predictor)
    if not summary["rows"]:
        raise SystemExit(f"summarise_seeds: no split has predictor {args.predictor!r} in every run")
    md = markdown(summary)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
