"""The model campaign: whole models under sampled plans, timed interleaved end to end, with peak memory."""

from __future__ import annotations

import gc
import json
import math
import os
import random
import time
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from perfpredict.beacon import BEACON_KEY, Beacon, beacon_extra, beacon_ms, drift_problem
from perfpredict.dataset import Record, Store, make_record, record_key
from perfpredict.devices import DeviceSpec, load_device
from perfpredict.errors import PerfPredictError
from perfpredict.graph import Graph
from perfpredict.measure import LatencyStats, measure_interleaved
from perfpredict.plan import Plan
from perfpredict.profile.campaign import (
    LAYER_CAMPAIGN, MODEL_CAMPAIGN, MODEL_PROTOCOL, CampaignReport, Protocol, SkipLog, campaign_device,
    parse_threads, progress_bar, random_inputs, seed_of, stats_extra,
)
from perfpredict.profile.layers import FIRST_CALL_FACTOR, RUNAWAY_FACTOR, probe_ms, reference_mac_rate
from perfpredict.profile.memory import AllocatorProbe, MemoryProbe
from perfpredict.profile.plans import PLAN_KINDS, FastestChoices, sample_plans, sample_swap_plans
from perfpredict.profile.sources import DEFAULT_RESOLUTIONS, OnnxSource, campaign_sources, campaign_specs, model_source


def _model_key(graph: Graph, plan: Plan, spec, device: DeviceSpec | str, threads: int, campaign: str) -> str:
    return record_key(kind="model", device=device, threads=threads, campaign=campaign, graph_id=graph.graph_id,
                      plan_json=plan.to_dict(), model_name=spec.name, family=spec.family)


def memory_gap(records: Iterable[Record]) -> dict[str, Any]:
    """How far the analytical estimate is from the measured peak memory over records holding both:
    n, median and 90th percentile of |est - measured| / measured, median signed difference, share within
    10% and 25%."""
    rel = [(r.est_mem_bytes - r.peak_mem_bytes) / r.peak_mem_bytes for r in records
           if r.peak_mem_bytes and r.est_mem_bytes is not None]
    if not rel:
        return {"n": 0}
    a = np.abs(np.asarray(rel))
    return {"n": len(rel), "median_abs_rel_diff": round(float(np.median(a)), 4),
            "p90_abs_rel_diff": round(float(np.quantile(a, 0.9)), 4),
            "median_signed_rel_diff": round(float(np.median(rel)), 4),
            "within_10pct": round(float(np.mean(a <= 0.10)), 4), "within_25pct": round(float(np.mean(a <= 0.25)), 4)}


