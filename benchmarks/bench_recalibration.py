"""How the optimiser's on-device recalibration should correct predicted latency (a figure, not a test).

During a search the optimiser measures a few plans of the model it optimises and, when a prediction misses by more
than ``SearchConfig.recalibrate_threshold``, corrects the predictions of every later plan
(:class:`optimiser.loop.LatencyCalibration`). This replays that step offline on stored measurements of several
plans per model: for each model, k of its plans play the validated ones (drawn at random, ``--draws`` times), a
correction rule is fitted on them, and its error is scored on the model's other plans (MAPE, pooled). Rules:

- ``none``: no correction;
- ``scale``: one factor, the median measured / predicted ratio of the k plans (what ``LatencyCalibration`` fits);
- ``loglinear``: ``log m = a log p + b`` (slope clipped to [0.5, 2]) from three plans on, a scale below (what it
  fitted before);
- each of the two behind the optimiser's trigger (``triggered``: applied only when a validated plan missed by more
  than ``--threshold``).

Data (no measurement runs; each must exist):

- ``--transfer FILE`` (repeatable): ``bench_transfer_local.py`` results: 56 (model, plan) pairs measured on a
  device the predictor never trained on, four plans per model, predicted through the proxy route and from the
  board's features, each a setting of its own;
- ``--lofo FILE`` (repeatable): ``bench_predictor.py --save-predictions`` files: held-out families of the
  training device, the plans of each model at each thread count as one model (the trained-device setting).

    .venv/bin/python benchmarks/bench_recalibration.py \
        --transfer benchmarks/results/transfer_local_zen5.json --transfer benchmarks/results/transfer_local_zen5_1t.json \
        --lofo benchmarks/results/bench_predictor_xeon_s8_seed0.predictions.json \
        --lofo benchmarks/results/bench_predictor_xeon_s8b_seed0.predictions.json \
        --out benchmarks/results/recalibration
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import write_results  # noqa: E402
from optimiser.loop import LatencyCalibration  # noqa: E402

Correction = Callable[[np.ndarray], np.ndarray]


def _loglinear(pred: np.ndarray, meas: np.ndarray) -> Correction:
    lp, lm = np.log(pred), np.log(meas)
    if len(lp) >= 3 and np.ptp(lp) > 1e-6:
        a = float(np.clip(np.polyfit(lp, lm, 1)[0], 0.5, 2.0))
        b = float(np.mean(lm - a * lp))
    else:
        a, b = 1.0, float(np.median(lm - lp))
    return lambda x: np.exp(a * np.log(x) + b)


def _scale(pred: np.ndarray, meas: np.ndarray) -> Correction:
    cal = LatencyCalibration()
    for p, m in zip(pred, meas):
        cal.add(p, m)
    cal.fit()
    return cal


def _triggered(fit: Callable[[np.ndarray, np.ndarray], Correction], threshold: float
               ) -> Callable[[np.ndarray, np.ndarray], Correction]:
    def rule(pred: np.ndarray, meas: np.ndarray) -> Correction:
        if np.max(np.abs(pred - meas) / meas) <= threshold:
            return lambda x: x
        return fit(pred, meas)
    return rule


def rules(threshold: float) -> dict[str, Callable[[np.ndarray, np.ndarray], Correction]]:
    """The correction rules compared, by name."""
    return {"none": lambda p, m: (lambda x: x), "scale": _scale, "loglinear": _loglinear,
            "triggered scale": _triggered(_scale, threshold), "triggered loglinear": _triggered(_loglinear, threshold)}


def transfer_groups(result: dict, column: str) -> list[np.ndarray]:
    """[plans, 2] (predicted, measured) per model from a bench_transfer_local result (its JSON, loaded)."""
    by_model: dict[str, list[tuple[float, float]]] = {}
    for pair in result["pairs"]:
        by_model.setdefault(pair["model"], []).append((pair[column], pair["measured_ms"]))
    return [np.array(v, float) for v in by_model.values()]


def lofo_groups(path: Path, predictor: str = "gnn") -> list[np.ndarray]:
    """[plans, 2] (predicted, measured) per model and thread count of a bench_predictor predictions file."""
    out = []
    for split in json.loads(path.read_text()).values():
        rec = split[predictor]
        group = np.array(rec["group"])
        pred = np.array(rec["latency_ms"], float)
        meas = np.array(rec["measured_latency_ms"], float)
        for g in np.unique(group):
            i = (group == g) & np.isfinite(meas) & (meas > 0)
            out.append(np.stack([pred[i], meas[i]], 1))
    return out


def replay(groups: list[np.ndarray], k: int, draws: int, rule_set: dict, seed: int) -> dict[str, float] | None:
    """Pooled MAPE (%) of each rule on the plans not drawn as the k validated ones; None with no model of > k
    plans."""
    rng = np.random.default_rng(seed)
    errors: dict[str, list[float]] = {name: [] for name in rule_set}
    for g in groups:
        if len(g) <= k:
            continue
        for _ in range(draws):
            order = rng.permutation(len(g))
            shots, rest = g[order[:k]], g[order[k:]]
            for name, rule in rule_set.items():
                fixed = rule(shots[:, 0], shots[:, 1])(rest[:, 0])
                errors[name] += list(np.abs(fixed - rest[:, 1]) / rest[:, 1])
    if not errors["none"]:
        return None
    return {name: 100.0 * float(np.mean(v)) for name, v in errors.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--transfer", action="append", type=Path, default=[],
                    help="bench_transfer_local result JSON (repeatable)")
    ap.add_argument("--lofo", action="append", type=Path, default=[],
                    help="bench_predictor --save-predictions file (repeatable; pooled into one setting)")
    ap.add_argument("--shots", default="1,2,3", help="validated plans per model, for the transfer settings")
    ap.add_argument("--lofo-shots", default="1,2,3,5,8,12", help="validated plans per model, for the lofo setting")
    ap.add_argument("--draws", type=int, default=20, help="random draws of the validated plans per model")
    ap.add_argument("--threshold", type=float, default=0.15, help="the trigger (SearchConfig.recalibrate_threshold)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/recalibration")
    args = ap.parse_args(argv)
    if not args.transfer and not args.lofo:
        ap.error("give at least one --transfer or --lofo file")
    for path in args.transfer + args.lofo:
        if not path.is_file():
            ap.error(f"{path}: no such file")
    settings: list[tuple[str, list[np.ndarray], list[int]]] = []
    shots = [int(s) for s in args.shots.split(",") if s]
    for path in args.transfer:
        result = json.loads(path.read_text())
        for column, label in (("proxy_ms", "proxy route"), ("board_ms", "board's features")):
            settings.append((f"{path.stem} ({result.get('threads')} thr), {label}", transfer_groups(result, column),
                             shots))
    if args.lofo:
        groups = [g for path in args.lofo for g in lofo_groups(path)]
        settings.append(("held-out families, training device", groups,
                         [int(s) for s in args.lofo_shots.split(",") if s]))
    rule_set = rules(args.threshold)
    rows = []
    for name, groups, ks in settings:
        for k in ks:
            res = replay(groups, k, args.draws, rule_set, args.seed)
            if res is not None:
                rows.append({"setting": name, "models": len(groups), "k": k, "mape": res})
    names = list(rule_set)
    lines = ["| setting | k | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for r in rows:
        best = min(r["mape"].values())
        lines.append(f"| {r['setting']} | {r['k']} | " + " | ".join(
            (f"**{r['mape'][n]:.1f}%**" if r["mape"][n] == best else f"{r['mape'][n]:.1f}%") for n in names) + " |")
    write_results(args.out + ".json", {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                  "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
