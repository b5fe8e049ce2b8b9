"""Training samples rebuilt from the measurement store, and the evaluation splits over them.

A model record (kind ``"model"``) becomes a :class:`ModelSample`: the graph's :class:`GraphTemplate`, the
plan, the device and thread count, and the measured latency / peak memory. A layer record (kind
``"layer"``) becomes a :class:`LayerSample`: the template of the kernel measured alone (the node, plus the
activation fused into it), its choice, device, threads and latency.

What the loader reads from a record (see :mod:`perfpredict.dataset`):

* model records: ``plan_json`` (absent: the default plan), ``graph_id``, ``threads``, ``device_json``,
  ``family``, ``model_name``, ``median_ms`` and/or ``peak_mem_bytes``, and the zoo spec in ``extra_json``
  under ``"spec"`` (the dict of :func:`perfpredict.zoo.describe`); without one, the graph a model outside the zoo
  carries under ``"graph"`` (:func:`perfpredict.graph_json.pack_graph`: ``perfpredict profile models --model``,
  ``perfpredict optimise --dataset``), else a canonical zoo name in ``model_name``. The rebuilt graph must have the
  record's ``graph_id``, else the record is skipped.
* layer records: ``primitive``/``layout``/``precision``/``prune``, ``median_ms``, and either
  ``extra_json`` ``{"spec": ..., "node": <node name>, "fused_node": <activation name or null>}`` (the node
  is cut out of the rebuilt graph) or a self-contained node (:func:`perfpredict.graph_json.node_to_json`), in
  ``extra_json`` under ``"layer_node"`` (a user's ONNX layer, ``perfpredict profile layers --model``) or as the
  ``node_json``, with an optional ``extra_json`` ``"fused_activation"`` ("relu", "relu6", "clip:lo:hi").

Records of the noise-recheck campaign are skipped (they duplicate others). Latencies flagged unstable
(the median's confidence interval never reached the campaign's target) are kept by default and counted in
``SampleSet.unstable`` (reported in model cards); ``include_unstable=False`` drops them. Rebuilt graphs are cached
per zoo spec or packed graph (ONNX exports on disk, see :mod:`perfpredict.models`; templates in memory).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter, OrderedDict, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from perfpredict.beacon import beacon_ms, normalised_ms
from perfpredict.devices import DeviceSpec, load_device
from perfpredict.errors import DatasetError, PerfPredictError
from perfpredict.errors import FeatureError
from perfpredict.features import GraphTemplate, template_for
from perfpredict.graph import Graph, Node
from perfpredict.graph_json import node_from_json, single_node_graph, unpack_graph
from perfpredict.plan import Choice, Plan
from perfpredict.zoo import list_synthetic_families, spec_from_dict

_STALE_REASONS = {2: "ran swish/hardswish/sigmoid unfused (before fusion revision 2)",
                  3: "ran a residual Add unfused (before fusion revision 3)"}


class SplitError(PerfPredictError):
    """A split specification that cannot be parsed or applied."""


@dataclass(frozen=True, eq=False)
class ModelSample:
    """One measured (graph, plan, device, threads) with its latency (ms) and/or peak memory (bytes)."""

    template: GraphTemplate
    plan: Plan
    device: DeviceSpec
    threads: int
    latency_ms: float | None
    peak_mem_bytes: float | None
    family: str
    model_name: str
    key: str = ""
    spec: Mapping[str, Any] | None = None
    campaign: str = ""
    dispatch_revision: int = 1  # how the runtime dispatched the steps (perfpredict.runtime.executor)
    timestamp: str = ""
    # where the forward pass spends its time, step by step (Executable.step_times): each template node's step group
    # (-1 none; a fused activation joins its producer, a conversion the node that reads it) and each group's ms
    steps: tuple[np.ndarray, np.ndarray] | None = None
    packed_graph: str | None = None  # a model outside the zoo: its graph (graph_json.pack_graph) instead of a spec


@dataclass(frozen=True, eq=False)
class LayerSample:
    """One kernel measured alone: ``template`` holds its node(s), ``choices`` each node's choice."""

    template: GraphTemplate
    choices: Mapping[str, Choice]
    device: DeviceSpec
    threads: int
    latency_ms: float
    family: str
    model_name: str
    key: str = ""
    campaign: str = ""


