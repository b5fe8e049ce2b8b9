"""Re-measurements of stored records: noise re-checks, allocator memory for RSS stores, per-step times."""

from __future__ import annotations

import gc
import json
import math
import random
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from perfpredict.beacon import BEACON_KEY, Beacon, beacon_extra, beacon_ms
from perfpredict.dataset import Record, Store, noise_recheck_record
from perfpredict.errors import PerfPredictError
from perfpredict.graph import Graph
from perfpredict.measure import LatencyStats, measure_interleaved
from perfpredict.plan import Plan
from perfpredict.profile.campaign import (
    MODEL_PROTOCOL, CampaignReport, Protocol, campaign_device, canonical, progress_bar, random_inputs, seed_of,
)
from perfpredict.profile.layers import LayerCandidate, LayerConfig, isolate_node, measure_layer, node_identity
from perfpredict.profile.sources import zoo_graph
from perfpredict.zoo import spec_from_dict


def run_noise(store: Store, *, sample: int = 200, seed: int = 0, kinds: Sequence[str] = ("layer", "model"),
              protocol: Protocol | None = None, repeat: int = 0, campaigns: Sequence[str] | None = None,
              progress: bool = True, time_cap_s: float | None = None) -> CampaignReport:
    """Re-measure a seeded random sample of ``sample`` stored records (not rechecks themselves; split evenly
    across ``kinds``) and store the results as noise-recheck records
    (:func:`perfpredict.dataset.noise_recheck_record`).

    Records are rebuilt from their zoo spec, or from the user's ONNX file they were measured from while it is in
    place (records of a file that is gone are counted among the skips). Layer records are timed as the layer
    campaign timed
    them: interleaved with the other candidates stored for the same layer and thread count (timed alone,
    a small layer runs with warmer caches and comes out systematically faster). Model records are timed
    interleaved with the other plans their campaign stored for the same
    model and thread count, and with the :mod:`perfpredict.beacon` workload when their campaign timed them beside
    it (the re-check then stores the beacon's time too). Both use the campaigns' seeded inputs and int8
    calibration and ``protocol`` (default: the layer or model campaign default), with ``time_cap_s`` as its time
    cap per candidate where given (re-check a campaign run with another ``--time-cap-s`` by its own).
    ``repeat`` tells several rechecks of the same record apart; ``campaigns`` (default: all) limits the sample to
    records of those campaigns.
    """
    import torch

    from perfpredict.dataset import NOISE_CAMPAIGN
    from perfpredict.measure import torch_threads

    t_start = time.perf_counter()
    if sample < 1:
        raise PerfPredictError(f"--sample must be at least 1, got {sample}")
    if time_cap_s is not None and not time_cap_s > 0:
        raise PerfPredictError(f"--time-cap-s must be a positive number of seconds, got {time_cap_s}")
    report = CampaignReport(NOISE_CAMPAIGN, "+".join(kinds), str(store.path), ())
    sources = _Sources()
    candidates = [r for k in kinds for r in store.iter_records(kind=k)
                  if r.campaign != NOISE_CAMPAIGN and r.median_ms is not None
                  and (campaigns is None or r.campaign in campaigns) and sources.rebuildable(r)]
    if not candidates:
        where = f" of campaign(s) {', '.join(campaigns)}" if campaigns else ""
        gone = f" ({sources.describe_missing()})" if sources.missing else ""
        raise PerfPredictError(f"{store.path}: no {' or '.join(kinds)} records{where} to re-measure: none has a zoo "
                               f"spec or a user's ONNX file still in place{gone}")
    rng = random.Random(f"perfpredict.profile.noise:{seed}")
    by_kind = {k: [r for r in candidates if r.kind == k] for k in kinds}
    by_kind = {k: v for k, v in by_kind.items() if v}
    chosen = []
    for i, (k, recs) in enumerate(sorted(by_kind.items())):  # the sample is split evenly across kinds
        share = sample // len(by_kind) + (1 if i < sample % len(by_kind) else 0)
        chosen += rng.sample(recs, min(share, len(recs)))
    chosen.sort(key=lambda r: (_source_key(r.extra()), r.kind))  # load each model once
    done = store.keys(NOISE_CAMPAIGN)
    siblings: dict[tuple, list[LayerCandidate]] = defaultdict(list)
    if any(r.kind == "layer" for r in chosen):
        for r in store.iter_records(kind="layer"):
            if r.campaign != NOISE_CAMPAIGN:
                siblings[(r.campaign, r.model_name, r.threads, r.node_json)].append(
                    LayerCandidate(r.primitive, r.layout, r.precision, float(r.prune or 0.0)))
    model_siblings: dict[tuple, list[Record]] = defaultdict(list)
    if any(r.kind == "model" for r in chosen):
        groups = {_model_group(r) for r in chosen if r.kind == "model"}
        for r in store.iter_records(kind="model"):
            if r.campaign != NOISE_CAMPAIGN and r.median_ms is not None and r.plan_json \
                    and (g := _model_group(r)) in groups:
                model_siblings[g].append(r)
    report.threads = tuple(sorted({r.threads for r in chosen}))
    report.planned = len(chosen)
    sources.count_missing(report)
    bar = progress_bar(len(chosen), "noise recheck", progress)
    graphs: dict[str, Graph] = {}
    pairs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    reference = Beacon()
    try:
        for orig in chosen:
            beacon = None
            rec_key = noise_recheck_record(orig, _dummy_stats(), repeat=repeat).key
            if rec_key in done:
                report.already += 1
                bar.update(1)
                continue
            ex = orig.extra()
            proto = protocol or (Protocol() if orig.kind == "layer" else MODEL_PROTOCOL)
            if time_cap_s is not None:
                proto = replace(proto, time_cap_s=time_cap_s)
            try:
                graph = _record_graph(orig, graphs)
                with torch_threads(orig.threads), torch.inference_mode():
                    if orig.kind == "layer":
                        stats = _recheck_layer(orig, ex, graph, siblings, proto)
                        if stats is None:
                            raise PerfPredictError("the layer was skipped this time (too slow or failed)")
                    else:
                        stats, beacon = _recheck_model(orig, ex, model_siblings, graphs, reference, proto)
            except (PerfPredictError, RuntimeError, ValueError, KeyError) as exc:
                report.skipped[f"rebuild failed: {type(exc).__name__}"] += 1
                bar.update(1)
                continue
            rec = noise_recheck_record(orig, stats, repeat=repeat, beacon=beacon)
            report.stored += int(store.append(rec, if_exists="skip"))
            report.unstable += int(stats.stable is False)
            pairs[orig.kind].append((orig.median_ms, stats.median_ms))
            bar.update(1)
    finally:
        bar.close()
        report.elapsed_s = round(time.perf_counter() - t_start, 1)
    from perfpredict.measure import noise_floor

    every = [(a, b) for v in pairs.values() for a, b in v if a > 0 and b > 0]
    report.extra["this_run"] = noise_floor(every)
    report.extra["this_run_by_kind"] = {k: noise_floor([(a, b) for a, b in v if a > 0 and b > 0])
                                        for k, v in sorted(pairs.items())}
    report.extra["store_noise"] = store.noise()
    return report


