"""Summary of bench_predictor runs that differ only in ``--seed``: one predictor's figures per split and seed,
their mean and their range.

A single training per split moves with its seed (how the network extrapolates to a family it never saw depends
on the initial weights and on the epoch early stopping keeps), so a headline figure should be a mean over seeds.
The runs must share the measurement store (data hash) and the latency target; splits missing from any run are
left out and named. A random split is drawn with each run's seed, so its row averages over held-out sets too.
One seed's folds may come from several runs (folds run in parallel processes, each with its own ``--splits``);
their splits must not overlap, except those of ``--replace`` runs, which take the place of the same seed's splits (a
fold re-run after a change that can only move that fold). The leave-one-family-out row is pooled here from the
family folds of each seed (and, in a row of its own, the ``family-layers`` folds: the same with the held-out family's
layer records kept in training), weighted by their number of records (exact for MAPE and the share within 10 %, which are means over records; rank
correlations do not pool that way and are left out of it).

With ``--ensemble`` (runs written with bench_predictor's ``--save-predictions``) each split also gets the figures of
the seeds' ensemble: every held-out record predicted by the geometric mean of the seeds' latency predictions and
the mean of their memory predictions, which is what a predictor averaging those trainings would answer. Random
splits differ between seeds (each draws its own held-out set) and get no ensemble figure.

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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perfpredict.metrics import summarise as summarise_metrics  # noqa: E402
from perfpredict.samples import FAMILY_SPLITS  # noqa: E402

POOLED = "lofo (pooled)"  # bench_predictor's pooled row: not in runs of single folds, so pooled again here
POOLS = {f"{kind}:": f"{kind} folds (pooled, record-weighted)" for kind in FAMILY_SPLITS}
"""Fold prefix -> the row that pools its folds: leave one family out, and the same with its layer records kept."""
FAMILIES, FAMILY_LAYERS = POOLS["family:"], POOLS["family-layers:"]

METRICS = (("latency", "mape", "latency MAPE %"), ("latency", "within_10", "latency within 10 %"),
           ("latency", "kendall", "latency Kendall"), ("memory", "mape", "memory MAPE %"))


def load_runs(paths: list[Path], replacing: list[Path] = ()) -> list[dict]:
    """The runs' JSON, checked to be comparable (same store, same latency target) and merged per seed: one entry
    per seed, in the order the seeds first appear, with the rows of all its runs and their commands. The rows of a
    ``replacing`` run take the place of its seed's rows of the same splits."""
    runs = [json.loads(p.read_text()) for p in paths]
    again_runs = [json.loads(p.read_text()) for p in replacing]
    for key in ("data_hash", "latency_stat"):
        values = {r["meta"][key] for r in runs + again_runs}
        if len(values) > 1:
            raise SystemExit(f"summarise_seeds: the runs differ in {key} ({', '.join(sorted(map(str, values)))}); "
                             "only runs of the same store and target can be averaged")
    merged: dict[int, dict] = {}
    for run in runs:
        seed = run["meta"]["seed"]
        into = merged.setdefault(seed, {"meta": {**run["meta"], "commands": []}, "rows": []})
        done = {r["split"] for r in into["rows"]}
        again = sorted({r["split"] for r in run["rows"]} & done)
        if again:
            raise SystemExit(f"summarise_seeds: two runs of seed {seed} both hold {', '.join(again)}; give each "
                             "split once per seed")
        into["rows"] += run["rows"]
        into["meta"]["commands"].append(run["meta"].get("command"))
    for run in again_runs:
        seed = run["meta"]["seed"]
        if seed not in merged:
            raise SystemExit(f"summarise_seeds: a replacing run has seed {seed}, which no run has")
        into = merged[seed]
        splits = {r["split"] for r in run["rows"]}
        missing = sorted(splits - {r["split"] for r in into["rows"]})
        if missing:
            raise SystemExit(f"summarise_seeds: a replacing run of seed {seed} holds {', '.join(missing)}, which no "
                             "run of that seed has")
        into["rows"] = [r for r in into["rows"] if r["split"] not in splits] + run["rows"]
        into["meta"]["commands"].append(f"(replacing {', '.join(sorted(splits))}) {run['meta'].get('command')}")
    return list(merged.values())


def pooled_families(table: dict[str, dict], prefix: str = "family:") -> dict | None:
    """The leave-one-family-out figures of one seed pooled from its ``family:*`` folds (or those of another
    :data:`POOLS` prefix), weighted by records."""
    folds = [m for split, m in table.items() if split.startswith(prefix)]
    if len(folds) < 2:
        return None
    out: dict[str, dict] = {}
    for target in ("latency", "memory"):
        n = np.array([m[target]["n"] or 0 for m in folds], float)
        pooled = {"n": int(n.sum()), "kendall": None}
        for key in ("mape", "within_10"):
            vals = [m[target][key] for m in folds]
            pooled[key] = None if any(v is None for v in vals) or not n.sum() else float(np.dot(n, vals) / n.sum())
        out[target] = pooled
    return out


def split_key(name: str) -> str:
    """A split's name without its seed: ``random:0.2:1`` and ``random:0.2:0`` are the same split drawn with two
    seeds (each run draws its own held-out variants), shown as ``random:0.2``."""
    parts = name.split(":")
    return ":".join(parts[:2]) if parts[0] == "random" else name


def summarise(runs: list[dict], predictor: str) -> dict:
    """Per split (in the first run's order) and metric: the value at each seed, the mean, min and max."""
    tables = [{split_key(r["split"]): r["metrics"] for r in run["rows"]
               if r["predictor"] == predictor and r["split"] != POOLED} for run in runs]
    for t in tables:
        for prefix, name in POOLS.items():
            pooled = pooled_families(t, prefix)
            if pooled:
                t[name] = pooled
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
            "runs": [c for r in runs for c in r["meta"]["commands"]], "data_hash": runs[0]["meta"]["data_hash"],
            "rows": rows, "missing_splits": missing}


