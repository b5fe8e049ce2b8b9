"""Transfer to this machine judged fairly: the shots and the held-out plans measured in one interleaved session
(a figure, not a test).

``perfpredict transfer --measure-on local`` measures its k shots now, while the stores it could be scored on
were measured hours earlier; on a VM whose speed drifts (the Zen 5 VM ran the same plans 1.3x faster an hour
later) that comparison blames the adaptation for the drift. Here every candidate (model, plan) pair that
``--measure-on local`` chooses among (each zoo model's default, NHWC, int8-NHWC and pruned-0.5 plans) is measured
round-robin in one session (:func:`perfpredict.measure.measure_interleaved`, steady-state blocks, so drift spreads
over all of them), and then, on the same measurements:

* ``board``: the predictor on the board's features (``--zero-shot board``);
* ``proxy``: the zero-shot proxy route ``predict`` and ``optimise`` take by default on a device the predictor did
  not train on (:mod:`perfpredict.proxy_route`);
* ``adapted``: :func:`perfpredict.transfer.adapt_predictor` with k of the measurements (it picks them, as
  ``perfpredict transfer --measurements m.csv -k K`` does), the method chosen by its cross-validation;

each scored on the pairs not used as shots (MAPE, share within 10%, Spearman). The JSON also holds every
candidate's cross-validated error, the median predicted / measured ratio of each route by plan kind, and the
target's and the proxy's int8 : fp32 peak ratios from their boards. The measurements are written to ``--out``
(with the board the run described) before any scoring, so a run stopped while adapting keeps them;
``--reuse RESULT.json`` scores the pairs an earlier run measured without measuring again: on the board stored in
that file (so on any machine, e.g. pairs measured on a borrowed board and scored at home), or, for files without
one, on this machine at the same thread count. ``--shots ''`` measures only.

    .venv/bin/python benchmarks/bench_transfer_local.py [--predictor proxy] [--threads 2] [--shots 0,5,10,20]
        [--models resnet18,...] [--out benchmarks/results/transfer_local.json]

Run it on a quiet machine (about 10 minutes for the 14 zoo models on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import add_timing_options, plan_calls, timing_kwargs, write_results  # noqa: E402
from perfpredict.devices import load_device, local_device  # noqa: E402
from perfpredict.measure import measure_interleaved  # noqa: E402
from perfpredict.proxy_route import route_predictor  # noqa: E402
from perfpredict.transfer import (Measurement, adapt_predictor, load_any_predictor, shot_candidates,  # noqa: E402
                                  transfer_metrics)

_KEYS = ("n", "mape", "within_10", "spearman")


def _score(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    m = transfer_metrics(pred, y)
    return {k: float(m[k]) for k in _KEYS} | {"median_ratio": float(np.median(pred / y))}


def _int8_fp32(board) -> float | None:  # noqa: ANN001 - DeviceSpec
    """The board's int8 : fp32 peak throughput ratio (None without both figures)."""
    if board.peak_gops_int8 and board.peak_gflops_fp32:
        return float(board.peak_gops_int8 / board.peak_gflops_fp32)
    return None


def _about(device, args: argparse.Namespace) -> dict:  # noqa: ANN001 - DeviceSpec
    """The result's header: the device (its whole board, so the pairs can be scored elsewhere), threads, predictor."""
    return {"device": device.name, "device_id": device.device_id, "threads": args.threads,
            "predictor": args.predictor, "board": device.to_dict()}