def _source_key(extra: Mapping[str, Any]) -> str:
    """The identity of the graph a record was measured on: its zoo spec as text (one name can stand for several
    resolutions, so the whole spec), or the user's ONNX file it came from."""
    if "spec" in extra:
        return json.dumps(extra["spec"], sort_keys=True)
    return f"onnx:{extra.get('onnx', '')}"


class _Sources:
    """Which stored records can be rebuilt here: those of a zoo spec, and those of a user's ONNX file
    (``perfpredict profile layers|models --model FILE``) while the file is still where it was measured from; the
    records passed by for a missing file are counted by file."""

    def __init__(self) -> None:
        self.missing: Counter[str] = Counter()
        self._present: dict[str, bool] = {}

    def rebuildable(self, record: Record) -> bool:
        """Whether ``record`` can be rebuilt (counting it when its ONNX file is gone)."""
        ex = record.extra()
        if "spec" in ex:
            return True
        path = ex.get("onnx")
        if not path:
            return False
        if path not in self._present:
            self._present[path] = Path(path).is_file()
        if not self._present[path]:
            self.missing[path] += 1
        return self._present[path]

    def describe_missing(self) -> str:
        """The missing files and their record counts, in a line."""
        return "; ".join(f"{n} records of {path}, which is gone" for path, n in sorted(self.missing.items()))

    def count_missing(self, report: CampaignReport) -> None:
        """Count the records passed by for a missing ONNX file among ``report``'s skips."""
        if self.missing:
            report.skipped["ONNX file gone"] += sum(self.missing.values())


def _record_graph(record: Record, graphs: dict[str, Graph]) -> Graph:
    """The graph ``record`` was measured on: its zoo spec's, or its user's ONNX file's (checked against the record's
    graph identity for a model record: a file changed since is an error); ``graphs`` keeps the last one built."""
    ex = record.extra()
    key = _source_key(ex)
    if key not in graphs:
        graphs.clear()
        gc.collect()
        if "spec" in ex:
            graphs[key] = zoo_graph(spec_from_dict(ex["spec"]))[0]
        else:
            graphs[key] = _onnx_graph(record, ex["onnx"])
    return graphs[key]


