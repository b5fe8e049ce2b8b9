"""Where a predictor's leave-one-family-out latency error lies, from the predictions bench_predictor saved (a look
at saved predictions: no training, no timing).

Each held-out record's log error, log(predicted / measured), is split into three parts: its family's level (the
median over the family's records), its model's level at its thread count (the median over the records of that
``model@threads`` group once the family level is taken out: the plans of one model variant, timed in the same
rounds) and the rest, what differs between the plans of one model. For each part taken out in turn the report
gives the MAPE and the share within 10% that would be left, the mean size of the levels, the same by thread count
and, with ``--data`` (the runs' store), by plan kind (the records' ``plan_kind``) and by the 95% CI of the beacon
timed beside each group (a wide CI marks minutes in which the machine was noisy), with the noise floor of the
records' campaigns and, where the runs joined sessions that timed the same plans (``--campaigns A+B+C``), each plan
kind's own target noise within its group and the noise floor of the whole target, the sessions' mean
(:func:`session_noise`); and how far one model's levels at two thread counts agree. Each family's level and MAPE at each
thread count follow, and, with ``--data``, each plan kind's error against its model's default plan (the model's
level cancels), beside how much faster the kind measured: where the predictor misreads a plan's speed-up. With
runs of several seeds it also gives how far the seeds agree on the model levels (an error every seed makes lies in
the data or the features, not in the training's chance, and averaging seeds cannot remove it) and the same anatomy
for the seeds' ensemble (the geometric mean of their predictions, as summarise_seeds.py scores it).

    .venv/bin/python benchmarks/error_anatomy.py benchmarks/results/bench_predictor_zen3_..._seed0_{a,b}.json \
        [more seeds' files] [--data datasets/zen3.db] --out benchmarks/results/error_anatomy_zen3.json
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import write_results  # noqa: E402
from benchmarks.summarise_seeds import load_predictions, load_runs  # noqa: E402
from perfpredict.dataset import open_store  # noqa: E402
from perfpredict.samples import FAMILY_SPLITS  # noqa: E402


def held_out_records(predictions: dict[str, dict]) -> dict[str, np.ndarray]:
    """The family folds' held-out records of one seed: key, family, model, threads and log(predicted / measured)."""
    cols = defaultdict(list)
    for split, p in predictions.items():
        if split.partition(":")[0] not in FAMILY_SPLITS:  # leave-one-family-out folds
            continue
        for key, fam, group, pred, meas in zip(p["key"], p["family"], p["group"], p["latency_ms"],
                                               p["measured_latency_ms"]):
            if not (pred and meas and pred > 0 and meas > 0):
                continue
            model, _, threads = group.rpartition("@")
            cols["key"].append(key)
            cols["family"].append(fam)
            cols["model"].append(model)
            cols["threads"].append(int(threads))
            cols["log_ratio"].append(float(np.log(pred / meas)))
            cols["measured_ms"].append(float(meas))
    return {k: np.array(v) for k, v in cols.items()}


def _errors(log_ratio: np.ndarray) -> dict:
    err = np.abs(np.expm1(log_ratio))
    return {"n": int(err.size), "mape": float(100 * err.mean()), "within_10": float(100 * (err <= 0.1).mean())}


def _levels(labels: list, values: np.ndarray) -> tuple[dict, np.ndarray]:
    """The median of ``values`` per label, and each value's label median."""
    by = defaultdict(list)
    for lab, v in zip(labels, values):
        by[lab].append(v)
    med = {lab: float(np.median(v)) for lab, v in by.items()}
    return med, np.array([med[lab] for lab in labels])


def model_levels(rec: dict[str, np.ndarray]) -> dict[tuple[str, int], float]:
    """Each (model, threads) group's level: its median log error once its family's level is taken out."""
    r = rec["log_ratio"]
    return _levels(list(zip(rec["model"], rec["threads"])), r - _levels(list(rec["family"]), r)[1])[0]


BEACON_CI_EDGES = (0.03, 0.06, 0.12)
"""Bins of the beacon's relative 95% CI that the records are also taken apart by: a wide CI marks a group timed
while the machine was noisy."""


