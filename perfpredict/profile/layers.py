"""The layer campaign: each layer configuration measured alone under every primitive, layout, precision and
pruning ratio that applies."""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from perfpredict.dataset import Store, make_record, record_key
from perfpredict.devices import DeviceSpec
from perfpredict.errors import MeasurementError, PerfPredictError, PlanError
from perfpredict.graph import Graph, Node, load_onnx
from perfpredict.measure import LatencyStats, measure_interleaved
from perfpredict.plan import Choice, Plan
from perfpredict.profile.campaign import (
    LAYER_CAMPAIGN, CampaignReport, Protocol, SkipLog, campaign_device, canonical, parse_threads, progress_bar,
    random_inputs, seed_of, stats_extra,
)
from perfpredict.profile.sources import (
    DEFAULT_RESOLUTIONS, OnnxSource, campaign_sources, campaign_specs, spec_dict, zoo_graph,
)

DEFAULT_PRUNE_RATIOS = (0.0, 0.25, 0.5)
COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
REFERENCE_PRIMITIVES = ("conv.reference", "gemm.reference")
"""The C reference kernels: slow, so their single-call time is predicted from their MAC rate before running."""


def node_identity(node: Node) -> dict[str, Any]:
    """What makes a layer configuration: op, normalised attributes, shapes, and its cost facts."""
    return json.loads(canonical({
        "op": node.op, "attrs": dict(node.attrs), "input_shapes": node.input_shapes,
        "output_shapes": node.output_shapes, "macs": node.macs, "flops": node.flops,
        "param_count": node.param_count, "bytes_in": node.bytes_in, "bytes_out": node.bytes_out,
    }))


@dataclass(frozen=True)
class LayerConfig:
    """A layer configuration to measure in isolation, with where it was found."""

    identity: Mapping[str, Any]
    graph: Graph  # the one-node graph of the layer (unpruned)
    family: str
    model_name: str
    spec: Mapping[str, Any] | None  # the zoo spec it came from; None for a user's ONNX file (``onnx_path``)
    node_name: str
    onnx_path: str | None = None

    @property
    def node(self) -> Node:
        """The layer's node."""
        return self.graph.nodes[0]

    @property
    def op(self) -> str:
        """The layer's op."""
        return self.node.op

    @property
    def identity_json(self) -> str:
        """Canonical JSON of the identity (the key of this configuration)."""
        return canonical(self.identity)

    def origin(self) -> dict[str, Any]:
        """Where the layer came from, as its records keep it: the zoo spec and the node's name, from which training
        rebuilds the node; or, for a user's ONNX file, its path, the node's name and the node itself
        (:func:`perfpredict.graph_json.node_to_json`), which training reads, so the store stays usable when the file
        moves."""
        if self.spec is not None:
            return {"spec": self.spec, "node": self.node_name}
        from perfpredict.graph_json import node_to_json

        return {"onnx": self.onnx_path, "onnx_node": self.node_name, "layer_node": node_to_json(self.node)}


def isolate_node(graph: Graph, node: Node, prune: float = 0.0) -> Graph:
    """A one-node Graph running ``node`` alone (its weights from ``graph``).

    With ``prune > 0`` (dense Conv or Gemm only) the node keeps the ``1 - prune`` share of its output
    channels with the largest filter L1 norm (at least one), rebuilt through ONNX so every cost fact is
    recomputed by :func:`perfpredict.graph.load_onnx`.
    """
    if prune > 0:
        return _pruned_node_graph(graph, node, prune)
    inputs = tuple(dict.fromkeys(node.activation_inputs))
    shapes = {t: tuple(graph.tensor_shapes[t]) for t in inputs + tuple(node.outputs) if t in graph.tensor_shapes}
    return Graph(name=f"layer-{node.name}", nodes=(node,), inputs=inputs, outputs=tuple(node.outputs),
                 initializers={p: graph.initializers[p] for p in node.params}, tensor_shapes=shapes)


