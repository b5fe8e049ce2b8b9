"""Operator-level transfer to unseen GPUs on NeuSight's measurements, leave-one-GPU-out.

For each operator (conv, linear, relu, add) and each of the GPUs available (the Tesla T4 is reserved),
a model of log(latency / roofline time) on device-relative features is trained on the other GPUs and
predicts the held-out GPU from its spec JSON alone (k = 0), then with 10 measured shots chosen by
:func:`perfpredict.transfer.choose_shots` and a CV-chosen calibration (k = 10; scored on the other rows).
See :func:`perfpredict.external.neusight.evaluate_transfer`.

    .venv/bin/python benchmarks/bench_transfer_neusight.py -o benchmarks/results/transfer_neusight.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from perfpredict.errors import PerfPredictError
from perfpredict.external.neusight import OPERATORS, evaluate_transfer
from perfpredict.metrics import clean


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", action="append", default=None, help="NeuSight-layout folder(s) (default: the copy)")
    ap.add_argument("--ops", default=",".join(OPERATORS))
    ap.add_argument("--shots", default="0,10")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args(argv)
    t0 = time.time()
    shots = [int(s) for s in args.shots.split(",")]
    try:
        res = evaluate_transfer([o for o in args.ops.split(",") if o], args.data, shots=shots, seed=args.seed)
    except PerfPredictError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    res["seconds"] = round(time.time() - t0, 1)
    res = clean(res)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(res, indent=2) + "\n")
    print(f"{'op':<7}{'GPU':<6}" + "".join(f"  k={k:<2} MAPE  w10   rho  " for k in shots))
    for op, r in res["results"].items():
        for gpu, row in list(r["per_gpu"].items()) + [("MEAN", r["summary"])]:
            print(f"{op:<7}{gpu:<6}" + "".join(f"  {row[str(k)]['mape']:8.1f} {row[str(k)]['within_10']:5.1f} "
                                               f"{row[str(k)]['spearman']:.3f}" for k in shots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