_EDGES = (0.0, *BEACON_CI_EDGES)
_CI_LABELS = [f"{100 * lo:g}-{100 * hi:g}%" for lo, hi in zip(_EDGES, _EDGES[1:])] + [f">= {100 * _EDGES[-1]:g}%"]


def _ci_bin(ci: float | None) -> str:
    return "no beacon" if ci is None else _CI_LABELS[bisect.bisect_right(BEACON_CI_EDGES, ci)]


def anatomy(rec: dict[str, np.ndarray], kinds: dict[str, str] | None = None,
            beacon_ci: dict[str, float] | None = None) -> dict:
    """The error of ``rec`` (:func:`held_out_records`) split into family level, model level and the rest; by thread
    count, and by plan kind and the beacon's CI where ``kinds`` and ``beacon_ci`` (record key -> each) are given."""
    r = rec["log_ratio"]
    fam, f = _levels(list(rec["family"]), r)
    groups = list(zip(rec["model"], rec["threads"]))
    model, g = _levels(groups, r - f)
    rest = r - f - g

    def part(sel: np.ndarray) -> dict:
        sel_groups = {grp for grp, s in zip(groups, sel) if s}
        return {**_errors(r[sel]), "groups": len(sel_groups), "family_level_out": _errors((r - f)[sel]),
                "model_level_out": _errors(rest[sel]),
                "mean_abs_model_level": float(100 * np.mean([abs(np.expm1(model[k])) for k in sel_groups]))}

    out = {**part(np.ones(r.size, bool)),
           "family_levels": {k: float(np.exp(v)) for k, v in sorted(fam.items())},
           "mean_abs_family_level": float(100 * np.mean([abs(np.expm1(v)) for v in fam.values()])),
           "by_threads": {str(t): part(rec["threads"] == t) for t in sorted(set(rec["threads"].tolist()))},
           "by_family": by_family(rec)}
    per_model = defaultdict(dict)
    for (m, t), v in model.items():
        per_model[m][t] = v
    pairs = [(d[a], d[b]) for d in per_model.values() for a, b in itertools.combinations(sorted(d), 2)]
    if len(pairs) > 2:
        a, b = np.array(pairs).T
        out["threads_agreement"] = {"pairs": len(pairs), "corr": float(np.corrcoef(a, b)[0, 1]),
                                    "mean_abs_difference": float(100 * np.mean(np.abs(np.expm1(b - a))))}
    if kinds:
        labels = np.array([kinds.get(k, "?") for k in rec["key"]])
        out["by_plan_kind"] = {k: {**part(labels == k), "median_ratio": float(np.exp(np.median(r[labels == k])))}
                               for k in sorted(set(labels.tolist()))}
        out["against_default"] = against_default(rec, labels)
    if beacon_ci:
        bins = np.array([_ci_bin(beacon_ci.get(k)) for k in rec["key"]])
        out["by_beacon_ci"] = {b: part(bins == b) for b in [*_CI_LABELS, "no beacon"] if (bins == b).any()}
    return out


def against_default(rec: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, dict]:
    """Per plan kind, each record's error against its (model, threads) group's (first) default plan: log(predicted /
    measured) less the default plan's, so the model's level cancels. Its median per family (above 1: the kind
    predicted too slow against the default), its MAPE, and its correlation over the records with how much faster or
    slower the kind measured than the default (log of the ratio): a predictor that pulls every model's speed-up
    towards the typical one shows a negative correlation."""
    default = {}
    for i, (m, t, lab) in enumerate(zip(rec["model"], rec["threads"], labels)):
        if lab == "default":
            default.setdefault((m, t), i)
    out = {}
    for kind in sorted(set(labels.tolist()) - {"default", "?"}):
        rel, speed, fams = [], [], []
        for i in np.flatnonzero(labels == kind):
            d = default.get((rec["model"][i], rec["threads"][i]))
            if d is not None:
                rel.append(rec["log_ratio"][i] - rec["log_ratio"][d])
                speed.append(np.log(rec["measured_ms"][i] / rec["measured_ms"][d]))
                fams.append(rec["family"][i])
        if len(rel) < 3:
            continue
        rel_a, speed_a, fam_a = np.array(rel), np.array(speed), np.array(fams)
        out[kind] = {**_errors(rel_a), "corr_with_measured_ratio": float(np.corrcoef(rel_a, speed_a)[0, 1]),
                     "by_family": {f: {"level": float(np.exp(np.median(rel_a[fam_a == f]))),
                                       "measured_ratio": float(np.exp(np.median(speed_a[fam_a == f])))}
                                   for f in sorted(set(fams))}}
    return out