def load_predictions(paths: list[Path], runs: list[dict], predictor: str) -> list[dict[str, dict]]:
    """Per seed (in ``runs``' order): split -> the per-record predictions of ``predictor`` saved beside its runs."""
    by_seed: dict[int, dict[str, dict]] = {r["meta"]["seed"]: {} for r in runs}
    for path in paths:
        meta = json.loads(path.read_text())["meta"]
        if "predictions" not in meta:
            raise SystemExit(f"summarise_seeds: {path} holds no per-record predictions; run bench_predictor with "
                             "--save-predictions for --ensemble")
        saved = json.loads((path.parent / meta["predictions"]).read_text())
        for split, preds in saved.items():  # a later (replacing) run's predictions win
            if predictor in preds:
                by_seed[meta["seed"]][split] = preds[predictor]
    return [by_seed[r["meta"]["seed"]] for r in runs]


def ensemble_metrics(members: list[dict]) -> dict:
    """Latency and memory metrics of the members' ensemble on the records they all predicted."""
    keys = set(members[0]["key"]).intersection(*(m["key"] for m in members[1:]))
    order = [k for k in members[0]["key"] if k in keys]
    index = [{k: i for i, k in enumerate(m["key"])} for m in members]

    def column(m: dict, idx: dict, name: str) -> np.ndarray:
        return np.array([np.nan if m[name][idx[k]] is None else m[name][idx[k]] for k in order], np.float64)

    lat = np.exp(np.mean([np.log(column(m, i, "latency_ms")) for m, i in zip(members, index)], axis=0))
    mem = np.mean([column(m, i, "peak_mem_bytes") for m, i in zip(members, index)], axis=0)
    first, i0 = members[0], index[0]
    out = {}
    for target, pred, name in (("latency", lat, "measured_latency_ms"), ("memory", mem, "measured_peak_mem_bytes")):
        true = column(first, i0, name)
        ok = np.isfinite(true) & np.isfinite(pred) & (pred > 0)
        out[target] = summarise_metrics(pred[ok], true[ok])
    return out


def add_ensemble(summary: dict, predictions: list[dict[str, dict]]) -> None:
    """Add each non-random split's ensemble figures (``ensemble`` in every metric cell) and the pooled family
    folds' (pooled as the seeds' are) to ``summary``."""
    folds = {}
    for row in summary["rows"]:
        split = row["split"]
        if split.startswith("random") or split in POOLS.values() or not all(split in p for p in predictions):
            continue
        folds[split] = ensemble_metrics([p[split] for p in predictions])
    for prefix, name in POOLS.items():
        pooled = pooled_families(folds, prefix)
        if pooled:
            folds[name] = pooled
    for row in summary["rows"]:
        m = folds.get(row["split"])
        for target, key, _ in METRICS:
            if m is not None and row[f"{target}_{key}"] is not None:
                row[f"{target}_{key}"]["ensemble"] = m[target][key]
    summary["ensemble"] = True


def markdown(summary: dict) -> str:
    seeds = summary["seeds"]
    lines = [f"# {summary['predictor']} over seeds {', '.join(map(str, seeds))} (data hash {summary['data_hash']})",
             "", "Runs:", *[f"- `{c}`" for c in summary["runs"]], ""]
    if summary["missing_splits"]:
        lines += [f"Splits not in every run, left out: {', '.join(summary['missing_splits'])}.", ""]
    for target, key, title in METRICS:
        digits = 3 if key == "kendall" else 2
        ens = summary.get("ensemble", False)
        lines += [f"## {title}", "", "| split | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | range |"
                  + (" ensemble |" if ens else ""), "|---|" + "---|" * (len(seeds) + 2 + ens)]
        for row in summary["rows"]:
            cell = row[f"{target}_{key}"]
            if cell is None:
                lines.append(f"| {row['split']} | " + " | ".join("n/a" for _ in seeds) + " | n/a | n/a |"
                             + (" n/a |" if ens else ""))
                continue
            vals = " | ".join(f"{v:.{digits}f}" for v in cell["values"])
            e = cell.get("ensemble")
            lines.append(f"| {row['split']} | {vals} | {cell['mean']:.{digits}f} | "
                         f"{cell['max'] - cell['min']:.{digits}f} |"
                         + ((f" {e:.{digits}f} |" if e is not None else " n/a |") if ens else ""))
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path,
                    help="bench_predictor result JSON files (one or more per seed)")
    ap.add_argument("--replace", nargs="+", type=Path, default=[], metavar="RUN",
                    help="result files whose splits take the place of the same seed's splits in RUNS: folds re-run "
                         "after a change that touches only them (say why in what you report)")
    ap.add_argument("--predictor", default="gnn", help="predictor kind to summarise (default gnn)")
    ap.add_argument("--ensemble", action="store_true",
                    help="add the seeds' ensemble (needs runs written with bench_predictor --save-predictions)")
    ap.add_argument("--out", type=Path, help="output path without suffix (.json and .md are written)")
    args = ap.parse_args(argv)
    for p in [*args.runs, *args.replace]:
        if not p.is_file():
            raise SystemExit(f"summarise_seeds: no such result file: {p}")
    runs = load_runs(args.runs, args.replace)
    summary = summarise(runs, args.predictor)
    if args.ensemble:
        add_ensemble(summary, load_predictions([*args.runs, *args.replace], runs, args.predictor))
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