def _onnx_graph(record: Record, path: str) -> Graph:
    from perfpredict.models import load_model

    if not Path(path).is_file():
        raise PerfPredictError(f"{path}: the ONNX file {record.model_name} was measured from is gone")
    graph = load_model(path)[0]
    if record.kind == "model" and graph.graph_id != record.graph_id:
        raise PerfPredictError(f"{path} is not the model {record.model_name} was measured as (graph "
                               f"{graph.graph_id}, the record's {record.graph_id}): the file changed since")
    return graph


def _input_name(record: Record) -> str:
    """The name a model record's campaign seeded its input with: the zoo spec's name, or the ONNX file's stem."""
    ex = record.extra()
    return ex["spec"]["name"] if "spec" in ex else (record.model_name or "")


def rebuild_model_record(record: Record, graphs: dict[str, Graph], *,
                         chain: bool = True) -> tuple[Any, tuple[Any, ...]]:
    """(executable, prepared input) of model record ``record`` as its campaign built them: its graph (a zoo model's,
    or the user's ONNX file's while it is in place) and plan,
    the campaign's seeded input and int8 calibration. ``graphs`` caches the last graph built (pass the same dict for
    consecutive records of one model); ``chain`` is :func:`~perfpredict.runtime.build_executable`'s (False: one
    Python step per op, as records before ``dispatch_revision`` 2 ran)."""
    from perfpredict.runtime import build_executable, calibrate, calibration_inputs

    ex = record.extra()
    graph = _record_graph(record, graphs)
    plan = Plan.from_dict(json.loads(record.plan_json)) if record.plan_json else Plan({})
    cal = None
    if any(c.precision == "int8" for c in plan.choices.values()):
        cal = calibrate(graph, None, inputs=calibration_inputs(graph, n=2, seed=ex.get("seed", 0)))
    exe = build_executable(graph, plan, threads=record.threads, calibration=cal, chain=chain)
    return exe, exe.prepare_input(*random_inputs(graph, seed_of(_input_name(record), ex.get("seed", 0))))


def allocator_memory_of(record: Record, graphs: dict[str, Graph] | None = None) -> Any:
    """The ``"allocator"`` :class:`~perfpredict.runtime.measurement.MemoryMeasurement` of model record ``record``,
    rebuilt as its campaign built it (:func:`rebuild_model_record`). ``graphs`` caches the last graph built (pass
    the same dict for consecutive records of one model)."""
    from perfpredict.measure import torch_threads
    from perfpredict.runtime.measurement import allocated_memory

    with torch_threads(record.threads):
        return allocated_memory(*rebuild_model_record(record, {} if graphs is None else graphs))


def _each_original(store: Store, todo: list[Record], report: CampaignReport, is_done: Callable[[Record], bool],
                   measure: Callable[[Record, dict[str, Graph]], Record], desc: str, t_start: float,
                   max_minutes: float | None, progress: bool) -> None:
    """Measure stored model records again, one new record each (``measure(original, graphs)``), in the order of
    their sources (each model built once; ``graphs`` caches it), storing in batches; an original ``is_done``
    says is already measured is counted and skipped, one whose rebuild fails is counted by reason, and the loop
    stops cleanly after ``max_minutes``."""
    todo.sort(key=lambda r: (_source_key(r.extra()), r.threads))
    deadline = None if max_minutes is None else t_start + 60 * max_minutes
    bar = progress_bar(len(todo), desc, progress)
    graphs: dict[str, Graph] = {}
    batch: list[Record] = []

    def flush() -> None:
        report.stored += store.append_many(batch, if_exists="skip")
        batch.clear()

    try:
        for orig in todo:
            if is_done(orig):
                report.already += 1
                bar.update(1)
                continue
            if deadline is not None and time.perf_counter() > deadline:
                report.stopped_early = True
                break
            try:
                if _source_key(orig.extra()) not in graphs:
                    flush()
                batch.append(measure(orig, graphs))
            except (PerfPredictError, RuntimeError, ValueError, KeyError) as exc:
                report.skipped[f"rebuild failed: {type(exc).__name__}"] += 1
                bar.update(1)
                continue
            if len(batch) >= 200:
                flush()
            bar.update(1)
        flush()
    finally:
        bar.close()
        report.elapsed_s = round(time.perf_counter() - t_start, 1)


