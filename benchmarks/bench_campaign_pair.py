"""Two model campaigns of one store that timed the same models and plans, compared record by record (a look at
stored records, no timing): for the records both hold (same model, plan and thread count), the median ratio of
campaign B's latency to campaign A's by plan kind, each record first divided by the beacon timed beside it
(:mod:`perfpredict.beacon`), so that the machine's drift between the two campaigns cancels. It also names the
machine(s) each campaign ran on: a ratio between campaigns of two machines compares the machines too.

Where both campaigns ran on one machine they are two sessions of the same measurements, and their disagreement is a
noise floor with far more pairs than a re-check sample: with the campaigns' overall ratio taken out,
:func:`perfpredict.measure.noise_floor` of the pairs says how a predictor of the true latencies would score against
one campaign, and halving the log ratios how it would score against the geometric mean of the two (the target of
``--campaigns A+B``, :func:`perfpredict.samples.load_samples`); dividing them by sqrt(6) instead, against the
geometric mean of three such sessions (``A+B+C``: a pair's log ratio has twice one session's variance, the mean of
three a third of it). The spread of each (model, thread count) group's
median log ratio against the spread within groups says how much of the disagreement a model's plans share, which
no predictor can learn from one session. The spread within groups by plan kind, and the floor it sets against the
mean of three sessions, says how well each kind of plan is measured against the same model's other plans: a
predictor's error within a model (``error_anatomy.py``'s *model level out*) far above it is the predictor's.

    .venv/bin/python benchmarks/bench_campaign_pair.py --data datasets/xeon2.db --a models-beacon6-icl \\
        --b models-beacon6-block5 --out benchmarks/results/campaign_pair_xeon2_block5_vs_icl.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import write_results  # noqa: E402
from perfpredict.beacon import beacon_ms  # noqa: E402
from perfpredict.dataset import open_store  # noqa: E402
from perfpredict.measure import noise_floor  # noqa: E402


def _normalised(store, campaign: str) -> tuple[dict[tuple[str, int, str], tuple[float, str]], set[str]]:
    """(model, threads, plan JSON) -> (median / beacon, plan kind) of a campaign's beaconed model records, and the
    campaign's device names."""
    out, devices = {}, set()
    for r in store.iter_records(kind="model", campaign=campaign):
        extra = r.extra()
        b = beacon_ms(extra)
        devices.add(r.device_name)
        if b and r.median_ms:
            out[(r.model_name, r.threads, r.plan_json)] = (r.median_ms / b, extra.get("plan_kind", "?"))
    return out, devices


def _against_mean_of(centred: np.ndarray, k: int) -> dict:
    """How a predictor of the true latencies would score against the geometric mean of ``k`` sessions, from one pair's
    centred log ratios (twice one session's variance; the mean of ``k`` has a ``k``-th of it: over sqrt(2k))."""
    err = np.abs(np.expm1(centred / math.sqrt(2.0 * k)))
    return {"truth_mape": float(err.mean()), "truth_within_10pct": float((err <= 0.1).mean())}


def agreement(shared: list[tuple[str, int, str]], a: dict, b: dict) -> dict:
    """How far two sessions of the same records agree (module docstring): the noise floor against one and against
    their geometric mean, and the spread of the log ratios between and within (model, threads) groups."""
    log_ratio = np.array([math.log(b[k][0] / a[k][0]) for k in shared])
    centred = log_ratio - np.median(log_ratio)
    one = noise_floor((1.0, math.exp(r)) for r in centred)
    groups: dict[tuple[str, int], list[float]] = {}
    for k, r in zip(shared, centred):
        groups.setdefault(k[:2], []).append(float(r))
    medians = {g: float(np.median(v)) for g, v in groups.items()}
    within = np.array([r - medians[k[:2]] for k, r in zip(shared, centred)])
    kinds = np.array([a[k][1] for k in shared])
    by_kind = {kind: {"n": int((kinds == kind).sum()), "sd_within_groups": float(within[kinds == kind].std()),
                      "within_groups_mean_of_three": _against_mean_of(within[kinds == kind], 3)}
               for kind in sorted(set(kinds.tolist()))}
    return {"n": len(shared), "median_ratio": float(np.exp(np.median(log_ratio))), "one": one,
            "mean_of_two": _against_mean_of(centred, 2), "mean_of_three": _against_mean_of(centred, 3),
            "groups": len(groups), "sd_group_medians": float(np.std(list(medians.values()))),
            "sd_within_groups": float(within.std()), "by_plan_kind": by_kind}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="measurement store")
    ap.add_argument("--a", required=True, help="campaign A (the denominator)")
    ap.add_argument("--b", required=True, help="campaign B (the numerator)")
    ap.add_argument("--out", default="benchmarks/results/campaign_pair.json")
    args = ap.parse_args(argv)
    with open_store(args.data) as store:
        a, dev_a = _normalised(store, args.a)
        b, dev_b = _normalised(store, args.b)
    shared = sorted(set(a) & set(b))
    if not shared:
        print(f"bench_campaign_pair: campaigns '{args.a}' and '{args.b}' share no beaconed model record",
              file=sys.stderr)
        return 1
    by_kind: dict[str, list[float]] = {}
    for k in shared:
        by_kind.setdefault(a[k][1], []).append(b[k][0] / a[k][0])
    rows = {kind: {"n": len(v), "median_ratio": statistics.median(v)} for kind, v in sorted(by_kind.items())}
    agree = agreement(shared, a, b)
    within = agree["by_plan_kind"]
    table = "\n".join([f"`{args.b}` / `{args.a}`, beacon-normalised, {len(shared)} shared records "
                       f"(A on {', '.join(sorted(dev_a))}; B on {', '.join(sorted(dev_b))}); within groups: each "
                       "log ratio less its (model, threads) group's median, how the sessions agree on a plan "
                       "against the model's other plans", "",
                       "| plan kind | records | median ratio | sd within groups | floor within groups, mean of three |",
                       "|---|---:|---:|---:|---:|"]
                      + [f"| {k} | {r['n']} | {r['median_ratio']:.3f} | {within[k]['sd_within_groups']:.4f} | "
                         f"{100 * within[k]['within_groups_mean_of_three']['truth_mape']:.2f}% |"
                         for k, r in rows.items()])
    table += "\n\n" + (
        f"Agreement, the campaigns' median ratio ({agree['median_ratio']:.3f}) taken out: re-timed within 10% "
        f"{100 * agree['one']['within_10pct']:.1f}%; a predictor of the true latencies would score about "
        f"{100 * agree['one']['truth_mape']:.2f}% MAPE ({100 * agree['one']['truth_within_10pct']:.1f}% within 10%) "
        f"against one campaign and {100 * agree['mean_of_two']['truth_mape']:.2f}% "
        f"({100 * agree['mean_of_two']['truth_within_10pct']:.1f}%) against the geometric mean of the two "
        f"({100 * agree['mean_of_three']['truth_mape']:.2f}%, "
        f"{100 * agree['mean_of_three']['truth_within_10pct']:.1f}%, against that of three such sessions). Spread "
        f"(sd of log ratios) of the {agree['groups']} (model, threads) groups' medians "
        f"{agree['sd_group_medians']:.3f}, within groups {agree['sd_within_groups']:.3f}: the part a model's plans "
        "share is what one session's level error is made of.")
    write_results(args.out, {"data": args.data, "a": args.a, "b": args.b, "devices_a": sorted(dev_a),
                             "devices_b": sorted(dev_b), "shared": len(shared), "by_plan_kind": rows,
                             "agreement": agree, "command": " ".join(sys.argv)}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