def run_model_campaign(store: Store, *, threads: Sequence[int] | int = (1, 2), families: Sequence[str] | None = None,
                       n_variants_per_family: int = 4, plans_per_model: int = 8, seed: int = 0,
                       resolutions: Sequence[int] = DEFAULT_RESOLUTIONS, canonical: bool = True,
                       protocol: Protocol = MODEL_PROTOCOL, memory: bool = True,
                       memory_threads: Sequence[int] | None = None, memory_method: str = "allocator",
                       campaign: str = MODEL_CAMPAIGN,
                       layer_campaign: str | None = LAYER_CAMPAIGN,
                       devices: Mapping[int, DeviceSpec] | None = None, quick_device: bool = False,
                       max_minutes: float | None = None, stop_after: int | None = None,
                       specs: Sequence | None = None, models: Sequence[str | os.PathLike | OnnxSource] | None = None,
                       progress: bool = True, plans: str = "mixed", beacon: bool = True,
                       allow_drift: bool = False) -> CampaignReport:
    """Measure whole zoo models under sampled plans at each thread count: :func:`sample_plans` (``plans="mixed"``)
    or the plans near the whole-graph ``conv.dnnl`` anchor of :func:`sample_swap_plans` (``plans="swaps"``).

    Latency: the plans of one model are timed interleaved, end to end, with (``beacon=True``) the
    :mod:`perfpredict.beacon` workload timed in the same rounds and stored beside each record. Memory
    (``memory=True``): measured per plan by ``memory_method`` (``"allocator"`` in this process, ``"rss"`` in a :class:`MemoryProbe` worker;
    see :mod:`perfpredict.runtime.measurement`) at the thread counts in ``memory_threads`` (default: the
    smallest of ``threads``; the sampled plans are the same at every thread count except the fast ones),
    stored with the analytical estimate (which every record carries). Layer records of
    ``layer_campaign`` in the same store bias the ``fast``/``mixed`` plans. ``specs`` (zoo ModelSpecs)
    replaces the models drawn from ``families`` / ``n_variants_per_family`` / ``resolutions``; ``models`` (a user's
    ONNX files) are measured first, and zoo models too only where ``families`` or ``specs`` names some. Their records
    take the file's stem as family and model name and carry the graph without its weights
    (:func:`perfpredict.graph_json.pack_graph`, ``extra_json["graph"]``), so training rebuilds them without the file.
    ``max_minutes`` / ``stop_after`` stop cleanly as in :func:`run_layer_campaign`.

    Where the store holds beacon records of the same device, the beacon beside the first model at each thread count
    is checked against them (:func:`perfpredict.beacon.drift_problem`) before that model's records are stored: a
    machine or runtime unlike the store's (another OpenMP wait policy, another machine under the same description)
    raises :class:`PerfPredictError` unless ``allow_drift``.
    """
    import torch

    from perfpredict.measure import torch_threads
    from perfpredict.runtime import build_executable, estimate_peak_memory
    from perfpredict.runtime.measurement import MEMORY_METHODS

    t_start = time.perf_counter()
    ts = parse_threads(threads)
    if memory_method not in MEMORY_METHODS:
        raise PerfPredictError(f"memory method '{memory_method}' is not known; accepted: {', '.join(MEMORY_METHODS)}")
    if plans_per_model < 1:
        raise PerfPredictError(f"--plans-per-model must be at least 1, got {plans_per_model}")
    if plans not in PLAN_KINDS:
        raise PerfPredictError(f"plans '{plans}' is not known; accepted: {', '.join(PLAN_KINDS)}")
    report = CampaignReport(campaign, "model", str(store.path), ts)
    specs = campaign_sources(models, families, specs, lambda: campaign_specs(families, n_variants_per_family, seed,
                                                                             resolutions, canonical=canonical))
    devs = {t: (devices or {}).get(t) or campaign_device(store, t, quick=quick_device) for t in ts}
    fastest = FastestChoices.from_store(store, layer_campaign) if layer_campaign else None
    ref_rate = reference_mac_rate()
    done = store.keys(campaign)
    skiplog = SkipLog(store.path)
    skipped_before = skiplog.keys()
    bar = progress_bar(len(specs) * len(ts) * plans_per_model, f"models {campaign}", progress)
    deadline = None if max_minutes is None else t_start + 60 * max_minutes
    probe = (MemoryProbe() if memory_method == "rss" else AllocatorProbe()) if memory else None
    mem_ts = set(parse_threads(memory_threads)) if memory_threads else {min(ts)}
    known_plans: dict[str, float] = {}
    report.extra["memory_threads"] = sorted(mem_ts) if memory else []
    reference = Beacon() if beacon else None
    drift_refs = store.beacon_references() if beacon and not allow_drift else {}
    first_beacon: dict[int, float] = {}
    stored_now: list[Record] = []
    try:
        for spec in specs:
            if (deadline is not None and time.perf_counter() > deadline) or \
                    (stop_after is not None and len(done) + report.stored >= stop_after):
                report.stopped_early = True
                break
            graph, onnx_path, identity = model_source(spec)
            for t in ts:
                # the same seed at every thread count: the plans are the same except the fast ones, which follow
                # the layer records of that thread count
                rng = random.Random(f"perfpredict.profile.plans:{seed}:{spec.name}:{spec.digest()}")
                if plans == "swaps":
                    drawn = sample_swap_plans(graph, plans_per_model, rng, ref_rate=ref_rate)
                else:
                    drawn = sample_plans(graph, plans_per_model, rng, threads=t, fastest=fastest, ref_rate=ref_rate)
                bar.total += len(drawn) - plans_per_model
                todo = report.triage([(p, _model_key(graph, p, spec, devs[t], t, campaign)) for p in drawn], done,
                                     skipped_before)
                if not todo:
                    bar.update(len(drawn))
                    continue
                bar.update(len(drawn) - len(todo))
                if t == ts[0]:
                    known_plans = {}  # plan key -> fastest call at the smallest thread count (inf: too slow)
                recs, skips = _measure_model_plans(graph, onnx_path, spec, identity, todo, t, devs[t], protocol,
                                                   probe if t in mem_ts else None,
                                                   campaign, seed, report, build_executable, estimate_peak_memory,
                                                   torch, torch_threads, known_plans, learn=t == ts[0],
                                                   beacon=reference)
                if recs:
                    if drift_refs and t not in first_beacon:
                        _check_drift(recs[0], t, first_beacon, drift_refs, report)
                    report.stored += store.append_many(recs, if_exists="skip")
                    report.unstable += sum(1 for r in recs if r.stable is False)
                    stored_now.extend(recs)
                skiplog.add(skips)
                bar.update(len(todo))
                bar.set_postfix(stored=report.stored, skipped=sum(report.skipped.values()), refresh=False)
    finally:
        bar.close()
        if probe is not None:
            probe.__exit__(None, None, None)
        report.elapsed_s = round(time.perf_counter() - t_start, 1)
    report.extra["models"] = len(specs)
    report.extra["memory_gap"] = memory_gap(stored_now)
    report.extra["plans_by_kind"] = dict(Counter(json.loads(r.plan_json).get("name", "") for r in stored_now))
    return report


