"""Thread counts the predictor never trained at, through Amdahl's law on those it did (a figure, not a test).

The shipped predictor's stores hold runs at 1 and 2 threads; at 16 threads its answers from the board's features
extrapolate the thread feature (README, "Transfer"). Here each trained device with both counts gives, for every
(model, plan) pair of a ``bench_transfer_local.py`` result (pairs measured on some board at t threads, stored
with that board), the predictions L1 and L2 at its own 1- and 2-thread boards; their ratio fixes the pair's
parallel fraction p by Amdahl's law (L1 / L2 = 1 / ((1 - p) + p / 2), p clipped to [0, 1]) and the pair at t
threads is L1 ((1 - p) + p / t) (:func:`perfpredict.transfer.amdahl_latency`, what ``perfpredict transfer``'s
``amdahl_scale`` candidate uses). Scored against the measurements:

* ``unscaled``: as it is (the trained device's speed per core taken for the target's);
* ``fingerprint``: times the ratio of the target's fingerprint (measured at t) to the trained device's fingerprint
  extrapolated to t the same way, entry by entry (zero-shot);
* ``k shots``: times the median ratio of k measured pairs, chosen by :func:`perfpredict.transfer.choose_shots` on
  the extrapolated predictions, scored on the other pairs;

beside the board route's own figures from the result file. The trained device whose extrapolated fingerprint
correlates best with the target's is marked ``picked``, the one a route would take.

    .venv/bin/python benchmarks/bench_thread_extrapolation.py RESULT.json [RESULT.json ...] [--predictor proxy]
        [--shots 5,10,20] [--out benchmarks/results/thread_extrapolation.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import write_results  # noqa: E402
from perfpredict.devices import DeviceSpec, load_device  # noqa: E402
from perfpredict.transfer import (amdahl_latency, amdahl_pairs, choose_shots, fingerprint_ratio,  # noqa: E402
                                  fingerprint_similarity, load_any_predictor, parallel_fraction, shot_candidates,
                                  transfer_metrics)

_KEYS = ("n", "mape", "within_10", "spearman")


def extrapolated_board(one: DeviceSpec, two: DeviceSpec, threads: int) -> DeviceSpec:
    """``two`` with its fingerprint extrapolated to ``threads`` from ``one``'s (1 thread) and its own (2 threads)."""
    keys = [k for k in two.fingerprint if k in one.fingerprint]
    fp = {k: float(amdahl_latency(one.fingerprint[k], two.fingerprint[k], threads)) for k in keys}
    return replace(two, fingerprint=fp, threads_used=threads)