def _table(rows: list[dict]) -> str:
    lines = ["| k | adapted method | CV MAPE % | held-out pairs | adapted MAPE % / w10 % / rho | proxy route | board |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        cell = lambda m: f"{m['mape']:.1f} / {m['within_10']:.0f} / {m['spearman']:.3f}"  # noqa: E731
        cv = r["cv_error"].get("mape", float("nan"))
        lines.append(f"| {r['k']} | {r['method']} | {cv:.1f} | {r['adapted']['n']} | {cell(r['adapted'])} | "
                     f"{cell(r['proxy']) if r['proxy'] else '-'} | {cell(r['board'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictor", default="proxy", help="the source predictor (default: the shipped one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shots", default="0,5,10,20", help="comma-separated k (default 0,5,10,20)")
    ap.add_argument("--models", default=None, help="comma-separated zoo models (default: the whole zoo)")
    ap.add_argument("--reuse", default=None, metavar="JSON",
                    help="score on the measured pairs of an earlier run's result file instead of measuring again")
    add_timing_options(ap, time_cap=2.0)
    ap.add_argument("--out", default="benchmarks/results/transfer_local.json")
    args = ap.parse_args(argv)

    earlier = json.loads(Path(args.reuse).read_text()) if args.reuse else None
    if earlier is not None and "board" in earlier:
        device, args.threads = load_device(earlier["board"]), earlier["threads"]
    else:
        device = local_device(args.threads)
    source = load_any_predictor(args.predictor)
    cands = shot_candidates(args.models.split(",") if args.models else None)
    if earlier is not None:
        if earlier.get("device_id") != device.device_id or earlier.get("threads") != args.threads:
            raise SystemExit(f"{args.reuse} was measured on device {earlier.get('device_id')} at "
                             f"{earlier.get('threads')} threads, not {device.device_id} at {args.threads}")
        known = {(p["model"], p["plan"]): p for p in earlier["pairs"]}
        missing = [f"{n}:{p.name}" for n, _, p in cands if (n, p.name) not in known]
        if missing:
            raise SystemExit(f"{args.reuse} lacks {len(missing)} of the pairs, e.g. {', '.join(missing[:3])}")
        y = np.array([known[(n, p.name)]["measured_ms"] for n, _, p in cands])
        ci = [known[(n, p.name)]["ci95_rel"] for n, _, p in cands]
    else:
        print(f"{len(cands)} (model, plan) pairs; building and measuring them interleaved ...", file=sys.stderr)
        rng = np.random.default_rng(0)
        calls = {}
        for i, (name, graph, plan) in enumerate(cands):
            x = rng.standard_normal(graph.input_shape).astype(np.float32)
            calls[str(i)] = plan_calls(graph, {"p": plan}, args.threads, x)["p"]
        stats = measure_interleaved(calls, threads=args.threads, time_cap_s=args.time_cap,
                                    max_repeats=args.max_repeats, **timing_kwargs(args))
        del calls
        y = np.array([stats[str(i)].median_ms for i in range(len(cands))])
        ci = [stats[str(i)].ci95_rel for i in range(len(cands))]
        write_results(args.out, {**_about(device, args), "measured_in": "this run", "rows": [],
                                 "pairs": [{"model": n, "plan": p.name, "measured_ms": float(v), "ci95_rel": c}
                                           for (n, _, p), v, c in zip(cands, y, ci)]},
                      f"{len(cands)} pairs measured; not scored yet")
    graphs, plans = [g for _, g, _ in cands], [p for _, _, p in cands]
    board = source.predict(graphs, plans, device, threads=args.threads).latency_ms
    routed, route = route_predictor(source, device, args.threads)
    proxy = routed.predict(graphs, plans, device, threads=args.threads).latency_ms if route else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ms = [Measurement(name, None if plan.name == "default" else
                          str(plan.save(Path(tmp) / f"{name}.{plan.name}.json")), float(v))
              for (name, _, plan), v in zip(cands, y)]
        for k in [int(s) for s in args.shots.split(",") if s.strip()]:
            res = adapt_predictor(args.predictor, device, ms, k, Path(tmp) / f"k{k}")
            card = json.loads((Path(tmp) / f"k{k}" / "transfer.json").read_text())
            held = np.array([not m["used"] for m in card["measurements"]])
            adapted = load_any_predictor(Path(tmp) / f"k{k}")
            pa = adapted.predict([g for g, h in zip(graphs, held) if h], [p for p, h in zip(plans, held) if h],
                                 device, threads=args.threads).latency_ms
            rows.append({"k": k, "method": res.method, "cv_error": dict(res.cv_error),
                         "cv": {m: dict(v) for m, v in res.cv.items()},
                         "shots": [f"{m['model']}:{Path(m['plan']).stem if m['plan'] else 'default'}"
                                   for m in card["measurements"] if m["used"]],
                         "adapted": _score(pa, y[held]), "board": _score(board[held], y[held]),
                         "proxy": _score(proxy[held], y[held]) if proxy is not None else None})
            print(f"k={k}: {res.method}", file=sys.stderr)
    pairs = [{"model": n, "plan": p.name, "measured_ms": float(v), "board_ms": float(b),
              "proxy_ms": None if proxy is None else float(q), "ci95_rel": c}
             for (n, _, p), v, b, q, c in zip(cands, y, board, proxy if proxy is not None else board, ci)]
    kinds = {}  # median predicted / measured by plan kind: where one scale falls short
    for kind in dict.fromkeys(p.name for _, _, p in cands):
        sel = np.array([p.name == kind for _, _, p in cands])
        kinds[kind] = {"pairs": int(sel.sum()), "board": float(np.median(board[sel] / y[sel])),
                       "proxy": None if proxy is None else float(np.median(proxy[sel] / y[sel]))}
    peaks = {"target": _int8_fp32(device), "proxy": _int8_fp32(route.proxy) if route else None}
    write_results(args.out, {**_about(device, args), "zero_shot_route": route.to_dict() if route else None,
                             "median_ratio_by_plan_kind": kinds, "int8_fp32_peak_ratio": peaks,
                             "measured_in": args.reuse or "this run",
                             "median_ci95_rel": float(np.median(ci)), "rows": rows, "pairs": pairs},
                  _table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