def _check_drift(rec: Record, t: int, first: dict[int, float], refs: Mapping[tuple[str, int], float],
                 report: CampaignReport) -> None:
    """Check the beacon beside a campaign's first model at ``t`` threads (``rec``, one of its records) against the
    store's references for the record's machine (its ``device_id``: each thread count has a description of its
    own); raise before that model's records are stored if they disagree. A machine the store has no reference for
    is named in ``report.extra["beacon_check"]["new_machine"]`` (its records then start a reference of their own)."""
    ms = beacon_ms(rec.extra())
    if ms is None:
        return
    device = rec.device()
    first[t] = ms
    reference = _machine_references(refs, device.device_id)
    check = report.extra.setdefault("beacon_check", {"first_ms": first, "reference_ms": {}})
    if t in reference:
        check["reference_ms"][t] = reference[t]
    elif not reference:
        check["new_machine"] = device.name
        return
    problem = drift_problem(first, reference)
    if problem:
        raise PerfPredictError(f"{problem}. Stopped before storing {rec.model_name}'s records at {t} thread(s); fix "
                               "the environment, measure into another store, or pass --allow-drift to store them")


def _machine_references(refs: Mapping[tuple[str, int], float], device_id: str) -> dict[int, float]:
    """threads -> reference beacon time (ms) of the machine ``device_id`` from
    :meth:`~perfpredict.dataset.Store.beacon_references` (keyed by per-thread-count device description); where
    one thread count has several descriptions of that machine, the median of their references."""
    from statistics import median

    times: dict[int, list[float]] = {}
    for (device_json, th), ms in refs.items():
        if load_device(json.loads(device_json)).device_id == device_id:
            times.setdefault(th, []).append(ms)
    return {th: float(median(v)) for th, v in times.items()}


MODEL_CHUNK_WEIGHT_BYTES = 1 << 30
"""Plans of one model are built and timed together while their estimated weights add up to at most this
(at least one plan at a time), so a big model's many executables do not exhaust memory."""


def _measure_model_plans(graph, onnx_path, spec, identity, todo, t, device, protocol, probe, campaign, seed, report,
                         build_executable, estimate_peak_memory, torch, torch_threads, known_plans, learn, beacon=None):
    """Build, probe, memory-measure and time (interleaved, with ``beacon``'s workload when given) the plans of one
    model at ``t`` threads, in chunks of at most :data:`MODEL_CHUNK_WEIGHT_BYTES` estimated weights."""
    ctx = {"skips": [], "calibration": None, "known": known_plans, "learn": learn, "beacon": beacon}
    estimates = {}
    chunks: list[list[tuple[Plan, str]]] = [[]]
    weight = 0
    for plan, key in todo:
        try:
            est = estimate_peak_memory(graph, plan)
        except PerfPredictError as exc:
            _skip_plan(ctx, report, plan, key, f"build failed: {str(exc)[:200]}", campaign, t, spec)
            continue
        estimates[key] = est
        if chunks[-1] and weight + est.weights > MODEL_CHUNK_WEIGHT_BYTES:
            chunks.append([])
            weight = 0
        chunks[-1].append((plan, key))
        weight += est.weights
    recs = []
    for chunk in chunks:
        if chunk:
            recs += _measure_chunk(graph, onnx_path, spec, identity, chunk, estimates, t, device, protocol, probe,
                                   campaign, seed, report, ctx, build_executable, torch, torch_threads)
    return recs, ctx["skips"]


def _skip_plan(ctx, report, plan, key, reason, campaign, t, spec) -> None:
    report.skipped[reason.split(":")[0]] += 1
    ctx["skips"].append({"key": key, "reason": reason, "kind": "model", "campaign": campaign, "threads": t,
                         "model_name": spec.name, "plan": plan.name})