@dataclass
class SampleSet:
    """Model and layer samples from one source, with a hash identifying the data."""

    models: list[ModelSample]
    layers: list[LayerSample] = field(default_factory=list)
    source: str = ""
    data_hash: str = ""
    skipped: dict[str, int] = field(default_factory=dict)
    unstable: int = 0
    latency_stat: str = "median"
    memory_method: str = "any"
    campaigns: tuple[str, ...] | None = None  # the campaigns loaded (``load_samples``' entries), None: every one

    def families(self) -> list[str]:
        """Families of the model samples, sorted."""
        return sorted({s.family for s in self.models})

    def select(self, models: Callable[[ModelSample], bool], layers: Callable[[LayerSample], bool]) -> "SampleSet":
        """A new set keeping the samples the predicates accept (same source and hash)."""
        return SampleSet([s for s in self.models if models(s)], [s for s in self.layers if layers(s)],
                         self.source, self.data_hash, dict(self.skipped), self.unstable, self.latency_stat,
                         self.memory_method, self.campaigns)

    def summary(self) -> dict[str, Any]:
        """Counts for model cards and logs."""
        return {"source": self.source, "data_hash": self.data_hash, "model_samples": len(self.models),
                "layer_samples": len(self.layers),
                "with_latency": sum(s.latency_ms is not None for s in self.models),
                "with_memory": sum(s.peak_mem_bytes is not None for s in self.models),
                "families": dict(sorted(Counter(s.family for s in self.models).items())),
                "threads": dict(sorted(Counter(str(s.threads) for s in self.models).items())),
                "models": len({s.model_name for s in self.models}), "skipped": dict(self.skipped),
                "unstable_latencies_kept": self.unstable, "latency_stat": self.latency_stat,
                "memory_method": self.memory_method,
                **({"campaigns": list(self.campaigns)} if self.campaigns is not None else {})}


# --------------------------------------------------------------------------------------------- graphs


def _spec_key(d: Mapping[str, Any]) -> str:
    return json.dumps(d, sort_keys=True)


class GraphCache:
    """Templates per zoo spec or packed graph (all kept) and full Graphs (a few, LRU: they hold the weights)."""

    def __init__(self, graphs_kept: int = 4):
        self._templates: dict[str, GraphTemplate] = {}
        self._graphs: "OrderedDict[str, Graph]" = OrderedDict()
        self._kept = graphs_kept

    def graph(self, spec: Mapping[str, Any] | str) -> Graph:
        """The Graph of a zoo spec dict (exported once to ONNX, cached on disk) or of a packed graph
        (:func:`perfpredict.graph_json.pack_graph`, a model outside the zoo)."""
        from perfpredict.models import graph_from_spec

        key = self._key(spec)
        g = self._graphs.get(key)
        if g is None:
            g = unpack_graph(spec) if isinstance(spec, str) else graph_from_spec(spec_from_dict(spec))
            self._graphs[key] = g
            while len(self._graphs) > self._kept:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        return g

    def template(self, spec: Mapping[str, Any] | str) -> GraphTemplate:
        """The GraphTemplate of a zoo spec dict or a packed graph."""
        key = self._key(spec)
        t = self._templates.get(key)
        if t is None:
            t = self._templates[key] = template_for(self.graph(spec))
        return t

    @staticmethod
    def _key(spec: Mapping[str, Any] | str) -> str:
        return "packed:" + hashlib.sha1(spec.encode()).hexdigest() if isinstance(spec, str) else _spec_key(spec)


GRAPHS = GraphCache()
"""The process-wide cache used by :func:`load_samples` and :func:`graph_of`."""


