"""What measuring a new model's first plans buys: leave-one-family-out predictions against ``family-shots`` ones, on
the same held-out records (a look at saved predictions: no training, no timing).

A ``family-shots:NAME:K`` fold (:func:`perfpredict.samples.family_shots`) trains as ``family:NAME`` does, plus the
first K plans of each of the family's models at each thread count: a user's new model profiled with ``perfpredict
profile models --model FILE.onnx --plans-per-model K`` before the predictor is retrained on the store (the records
carry the graph). Both are scored on the records the shots fold held out, beside the cheap alternative to retraining:
the leave-one-family-out predictions of each model at each thread count rescaled by the geometric mean of measured /
predicted over its K shots (what the optimiser's recalibration does with validated plans). Per family and pooled over
the folds (record-weighted): MAPE, the share within 10% and the mean Spearman correlation of the plans of each model
at each thread count (what the optimiser needs: which plan is faster; rescaling leaves it as it is). Give runs of one
seed, or several seeds of each (the figures are then each seed's, and their ensemble's, the geometric mean of the
seeds' latency predictions).

    .venv/bin/python benchmarks/shots_gain.py \\
        --family benchmarks/results/bench_predictor_zen3_..._conv15_seed0_*.json \\
        --shots benchmarks/results/bench_predictor_zen3_..._conv15shots2_seed0_*.json \\
        --out benchmarks/results/shots_gain_zen3_conv15shots2_seed0

With ``--on`` (the shots runs of a larger K, same seeds) only the records those runs held out too are scored: K = 2
and K = 4 compared on one set of records (the larger K holds out fewer, and other plan kinds than the default).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.error_anatomy import ensemble_records, held_out_records  # noqa: E402
from benchmarks.harness import write_results  # noqa: E402
from benchmarks.summarise_seeds import load_predictions, load_runs  # noqa: E402
from perfpredict.metrics import clean, grouped_ranking, mape, within  # noqa: E402


def _of_kind(predictions: dict[str, dict], kind: str) -> dict[str, np.ndarray]:
    """The held-out records (:func:`~benchmarks.error_anatomy.held_out_records`) of the folds of ``kind`` alone."""
    return held_out_records({s: p for s, p in predictions.items() if s.partition(":")[0] == kind})


def _by_key(rec: dict[str, np.ndarray]) -> dict[str, tuple[str, str, float, float]]:
    """key -> (family, model@threads group, predicted ms, measured ms) of held-out records."""
    pred = rec["measured_ms"] * np.exp(rec["log_ratio"])
    return {k: (fam, f"{m}@{t}", float(p), float(ms)) for k, fam, m, t, p, ms
            in zip(rec["key"], rec["family"], rec["model"], rec["threads"], pred, rec["measured_ms"])}


def _scores(recs: dict[str, tuple], keys: list[str]) -> dict:
    pred = np.array([recs[k][2] for k in keys])
    meas = np.array([recs[k][3] for k in keys])
    groups = [recs[k][1] for k in keys]
    return {"n": len(keys), "mape": mape(pred, meas), "within_10pct": within(pred, meas, 0.10),
            "plan_spearman": grouped_ranking(pred, meas, groups)["spearman"]}


def rescaled(family: dict[str, tuple], shots: dict[str, tuple]) -> dict[str, tuple]:
    """``family``'s predictions of each model@threads group times the geometric mean of measured / predicted over the
    group's shots (its records ``family`` predicted that the shots fold trained on); groups without one stay as they
    are."""
    held_out = {g for _, g, _, _ in shots.values()}
    ratios: dict[str, list[float]] = defaultdict(list)
    for key, (_, group, pred, meas) in family.items():
        if key not in shots and group in held_out:
            ratios[group].append(np.log(meas / pred))
    scale = {g: float(np.exp(np.mean(v))) for g, v in ratios.items()}
    return {k: (fam, g, pred * scale.get(g, 1.0), meas) for k, (fam, g, pred, meas) in family.items()}


def compare(family: dict[str, tuple], shots: dict[str, tuple], on: set[str] | None = None) -> dict:
    """Per family and pooled, the scores of ``family``, of it rescaled by the shots (:func:`rescaled`) and of
    ``shots`` on the records the shots folds held out (and family predicted; of those, the ``on`` keys alone when
    given)."""
    by_family: dict[str, list[str]] = defaultdict(list)
    for key, rec in shots.items():
        if key in family and (on is None or key in on):
            by_family[rec[0]].append(key)
    scaled = rescaled(family, shots)
    out = {}
    for fam in sorted(by_family) + ["pooled"]:
        keys = sorted(by_family[fam]) if fam != "pooled" else sorted(k for v in by_family.values() for k in v)
        out[fam] = {"family": _scores(family, keys), "rescaled": _scores(scaled, keys),
                    "shots": _scores(shots, keys)}
    return out


def markdown(result: dict) -> str:
    on = (f", only those the K = {result['on_k']} folds held out too" if result.get("on_k") is not None else "")
    lines = [f"Held-out records of the `{result['shots_kind']}` folds (K = {result['k']} plans of each held-out model "
             f"at each thread count in training{on}), predicted without them (`family`), the same rescaled per model "
             "and thread count by its K shots (`rescaled`) and trained with them (`shots`): MAPE, share within 10%, "
             "mean Spearman correlation of each model's plans at one thread count", ""]
    for label, table in result["tables"].items():
        lines += [f"### {label}", "", "| family | n | MAPE family / rescaled / shots | within 10% family / rescaled / "
                  "shots | plans' Spearman family / shots |", "|---|---:|---|---|---|"]
        for fam, r in table.items():
            a, c, b = r["family"], r["rescaled"], r["shots"]
            lines.append(f"| {fam} | {a['n']} | {a['mape']:.2f}% / {c['mape']:.2f}% / {b['mape']:.2f}% | "
                         f"{a['within_10pct']:.1f}% / {c['within_10pct']:.1f}% / {b['within_10pct']:.1f}% | "
                         f"{a['plan_spearman']:.3f} / {b['plan_spearman']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def _one_k(predictions: dict[int, dict[str, dict]]) -> int:
    """The K of a set of family-shots runs (an error when they mix several)."""
    ks = {s.rpartition(":")[2] for p in predictions.values() for s in p}
    if len(ks) != 1:
        raise SystemExit(f"shots_gain: the shots runs mix plan counts K ({', '.join(sorted(ks))}); give one K")
    return int(ks.pop())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", nargs="+", type=Path, required=True,
                    help="bench_predictor JSONs of family:NAME folds (--save-predictions)")
    ap.add_argument("--shots", nargs="+", type=Path, required=True,
                    help="bench_predictor JSONs of family-shots:NAME:K folds of the same seeds")
    ap.add_argument("--on", nargs="+", type=Path, default=[],
                    help="family-shots runs of a larger K (same seeds): score only the records they held out too")
    ap.add_argument("--predictor", default="gnn")
    ap.add_argument("--out", required=True,
                    help="output path: the JSON result (OUT, with or without .json) and the table beside it (.md)")
    args = ap.parse_args(argv)
    fam_runs, shot_runs = load_runs(args.family), load_runs(args.shots)
    seeds = [r["meta"]["seed"] for r in shot_runs]
    if sorted(seeds) != sorted(r["meta"]["seed"] for r in fam_runs):
        raise SystemExit(f"shots_gain: the two sets of runs differ in their seeds ({seeds} against "
                         f"{[r['meta']['seed'] for r in fam_runs]}); give the same seeds of each")
    fam_preds = {r["meta"]["seed"]: p for r, p in zip(fam_runs, load_predictions(args.family, fam_runs,
                                                                                  args.predictor))}
    shot_preds = {r["meta"]["seed"]: p for r, p in zip(shot_runs, load_predictions(args.shots, shot_runs,
                                                                                    args.predictor))}
    k = _one_k(shot_preds)
    on: dict[int, set[str]] = {}
    on_k = None
    on_runs = load_runs(args.on) if args.on else []
    if on_runs:
        if sorted(r["meta"]["seed"] for r in on_runs) != sorted(seeds):
            raise SystemExit("shots_gain: the --on runs differ in their seeds from the shots runs; give the same seeds")
        on_preds = {r["meta"]["seed"]: p for r, p in zip(on_runs, load_predictions(args.on, on_runs, args.predictor))}
        on_k = _one_k(on_preds)
        if on_k <= k:
            raise SystemExit(f"shots_gain: --on takes runs of a larger K than the shots runs' {k}, not {on_k}")
        on = {s: set(_of_kind(on_preds[s], "family-shots")["key"]) for s in seeds}
    fam = {s: _of_kind(fam_preds[s], "family") for s in seeds}
    shot = {s: _of_kind(shot_preds[s], "family-shots") for s in seeds}
    tables = {f"seed {s}": compare(_by_key(fam[s]), _by_key(shot[s]), on.get(s)) for s in seeds}
    if len(seeds) > 1:
        tables["ensemble of the seeds"] = compare(_by_key(ensemble_records(list(fam.values()))),
                                                  _by_key(ensemble_records(list(shot.values()))),
                                                  set.intersection(*on.values()) if on else None)
    result = {"shots_kind": "family-shots", "k": k, **({"on_k": on_k} if on_runs else {}), "seeds": seeds,
              "tables": tables,
              "commands": {"family": [c for r in fam_runs for c in r["meta"]["commands"]],
                           "shots": [c for r in shot_runs for c in r["meta"]["commands"]],
                           **({"on": [c for r in on_runs for c in r["meta"]["commands"]]} if on_runs else {})},
              "data_hash": shot_runs[0]["meta"]["data_hash"]}
    write_results(args.out, clean(result), markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