def run_memory_remeasure(store: Store, *, max_minutes: float | None = None, progress: bool = True) -> CampaignReport:
    """Measure the peak memory of every stored model record that has one by the ``"allocator"`` method
    (:func:`perfpredict.runtime.measurement.allocated_memory`), unless it was measured so already, and store
    the figures as memory-only records of campaign ``memory-allocator``
    (:func:`perfpredict.dataset.memory_remeasure_record`).

    Each plan is rebuilt as its campaign built it (:func:`rebuild_model_record`) and measured twice; the
    report gives how far the two figures lie apart (``repeat_max_rel_diff``: the method's noise) and how the
    resident-set figures stored before compare with the new ones (``vs_stored``). Resumable: records already
    re-measured are skipped. ``max_minutes`` stops cleanly.
    """
    from perfpredict.dataset import MEMORY_CAMPAIGN, NOISE_CAMPAIGN, memory_method_of, memory_remeasure_record

    t_start = time.perf_counter()
    done = store.memory_remeasurements()
    sources = _Sources()
    todo = [r for r in store.iter_records(kind="model") if r.campaign not in (NOISE_CAMPAIGN, MEMORY_CAMPAIGN)
            and memory_method_of(r) == "rss" and sources.rebuildable(r)]
    report = CampaignReport(MEMORY_CAMPAIGN, "model", str(store.path), tuple(sorted({r.threads for r in todo})))
    report.planned = len(todo)
    sources.count_missing(report)
    repeat_diff: list[float] = []
    vs_stored: list[tuple[float, float]] = []

    def measure(orig: Record, graphs: dict[str, Graph]) -> Record:
        first = allocator_memory_of(orig, graphs)
        second = allocator_memory_of(orig, graphs)
        repeat_diff.append(abs(second.peak_bytes - first.peak_bytes) / max(first.peak_bytes, 1))
        vs_stored.append((float(orig.peak_mem_bytes), float(first.peak_bytes)))
        return memory_remeasure_record(orig, peak_bytes=first.peak_bytes, weight_bytes=first.weight_bytes,
                                       run_peak_bytes=first.run_peak_bytes)

    _each_original(store, todo, report, lambda r: r.key in done, measure, "memory re-measure", t_start, max_minutes,
                   progress)
    from perfpredict.measure import noise_floor

    report.extra["repeat_max_rel_diff"] = round(max(repeat_diff), 6) if repeat_diff else None
    report.extra["vs_stored"] = noise_floor(vs_stored) if vs_stored else None
    return report