def by_family(rec: dict[str, np.ndarray]) -> dict[str, dict[str, dict]]:
    """Per family and thread count: its level (the exponential of the median log error: above 1, predicted too
    slow), MAPE and share within 10%; how a family's level moves with the thread count is the predictor's reading
    of that family's thread scaling."""
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for fam in sorted(set(rec["family"].tolist())):
        for t in sorted(set(rec["threads"].tolist())):
            r = rec["log_ratio"][(rec["family"] == fam) & (rec["threads"] == t)]
            if r.size:
                out[fam][str(t)] = {**_errors(r), "level": float(np.exp(np.median(r)))}
    return dict(out)


def seed_agreement(levels: list[dict[tuple[str, int], float]]) -> dict:
    """How far seeds agree on each model's level: the correlation of every pair of seeds' model levels, and the
    mean size of one seed's levels against that of the seeds' mean level (what averaging the seeds leaves)."""
    common = sorted(set(levels[0]).intersection(*levels[1:]))
    mat = np.array([[lv[k] for k in common] for lv in levels])
    corrs = [float(np.corrcoef(mat[i], mat[j])[0, 1]) for i, j in itertools.combinations(range(len(levels)), 2)]
    return {"groups": len(common), "pairwise_corr": corrs, "mean_corr": float(np.mean(corrs)),
            "mean_abs_level_one_seed": float(100 * np.mean(np.abs(np.expm1(mat)))),
            "mean_abs_level_of_mean": float(100 * np.mean(np.abs(np.expm1(mat.mean(axis=0)))))}


