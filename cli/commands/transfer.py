"""`perfpredict transfer`: adapt a trained predictor to a device it has never seen, from k measurements."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from cli.argtypes import nonneg_int, positive_int
from cli.output import add_progress_option, print_json, print_table, warn_if_busy


def register(sub: argparse._SubParsersAction) -> None:
    """Add `transfer`."""
    p = sub.add_parser(
        "transfer", help="adapt a predictor to a new device from its board.json and k measurements",
        description="Adapt a trained predictor to a new device: zero-shot from the board's features (its "
                    "fingerprint), few-shot from k measurements. Candidate adaptations (device fitting, "
                    "scale / log-linear / isotonic calibration, mixture of proxy devices, a proxy rescaled whole "
                    "or by precision, and at a thread count the source never trained at a trained device's 1- "
                    "and 2-thread predictions extrapolated by Amdahl's law) are chosen by leave-one-out "
                    "cross-validation; the result is a normal predictor checkpoint.")
    p.add_argument("--predictor", required=True, help="source predictor: checkpoint folder or name under "
                                                      "trained_models/")
    p.add_argument("--device-features", required=True, metavar="BOARD",
                   help="the new device: a board.json path, a shipped example board's name, or 'local'")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--measurements", metavar="CSV", help="measured latencies on the new device: columns model, "
                                                            "latency_ms and optionally plan and beacon_ms (the "
                                                            "beacon timed beside it; then latencies are scaled to "
                                                            "the beacon's median)")
    src.add_argument("--measure-on", choices=["local"], help="choose the k most informative zoo models and plans "
                                                             "(default, NHWC, int8, pruned) and measure them on "
                                                             "this machine, each beside the beacon workload, so the "
                                                             "machine's drift between shots is taken out (plans "
                                                             "written under OUTPUT/shots)")
    p.add_argument("-k", type=nonneg_int, default=10, help="number of measurements to fit with (default 10; with more "
                                                    "measurements than k the rest are held out)")
    p.add_argument("--proxy-device", action="append", default=[], metavar="BOARD",
                   help="a device the source predicts well (repeatable): offered to the mixture calibration; with "
                        "-k 0, the prediction there (the proxy whose fingerprint correlates best with the new "
                        "device's, sharing at least 3 entries) scaled by the two fingerprints' ratio is the "
                        "zero-shot prediction; without this option, -k 0 looks among the devices the source "
                        "predictor records it was trained on")
    p.add_argument("--threads", type=positive_int, default=None, help="threads for --measure-on local (default: the "
                                                             "board's threads_used)")
    p.add_argument("--models", default=None, help="comma-separated candidate zoo models for --measure-on local "
                                                  "(default: every canonical zoo model)")
    p.add_argument("-o", "--output", required=True, help="folder of the adapted checkpoint")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_progress_option(p)
    p.set_defaults(func=_transfer)


def _transfer(args: argparse.Namespace) -> int:
    from perfpredict.devices import resolve_device
    from perfpredict.transfer import (adapt_predictor, beacon_normalised, load_any_predictor, measure_candidates,
                                      read_measurements, write_measurements)

    device = resolve_device(args.device_features, args.threads)
    proxies = [resolve_device(p, args.threads) for p in args.proxy_device]
    if args.measurements:
        measurements = read_measurements(args.measurements)
    else:
        source = load_any_predictor(args.predictor)
        models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
        csv_path = Path(args.output) / "measurements.csv"
        done = read_measurements(csv_path) if csv_path.is_file() else []  # a killed run resumes
        warn_if_busy(args.threads)
        measurements = measure_candidates(source, device, args.k, models=models, threads=args.threads,
                                          progress=not args.no_progress, plans_dir=Path(args.output) / "shots",
                                          done=done,
                                          on_measured=lambda so_far: write_measurements(csv_path, so_far))
        write_measurements(csv_path, measurements)  # as timed; the beacon's medians beside them
    beacons = [m.beacon_ms for m in measurements if m.beacon_ms]
    measurements = beacon_normalised(measurements)
    res = adapt_predictor(args.predictor, device, measurements, args.k, args.output, proxies=proxies)
    if args.json:
        print_json({**res.to_dict(), "beacon_ms": beacons})  # the beacon beside each shot (empty: none timed)
        return 0
    print(f"adapted predictor for '{device.name}' written to {res.path}")
    if beacons:
        print(f"shots scaled by the beacon timed beside each (median {statistics.median(beacons):.3f} ms, "
              f"{min(beacons):.3f}-{max(beacons):.3f} ms over {len(beacons)}: the machine's drift between them)")
    print(f"method: {res.method} ({res.k} shots + {res.fingerprint_points} fingerprint points)")
    if res.zero_shot:
        z = res.zero_shot
        print(f"zero-shot through '{z['proxy']}': its prediction x {z['fingerprint_ratio']:.3f} "
              f"(fingerprint ratio over {z['shared_fingerprint_entries']} shared entries)")
    rows = [(name, v.get("rmse_log"), v.get("mape")) for name, v in res.cv.items()]
    print_table(["candidate", "CV rmse(log)", "CV MAPE %"], rows)
    if res.holdout:
        print(f"held-out measurements: n={res.holdout['n']}, MAPE {res.holdout['mape']:.2f}%, "
              f"within 10% {res.holdout['within_10']:.1f}%")
    return 0
