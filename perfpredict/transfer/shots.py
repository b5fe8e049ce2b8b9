"""Which workloads to measure on the new device: spread over the source's predicted latencies, diverse within
each stratum; measured here beside the beacon when the new device is this machine."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from perfpredict.devices import DeviceSpec
from perfpredict.errors import TransferError
from perfpredict.transfer.calibrators import safe_log
from perfpredict.transfer.measurements import Measurement

if TYPE_CHECKING:
    from perfpredict.graph import Graph


def choose_shots(predicted_ms: np.ndarray, k: int, features: np.ndarray | None = None,
                 exclude: Iterable[int] = (), seed: int = 0) -> list[int]:
    """Indices of the ``k`` candidates most informative to measure on a new device.

    The candidates are sorted by predicted latency and cut into ``k`` equal-count strata (quantiles); in
    each stratum the pick is the candidate farthest (standardised ``features``, else log latency) from
    everything already picked - so the shots span the latency range and differ in structure. Deterministic
    for a given ``seed`` (used only to break exact ties).
    """
    p = safe_log(predicted_ms).reshape(-1)
    excluded = set(int(i) for i in exclude)
    cand = np.array([i for i in range(len(p)) if i not in excluded], dtype=int)
    if k <= 0:
        return []
    if k > len(cand):
        raise TransferError(f"cannot choose {k} shots from {len(cand)} candidates")
    f = p[:, None] if features is None else np.asarray(features, np.float64).reshape(len(p), -1)
    f = np.c_[f, p]
    f = (f - f[cand].mean(0)) / np.where(f[cand].std(0) > 0, f[cand].std(0), 1.0)
    jitter = np.random.default_rng(seed).uniform(0, 1e-9, len(p))
    order = cand[np.argsort(p[cand] + jitter[cand], kind="stable")]
    strata = np.array_split(order, k)
    chosen: list[int] = []
    for stratum in strata:
        if not chosen:
            mid = stratum[len(stratum) // 2]
            chosen.append(int(mid))
            continue
        d = np.min(np.linalg.norm(f[stratum][:, None, :] - f[chosen][None, :, :], axis=2), axis=1)
        chosen.append(int(stratum[int(np.argmax(d + jitter[stratum]))]))
    return chosen


SHOT_PLANS = ("default", "nhwc", "int8-nhwc", "pruned-0.5")
"""The plans of each zoo model that ``--measure-on local`` chooses its shots among (named as
:func:`perfpredict.profile.sample_plans` names them): the default, the kinds of plan a search visits."""


def _plan_features(graph: "Graph", plan: Any) -> list[float]:
    """Shares of the graph's nodes at int8, pruned and in NHWC under ``plan``."""
    cs = list(plan.resolve(graph).values())
    n = max(len(cs), 1)
    return [sum(c.precision == "int8" for c in cs) / n, sum(c.prune > 0 for c in cs) / n,
            sum(c.layout == "NHWC" for c in cs) / n]


def shot_candidates(models: Sequence[str] | None = None,
                    plan_kinds: Sequence[str] = SHOT_PLANS) -> list[tuple[str, "Graph", Any]]:
    """(zoo model name, graph, plan) pairs a new device's shots are chosen among: each model's (default: every zoo
    model's) plans of ``plan_kinds``, named as :func:`perfpredict.profile.sample_plans` names them."""
    import random

    from perfpredict.models import load_model
    from perfpredict.plan import default_plan
    from perfpredict.profile import sample_plans
    from perfpredict.zoo import list_models

    cands: list[tuple[str, Any, Any]] = []
    for name in list(models or list_models()):
        graph = load_model(name)[0]
        if tuple(plan_kinds) == ("default",):
            cands.append((name, graph, default_plan(graph)))
            continue
        plans = sample_plans(graph, 8, random.Random(0))
        cands.extend((name, graph, p) for p in plans if p.name in plan_kinds)
    return cands


def choose_candidates(source: Any, device: DeviceSpec, cands: Sequence[tuple[str, "Graph", Any]], k: int,
                      exclude: Iterable[int] = ()) -> list[int]:
    """Indices of the ``k`` of ``cands`` (:func:`shot_candidates`) most informative to measure on ``device``:
    :func:`choose_shots` on ``source``'s predictions for the board (FLOPs where it cannot answer) and on the
    model's size and the plan's int8 / pruned / NHWC shares."""
    graphs, plans = [g for _, g, _ in cands], [p for _, _, p in cands]
    try:
        pred = source.predict(graphs, plans, device).latency_ms
    except TransferError:
        pred = np.array([g.flops for g in graphs], np.float64)
    feats = np.array([[math.log1p(g.macs), math.log1p(g.param_count), len(g.nodes)] + _plan_features(g, p)
                      for g, p in zip(graphs, plans)])
    return choose_shots(pred, k, feats, exclude=exclude)


def measure_candidates(source: Any, device: DeviceSpec, k: int, models: Sequence[str] | None = None,
                       threads: int | None = None, progress: bool = False, plans_dir: str | Path | None = None,
                       plan_kinds: Sequence[str] = SHOT_PLANS, done: Sequence[Measurement] = (),
                       on_measured: Callable[[list[Measurement]], None] | None = None) -> list[Measurement]:
    """Choose the ``k`` most informative (zoo model, plan) pairs for ``device`` and measure them here, each
    round-robin with the beacon workload (:func:`perfpredict.runtime.measurement.measure_plan_beside`; ``threads``:
    the board's ``threads_used`` by default), so that :func:`beacon_normalised` can take the machine's drift
    between shots out of their latencies.

    The candidates are each model's plans of ``plan_kinds`` (with ``plans_dir``, where the non-default ones
    are written as plan JSON; without it, the default plans only), chosen by :func:`choose_shots` on the
    source's predictions for the board and on the model's size and the plan's int8 / pruned / NHWC shares.
    The choice is deterministic, so a killed run resumes: a pick found in ``done`` (an earlier run's
    measurements) is not measured again, and ``on_measured`` gets the list so far after every measurement.
    """
    from tqdm import tqdm

    from perfpredict.beacon import BEACON_KEY, Beacon
    from perfpredict.runtime import measurement

    cands = shot_candidates(models, plan_kinds if plans_dir is not None else ("default",))
    if k > len(cands):
        raise TransferError(f"-k {k} is more than the {len(cands)} candidate (model, plan) pairs of "
                            f"{len({n for n, _, _ in cands})} models")
    pick = choose_candidates(source, device, cands, k)
    earlier = {(m.model, str(Path(m.plan).resolve()) if m.plan else None): m for m in done}
    out = []
    beacon, t = Beacon(), threads or device.threads_used
    for i in tqdm(pick, desc="measuring", disable=not progress, unit="plan"):
        name, graph, plan = cands[i]
        plan_path = None
        if plans_dir is not None and plan.name != "default":
            folder = Path(plans_dir).resolve()
            folder.mkdir(parents=True, exist_ok=True)
            plan_path = str(plan.save(folder / f"{Path(name).stem}.{plan.name}.json"))
        if (name, plan_path) in earlier:
            out.append(earlier[(name, plan_path)])
            continue
        stats = measurement.measure_plan_beside(graph, plan, {BEACON_KEY: beacon.call(t)}, threads=t)
        out.append(Measurement(name, plan_path, float(stats["plan"].median_ms), float(stats[BEACON_KEY].median_ms)))
        if on_measured is not None:
            on_measured(out)
    return out