def _score(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    m = transfer_metrics(pred, y)
    return {k: float(m[k]) for k in _KEYS} | {"median_ratio": float(np.median(pred / y))}


def evaluate(result: dict, cands: list, pairs: list[tuple[DeviceSpec, DeviceSpec]],
             preds: list[tuple[np.ndarray, np.ndarray]], shots: list[int]) -> dict:
    """The extrapolation's scores on one result file's pairs, per trained (1-thread, 2-thread) pairing of boards
    (``pairs``, :func:`perfpredict.transfer.amdahl_pairs`) and its predictions (``preds``; see the module
    docstring)."""
    target, t = load_device(result["board"]), int(result["threads"])
    known = {(p["model"], p["plan"]): p["measured_ms"] for p in result["pairs"]}
    missing = [f"{n}:{p.name}" for n, _, p in cands if (n, p.name) not in known]
    if missing:
        raise SystemExit(f"the result lacks {len(missing)} of the pairs, e.g. {', '.join(missing[:3])}")
    y = np.array([known[(n, p.name)] for n, _, p in cands])
    rows = []
    for i, ((one, two), (l1, l2)) in enumerate(zip(pairs, preds)):
        board = extrapolated_board(one, two, t)
        ratio, shared = fingerprint_ratio(target, board)
        lt = amdahl_latency(l1, l2, t)
        row = {"device": two.name, "device_id": two.device_id, "pairing": f"{two.device_id}:{i}", "index": i,
               "similarity": float(fingerprint_similarity(target, [board])[0][1]),
               "fingerprint_ratio": ratio, "shared": shared, "median_parallel_fraction":
               float(np.median(parallel_fraction(l1, l2))),
               "unscaled": _score(lt, y), "fingerprint": _score(lt * ratio, y), "shots": {}}
        for k in shots:
            used = choose_shots(lt, k)
            held = np.setdiff1d(np.arange(len(y)), used)
            scale = float(np.exp(np.median(np.log(y[used] / lt[used]))))
            row["shots"][str(k)] = _score(lt[held] * scale, y[held]) | {"scale": scale}
        rows.append(row)
    picked = max(range(len(rows)), key=lambda i: rows[i]["similarity"])
    rows[picked]["picked"] = True
    board_rows = {str(r["k"]): r["board"] if r["k"] == 0 else r["adapted"] | {"method": r["method"]}
                  for r in result.get("rows", [])}
    return {"device": result["device"], "threads": t, "pairs": len(y), "board_route": board_rows, "via": rows}


def _table(evals: list[dict], shots: list[int]) -> str:
    cell = lambda m: f"{m['mape']:.1f} / {m['within_10']:.0f} / {m['spearman']:.3f}"  # noqa: E731
    lines = ["| threads | via (1 + 2 threads) | similarity | unscaled | fingerprint scale | "
             + " | ".join(f"{k} shots" for k in shots) + " |",
             "|---|---|---|---|---|" + "---|" * len(shots)]
    for ev in evals:
        for r in ev["via"]:
            mark = " (picked)" if r.get("picked") else ""
            lines.append(f"| {ev['threads']} | {r['device']} {r['device_id'][:6]}:{r['index']}{mark} | {r['similarity']:.3f} | "
                         f"{cell(r['unscaled'])} | {cell(r['fingerprint'])} (x{r['fingerprint_ratio']:.2f}) | "
                         + " | ".join(cell(r["shots"][str(k)]) for k in shots) + " |")
        b = ev["board_route"]
        lines.append(f"| {ev['threads']} | board's features | - | - | {cell(b['0']) if '0' in b else '-'} | "
                     + " | ".join(cell(b[str(k)]) if str(k) in b else "-" for k in shots) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="bench_transfer_local.py result files (with their board)")
    ap.add_argument("--predictor", default="proxy")
    ap.add_argument("--shots", default="5,10,20")
    ap.add_argument("--out", default="benchmarks/results/thread_extrapolation.json")
    args = ap.parse_args(argv)
    results = [json.loads(Path(p).read_text()) for p in args.results]
    lacking = [p for p, r in zip(args.results, results) if "board" not in r]
    if lacking:
        raise SystemExit(f"{', '.join(lacking)}: no board in the file (written before bench_transfer_local.py "
                         "stored it); measure again")
    shots = [int(s) for s in args.shots.split(",") if s.strip()]
    source = load_any_predictor(args.predictor)
    pairs = amdahl_pairs(source, max(r["threads"] for r in results))
    if not pairs:
        raise SystemExit(f"{args.predictor} records no device trained at both 1 and 2 threads, or trained at the "
                         "results' thread count")
    models = sorted({p["model"] for r in results for p in r["pairs"]})
    cands = shot_candidates(models)
    graphs, plans = [g for _, g, _ in cands], [p for _, _, p in cands]
    preds = [(source.predict(graphs, plans, one, threads=1).latency_ms,
              source.predict(graphs, plans, two, threads=2).latency_ms) for one, two in pairs]
    evals = [evaluate(r, cands, pairs, preds, shots) for r in results]
    write_results(args.out, {"predictor": args.predictor, "results": args.results, "evaluations": evals},
                  _table(evals, shots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