def _common_rows(recs: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Per seed, the rows of the records every seed predicted, in the first seed's order."""
    index = [{k: i for i, k in enumerate(r["key"])} for r in recs]
    keys = [k for k in recs[0]["key"] if all(k in ix for ix in index[1:])]
    return [np.array([ix[k] for k in keys], int) for ix in index]


def record_spread(recs: list[dict[str, np.ndarray]]) -> dict:
    """How much more seeds would give, record by record (over the records every seed predicted): the root mean
    square of the log error for one seed, for the seeds' mean (the ensemble's log error), and for the mean of
    infinitely many seeds (the mean's square less the seeds' scatter about it over their number: the part every
    seed shares), each also with each model's level taken out; and the mean correlation of the seeds' per-record
    errors once the model levels are out."""
    sel = _common_rows(recs)
    S = len(recs)
    out: dict = {"records": len(sel[0]), "seeds": S}
    for name, take_out in (("as_predicted", False), ("model_level_out", True)):
        rows = []
        for r, ix in zip(recs, sel):
            x = r["log_ratio"][ix]
            if take_out:
                x = x - _levels(list(zip(r["model"][ix], r["threads"][ix])), x)[1]
            rows.append(x)
        mat = np.array(rows)
        mean = mat.mean(axis=0)
        scatter = mat.var(axis=0, ddof=1).mean()
        shared = max(float(np.mean(mean ** 2) - scatter / S), 0.0)
        out[name] = {"rms_one_seed": float(100 * np.sqrt(np.mean(mat ** 2))),
                     "rms_seeds_mean": float(100 * np.sqrt(np.mean(mean ** 2))),
                     "rms_many_seeds": float(100 * np.sqrt(shared))}
        if take_out:
            out["record_corr"] = float(np.mean([np.corrcoef(mat[i], mat[j])[0, 1]
                                                for i, j in itertools.combinations(range(S), 2)]))
    return out


def ensemble_records(recs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The records every seed predicted, with the geometric mean of the seeds' predictions."""
    sel = _common_rows(recs)
    out = {name: recs[0][name][sel[0]] for name in ("key", "family", "model", "threads", "measured_ms")}
    out["log_ratio"] = np.mean([r["log_ratio"][ix] for r, ix in zip(recs, sel)], axis=0)
    return out


def store_facts(path: str, keys: set[str]) -> tuple[dict[str, str], dict[str, float], dict[str, dict]]:
    """Of a store's model records: key -> plan kind, key -> the relative 95% CI of the beacon timed beside it; and
    the noise floor (:meth:`~perfpredict.dataset.Store.noise`, beacon-normalised where the re-checks were timed
    beside the beacon) of each campaign that the records ``keys`` come from and that has re-checks."""
    kinds, beacon_ci, campaigns = {}, {}, set()
    with open_store(path, create=False) as store:
        for r in store.iter_records(kind="model"):
            extra = r.extra()
            kinds[r.key] = extra.get("plan_kind", "?")
            ci = (extra.get("beacon") or {}).get("ci95_rel")
            if ci is not None:
                beacon_ci[r.key] = float(ci)
            if r.key in keys:
                campaigns.add(r.campaign)
        noise = {c: store.noise("model", c) for c in sorted(campaigns)}
    return kinds, beacon_ci, {c: n.get("beacon") or n for c, n in noise.items() if n}


def session_noise(path: str, sessions: list[tuple[str, ...]]) -> dict[str, dict]:
    """Per plan kind (and ``"all"``), the noise of the latency target, from campaigns that timed the same plans in
    several sessions (``sessions``: each a tuple of such campaigns, the runs' ``A+B+C`` entries; the target is the
    geometric mean of their beacon-normalised latencies).

    Within a (model, threads) group: for each pair of sessions the log ratio of a plan's two latencies, less its
    group's median ratio (what all the group's plans share in a session: the machine's speed then and the beacon
    timed beside them, one for the group, which the model level takes up), is two sessions' within-group noise;
    ``sd_one`` is one session's (root mean square over sqrt(2)), ``sd_target`` that of the mean of the sessions
    (over sqrt(sessions)), ``mape_target`` the MAPE, within the group, of a predictor of the true latencies if that
    noise is normal (sqrt(2/pi) x ``sd_target``).

    The whole target's noise floor, its group's share included: for a plan timed in all k sessions, each session's
    log latency less the mean of the others, times sqrt(k - 1) / k, has the variance of the k sessions' mean about
    the truth (for noise independent between sessions) and keeps the noise's own tails; ``floor_mape`` and
    ``floor_within_10`` are the MAPE and share within 10% of a predictor of the true latencies over those values
    (``floor_records``: the plans). Noise that every session shares is in no such figure."""
    from perfpredict.beacon import beacon_ms, normalised_ms

    wanted = {c: i for i, group in enumerate(sessions) for c in group}
    timed: dict[tuple, dict[str, float]] = defaultdict(dict)
    kind_of: dict[tuple, str] = {}
    with open_store(path, create=False) as store:
        references = store.beacon_references()
        for r in store.iter_records(kind="model"):
            if r.campaign not in wanted or not (r.median_ms and r.median_ms > 0):
                continue
            extra = r.extra()
            beacon, reference = beacon_ms(extra), references.get((r.device_json, r.threads))
            if not (beacon and reference):
                continue
            plan = (wanted[r.campaign], r.device_json, r.model_name, r.threads, r.plan_json)
            timed[plan][r.campaign] = float(np.log(normalised_ms(r.median_ms, beacon, reference)))
            kind_of[plan] = extra.get("plan_kind", "?")
    residuals, floor = defaultdict(list), defaultdict(list)
    for g, group in enumerate(sessions):
        for a, b in itertools.combinations(group, 2):
            by_group = defaultdict(list)
            for plan, x in timed.items():
                if a in x and b in x:
                    by_group[plan[:4]].append((x[a] - x[b], kind_of[plan]))
            for diffs in by_group.values():
                mid = np.median([d for d, _ in diffs])
                for d, kind in diffs:
                    residuals[kind].append(d - mid)
        k = len(group)
        for plan, x in timed.items():
            if plan[0] == g and len(x) == k:
                logs = np.array([x[c] for c in group])
                floor[kind_of[plan]].extend((logs - (logs.sum() - logs) / (k - 1)) * np.sqrt(k - 1) / k)
    k = max(len(g) for g in sessions)
    residuals["all"] = [v for kind in list(residuals) for v in residuals[kind]]
    floor["all"] = [v for kind in list(floor) for v in floor[kind]]
    out = {}
    for kind in sorted(residuals, key=lambda c: (c == "all", c)):
        sd_one = float(np.sqrt(np.mean(np.square(residuals[kind])) / 2.0))
        sd = sd_one / np.sqrt(k)
        out[kind] = {"pairs": len(residuals[kind]), "sessions": k, "sd_one": 100 * sd_one, "sd_target": 100 * sd,
                     "mape_target": 100 * sd * np.sqrt(2.0 / np.pi)}
        if floor.get(kind):
            err = np.abs(np.expm1(np.array(floor[kind])))
            out[kind].update(floor_records=len(err) // k, floor_mape=float(100 * err.mean()),
                             floor_within_10=float(100 * (err <= 0.1).mean()))
    return out


def beacon_spread(rec: dict[str, np.ndarray], beacon_ci: dict[str, float]) -> dict | None:
    """The median over the held-out (model, threads) groups of their beacon's relative 95% CI: the plans of a group
    share one beacon median, so its error enters all of them as one factor, part of the model level."""
    per_group = {}
    for key, model, threads in zip(rec["key"], rec["model"], rec["threads"]):
        if key in beacon_ci:
            per_group[(model, threads)] = beacon_ci[key]
    if not per_group:
        return None
    return {"groups": len(per_group), "median_ci95_rel": float(100 * np.median(list(per_group.values())))}


def _row(name: str, a: dict) -> str:
    t = a["by_threads"]
    agree = a.get("threads_agreement", {}).get("corr")
    return (f"| {name} | {a['mape']:.2f}% ({a['within_10']:.1f}%) | {a['family_level_out']['mape']:.2f}% "
            f"({a['family_level_out']['within_10']:.1f}%) | {a['model_level_out']['mape']:.2f}% "
            f"({a['model_level_out']['within_10']:.1f}%) | {a['mean_abs_family_level']:.2f}% | "
            f"{a['mean_abs_model_level']:.2f}% | " + " / ".join(f"{v['mape']:.2f}" for v in t.values())
            + f" | {'n/a' if agree is None else f'{agree:.2f}'} |")


def markdown(result: dict) -> str:
    threads = " / ".join(next(iter(result["seeds"].values()))["by_threads"])
    lines = ["Latency error of the held-out records, leave one family out, taken apart (MAPE, share within 10% in "
             "brackets); levels are medians of log(predicted / measured)", "",
             "| seeds | as predicted | family level out | model level out too | mean size of family levels | "
             f"mean size of model levels | MAPE at {threads} threads | model levels' corr across threads |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [_row(f"seed {s}", a) for s, a in result["seeds"].items()]
    if "ensemble" in result:
        lines.append(_row("ensemble", result["ensemble"]))
    for campaign, noise in (result.get("noise_floor") or {}).items():
        if noise.get("n"):
            lines += ["", f"Noise floor of campaign `{campaign}` ({noise['n']} re-checked model records): a predictor "
                      f"of the true latencies would score about {100 * noise['truth_mape']:.2f}% "
                      f"({100 * noise['truth_within_10pct']:.1f}% within 10%)."]
    joined = (result.get("session_noise") or {}).get("all") or {}
    if "floor_mape" in joined:
        lines += ["", f"Noise floor of the target the runs scored against, the mean of {joined['sessions']} sessions "
                  f"(each session against the others' mean over the {joined['floor_records']} plans timed in all, "
                  f"scaled to the noise of their mean): a predictor of the true latencies would score about "
                  f"{joined['floor_mape']:.2f}% ({joined['floor_within_10']:.1f}% within 10%); noise every session "
                  "shares is not in it."]
    beacon = result.get("beacon")
    if beacon:
        lines += ["", f"The beacon timed beside the plans of each of the {beacon['groups']} held-out (model, threads) "
                  f"groups: its median's 95% CI is a median {beacon['median_ci95_rel']:.1f}% of it, an error all "
                  "the group's plans share."]
    agree = result.get("seed_agreement")
    if agree:
        lines += ["", f"Seeds' agreement on the {agree['groups']} model levels (family level out): correlation "
                  f"{agree['mean_corr']:.2f} (pairs {', '.join(f'{c:.2f}' for c in agree['pairwise_corr'])}); mean "
                  f"|model level| {agree['mean_abs_level_one_seed']:.2f}% for one seed, "
                  f"{agree['mean_abs_level_of_mean']:.2f}% for the seeds' mean."]
    spread = result.get("record_spread")
    if spread:
        a, m = spread["as_predicted"], spread["model_level_out"]
        lines += ["", f"What more seeds would give, over the {spread['records']} records all {spread['seeds']} seeds "
                  f"predicted: root mean square log error {a['rms_one_seed']:.2f}% for one seed, "
                  f"{a['rms_seeds_mean']:.2f}% for their mean, {a['rms_many_seeds']:.2f}% for the mean of "
                  f"infinitely many (the part all seeds share); with each model's level out {m['rms_one_seed']:.2f}%, "
                  f"{m['rms_seeds_mean']:.2f}%, {m['rms_many_seeds']:.2f}%; seeds' per-record errors (model level "
                  f"out) correlate {spread['record_corr']:.2f}."]
    best = result.get("ensemble") or next(iter(result["seeds"].values()))
    which = "ensemble" if "ensemble" in result else "first seed"
    fam_threads = sorted({t for d in best["by_family"].values() for t in d}, key=int)
    lines += ["", f"By family and thread count ({which}): level (median predicted / measured), MAPE", "",
              "| family | " + " | ".join(f"level at {t}t | MAPE at {t}t" for t in fam_threads) + " |",
              "|---|" + "---:|---:|" * len(fam_threads)]
    lines += [f"| {fam} | " + " | ".join(f"{d[t]['level']:.3f} | {d[t]['mape']:.2f}%" if t in d else "- | -"
                                         for t in fam_threads) + " |" for fam, d in best["by_family"].items()]
    if "by_beacon_ci" in best:
        lines += ["", f"By the 95% CI of the beacon timed beside each group's plans ({which}):", "",
                  "| beacon CI | groups | records | MAPE (within 10%) | mean size of model levels | "
                  "MAPE, model level out |", "|---|---:|---:|---|---|---|"]
        lines += [f"| {k} | {v['groups']} | {v['n']} | {v['mape']:.2f}% ({v['within_10']:.1f}%) | "
                  f"{v['mean_abs_model_level']:.2f}% | {v['model_level_out']['mape']:.2f}% |"
                  for k, v in best["by_beacon_ci"].items()]
    if "by_plan_kind" in best:
        noise = result.get("session_noise") or {}

        def floor(k: str) -> str:
            n = noise.get(k) or {}
            return f"{n['floor_mape']:.2f}% ({n['floor_within_10']:.1f}%)" if "floor_mape" in n else "-"

        lines += ["", f"By plan kind ({which})" + (
            "; the target's own noise within its group, from the sessions that timed the same plans (the root mean "
            "square of two sessions' log ratio less their group's median, over sqrt(2) for one session and over "
            "sqrt(sessions) for their mean), the MAPE it alone would give a predictor of the true latencies "
            "with its model level out (normal noise), and that predictor's MAPE (within 10%) against the whole "
            "target, its group's noise too (each session against the others' mean, scaled to the noise of the "
            "sessions' mean)" if noise else "") + ":", "",
                  "| plan kind | records | MAPE (within 10%) | median ratio | MAPE, model level out |"
                  + (" target noise: sd one session / sd target / MAPE | noise floor of the target |" if noise else ""),
                  "|---|---:|---|---|---|" + ("---|---|" if noise else "")]
        lines += [f"| {k} | {v['n']} | {v['mape']:.2f}% ({v['within_10']:.1f}%) | {v['median_ratio']:.3f} | "
                  f"{v['model_level_out']['mape']:.2f}% |"
                  + (f" {noise[k]['sd_one']:.2f}% / {noise[k]['sd_target']:.2f}% / {noise[k]['mape_target']:.2f}% |"
                     f" {floor(k)} |" if k in noise else " - | - |" if noise else "")
                  for k, v in best["by_plan_kind"].items()]
    vs = best.get("against_default")
    if vs:
        kinds = list(vs)
        lines += ["", f"Against each group's default plan ({which}): the error less the default plan's, its median per "
                  "family (above 1: the kind predicted too slow against the default) beside the measured ratio to "
                  "the default, and its correlation with that ratio over the records", "",
                  "| family | " + " | ".join(f"{k}: level (measured ratio)" for k in kinds) + " |",
                  "|---|" + "---:|" * len(kinds)]
        fams = sorted({f for v in vs.values() for f in v["by_family"]})
        lines += [f"| {f} | " + " | ".join(
            f"{vs[k]['by_family'][f]['level']:.3f} ({vs[k]['by_family'][f]['measured_ratio']:.2f})"
            if f in vs[k]["by_family"] else "-" for k in kinds) + " |" for f in fams]
        lines.append("| MAPE; corr. | " + " | ".join(f"{vs[k]['mape']:.2f}%; {vs[k]['corr_with_measured_ratio']:.2f}"
                                                   for k in kinds) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path,
                    help="bench_predictor result JSON files written with --save-predictions (one or more per seed)")
    ap.add_argument("--predictor", default="gnn", help="predictor kind to take apart (default gnn)")
    ap.add_argument("--data", help="the runs' measurement store, for the plan kinds of the records")
    ap.add_argument("--out", default="benchmarks/results/error_anatomy.json", help="result JSON (and .md beside it)")
    args = ap.parse_args(argv)
    for p in args.runs:
        if not p.is_file():
            print(f"error_anatomy: no such result file: {p}", file=sys.stderr)
            return 2
    if args.data and not Path(args.data).is_file():
        print(f"error_anatomy: no such store: {args.data}", file=sys.stderr)
        return 2
    runs = load_runs(args.runs)
    predictions = load_predictions(args.runs, runs, args.predictor)
    recs = [held_out_records(p) for p in predictions]
    if not all(r.get("key") is not None and len(r["key"]) for r in recs):
        print(f"error_anatomy: a seed has no family fold predicted by {args.predictor!r}; give runs of "
              "family:* splits written with --save-predictions", file=sys.stderr)
        return 1
    keys = {k for r in recs for k in r["key"]}
    kinds, beacon_ci, noise = store_facts(args.data, keys) if args.data else (None, {}, {})
    seeds = [run["meta"]["seed"] for run in runs]
    sessions = [tuple(c.split("+")) for c in (runs[0]["meta"].get("campaigns") or "").split(",") if "+" in c]
    result = {"predictor": args.predictor, "data_hash": runs[0]["meta"]["data_hash"],
              "runs": [c for run in runs for c in run["meta"]["commands"]],
              "seeds": {str(s): anatomy(r, kinds, beacon_ci) for s, r in zip(seeds, recs)}, "noise_floor": noise,
              "beacon": beacon_spread(recs[0], beacon_ci),
              "session_noise": session_noise(args.data, sessions) if args.data and sessions else None}
    if len(recs) > 1:
        result["seed_agreement"] = seed_agreement([model_levels(r) for r in recs])
        result["record_spread"] = record_spread(recs)
        result["ensemble"] = anatomy(ensemble_records(recs), kinds, beacon_ci)
    write_results(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