def graph_of(sample: ModelSample) -> Graph:
    """The full Graph of a model sample (rebuilt from its zoo spec, or from the packed graph of a model outside the
    zoo with zeros for weights; for predictors that need more than the template)."""
    source = sample.spec if sample.spec is not None else sample.packed_graph
    if source is None:
        raise DatasetError(f"sample {sample.key or sample.model_name}: no zoo spec or packed graph to rebuild the "
                           "graph from")
    return GRAPHS.graph(source)


def _spec_of(rec: Any, extra: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for k in ("spec", "zoo_spec", "model_spec"):
        if isinstance(extra.get(k), Mapping):
            return extra[k]
    from perfpredict.zoo import describe, get_spec, list_models

    if rec.model_name and rec.model_name in list_models():
        shape = extra.get("input_shape")
        spec = get_spec(rec.model_name, tuple(shape)) if shape else get_spec(rec.model_name)
        return describe(spec)
    return None


_ACT_NODES = {"relu": ("Relu", {}), "relu6": ("Clip", {"min": 0.0, "max": 6.0})}


def _with_activation(node: Node, spec: str) -> Graph:
    """A two-node graph: ``node`` followed by the activation ``spec`` it fuses."""
    if spec in _ACT_NODES:
        op, attrs = _ACT_NODES[spec]
    elif spec.startswith("clip:"):
        _, lo, hi = spec.split(":")
        op, attrs = "Clip", {"min": float(lo), "max": float(hi)}
    else:
        raise FeatureError(f"unknown fused activation '{spec}'; accepted: relu, relu6, clip:<lo>:<hi>")
    out = node.outputs[0]
    act = Node(name=f"{node.name}/act", op=op, inputs=(out,), outputs=(f"{out}/act",), input_shapes=(node.out_shape,),
               output_shapes=(node.out_shape,), attrs=attrs, bytes_in=node.bytes_out, bytes_out=node.bytes_out)
    g1 = single_node_graph(node)
    shapes = dict(g1.tensor_shapes)
    shapes[act.outputs[0]] = node.out_shape
    return Graph(name=node.name, nodes=(node, act), inputs=g1.inputs, outputs=act.outputs, initializers={},
                 tensor_shapes=shapes)


# --------------------------------------------------------------------------------------------- loading


LATENCY_STATS = ("median", "min", "beacon")


def load_samples(store_path: str | Path, *, include_unstable: bool = True, progress: bool = False,
                 kinds: Sequence[str] = ("model", "layer"), limit: int | None = None,
                 latency_stat: str = "median", memory_method: str = "auto",
                 campaigns: Sequence[str] | None = None) -> SampleSet:
    """Read a measurement store (path or ``sqlite:///``) into a :class:`SampleSet` (see the module docstring).

    ``latency_stat`` picks the latency target: ``"median"`` (the record's ``median_ms``) or ``"min"`` (the
    fastest timed repeat, ``extra_json["min_ms"]``, least affected by preemption on a busy machine;
    records without it are skipped) or ``"beacon"`` (a model record's median scaled to the store's typical machine
    speed by the :mod:`perfpredict.beacon` workload timed in the same rounds; model records timed without a beacon
    are skipped, layer records keep their median). ``campaigns`` (default: all) keeps the records of those
    campaigns only; an entry ``A+B`` names campaigns that timed the same models and plans again (another session of
    the same commands): their records of one model, plan, device and thread count become one sample, the first
    named campaign's record, whose latency target is the geometric mean of theirs (each session's shared error,
    which the beacon does not take out, then averages down). A store with no usable model record raises
    :class:`DatasetError`.

    ``memory_method`` picks the peak-memory target (:mod:`perfpredict.runtime.measurement`): ``"allocator"``
    (a record's own allocator figure, or that of a ``memory-allocator`` re-measurement of it; records with
    neither keep only their latency), ``"rss"`` (resident-set figures only), ``"any"`` (the allocator figure
    where there is one, else the record's own) or ``"auto"`` (``"allocator"`` when the store holds any
    allocator figure, else ``"rss"``). Memory-only re-measurement records are attached to their originals,
    never samples of their own; so are step-time records (:attr:`ModelSample.steps`, from a ``step-times`` record
    of the sample's record timed on its own machine, or on another where the plan runs no int8 kernel).
    """
    if latency_stat not in LATENCY_STATS:
        raise DatasetError(f"latency statistic '{latency_stat}' is not known; accepted: {', '.join(LATENCY_STATS)}")
    if memory_method not in MEMORY_TARGETS:
        raise DatasetError(f"memory method '{memory_method}' is not known; accepted: {', '.join(MEMORY_TARGETS)}")
    from perfpredict.dataset import MEMORY_CAMPAIGN, NOISE_CAMPAIGN, STEPS_CAMPAIGN, memory_method_of, open_store

    path = Path(str(store_path).replace("sqlite:///", "", 1)) if str(store_path).startswith("sqlite:///") \
        else Path(store_path)
    if not path.exists():
        raise DatasetError(f"{path}: no such measurement store")
    repeats = [tuple(c.split("+")) for c in campaigns or () if "+" in c]
    if any(not all(r) for r in repeats):
        raise DatasetError(f"campaigns: an entry joined by '+' names a campaign on each side, got "
                           f"{', '.join('+'.join(r) for r in repeats)}")
    entries = None if campaigns is None else tuple(campaigns)
    campaigns = None if campaigns is None else {name for c in campaigns for name in c.split("+")}
    seen_campaigns: set[str] = set()
    skipped: Counter[str] = Counter()
    models: list[ModelSample] = []
    layers: list[LayerSample] = []
    digest = hashlib.sha256()
    devices: dict[str, DeviceSpec] = {}
    node_templates: dict[str, GraphTemplate] = {}
    unstable = 0
    with open_store(path, create=False) as store:
        total = len(store)
        remeasured = store.memory_remeasurements()
        step_times = store.step_times()
        references = store.beacon_references() if latency_stat == "beacon" else {}
        if memory_method == "auto":
            memory_method = "allocator" if remeasured or store.has_memory_method("allocator") else "rss"
        records: Iterable[Any] = store.iter_records()
        if progress:
            from tqdm import tqdm

            records = tqdm(records, total=total, desc="loading records", unit="rec", leave=False)
        for rec in records:
            if limit is not None and len(models) + len(layers) >= limit:
                break
            seen_campaigns.add(rec.campaign)
            if rec.campaign == NOISE_CAMPAIGN:
                skipped["noise-recheck"] += 1
                continue
            if rec.campaign == MEMORY_CAMPAIGN:
                skipped["memory re-measurement (attached to its original)"] += 1
                continue
            if rec.campaign == STEPS_CAMPAIGN:
                skipped["step times (attached to their original)"] += 1
                continue
            if rec.kind not in kinds:
                continue
            if campaigns is not None and rec.campaign not in campaigns:
                skipped["not in the chosen campaigns"] += 1
                continue
            median = rec.median_ms
            if latency_stat == "min" and median is not None:
                median = rec.extra().get("min_ms")
                if median is None:
                    skipped["no min_ms"] += 1
            elif latency_stat == "beacon" and median is not None and rec.kind == "model":
                beacon = beacon_ms(rec.extra())
                reference = references.get((rec.device_json, rec.threads))
                median = normalised_ms(median, beacon, reference) if beacon and reference else None
                if median is None:
                    skipped["no beacon timing"] += 1
            lat = median if (rec.stable is not False or include_unstable) else None
            if median is not None and lat is None:
                skipped["unstable latency"] += 1
            unstable_kept = lat is not None and rec.stable is False
            lat = lat if lat is not None and lat > 0 else None
            mem = _memory_target(rec, memory_method_of(rec), remeasured.get(rec.key), memory_method)
            if lat is None and (rec.kind == "layer" or mem is None):
                skipped["no usable target"] += 1
                continue
            dev = devices.get(rec.device_json)
            if dev is None:
                dev = devices[rec.device_json] = load_device(json.loads(rec.device_json))
            try:
                extra = rec.extra()
                if rec.kind == "model":
                    sample = _model_sample(rec, extra, dev, lat, mem)
                    if sample is None:
                        skipped["graph_id mismatch or no zoo spec"] += 1
                        continue
                    stale = folded_since(sample.template, sample.plan, extra.get("fusion_revision", 1))
                    if stale is not None:
                        skipped[_STALE_REASONS[stale]] += 1
                        continue
                    groups = _pick_steps(step_times.get(rec.key, ()), dev, sample.plan)
                    if groups is not None:
                        sample = replace(sample, steps=step_arrays(sample.template, groups))
                    models.append(sample)
                else:
                    sample = _layer_sample(rec, extra, dev, lat, node_templates)
                    if sample is None:
                        skipped["layer not locatable"] += 1
                        continue
                    layers.append(sample)
            except (PerfPredictError, json.JSONDecodeError, KeyError, ValueError) as exc:
                skipped[f"{rec.kind}: {type(exc).__name__}"] += 1
                continue
            digest.update(f"{rec.key}:{latency_stat}:{lat}:{mem};".encode())
            unstable += unstable_kept
    for group in repeats:
        models, merged = merge_repeats(models, group)
        if merged:
            skipped[f"timed again in {'+'.join(group)} (averaged into one sample)"] += merged
        digest.update(f"repeats:{'+'.join(group)};".encode())
    missing = sorted((campaigns or set()) - seen_campaigns) if limit is None else []
    if missing:
        raise DatasetError(f"{path}: no records of campaign(s) {', '.join(missing)}; the store holds "
                           f"{', '.join(sorted(seen_campaigns)) or 'no records'}")
    if not models and "model" in kinds:
        raise DatasetError(f"{path}: no usable model records (skipped: {dict(skipped) or 'none'})")
    return SampleSet(models, layers, str(path), digest.hexdigest()[:16], dict(skipped), unstable, latency_stat,
                     memory_method, entries)


def merge_repeats(models: Sequence[ModelSample], campaigns: Sequence[str]) -> tuple[list[ModelSample], int]:
    """``models`` with the samples of ``campaigns`` that share a graph, plan, device and thread count made one: the
    sample of the first campaign in ``campaigns`` order that has one, with the geometric mean of their latencies
    (those that have one); and how many samples were folded into another."""
    rank = {c: i for i, c in enumerate(campaigns)}
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(models):
        if m.campaign in rank:
            groups.setdefault((m.device.device_id, m.threads, m.template.graph_id, m.plan.key), []).append(i)
    drop: set[int] = set()
    out = list(models)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        idx.sort(key=lambda i: rank[models[i].campaign])
        lats = [models[i].latency_ms for i in idx if models[i].latency_ms]
        keep = idx[0]
        out[keep] = replace(models[keep], latency_ms=float(np.exp(np.mean(np.log(lats)))) if lats else None)
        drop.update(idx[1:])
    return [m for i, m in enumerate(out) if i not in drop], len(drop)


def _pick_steps(timed: Sequence[tuple[str, list]], device: DeviceSpec, plan: Plan) -> list | None:
    """The step groups of a model record: timed on its own machine (same ``device_id``, any thread description) where
    there are some, else timed on another machine if the plan runs nothing in int8 (int8 kernels' costs relative to
    the rest differ most between CPUs, e.g. AMX tiles against AVX-512 VNNI), else None."""
    other = None
    for device_id, groups in timed:
        if device_id == device.device_id:
            return groups
        other = other or groups
    if other is not None and not any(c.precision == "int8" for c in plan.choices.values()):
        return other
    return None


def step_arrays(template: GraphTemplate, groups: Sequence[Sequence[Any]]) -> tuple[np.ndarray, np.ndarray]:
    """:attr:`ModelSample.steps` from stored step groups ([ms, [node, ...]] each, as
    :func:`perfpredict.dataset.step_times_record` keeps them): each template node's group (-1: in none) and each
    group's ms."""
    index = {name: i for i, name in enumerate(template.node_names)}
    grp = np.full(len(index), -1, np.int64)
    for g, (_, nodes) in enumerate(groups):
        for name in nodes:
            if name in index:
                grp[index[name]] = g
    return grp, np.array([float(ms) for ms, _ in groups])


MEMORY_TARGETS = ("auto", "allocator", "rss", "any")
"""Accepted ``memory_method`` values of :func:`load_samples`."""


def _memory_target(rec: Any, own_method: str | None, remeasured: int | None, method: str) -> float | None:
    own = float(rec.peak_mem_bytes) if rec.peak_mem_bytes else None
    allocator = float(remeasured) if remeasured is not None else (own if own_method == "allocator" else None)
    if method == "allocator":
        return allocator
    if method == "rss":
        return own if own_method == "rss" else None
    return allocator if allocator is not None else own


def _model_sample(rec: Any, extra: Mapping[str, Any], dev: DeviceSpec, lat: float | None,
                  mem: float | None) -> ModelSample | None:
    spec = _spec_of(rec, extra)
    packed = extra.get("graph") if spec is None else None
    if spec is None and not isinstance(packed, str):
        return None
    tpl = GRAPHS.template(spec if spec is not None else packed)
    if rec.graph_id and tpl.graph_id != rec.graph_id:
        return None
    plan = Plan.from_dict(json.loads(rec.plan_json), f"record {rec.key}") if rec.plan_json else Plan({})
    name = rec.model_name or (str(spec.get("name")) if spec is not None else tpl.name)
    family = rec.family or (str(spec.get("family")) if spec is not None else name)
    return ModelSample(tpl, plan, dev, int(rec.threads), lat, mem, family, name, rec.key, spec, rec.campaign or "",
                       int(extra.get("dispatch_revision") or 1), rec.timestamp or "", packed_graph=packed)


def folded_since(tpl: GraphTemplate, plan: Plan, revision: int) -> int | None:
    """The first fusion revision (:data:`perfpredict.runtime.executor.FUSION_REVISION`) after ``revision`` whose
    rules fold nodes under ``plan`` (2: a swish, hardswish or sigmoid; 3: a residual Add), or None when the plan
    runs as it did under ``revision``. A model record measured at an earlier revision ran such a plan with those
    nodes apart, which the featuriser no longer describes, so :func:`load_samples` skips it."""
    if not tpl.fusions:
        return None
    from perfpredict.runtime.executor import fusion_allowed

    names = tpl.node_names
    choices = {n: plan.choices.get(n, d) for n, d in zip(names, tpl.default_choices)}
    return min((f.revision for f in tpl.fusions if f.revision > revision and fusion_allowed(f, choices)),
               default=None)


def _layer_sample(rec: Any, extra: Mapping[str, Any], dev: DeviceSpec, lat: float,
                  node_templates: dict[str, GraphTemplate]) -> LayerSample | None:
    if not rec.primitive:
        return None
    choice = Choice(rec.primitive, rec.layout or "NCHW", rec.precision or "fp32", float(rec.prune or 0.0))
    spec = _spec_of(rec, extra) if extra.get("node") else None
    family = rec.family or (str(spec["family"]) if spec else "")
    if spec is not None:
        fused = extra.get("fused_node")
        key = f"{_spec_key(spec)}|{extra['node']}|{fused}"
        tpl = node_templates.get(key)
        if tpl is None:
            full = GRAPHS.template(spec)
            names = full.node_names
            if extra["node"] not in names or (fused and fused not in names):
                return None
            idx = [names.index(extra["node"])] + ([names.index(fused)] if fused else [])
            tpl = node_templates[key] = full.subset(idx)
    elif extra.get("layer_node") or rec.node_json:  # a user's ONNX layer (profile layers --model) keeps its node
        act = extra.get("fused_activation")
        text = json.dumps(extra["layer_node"], sort_keys=True) if extra.get("layer_node") else rec.node_json
        key = f"{text}|{act}"
        tpl = node_templates.get(key)
        if tpl is None:
            node = node_from_json(json.loads(text))
            graph = _with_activation(node, act) if act else single_node_graph(node)
            tpl = node_templates[key] = template_for(graph)
    else:
        return None
    main = tpl.node_names[0]
    choices = {main: choice}
    for nm, default in zip(tpl.node_names[1:], tpl.default_choices[1:]):
        choices[nm] = Choice(default.primitive, choice.layout if choice.layout in ("NCHW", "NHWC") else "NCHW",
                             choice.precision, 0.0)
    return LayerSample(tpl, choices, dev, int(rec.threads), float(lat), family, rec.model_name or "", rec.key,
                       rec.campaign or "")


# --------------------------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Split:
    """A named train/test partition of a :class:`SampleSet`."""

    name: str
    train: SampleSet
    test: SampleSet


FAMILY_SPLITS = ("family", "family-layers", "family-shots")
"""The split kinds that hold one family's models out (``family-layers`` keeps its layer records, ``family-shots``
the first plans of each of its models: :func:`family_shots`)."""

SPLIT_FORMS = "random:FRACTION[:SEED] (held-out variants), family:NAME (leave one family out), " \
              "family-layers:NAME (leave its models out, keep its layer records), family-shots:NAME:K (leave its " \
              "models out but the first K plans of each at each thread count), lofo (every family in turn), none " \
              "(train on everything)"

SHOT_ORDER = ("default", "fast-fp32", "fast-any", "int8", "int8-nhwc", "pruned-0.5", "nhwc")
"""Plan kinds in the order :func:`perfpredict.profile.sample_plans` draws them: the plans ``perfpredict profile models
--plans-per-model K`` measures first, which :func:`family_shots` moves into training."""


def parse_split(text: str) -> tuple[str, Any]:
    """Parse a split spec (see :data:`SPLIT_FORMS`) into (kind, argument)."""
    t = (text or "").strip()
    if t in ("none", "lofo"):
        return t, None
    kind, _, rest = t.partition(":")
    if kind == "random":
        parts = rest.split(":")
        try:
            frac = float(parts[0]) if parts[0] else 0.2
            seed = int(parts[1]) if len(parts) > 1 else None
        except ValueError:
            raise SplitError(f"split '{text}': expected random:FRACTION[:SEED], e.g. random:0.2") from None
        if not 0.0 < frac < 1.0:
            raise SplitError(f"split '{text}': the held-out fraction must be in (0, 1)")
        return "random", (frac, seed)
    if kind == "family-shots":
        name, _, k = rest.rpartition(":")
        if not name or not k.isdigit() or int(k) < 1:
            raise SplitError(f"split '{text}': expected family-shots:NAME:K with K >= 1 plans per model, e.g. "
                             "family-shots:resnet:2")
        return kind, (name, int(k))
    if kind in FAMILY_SPLITS and rest:
        return kind, rest
    raise SplitError(f"unknown split '{text}'; accepted: {SPLIT_FORMS}")


def _layer_group(s: LayerSample) -> str:
    return s.model_name


def held_out_variants(samples: SampleSet, fraction: float, seed: int) -> Split:
    """Hold out ``fraction`` of the model variants of every family (all their plans, threads and layers)."""
    rng = random.Random(f"perfpredict.split:{seed}")
    by_family: dict[str, list[str]] = {}
    for s in samples.models:
        names = by_family.setdefault(s.family, [])
        if s.model_name not in names:
            names.append(s.model_name)
    test_names: set[str] = set()
    for fam in sorted(by_family):
        names = sorted(by_family[fam])
        if len(names) < 2:
            continue
        rng.shuffle(names)
        k = min(len(names) - 1, max(1, int(math.ceil(fraction * len(names)))))
        test_names.update(names[:k])
    train = samples.select(lambda s: s.model_name not in test_names, lambda s: _layer_group(s) not in test_names)
    test = samples.select(lambda s: s.model_name in test_names, lambda s: False)
    return Split(f"random:{fraction:g}:{seed}", train, test)


def leave_family_out(samples: SampleSet, family: str, keep_layers: bool = False) -> Split:
    """Train on every family but ``family`` (its layer records too, unless ``keep_layers``: a new family whose
    layers were profiled alone on the device, ``family-layers:NAME``); test on ``family``'s model records."""
    fams = samples.families()
    if family not in fams:
        raise SplitError(f"family '{family}' has no model samples; families: {', '.join(fams)}")
    train = samples.select(lambda s: s.family != family, lambda s: keep_layers or s.family != family)
    test = samples.select(lambda s: s.family == family, lambda s: False)
    return Split(f"{'family-layers' if keep_layers else 'family'}:{family}", train, test)


def family_shots(samples: SampleSet, family: str, k: int) -> Split:
    """Leave ``family`` out but for ``k`` plans of each of its models at each thread count, which join training: a
    new model whose first plans were measured (``perfpredict profile models --model FILE --plans-per-model K``,
    plan kinds in :data:`SHOT_ORDER`, then the others by record key); test on the family's other model records.
    Its layer records stay out, as in ``family:NAME``."""
    base = leave_family_out(samples, family)
    groups: dict[tuple[str, int], list[ModelSample]] = defaultdict(list)
    for s in base.test.models:
        groups[(s.model_name, s.threads)].append(s)
    rank = {kind: i for i, kind in enumerate(SHOT_ORDER)}
    shots = {id(s) for g in groups.values()
             for s in sorted(g, key=lambda s: (rank.get(s.plan.name, len(rank)), s.key))[:k]}
    train = samples.select(lambda s: s.family != family or id(s) in shots, lambda s: s.family != family)
    test = samples.select(lambda s: s.family == family and id(s) not in shots, lambda s: False)
    return Split(f"family-shots:{family}:{k}", train, test)


def make_splits(samples: SampleSet, text: str, seed: int = 0) -> list[Split]:
    """The splits a spec names: one for random/family/none (none: empty test), one per family for lofo."""
    kind, arg = parse_split(text)
    if kind == "none":
        return [Split("none", samples, samples.select(lambda s: False, lambda s: False))]
    if kind == "random":
        frac, s = arg
        return [held_out_variants(samples, frac, seed if s is None else s)]
    if kind == "family-shots":
        return [family_shots(samples, *arg)]
    if kind in FAMILY_SPLITS:
        return [leave_family_out(samples, arg, keep_layers=kind == "family-layers")]
    synthetic = set(list_synthetic_families())
    return [leave_family_out(samples, f) for f in samples.families() if f not in synthetic]


def validation_split(samples: SampleSet, fraction: float, seed: int) -> tuple[SampleSet, SampleSet]:
    """(train, validation) for choosing the training epoch: held-out variants, or a random tenth of samples when a
    family has a single variant."""
    split = held_out_variants(samples, fraction, seed)
    if split.test.models:
        return split.train, split.test
    rng = random.Random(seed)
    idx = set(rng.sample(range(len(samples.models)), max(1, int(len(samples.models) * fraction))))
    keep = {id(s) for i, s in enumerate(samples.models) if i not in idx}
    return (samples.select(lambda s: id(s) in keep, lambda s: True),
            samples.select(lambda s: id(s) not in keep, lambda s: False))


def with_targets(sample: ModelSample, latency_ms: float | None, peak_mem_bytes: float | None) -> ModelSample:
    """A copy of ``sample`` with other targets (for tests and synthetic checks)."""
    return replace(sample, latency_ms=latency_ms, peak_mem_bytes=peak_mem_bytes)