def run_step_times(store: Store, *, campaigns: Sequence[str] | None = None, threads: Sequence[int] | None = None,
                   repeats: int = 7, warmup: int = 2, max_minutes: float | None = None,
                   progress: bool = True) -> CampaignReport:
    """Time the forward pass of stored model records step by step on this machine
    (:meth:`~perfpredict.runtime.Executable.step_times`, median of ``repeats`` passes after ``warmup``), grouped by
    graph node (:func:`~perfpredict.runtime.executor.step_groups`), as records of campaign ``step-times``
    (:func:`perfpredict.dataset.step_times_record`) that training attaches to their originals: where in the model
    the latency goes, for the predictor's nodes (``TrainOptions.step_weight``).

    ``campaigns`` (default: every model campaign) and ``threads`` (default: every thread count) choose the
    originals; each is rebuilt as its campaign built it (:func:`rebuild_model_record`) and run at its own thread
    count. The steps run one Python call each (the forward pass chains its oneDNN calls; the steps' sum is
    reported against the originals' medians, ``steps_vs_record``). Resumable: an original already timed on this
    machine is skipped. ``max_minutes`` stops cleanly.
    """
    from perfpredict.dataset import MEMORY_CAMPAIGN, NOISE_CAMPAIGN, STEPS_CAMPAIGN, step_times_key, step_times_record
    from perfpredict.measure import torch_threads
    from perfpredict.runtime import step_groups

    if repeats < 1 or warmup < 0:
        raise PerfPredictError(f"step times need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    t_start = time.perf_counter()
    aux = (NOISE_CAMPAIGN, MEMORY_CAMPAIGN, STEPS_CAMPAIGN)
    known = set(store.info()["by_campaign"]) - set(aux)
    unknown = sorted(set(campaigns or ()) - known)
    if unknown:
        raise PerfPredictError(f"no records in campaign(s) {', '.join(unknown)}; the store's campaigns: "
                               f"{', '.join(sorted(known)) or 'none'}")
    sources = _Sources()
    todo = [r for c in (campaigns or sorted(known)) for r in store.iter_records(kind="model", campaign=c)
            if r.plan_json and (threads is None or r.threads in threads) and sources.rebuildable(r)]
    ts = tuple(sorted({r.threads for r in todo}))
    report = CampaignReport(STEPS_CAMPAIGN, "model", str(store.path), ts)
    devices = {t: campaign_device(store, t) for t in ts}
    report.planned = len(todo)
    sources.count_missing(report)
    done = store.keys(STEPS_CAMPAIGN)
    ratios: list[float] = []

    def measure(orig: Record, graphs: dict[str, Graph]) -> Record:
        with torch_threads(orig.threads):
            exe, xs = rebuild_model_record(orig, graphs)
            groups = step_groups(exe.schedule, exe.step_times(*xs, repeats=repeats, warmup=warmup))
        rec = step_times_record(orig, groups, device=devices[orig.threads], repeats=repeats)
        if orig.median_ms:
            ratios.append(rec.extra()["steps"]["total_ms"] / orig.median_ms)
        return rec

    def is_done(orig: Record) -> bool:
        return step_times_key(orig, devices[orig.threads]) in done

    _each_original(store, todo, report, is_done, measure, "step times", t_start, max_minutes, progress)
    if ratios:
        q = np.percentile(ratios, [10, 50, 90])
        report.extra["steps_vs_record"] = {"median": round(float(q[1]), 4), "p10": round(float(q[0]), 4),
                                           "p90": round(float(q[2]), 4), "n": len(ratios)}
    return report


def _recheck_layer(orig: Record, ex: Mapping[str, Any], graph: Graph,
                   siblings: Mapping[tuple, list[LayerCandidate]], protocol: Protocol) -> LatencyStats | None:
    """Re-time layer record ``orig`` interleaved with its siblings (as the campaign did); its new stats."""
    name = ex["node"] if "spec" in ex else ex["onnx_node"]
    node = graph.node(name)
    identity = node_identity(node)
    if canonical(identity) != orig.node_json:
        raise PerfPredictError(f"node '{name}' of {orig.model_name} no longer matches the record")
    cfg = LayerConfig(identity, isolate_node(graph, node), orig.family or "", orig.model_name or "", ex.get("spec"),
                      name, onnx_path=ex.get("onnx"))
    me = LayerCandidate(orig.primitive, orig.layout, orig.precision, float(orig.prune or 0.0))
    cands = siblings.get((orig.campaign, orig.model_name, orig.threads, orig.node_json)) or [me]
    if me not in cands:
        cands = [*cands, me]
    outcomes = measure_layer(cfg, cands, orig.threads, protocol, seed=seed_of(orig.node_json, ex.get("seed", 0)))
    return next(o.stats for o in outcomes if o.candidate == me)


def _model_group(record: Record) -> tuple:
    """The plans its campaign timed together with model record ``record``: same campaign, model, device and thread
    count."""
    return (record.campaign, _source_key(record.extra()), record.device_json, record.threads)


def _recheck_model(orig: Record, ex: Mapping[str, Any], siblings: Mapping[tuple, list[Record]],
                   graphs: dict[str, Graph], reference: Beacon,
                   protocol: Protocol) -> tuple[LatencyStats, dict[str, Any] | None]:
    """Re-time model record ``orig`` as its campaign timed it: interleaved with the other plans its campaign stored
    for the same model, device and thread count, and beside the beacon when the campaign timed one. Timed alone
    (or beside the beacon alone) a plan runs with other caches than among its siblings and comes out
    systematically faster. A record timed in steady turns (``extra["block"]``) is re-timed in turns of the same
    shape. Its new stats and, with a beacon, the beacon's (:func:`beacon_extra`)."""
    group = siblings.get(_model_group(orig)) or [orig]
    if all(r.key != orig.key for r in group):
        group = [*group, orig]
    calls: dict[str, Callable[[], Any]] = {}
    for r in group:
        exe, xs = rebuild_model_record(r, graphs)
        calls[r.key] = lambda exe=exe, xs=xs: exe.forward(*xs)
    with_beacon = beacon_ms(ex) is not None
    if with_beacon:
        calls[BEACON_KEY] = reference.call(orig.threads)
    if block := ex.get("block"):
        protocol = replace(protocol, block=int(block["timed"]), block_warmup=int(block["untimed"]))
    stats = measure_interleaved(calls, threads=orig.threads, lockstep=with_beacon,
                                seed=seed_of(orig.key, ex.get("seed", 0)), **protocol.measure_kwargs(),
                                **protocol.block_kwargs())
    return stats[orig.key], (beacon_extra(stats[BEACON_KEY]) if with_beacon else None)


def _dummy_stats() -> LatencyStats:
    return LatencyStats(1.0, 0.0, 1.0, 1.0, 0.0, 1, math.inf, False, None, 0)