def _measure_chunk(graph, onnx_path, spec, identity, chunk, estimates, t, device, protocol, probe, campaign, seed,
                   report, ctx, build_executable, torch, torch_threads):
    built: dict[str, tuple[Plan, str, Any, Any]] = {}
    x = random_inputs(graph, seed_of(spec.name, seed))
    with torch_threads(t), torch.inference_mode():
        for plan, key in chunk:
            known = None if ctx["learn"] else ctx["known"].get(plan.key)
            if known is not None and known > protocol.max_call_ms:
                _skip_plan(ctx, report, plan, key, f"too slow: over {protocol.max_call_ms:g} ms per inference at "
                                                   "fewer threads", campaign, t, spec)
                continue
            try:
                if ctx["calibration"] is None and any(c.precision == "int8" for c in plan.choices.values()):
                    from perfpredict.runtime import calibrate, calibration_inputs

                    # one calibration of the unpruned graph serves every plan of the model (qparams are per
                    # tensor name; their values do not change what runs, only the numbers it computes)
                    ctx["calibration"] = calibrate(graph, None, inputs=calibration_inputs(graph, n=2, seed=seed))
                exe = build_executable(graph, plan, threads=t, calibration=ctx["calibration"])
                xs = exe.prepare_input(*x)
                t0 = time.perf_counter()
                exe.forward(*xs)
                first_ms = (time.perf_counter() - t0) * 1e3
                one_ms = first_ms if first_ms > FIRST_CALL_FACTOR * protocol.max_call_ms else \
                    probe_ms(lambda: exe.forward(*xs))
            except PerfPredictError as exc:
                _skip_plan(ctx, report, plan, key, f"build failed: {str(exc)[:200]}", campaign, t, spec)
                continue
            except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
                _skip_plan(ctx, report, plan, key, f"run failed: {type(exc).__name__}: {str(exc)[:200]}", campaign,
                           t, spec)
                continue
            limit = protocol.max_call_ms * (RUNAWAY_FACTOR if known is not None else 1.0)
            if one_ms > limit:
                if ctx["learn"]:
                    ctx["known"][plan.key] = math.inf
                _skip_plan(ctx, report, plan, key, f"too slow: {one_ms:.0f} ms per inference > {limit:g} ms",
                           campaign, t, spec)
                continue
            built[key] = (plan, key, exe, xs)
    mem: dict[str, dict[str, Any]] = {}
    if probe is not None:
        for key, (_, _, exe, xs) in built.items():
            mem[key] = probe.measure_built(exe, xs, onnx_path=onnx_path, threads=t, seed=seed_of(spec.name, seed))
    stats: dict[str, LatencyStats] = {}
    if built:
        calls = {key: (lambda exe=exe, xs=xs: exe.forward(*xs)) for key, (_, _, exe, xs) in built.items()}
        if ctx["beacon"] is not None:
            calls[BEACON_KEY] = ctx["beacon"].call(t)
        with torch.inference_mode():
            kw = protocol.measure_kwargs()
            kw["warmup"] = max(1, protocol.warmup - 3)  # the three probe calls were warm-up calls already
            # with a beacon, every candidate stays in every round: the beacon's median is of the plans' rounds
            stats = measure_interleaved(calls, threads=t, seed=seed_of(spec.name, t, seed),
                                        lockstep=ctx["beacon"] is not None, **kw, **protocol.block_kwargs())
    recs = []
    for key, (plan, _, exe, _) in built.items():
        if ctx["learn"]:
            ctx["known"][plan.key] = stats[key].min_ms
        est = estimates[key]
        m = mem.get(key, {})
        extra = {**identity, "plan_kind": plan.name, "seed": seed, **stats_extra(stats[key]),
                 "est_mem": {"weights": est.weights, "activations": est.activations, "workspace": est.workspace},
                 "conversions": len(exe.conversions), "fused": len(exe.fused)}
        if protocol.block > 1:
            extra["block"] = {"timed": protocol.block, "untimed": protocol.block_warmup}
        if BEACON_KEY in stats:
            extra["beacon"] = beacon_extra(stats[BEACON_KEY])
        if "peak_bytes" in m:
            extra["mem"] = {"weights": m["weight_bytes"], "run_peak": m["run_peak_bytes"], "method": m["method"]}
        elif m.get("error"):
            extra["mem_error"] = m["error"]
            report.extra["memory_errors"] = report.extra.get("memory_errors", 0) + 1
        rec = make_record(kind="model", device=device, campaign=campaign, threads=t, stats=stats[key],
                          graph_id=graph.graph_id, plan_json=plan.to_dict(), model_name=spec.name,
                          family=spec.family, peak_mem_bytes=m.get("peak_bytes"), est_mem_bytes=est.total,
                          extra=extra)
        assert rec.key == key
        recs.append(rec)
    built.clear()
    gc.collect()
    return recs