def prunable_in_isolation(node: Node) -> bool:
    """Whether a lone ``node`` can be pruned: a dense Conv with more than one output channel, or a Gemm."""
    if node.op == "Conv":
        return node.attrs["groups"] == 1 and node.attrs["out_channels"] > 1
    return node.op == "Gemm" and node.attrs.get("out_features", 0) > 1


def _pruned_node_graph(graph: Graph, node: Node, prune: float) -> Graph:
    from onnx import TensorProto, helper, numpy_helper

    if not prunable_in_isolation(node):
        raise PlanError(f"node '{node.name}' ({node.op}) cannot be pruned in isolation: only dense Conv and Gemm")
    w = np.asarray(graph.initializers[node.inputs[1]], dtype=np.float32)
    bias = graph.initializers.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if node.op == "Conv":
        axis = 0
    else:
        axis = 0 if node.attrs.get("trans_b", 0) else 1
    n_out = w.shape[axis]
    l1 = np.abs(np.moveaxis(w, axis, 0)).reshape(n_out, -1).sum(axis=1)
    n_keep = max(1, n_out - int(round(prune * n_out)))
    keep = np.sort(np.argsort(l1, kind="stable")[::-1][:n_keep])
    w = np.ascontiguousarray(np.take(w, keep, axis=axis))
    inits = [numpy_helper.from_array(w, "w")]
    names = ["x", "w"]
    if bias is not None:
        b = np.asarray(bias, dtype=np.float32)
        if b.ndim >= 1 and b.shape[-1] == n_out:
            b = np.ascontiguousarray(np.take(b, keep, axis=-1))
        inits.append(numpy_helper.from_array(b, "b"))
        names.append("b")
    a = node.attrs
    in_shape = list(node.in_shape)
    if node.op == "Conv":
        onnx_node = helper.make_node("Conv", names, ["y"], name=node.name, kernel_shape=list(a["kernel"]),
                                     strides=list(a["stride"]), pads=list(a["pads"]), dilations=list(a["dilation"]),
                                     group=1)
    else:
        onnx_node = helper.make_node("Gemm", names, ["y"], name=node.name, alpha=float(a.get("alpha", 1.0)),
                                     beta=float(a.get("beta", 1.0)), transA=int(a.get("trans_a", 0)),
                                     transB=int(a.get("trans_b", 0)))
    out_shape = list(node.out_shape)
    out_shape[1 if node.op == "Conv" else -1] = int(n_keep)
    g = helper.make_graph([onnx_node], f"layer-{node.name}",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    return load_onnx(model, name=f"layer-{node.name}-p{prune:g}")


def collect_layer_configs(specs: Sequence, n_configs: int, seed: int, *, compute_share: float = 0.7,
                          ops: Sequence[str] | None = None, primitives: Sequence[str] | None = None,
                          progress: bool = False) -> list[LayerConfig]:
    """Up to ``n_configs`` distinct layer configurations drawn from the graphs of ``specs`` (zoo ModelSpecs, or
    :class:`OnnxSource` for a user's ONNX files).

    Configurations are deduplicated on :func:`node_identity`. Families take turns; within a family a
    Conv/Gemm/MatMul configuration is drawn with probability ``compute_share`` (while any is left), any
    other op otherwise. ``ops`` restricts the ops drawn, ``primitives`` the nodes to those every named primitive
    of their op can run (and to the ops of the named primitives).
    """
    from perfpredict.primitives import get_primitive

    prims = [get_primitive(name) for name in primitives or ()]  # an unknown name: an error listing the known ones
    pools: dict[str, dict[str, list[LayerConfig]]] = {}
    seen: set[str] = set()
    it = specs
    if progress:
        from tqdm import tqdm

        it = tqdm(specs, desc="loading zoo graphs", unit="model", file=sys.stderr, dynamic_ncols=True)
    for spec in it:
        if isinstance(spec, OnnxSource):
            graph, sd, path = spec.graph, None, str(spec.path)
        else:
            (graph, _), sd, path = zoo_graph(spec), spec_dict(spec), None
        fam_pool = pools.setdefault(spec.family, {"compute": [], "other": []})
        for node in graph.nodes:
            if ops and node.op not in ops:
                continue
            if prims and not _runs_all(node, prims):
                continue
            ident = node_identity(node)
            text = canonical(ident)
            if text in seen:
                continue
            seen.add(text)
            cfg = LayerConfig(ident, isolate_node(graph, node), spec.family, spec.name, sd, node.name, path)
            fam_pool["compute" if node.op in COMPUTE_OPS else "other"].append(cfg)
    rng = random.Random(f"perfpredict.profile.layers:{seed}")
    for fam in pools.values():
        rng.shuffle(fam["compute"])
        rng.shuffle(fam["other"])
    out: list[LayerConfig] = []
    order = sorted(pools)
    while len(out) < n_configs and any(p["compute"] or p["other"] for p in pools.values()):
        for fam in order:
            p = pools[fam]
            if not (p["compute"] or p["other"]) or len(out) >= n_configs:
                continue
            want = "compute" if rng.random() < compute_share else "other"
            if not p[want]:
                want = "other" if want == "compute" else "compute"
            out.append(p[want].pop())
    return out


def _runs_all(node: Node, prims: Sequence) -> bool:
    """Whether some of ``prims`` are for ``node``'s op and all of those can run it."""
    mine = [p for p in prims if node.op in p.ops]
    return bool(mine) and all(p.supports(node) for p in mine)


@dataclass(frozen=True)
class LayerCandidate:
    """One way to run a layer: primitive, layout, precision, prune ratio."""

    primitive: str
    layout: str
    precision: str
    prune: float = 0.0

    @property
    def label(self) -> str:
        """A short unique name."""
        return f"{self.primitive}/{self.layout}/{self.precision}/p{self.prune:g}"

    def choice(self) -> Choice:
        """The plan choice of the (already pruned) lone node."""
        return Choice(self.primitive, self.layout, self.precision, 0.0)


def layer_candidates(node: Node, prune_ratios: Sequence[float] = DEFAULT_PRUNE_RATIOS,
                     primitives: Sequence[str] | None = None) -> list[LayerCandidate]:
    """Every applicable (primitive, layout, precision) of ``node`` at fp32 and int8 (of ``primitives`` only, when
    given), times the prune ratios (ratios > 0 only for a dense Conv or a Gemm)."""
    from perfpredict.primitives import candidates

    ratios = sorted({float(r) for r in prune_ratios} | {0.0})
    if not prunable_in_isolation(node):
        ratios = [0.0]
    out = []
    for prune in ratios:
        for precision in ("fp32", "int8"):
            for prim in candidates(node, precision=precision):
                if primitives and prim.name not in primitives:
                    continue
                for layout in prim.layouts:
                    out.append(LayerCandidate(prim.name, layout, precision, prune))
    return out


def _layer_key(cfg: LayerConfig, cand: LayerCandidate, device: DeviceSpec | str, threads: int, campaign: str) -> str:
    return record_key(kind="layer", device=device, threads=threads, campaign=campaign, node_json=cfg.identity_json,
                      primitive=cand.primitive, layout=cand.layout, precision=cand.precision, prune=cand.prune,
                      model_name=cfg.model_name, family=cfg.family)

def node_kernel_call(exe: Any, inputs: Sequence[np.ndarray]) -> Callable[[], Any]:
    """A zero-argument callable running only the (first) node kernel of a built one-node executable, on its
    input already converted to the kernel's layout and precision (the executable's own conversion steps are
    run once here, not timed)."""
    import torch

    steps = exe._steps  # the executable's built steps, aligned with exe.schedule.ops
    regs: list[Any] = [None] * len(exe.schedule.slots)
    for s, x in zip(exe.schedule.input_slots, exe.prepare_input(*inputs)):
        regs[s] = x
    with torch.inference_mode():
        for (fn, ins, outs, _frees), op in zip(steps, exe.schedule.ops):
            args = [regs[i] for i in ins]
            if op.kind == "node":
                return lambda fn=fn, args=args: fn(*args)
            y = fn(*args)
            if len(outs) == 1:
                regs[outs[0]] = y
            else:
                for s, v in zip(outs, y):
                    regs[s] = v
    raise MeasurementError(f"executable of '{exe.graph.name}' has no node step")


RUNAWAY_FACTOR = 10.0
"""A candidate known to be fast enough at fewer threads is still skipped when its probe takes this many
times ``Protocol.max_call_ms`` (a runaway, not preemption)."""

FIRST_CALL_FACTOR = 3.0
"""A candidate whose first call takes longer than this many times ``Protocol.max_call_ms`` is skipped at
once; otherwise the faster of two more calls decides."""


def probe_ms(call: Callable[[], Any]) -> float:
    """Time of one call (ms): the faster of two, so one preempted call on a loaded machine does not count."""
    best = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def reference_mac_rate() -> float:
    """MACs per millisecond of the C reference conv on this machine (a small 3x3 conv, best of 3)."""
    import torch

    from onnx import TensorProto, helper, numpy_helper

    from perfpredict.runtime import build_executable

    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 16, 3, 3), dtype=np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="probe", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    g = helper.make_graph([node], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 32, 32])],
                          [numpy_helper.from_array(w, "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    graph = load_onnx(model, name="reference-probe")
    exe = build_executable(graph, Plan({"probe": Choice("conv.reference")}), threads=1)
    call = node_kernel_call(exe, random_inputs(graph, 0))
    with torch.inference_mode():
        call()
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - t0)
    return graph.nodes[0].macs / (best * 1e3)


@dataclass(frozen=True)
class LayerOutcome:
    """One candidate of one layer: its stats, or why it was skipped."""

    candidate: LayerCandidate
    stats: LatencyStats | None
    skip: str | None = None
    probe_ms: float | None = None  # the call time a "too slow" skip was decided on


def measure_layer(cfg: LayerConfig, cands: Sequence[LayerCandidate], threads: int, protocol: Protocol, *,
                  ref_rate: float | None = None, seed: int = 0,
                  known_ms: Mapping[str, float] | None = None) -> list[LayerOutcome]:
    """Measure ``cands`` of the layer ``cfg`` at ``threads``, interleaved; skips carry their reason.

    ``known_ms`` maps candidate labels to their fastest call at a smaller thread count (inf when skipped
    there as too slow): such a candidate is skipped or measured on that evidence, not on its probe calls,
    which a loaded machine can stretch by preempting one of the threads.
    """
    import torch

    from perfpredict.measure import torch_threads
    from perfpredict.runtime import build_executable

    outcomes: dict[LayerCandidate, LayerOutcome] = {}
    calls: dict[str, Callable[[], Any]] = {}
    by_label: dict[str, LayerCandidate] = {}
    graphs: dict[float, Graph | str] = {}
    calibrations: dict[float, Any] = {}
    keep_alive = []
    with torch_threads(threads), torch.inference_mode():
        for cand in cands:
            if cand.prune not in graphs:
                try:
                    graphs[cand.prune] = isolate_node(cfg.graph, cfg.node, cand.prune) if cand.prune > 0 \
                        else cfg.graph
                except PerfPredictError as exc:
                    graphs[cand.prune] = f"pruned graph failed: {exc}"
            graph = graphs[cand.prune]
            if isinstance(graph, str):
                outcomes[cand] = LayerOutcome(cand, None, graph)
                continue
            node = graph.nodes[0]
            known = (known_ms or {}).get(cand.label)
            if known is not None and known > protocol.max_call_ms:
                outcomes[cand] = LayerOutcome(cand, None, f"too slow: over {protocol.max_call_ms:g} ms per call at "
                                                          "fewer threads")
                continue
            if cand.primitive in REFERENCE_PRIMITIVES and ref_rate and node.macs:
                predicted = node.macs / ref_rate
                if predicted > protocol.max_call_ms:
                    outcomes[cand] = LayerOutcome(cand, None, f"too slow: predicted {predicted:.0f} ms per call "
                                                              f"> {protocol.max_call_ms:g} ms")
                    continue
            try:
                calibration = None
                if cand.precision == "int8":
                    if cand.prune not in calibrations:
                        from perfpredict.runtime import calibrate, calibration_inputs

                        calibrations[cand.prune] = calibrate(graph, None,
                                                             inputs=calibration_inputs(graph, n=2, seed=seed))
                    calibration = calibrations[cand.prune]
                exe = build_executable(graph, Plan({node.name: cand.choice()}), threads=threads,
                                       calibration=calibration)
                call = node_kernel_call(exe, random_inputs(graph, seed))
                t0 = time.perf_counter()
                call()  # first call: lazy initialisation (primitive caches, packing)
                first_ms = (time.perf_counter() - t0) * 1e3
                # a first call far over the limit is not worth two more (lazy set-up never costs that much)
                one_ms = first_ms if first_ms > FIRST_CALL_FACTOR * protocol.max_call_ms else probe_ms(call)
            except PerfPredictError as exc:
                outcomes[cand] = LayerOutcome(cand, None, f"build failed: {str(exc)[:200]}")
                continue
            except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
                outcomes[cand] = LayerOutcome(cand, None, f"run failed: {type(exc).__name__}: "
                                                          f"{str(exc).splitlines()[0][:200] if str(exc) else ''}")
                continue
            limit = protocol.max_call_ms * (RUNAWAY_FACTOR if known is not None else 1.0)
            if one_ms > limit:
                outcomes[cand] = LayerOutcome(cand, None, f"too slow: {one_ms:.0f} ms per call > {limit:g} ms",
                                              probe_ms=one_ms)
                continue
            keep_alive.append(exe)
            calls[cand.label] = call
            by_label[cand.label] = cand
        if calls:
            kw = protocol.measure_kwargs()
            kw["warmup"] = max(1, protocol.warmup - 3)  # the three probe calls were warm-up calls already
            stats = measure_interleaved(calls, threads=threads, seed=seed, **kw)
            for label, st in stats.items():
                outcomes[by_label[label]] = LayerOutcome(by_label[label], st)
    del keep_alive
    return [outcomes[c] for c in cands]


def run_layer_campaign(store: Store, *, threads: Sequence[int] | int = (1, 2), families: Sequence[str] | None = None,
                       n_configs: int = 200, seed: int = 0, n_variants_per_family: int = 4,
                       resolutions: Sequence[int] = DEFAULT_RESOLUTIONS,
                       prune_ratios: Sequence[float] = DEFAULT_PRUNE_RATIOS, ops: Sequence[str] | None = None,
                       primitives: Sequence[str] | None = None,
                       protocol: Protocol = Protocol(), campaign: str = LAYER_CAMPAIGN,
                       devices: Mapping[int, DeviceSpec] | None = None, quick_device: bool = False,
                       max_minutes: float | None = None, stop_after: int | None = None,
                       specs: Sequence | None = None, models: Sequence[str | os.PathLike | OnnxSource] | None = None,
                       progress: bool = True) -> CampaignReport:
    """Measure ``n_configs`` layer configurations in isolation under every candidate, at each thread count.

    Configurations come from :func:`campaign_specs` (``families``, ``n_variants_per_family``, ``seed``,
    ``resolutions``; or the zoo ModelSpecs in ``specs``) via :func:`collect_layer_configs`; with ``models`` (a user's
    ONNX files), from those files instead, and from the zoo families too only where ``families`` names some.
    Records already in the store (same key) or in the skip log are not measured again. ``ops`` restricts the ops
    drawn; ``primitives`` the candidates to those primitives (and the configurations to those all of them for the op
    run): a primitive added later is measured beside the ones it competes with, without measuring every other
    candidate again. ``devices`` maps thread count -> DeviceSpec (default :func:`campaign_device`). ``max_minutes``
    stops cleanly after that much wall time, ``stop_after`` once the store holds that many records of ``campaign``
    (resume later by running again).
    """
    t_start = time.perf_counter()
    ts = parse_threads(threads)
    if n_configs < 1:
        raise PerfPredictError(f"--n-configs must be at least 1, got {n_configs}")
    if any(not 0 <= r < 1 for r in prune_ratios):
        raise PerfPredictError(f"prune ratios must be in [0, 1), got {list(prune_ratios)}")
    report = CampaignReport(campaign, "layer", str(store.path), ts)
    specs = campaign_sources(models, families, specs, lambda: campaign_specs(families, n_variants_per_family, seed,
                                                                             resolutions, probes=True))
    configs = collect_layer_configs(specs, n_configs, seed, ops=ops, primitives=primitives, progress=progress)
    devs = {t: (devices or {}).get(t) or campaign_device(store, t, quick=quick_device) for t in ts}
    done = store.keys(campaign)
    skiplog = SkipLog(store.path)
    skipped_before = skiplog.keys()
    work: list[tuple[LayerConfig, int, list[tuple[LayerCandidate, str]]]] = []
    for cfg in configs:
        cands = layer_candidates(cfg.node, prune_ratios, primitives)
        for t in ts:
            todo = report.triage([(c, _layer_key(cfg, c, devs[t], t, campaign)) for c in cands], done,
                                 skipped_before)
            if todo:
                work.append((cfg, t, todo))
    ref_rate = reference_mac_rate()
    report.extra["reference_macs_per_ms"] = round(ref_rate, 1)
    report.extra["configs"] = len(configs)
    report.extra["configs_by_op"] = dict(Counter(c.op for c in configs))
    bar = progress_bar(sum(len(w[2]) for w in work), f"layers {campaign}", progress)
    deadline = None if max_minutes is None else t_start + 60 * max_minutes
    known_by_cfg: dict[str, dict[str, float]] = {}
    try:
        for cfg, t, todo in work:
            if (deadline is not None and time.perf_counter() > deadline) or \
                    (stop_after is not None and len(done) + report.stored >= stop_after):
                report.stopped_early = True
                break
            seed_l = seed_of(cfg.identity_json, seed)
            known = known_by_cfg.get(cfg.identity_json) if t != ts[0] else None
            outcomes = measure_layer(cfg, [c for c, _ in todo], t, protocol, ref_rate=ref_rate, seed=seed_l,
                                     known_ms=known)
            if t == ts[0]:
                known_by_cfg.clear()  # configurations are worked through one at a time
                known_by_cfg[cfg.identity_json] = {
                    o.candidate.label: (o.stats.min_ms if o.stats is not None else math.inf)
                    for o in outcomes if o.stats is not None or (o.skip or "").startswith("too slow")}
            records, skips = [], []
            for (cand, key), out in zip(todo, outcomes):
                if out.stats is None:
                    report.skipped[out.skip.split(":")[0]] += 1
                    skips.append({"key": key, "reason": out.skip, "kind": "layer", "campaign": campaign,
                                  "threads": t, "primitive": cand.primitive, "layout": cand.layout,
                                  "precision": cand.precision, "prune": cand.prune, "op": cfg.op,
                                  "macs": cfg.node.macs, "model_name": cfg.model_name, "node": cfg.node_name})
                    continue
                rec = make_record(kind="layer", device=devs[t], campaign=campaign, threads=t, stats=out.stats,
                                  node_json=cfg.identity_json, primitive=cand.primitive, layout=cand.layout,
                                  precision=cand.precision, prune=cand.prune, model_name=cfg.model_name,
                                  family=cfg.family,
                                  extra={**cfg.origin(), "seed": seed,
                                         **stats_extra(out.stats)})
                assert rec.key == key
                records.append(rec)
            if records:
                report.stored += store.append_many(records, if_exists="skip")
                report.unstable += sum(1 for r in records if r.stable is False)
            skiplog.add(skips)
            bar.update(len(todo))
            bar.set_postfix(stored=report.stored, skipped=sum(report.skipped.values()), refresh=False)
    finally:
        bar.close()
        report.elapsed_s = round(time.perf_counter() - t_start, 1)
    return report
