"""Profiling campaigns: real measurements on this machine (the proxy device) turned into dataset records.

Three campaigns write to a measurement store (:mod:`perfpredict.dataset`):

* **layers** (:func:`run_layer_campaign`): layer configurations drawn from the zoo's families (canonical
  models and seeded variants, exported to ONNX and loaded as :class:`~perfpredict.graph.Graph`; every
  node's op, attributes and shapes, deduplicated) are each measured *in isolation*: a one-node graph is
  built by the runtime (:func:`~perfpredict.runtime.build_executable`) for every applicable primitive,
  layout, precision (fp32, int8) and pruning ratio (pruning a layer in isolation keeps the
  ``1 - ratio`` share of its output channels with the largest filter L1 norm), and only the node's
  kernel is timed (its input already in the primitive's layout and precision, so the conversions the
  runtime inserts around a lone node are not counted). The candidates of one layer are timed
  round-robin in a shuffled order (:func:`perfpredict.measure.measure_interleaved`), so drift does
  not bias one primitive.
* **models** (:func:`run_model_campaign`): whole zoo models (every family; canonical models and
  sampled variants at the campaign's resolutions) under sampled plans: the default plan, plans biased
  towards the choices the layer records found fastest, all-int8, all-NHWC and pruned plans, and random
  legal plans (random primitive/layout/precision per node, random pruning per prune group). The plans
  of one model are timed interleaved, end to end (``Executable.forward``); peak memory is measured by
  :func:`perfpredict.runtime.measurement.measure_memory`'s ``"allocator"`` method (deployed weight bytes +
  the peak of the bytes torch's allocator holds during a second forward pass: exact and repeatable) or, with
  ``memory_method="rss"``, in a persistent worker subprocess (glibc serves allocations above 64 KiB with mmap,
  the kernel's high-water mark is reset by writing "5" to /proc/self/clear_refs after the executable is built
  and run once, one forward pass is run, peak = deployed weight bytes + high-water mark rise), next to the
  analytical :func:`~perfpredict.runtime.estimate_peak_memory`.
* **memory** (:func:`run_memory_remeasure`): the peak memory of stored model records measured again by the
  allocator method, as memory-only records of campaign ``memory-allocator`` that point at their original
  (:func:`perfpredict.samples.load_samples` attaches them to it), for stores measured by the RSS method.
* **noise** (:func:`run_noise`): a seeded random sample of stored records is measured again in an
  independent run (layers interleaved with the candidates they were first timed with, as the campaign
  timed them) and stored as ``noise-recheck`` records; ``Store.info()["noise"]`` reports how often
  the two medians agree within 5% and 10%.

Slow candidates are capped, never faked: a candidate whose single call takes longer than
``Protocol.max_call_ms`` (for the C reference kernels: predicted from their measured MAC rate, before
running) is skipped, and every skip is appended to ``<store>.skips.jsonl`` with its key and reason. A
measurement whose median never reached the CI target is stored with ``stable=False`` and counted.

Every record carries the device description (``describe_host`` once per thread count per store, reused
on resume), library versions, thread count, graph/plan identity and the zoo spec (family, name, params,
input shape, seed) the graph is rebuilt from. Record keys are deterministic functions of the measured
thing (device, threads, campaign, layer configuration or graph + plan, primitive, layout, precision,
prune), computed before measuring: a campaign killed at any moment resumes where it stopped, skipping
stored keys; each (layer, threads) or (model, threads) batch is one store transaction.

On a machine shared with other work, run campaigns with ``OMP_WAIT_POLICY=PASSIVE``: with OpenMP's default
spin-then-sleep barriers, two-thread kernels on an oversubscribed CPU wait for a preempted spinning thread
and take hundreds of times longer than they should.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import hashlib
import json
import math
import os
import pickle
import random
import selectors
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from perfpredict.beacon import BEACON_KEY, Beacon, beacon_extra, beacon_ms, drift_problem
from perfpredict.dataset import Record, Store, make_record, noise_recheck_record, record_key
from perfpredict.devices import DeviceSpec, load_device
from perfpredict.errors import MeasurementError, PerfPredictError, PlanError
from perfpredict.graph import Graph, Node, load_onnx
from perfpredict.measure import LatencyStats, measure_interleaved
from perfpredict.plan import Choice, Plan, default_choice
from perfpredict.zoo import spec_from_dict

__all__ = [
    "LAYER_CAMPAIGN",
    "MODEL_CAMPAIGN",
    "DEFAULT_PRUNE_RATIOS",
    "DEFAULT_RESOLUTIONS",
    "Protocol",
    "MODEL_PROTOCOL",
    "CampaignReport",
    "LayerConfig",
    "LayerCandidate",
    "campaign_specs",
    "collect_layer_configs",
    "isolate_node",
    "layer_candidates",
    "sample_plans",
    "FastestChoices",
    "MemoryProbe",
    "SkipLog",
    "campaign_device",
    "run_layer_campaign",
    "run_model_campaign",
    "run_noise",
    "run_memory_remeasure",
    "allocator_memory_of",
    "rebuild_model_record",
    "AllocatorProbe",
    "memory_gap",
]

LAYER_CAMPAIGN = "layers"
MODEL_CAMPAIGN = "models"
PLAN_KINDS: tuple[str, ...] = ("mixed", "swaps")
"""The plan samplers of model campaigns: :func:`sample_plans` and :func:`sample_swap_plans`."""
DEFAULT_PRUNE_RATIOS = (0.0, 0.25, 0.5)
DEFAULT_RESOLUTIONS = (96, 128)
COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
_REFERENCE_PRIMITIVES = ("conv.reference", "gemm.reference")


# ================================================================ protocol and reports


@dataclass(frozen=True)
class Protocol:
    """The measurement protocol of a campaign (see :mod:`perfpredict.measure`).

    ``warmup`` counts every untimed call: the three probe calls a campaign makes while building (the
    faster of the last two is compared with ``max_call_ms``; a first call over three times the limit skips
    at once) and the rest (at least one) in an interleaved warm-up round right before timing.
    ``time_cap_s`` caps the timed repeats of one candidate (measure_interleaved stops after ``time_cap_s``
    times the number of candidates); ``max_call_ms`` skips a candidate whose single call takes longer
    (recorded in the skip log, never stored as a measurement). The defaults are the layer
    campaign's; :data:`MODEL_PROTOCOL` is the model campaign's.

    ``block`` > 1 times the model campaign's plans in steady turns: each turn of the round-robin makes
    ``block_warmup`` untimed calls and then ``block`` timed ones back to back (``measure_interleaved``'s
    ``block``), where one call per turn (the default) times each plan right after another plan or the beacon, as
    a cold single inference. Short plans pay that cold start most: on the AMX Xeon VM (ad hoc) the beacon
    campaign's oneDNN int8 NHWC plans of mobilenet_v1, squeezenet1_1 and resnet18 took 1.26-1.77x as long one
    call per turn as in turns of five after two untimed calls, fp32 plans 0.94-1.18x. Records timed in blocks
    say so (``extra["block"]``).
    """

    warmup: int = 4
    min_repeats: int = 6
    max_repeats: int = 40
    target_ci: float = 0.05
    time_cap_s: float = 0.025
    max_call_ms: float = 20.0
    block: int = 1
    block_warmup: int = 0

    def __post_init__(self) -> None:
        if self.min_repeats < 1 or self.max_repeats < self.min_repeats or self.warmup < 0:
            raise MeasurementError(f"protocol needs warmup >= 0 and 1 <= min_repeats <= max_repeats, got {self}")
        if not (self.target_ci > 0 and self.time_cap_s > 0 and self.max_call_ms > 0):
            raise MeasurementError("protocol target_ci, time_cap_s and max_call_ms must be positive numbers")
        if self.block < 1 or self.block_warmup < 0:
            raise MeasurementError(f"protocol needs block >= 1 and block_warmup >= 0, got {self.block} and "
                                   f"{self.block_warmup}")

    def measure_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for measure_latency / measure_interleaved."""
        return dict(warmup=self.warmup, min_repeats=self.min_repeats, max_repeats=self.max_repeats,
                    target_ci=self.target_ci, time_cap_s=self.time_cap_s)

    def block_kwargs(self) -> dict[str, Any]:
        """measure_interleaved's turn shape (``block``, ``block_warmup``), empty for one call per turn."""
        return dict(block=self.block, block_warmup=self.block_warmup) if self.block > 1 else {}

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


MODEL_PROTOCOL = Protocol(time_cap_s=0.2, max_call_ms=400.0)
"""The model campaign's protocol: as the layer one, with a longer time cap and call limit."""


@dataclass
class CampaignReport:
    """What a campaign did: records planned, stored now, found already stored, skipped (by reason),
    stored unstable, and campaign-specific figures in ``extra``."""

    campaign: str
    kind: str
    store: str
    threads: tuple[int, ...]
    planned: int = 0
    stored: int = 0
    already: int = 0
    skipped: Counter = field(default_factory=Counter)
    unstable: int = 0
    elapsed_s: float = 0.0
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def triage(self, items: Sequence[tuple[Any, str]], done: set[str], skipped_before: set[str]) -> list:
        """Count (item, key) pairs as planned and return those still to measure: not stored yet (``done``)
        and not skipped by an earlier run."""
        todo = []
        for item, key in items:
            self.planned += 1
            if key in done:
                self.already += 1
            elif key in skipped_before:
                self.skipped["skipped in an earlier run"] += 1
            else:
                todo.append((item, key))
        return todo

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        d = asdict(self)
        d["threads"] = list(self.threads)
        d["skipped"] = dict(self.skipped)
        d["skipped_total"] = sum(self.skipped.values())
        return d


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, (tuple, set, frozenset)):
        return list(o)
    if isinstance(o, bytes):
        return o.decode()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _seed_of(*parts: Any) -> int:
    return int(hashlib.sha256(_canonical(list(parts)).encode()).hexdigest()[:8], 16)


# ================================================================ skip log


class SkipLog:
    """Append-only JSON-lines log of skipped measurements, next to the store (``<store>.skips.jsonl``).

    A skipped key is not retried on resume. A line cut short by a kill is ignored when read.
    """

    def __init__(self, store_path: str | os.PathLike) -> None:
        p = Path(store_path)
        self.path = p.with_name(p.name + ".skips.jsonl")

    def keys(self) -> set[str]:
        """Keys skipped so far."""
        return {e["key"] for e in self.entries() if "key" in e}

    def entries(self) -> list[dict[str, Any]]:
        """Every complete entry."""
        if not self.path.is_file():
            return []
        out = []
        with open(self.path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def add(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Append entries (each with at least key and reason)."""
        lines = "".join(_canonical({**e, "timestamp": _utc_now()}) + "\n" for e in entries)
        if not lines:
            return
        with open(self.path, "a") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())


# ================================================================ device


def campaign_device(store: Store, threads: int, *, quick: bool = False) -> DeviceSpec:
    """This machine's DeviceSpec measured at ``threads``: the one already in ``store`` (same static facts,
    i.e. same device_id, and same thread count) if any, else ``describe_host(threads=threads, quick=quick)``
    (its JSON goes into the store with the first record). A resumed campaign thus keeps its description."""
    from perfpredict.devices import describe_host, static_host

    host = static_host()
    if host is not None:
        for spec in reversed(store.devices()):
            if spec.threads_used == threads and spec.device_id == host.device_id:
                return spec
    return describe_host(threads=threads, quick=quick)


# ================================================================ zoo sources


def campaign_specs(families: Sequence[str] | None, n_variants_per_family: int, seed: int,
                   resolutions: Sequence[int] = DEFAULT_RESOLUTIONS, *, canonical: bool = True,
                   probes: bool = False) -> list:
    """Zoo ModelSpecs of a campaign: per family its canonical models (at a resolution drawn from
    ``resolutions``) and ``n_variants_per_family`` seeded sampled variants at those resolutions, ordered so
    that families take turns. With ``probes`` the kernel-probe families (:mod:`perfpredict.zoo.kernels`) may be
    named too (they have their own input size; layer campaigns only)."""
    from perfpredict import zoo

    fams = _check_families(families, probes)
    if n_variants_per_family < 0:
        raise PerfPredictError(f"variants per family must be >= 0, got {n_variants_per_family}")
    res = tuple(int(r) for r in resolutions)
    if not res or min(res) < 32:
        raise PerfPredictError(f"resolutions must be integers >= 32, got {list(resolutions)}")
    rng = random.Random(f"perfpredict.profile:{seed}")
    per_family: list[list] = []
    for fam in fams:
        mine = []
        if canonical:
            for name in zoo.list_models():
                spec = zoo.get_spec(name)
                if spec.family == fam:
                    r = rng.choice(res)
                    mine.append(spec.with_input_shape((1, 3, r, r)))
        if n_variants_per_family:
            mine.extend(zoo.sample_variants(fam, n_variants_per_family, seed,
                                            resolutions=None if fam in zoo.list_probe_families() else res))
        per_family.append(mine)
    # families take turns, so a campaign stopped early still covers every family
    return [fam[i] for i in range(max(map(len, per_family), default=0)) for fam in per_family if i < len(fam)]


def onnx_sources(paths: Sequence[str | os.PathLike | OnnxSource]) -> list[OnnxSource]:
    """The user's ONNX files of a layer campaign, loaded; a missing or malformed one, or two of one stem (they would
    share a model name in the store), is an error."""
    out = [p if isinstance(p, OnnxSource) else OnnxSource(Path(p)) for p in paths]
    missing = [str(s.path) for s in out if not s.path.is_file()]
    if missing:
        raise PerfPredictError(f"no such ONNX file: {', '.join(missing)}")
    stems = Counter(s.name for s in out)
    twice = sorted(n for n, c in stems.items() if c > 1)
    if twice:
        raise PerfPredictError(f"ONNX files share a file name ({', '.join(twice)}): their records would share a "
                               "model name; rename one")
    for src in out:
        src.graph  # noqa: B018 - loads it: a malformed file is an error here, before anything is measured
    return out


def campaign_sources(models: Sequence[str | os.PathLike | OnnxSource] | None, families: Sequence[str] | None,
                     specs: Sequence | None, draw: Callable[[], list]) -> list:
    """What a campaign measures: the user's ONNX files (:func:`onnx_sources`) first, then ``specs``, or where none
    are given the zoo models ``draw`` returns, unless only ONNX files and no ``families`` are named."""
    if specs is None:
        specs = [] if models and not families else draw()
    return [*onnx_sources(models or ()), *specs]


def _check_families(families: Sequence[str] | None, probes: bool = False) -> list[str]:
    from perfpredict import zoo

    known = zoo.list_families() + zoo.list_synthetic_families() + (zoo.list_probe_families() if probes else [])
    if not families:
        return zoo.list_families()
    bad = [f for f in families if f not in known]
    if bad:
        raise PerfPredictError(f"unknown famil{'y' if len(bad) == 1 else 'ies'} {', '.join(bad)}; "
                               f"known: {', '.join(known)}")
    return list(dict.fromkeys(families))


def spec_dict(spec) -> dict[str, Any]:
    """The zoo spec as stored in records (family, name, params, input_shape, seed)."""
    from perfpredict.zoo import describe

    return describe(spec)


def zoo_graph(spec) -> tuple[Graph, Path]:
    """The Graph of a zoo spec and its (cached) ONNX file."""
    from perfpredict.models import graph_from_spec, zoo_onnx_path

    return graph_from_spec(spec), zoo_onnx_path(spec)


def _model_source(item) -> tuple[Graph, Path, dict[str, Any]]:
    """(graph, ONNX file, what its model records keep to rebuild the graph) of a zoo spec or a user's ONNX file."""
    if isinstance(item, OnnxSource):
        from perfpredict.features import pack_graph

        return item.graph, item.path, {"onnx": str(item.path), "graph": pack_graph(item.graph)}
    graph, path = zoo_graph(item)
    return graph, path, {"spec": spec_dict(item)}


# ================================================================ layers


def node_identity(node: Node) -> dict[str, Any]:
    """What makes a layer configuration: op, normalised attributes, shapes, and its cost facts."""
    return json.loads(_canonical({
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
        return _canonical(self.identity)

    def origin(self) -> dict[str, Any]:
        """Where the layer came from, as its records keep it: the zoo spec and the node's name, from which training
        rebuilds the node; or, for a user's ONNX file, its path, the node's name and the node itself
        (:func:`perfpredict.features.node_to_json`), which training reads, so the store stays usable when the file
        moves."""
        if self.spec is not None:
            return {"spec": self.spec, "node": self.node_name}
        from perfpredict.features import node_to_json

        return {"onnx": self.onnx_path, "onnx_node": self.node_name, "layer_node": node_to_json(self.node)}


@dataclass(frozen=True)
class OnnxSource:
    """A user's ONNX model that a layer or model campaign measures (``perfpredict profile layers|models --model
    FILE``): its records take the file's stem as family and model name."""

    path: Path

    @property
    def name(self) -> str:
        """The file's stem: the records' family and model name."""
        return self.path.stem

    family = name

    @functools.cached_property
    def graph(self) -> Graph:
        """The model's Graph (loaded once)."""
        from perfpredict.models import load_model

        return load_model(self.path)[0]

    def digest(self) -> str:
        """The graph's structure hash (seeds the plans drawn for it, as a zoo spec's digest does)."""
        return self.graph.graph_id


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
            text = _canonical(ident)
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


def _random_inputs(graph: Graph, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(tuple(graph.tensor_shapes[t]), dtype=np.float32) for t in graph.inputs)


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


def _probe_ms(call: Callable[[], Any]) -> float:
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
    call = node_kernel_call(exe, _random_inputs(graph, 0))
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
            if cand.primitive in _REFERENCE_PRIMITIVES and ref_rate and node.macs:
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
                call = node_kernel_call(exe, _random_inputs(graph, seed))
                t0 = time.perf_counter()
                call()  # first call: lazy initialisation (primitive caches, packing)
                first_ms = (time.perf_counter() - t0) * 1e3
                # a first call far over the limit is not worth two more (lazy set-up never costs that much)
                one_ms = first_ms if first_ms > FIRST_CALL_FACTOR * protocol.max_call_ms else _probe_ms(call)
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


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="rec", file=sys.stderr, dynamic_ncols=True, disable=not enabled,
                smoothing=0.05)


def _parse_threads(threads: Sequence[int] | int) -> tuple[int, ...]:
    ts = (threads,) if isinstance(threads, int) else tuple(threads)
    if not ts or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in ts):
        raise PerfPredictError(f"threads must be positive integers, got {list(ts)}")
    return tuple(sorted(set(ts)))


def _stats_extra(st: LatencyStats) -> dict[str, Any]:
    return {"min_ms": round(st.min_ms, 6), "mean_ms": round(st.mean_ms, 6)}


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
    ts = _parse_threads(threads)
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
    bar = _progress(sum(len(w[2]) for w in work), f"layers {campaign}", progress)
    deadline = None if max_minutes is None else t_start + 60 * max_minutes
    known_by_cfg: dict[str, dict[str, float]] = {}
    try:
        for cfg, t, todo in work:
            if (deadline is not None and time.perf_counter() > deadline) or \
                    (stop_after is not None and len(done) + report.stored >= stop_after):
                report.stopped_early = True
                break
            seed_l = _seed_of(cfg.identity_json, seed)
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
                                         **_stats_extra(out.stats)})
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


# ================================================================ plans


class FastestChoices:
    """The fastest measured unpruned choice of each layer configuration, from a store's layer records.

    ``best(node, threads, precisions)`` is the choice with the lowest median among stable-or-not records of
    the node's configuration at that thread count (None when the configuration was not measured).
    """

    def __init__(self, table: Mapping[tuple[str, int], list[tuple[float, str, str, str]]]) -> None:
        self._table = table
        self._by_identity: dict[str, list[int]] = defaultdict(list)
        for ident, t in sorted(table):
            self._by_identity[ident].append(t)

    @classmethod
    def from_store(cls, store: Store | None, campaign: str | None = LAYER_CAMPAIGN) -> "FastestChoices":
        """Index the layer records of ``campaign`` (all campaigns when None) of ``store``."""
        table: dict[tuple[str, int], list[tuple[float, str, str, str]]] = defaultdict(list)
        if store is not None:
            for r in store.iter_records(kind="layer", campaign=campaign):
                if r.median_ms is None or (r.prune or 0) > 0 or r.node_json is None:
                    continue
                table[(r.node_json, r.threads)].append((r.median_ms, r.primitive, r.layout, r.precision))
        for v in table.values():
            v.sort()
        return cls(dict(table))

    def __len__(self) -> int:
        return len(self._table)

    def best(self, node: Node, threads: int, precisions: Sequence[str] = ("fp32",)) -> Choice | None:
        """The fastest measured choice of ``node`` at ``threads`` among ``precisions`` (records at another
        thread count when the configuration was not measured at ``threads``)."""
        ident = _canonical(node_identity(node))
        rows = self._table.get((ident, threads))
        if rows is None:
            others = [k for k in self._by_identity.get(ident, ()) if k != threads]
            rows = self._table.get((ident, others[0])) if others else None
        for _ms, prim, layout, precision in rows or ():
            if precision in precisions:
                return Choice(prim, layout, precision, 0.0)
        return None


SLOW_PLAN_MACS = 10_000_000
"""Random plans give conv.fft only to nodes with at most this many MACs (it is quadratic-time slow on big
ones); the C reference kernels only where their predicted time is under ``max_node_ms``."""


def _legal_choices(node: Node, ref_rate: float | None, max_node_ms: float) -> list[Choice]:
    from perfpredict.primitives import candidates

    out = []
    for precision in ("fp32", "int8"):
        for prim in candidates(node, precision=precision):
            if prim.name in _REFERENCE_PRIMITIVES and (not ref_rate or node.macs / ref_rate > max_node_ms):
                continue
            if prim.name == "conv.fft" and node.macs > SLOW_PLAN_MACS:
                continue
            for layout in prim.layouts:
                out.append(Choice(prim.name, layout, precision, 0.0))
    return out


def compact_plan(graph: Graph, plan: Plan) -> Plan:
    """``plan`` with only its non-default choices (nodes not named run their default), named and tied to
    the graph."""
    choices = {n.name: c for n in graph.nodes if (c := plan.choices.get(n.name)) is not None
               and c != default_choice(n)}
    return Plan(choices, plan.name, graph.graph_id)


def sample_plans(graph: Graph, n_plans: int, rng: random.Random, *, threads: int = 1,
                 fastest: FastestChoices | None = None, ref_rate: float | None = None,
                 max_node_ms: float = 2.0) -> list[Plan]:
    """Up to ``n_plans`` distinct legal plans for ``graph``, in this order: ``default``; ``fast-fp32`` and
    ``fast-any`` (per node the fastest choice the layer records found at ``threads``, fp32 only / any
    precision; default where the configuration was not measured); ``int8`` and ``int8-nhwc`` (every node with an
    int8 primitive at int8, on the first-ranked one that runs in NCHW / in NHWC, else in its own layout); ``pruned-0.5`` (every prune group at
    ratio 0.5); ``nhwc``; then ``random`` plans
    (per node a uniformly drawn legal primitive/layout/precision, the C reference kernels only where
    predicted under ``max_node_ms``; each prune group pruned with probability 0.3 at 0.25 or 0.5) and
    ``mixed`` plans (per node the fast choice with probability 0.6, else a random one). Plans are
    compact (non-default choices only)."""
    from perfpredict.primitives import candidates
    from perfpredict.runtime import prune_groups

    groups = prune_groups(graph)
    out: list[Plan] = []
    seen: set[str] = set()

    def add(choices: Mapping[str, Choice], name: str) -> None:
        if len(out) >= n_plans:
            return
        p = compact_plan(graph, Plan(dict(choices), name, graph.graph_id))
        if p.key in seen:
            return
        seen.add(p.key)
        out.append(p)

    defaults = {n.name: default_choice(n) for n in graph.nodes}
    add(defaults, "default")
    if fastest is not None and len(fastest):
        for name, precs in (("fast-fp32", ("fp32",)), ("fast-any", ("fp32", "int8"))):
            ch = {n.name: fastest.best(n, threads, precs) or defaults[n.name] for n in graph.nodes}
            add(ch, name)
    for layout, name in (("NCHW", "int8"), ("NHWC", "int8-nhwc")):
        prims = {n.name: next(iter(candidates(n, layout=layout, precision="int8") or
                                   candidates(n, precision="int8")), None) for n in graph.nodes}
        add({n: Choice(p.name, layout if layout in p.layouts else p.layouts[0], "int8") if p else defaults[n]
             for n, p in prims.items()}, name)
    if groups:
        add({**defaults, **{m: replace(defaults[m], prune=0.5) for g in groups for m in g.members}}, "pruned-0.5")
    nhwc = {}
    for n in graph.nodes:
        c = candidates(n, layout="NHWC", precision="fp32")
        nhwc[n.name] = Choice(c[0].name, "NHWC") if c else defaults[n.name]
    add(nhwc, "nhwc")
    legal = {n.name: _legal_choices(n, ref_rate, max_node_ms) or [defaults[n.name]] for n in graph.nodes}
    attempts = 0
    while len(out) < n_plans and attempts < 20 * n_plans:
        attempts += 1
        mixed = attempts % 2 == 0 and fastest is not None and len(fastest) > 0
        ch = {}
        for n in graph.nodes:
            fast = fastest.best(n, threads, ("fp32", "int8")) if mixed else None
            ch[n.name] = fast if fast is not None and rng.random() < 0.6 else rng.choice(legal[n.name])
        for g in groups:
            if rng.random() < 0.3:
                r = rng.choice((0.25, 0.5))
                for m in g.members:
                    ch[m] = replace(ch[m], prune=r)
        add(ch, "mixed" if mixed else "random")
    return out


def anchor_plan(graph: Graph, primitive: str = "conv.dnnl") -> dict[str, Choice]:
    """Every node in NHWC at fp32 on a primitive of ``primitive``'s family
    (:func:`~perfpredict.primitives.primitive_family`: ``dnnl`` puts MaxPool on ``maxpool.dnnl``, a gate on
    ``mul.dnnl``) where one runs it, else on its first-ranked NHWC fp32 primitive (its default where it has none):
    the whole-graph plans the optimiser's searches end on."""
    from perfpredict.primitives import candidates, primitive_family

    family = primitive_family(primitive)
    out = {}
    for n in graph.nodes:
        prims = candidates(n, layout="NHWC", precision="fp32")
        pick = next((c for c in prims if primitive_family(c.name) == family), prims[0] if prims else None)
        out[n.name] = Choice(pick.name, "NHWC") if pick is not None else default_choice(n)
    return out


def sample_swap_plans(graph: Graph, n_plans: int, rng: random.Random, *, anchor: str = "conv.dnnl",
                      ref_rate: float | None = None, max_node_ms: float = 2.0) -> list[Plan]:
    """Up to ``n_plans`` distinct plans near the whole-graph ``anchor`` plan (:func:`anchor_plan`): the anchor,
    then ``swap`` plans (one to three random Conv nodes moved to another legal fp32 choice) and ``band`` plans
    (every Conv node whose output height lies in a random band, moved to one primitive drawn among those that run
    one of them). The search compares plans like these at its end; mixed random plans rarely show a primitive's
    effect against that anchor. Plans are compact (non-default choices only)."""
    base = anchor_plan(graph, anchor)
    out: list[Plan] = []
    seen: set[str] = set()

    def add(choices: Mapping[str, Choice], name: str) -> None:
        p = compact_plan(graph, Plan(dict(choices), name, graph.graph_id))
        if p.key not in seen:
            seen.add(p.key)
            out.append(p)

    add(base, "anchor")
    convs = [n for n in graph.nodes if n.op == "Conv"]
    others = {n.name: [c for c in _legal_choices(n, ref_rate, max_node_ms)
                       if c.precision == "fp32" and c.primitive != base[n.name].primitive] for n in convs}
    movable = [n for n in convs if others[n.name]]
    heights = sorted({n.out_shape[2] for n in movable})
    attempts = 0
    while movable and len(out) < n_plans and attempts < 20 * n_plans:
        attempts += 1
        ch = dict(base)
        if attempts % 2:
            for n in rng.sample(movable, min(len(movable), rng.randint(1, 3))):
                ch[n.name] = rng.choice(others[n.name])
            add(ch, "swap")
        else:
            lo, hi = sorted(rng.sample(heights, 2)) if len(heights) > 1 else (heights[0], heights[0])
            band = [n for n in movable if lo <= n.out_shape[2] <= hi]
            prim = rng.choice(sorted({c.primitive for n in band for c in others[n.name]}))
            for n in band:
                c = [c for c in others[n.name] if c.primitive == prim]
                if c:
                    ch[n.name] = next((x for x in c if x.layout == "NHWC"), c[0])
            add(ch, "band")
    return out


# ================================================================ memory worker


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


class MemoryProbe:
    """A persistent worker subprocess measuring the peak memory of one inference of a graph under a plan.

    The worker keeps the last loaded graph. For each plan it builds the executable, runs it once, trims
    glibc's free memory, resets the high-water mark (/proc/self/clear_refs "5"), runs one forward pass and
    reports deployed weight bytes + the rise of VmHWM over the resident set at the reset (the figure
    :func:`perfpredict.runtime.measurement.measure_memory` reports, without a fresh process per plan).
    A worker that fails or exceeds ``timeout_s`` is killed and restarted; that plan gets no memory figure.
    """

    def __init__(self, timeout_s: float = 180.0) -> None:
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="perfpredict-memprobe-")

    def _start(self) -> None:
        env = dict(os.environ)
        env.setdefault("PYTHONWARNINGS", "ignore")
        self.proc = subprocess.Popen([sys.executable, "-m", "perfpredict.profile", "--memory-worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=env, bufsize=1)

    def measure_built(self, exe: Any, xs: tuple[Any, ...], *, onnx_path: str | os.PathLike, threads: int,
                      seed: int = 0) -> dict[str, Any]:
        """:meth:`measure` of a built executable's graph, plan and calibration (``xs`` unused: the worker builds
        its own input from ``seed``)."""
        return self.measure(onnx_path, exe.source_graph.name, exe.plan, threads, seed=seed,
                            calibration=exe.calibration)

    def measure(self, onnx_path: str | os.PathLike, graph_name: str, plan: Plan, threads: int, *, seed: int = 0,
                calibration: Any = None) -> dict[str, Any]:
        """{"peak_bytes", "weight_bytes", "run_peak_bytes", "method"} or {"error": why}."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        cal_path = None
        if calibration is not None:
            cal_path = os.path.join(self._tmp.name, "calibration.pkl")
            with open(cal_path, "wb") as f:
                pickle.dump(calibration, f, protocol=pickle.HIGHEST_PROTOCOL)
        req = {"onnx": str(onnx_path), "name": graph_name, "plan": plan.to_dict(), "threads": threads,
               "seed": seed, "calibration": cal_path}
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.close()
            return {"error": "memory worker died"}
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(self.timeout_s)
        sel.close()
        if not ready:
            self.close()
            return {"error": f"memory worker timed out after {self.timeout_s:g} s"}
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            return {"error": "memory worker died"}
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            self.close()
            return {"error": "memory worker sent garbage"}

    def close(self) -> None:
        """Stop the worker."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for s in (self.proc.stdin, self.proc.stdout):
                try:
                    if s:
                        s.close()
                except OSError:
                    pass
            self.proc = None

    def __enter__(self) -> "MemoryProbe":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
        self._tmp.cleanup()


class AllocatorProbe:
    """The ``"allocator"`` memory method for campaigns, in this process
    (:func:`perfpredict.runtime.measurement.allocated_memory`), with :class:`MemoryProbe`'s reply format."""

    def measure_built(self, exe: Any, xs: tuple[Any, ...], **_: Any) -> dict[str, Any]:
        """{"peak_bytes", "weight_bytes", "run_peak_bytes", "method"} of a built executable, or {"error": why}."""
        from dataclasses import asdict

        from perfpredict.errors import MeasurementError
        from perfpredict.runtime.measurement import allocated_memory

        try:
            return asdict(allocated_memory(exe, xs))
        except MeasurementError as exc:
            return {"error": str(exc)[:200]}

    def __enter__(self) -> "AllocatorProbe":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def _memory_worker() -> None:
    """Main loop of the memory worker (``python -m perfpredict.profile --memory-worker``)."""
    import torch

    from perfpredict.measure import _reset_hwm, _status_kb
    from perfpredict.runtime import build_executable
    from perfpredict.runtime.measurement import _limit_malloc_caching
    from perfpredict.runtime.memory import weight_bytes

    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but replies goes to the protocol stream
    _limit_malloc_caching()
    libc = _libc()
    graphs: dict[str, Graph] = {}
    for line in sys.stdin:
        try:
            req = json.loads(line)
            path = req["onnx"]
            if path not in graphs:
                graphs.clear()
                gc.collect()
                graphs[path] = load_onnx(path, name=req["name"])
            graph = graphs[path]
            calibration = None
            if req.get("calibration"):
                with open(req["calibration"], "rb") as f:
                    calibration = pickle.load(f)
            exe = build_executable(graph, Plan.from_dict(req["plan"]), threads=req["threads"],
                                   calibration=calibration)
            xs = exe.prepare_input(*_random_inputs(graph, req.get("seed", 0)))
            exe.forward(*xs)
            gc.collect()
            if libc is not None:
                libc.malloc_trim(0)
            method = "clear_refs" if _reset_hwm() else "baseline-subtraction"
            base = _status_kb("VmRSS")
            exe.forward(*xs)
            hwm = _status_kb("VmHWM")
            run_peak = max(0, hwm - base) * 1024
            weights = weight_bytes(exe.graph, dict(exe.plan.choices))
            reply = {"peak_bytes": weights + run_peak, "weight_bytes": weights, "run_peak_bytes": run_peak,
                     "method": method}
            del exe, xs
            gc.collect()
            torch.set_num_threads(torch.get_num_threads())
        except Exception as exc:  # report and keep serving
            reply = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


# ================================================================ models


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
    (:func:`perfpredict.features.pack_graph`, ``extra_json["graph"]``), so training rebuilds them without the file.
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
    ts = _parse_threads(threads)
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
    bar = _progress(len(specs) * len(ts) * plans_per_model, f"models {campaign}", progress)
    deadline = None if max_minutes is None else t_start + 60 * max_minutes
    probe = (MemoryProbe() if memory_method == "rss" else AllocatorProbe()) if memory else None
    mem_ts = set(_parse_threads(memory_threads)) if memory_threads else {min(ts)}
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
            graph, onnx_path, identity = _model_source(spec)
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
    x = _random_inputs(graph, _seed_of(spec.name, seed))
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
                    _probe_ms(lambda: exe.forward(*xs))
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
            mem[key] = probe.measure_built(exe, xs, onnx_path=onnx_path, threads=t, seed=_seed_of(spec.name, seed))
    stats: dict[str, LatencyStats] = {}
    if built:
        calls = {key: (lambda exe=exe, xs=xs: exe.forward(*xs)) for key, (_, _, exe, xs) in built.items()}
        if ctx["beacon"] is not None:
            calls[BEACON_KEY] = ctx["beacon"].call(t)
        with torch.inference_mode():
            kw = protocol.measure_kwargs()
            kw["warmup"] = max(1, protocol.warmup - 3)  # the three probe calls were warm-up calls already
            # with a beacon, every candidate stays in every round: the beacon's median is of the plans' rounds
            stats = measure_interleaved(calls, threads=t, seed=_seed_of(spec.name, t, seed),
                                        lockstep=ctx["beacon"] is not None, **kw, **protocol.block_kwargs())
    recs = []
    for key, (plan, _, exe, _) in built.items():
        if ctx["learn"]:
            ctx["known"][plan.key] = stats[key].min_ms
        est = estimates[key]
        m = mem.get(key, {})
        extra = {**identity, "plan_kind": plan.name, "seed": seed, **_stats_extra(stats[key]),
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


# ================================================================ noise


def run_noise(store: Store, *, sample: int = 200, seed: int = 0, kinds: Sequence[str] = ("layer", "model"),
              protocol: Protocol | None = None, repeat: int = 0, campaigns: Sequence[str] | None = None,
              progress: bool = True, time_cap_s: float | None = None) -> CampaignReport:
    """Re-measure a seeded random sample of ``sample`` stored records (not rechecks themselves; split evenly
    across ``kinds``) and store the results as noise-recheck records
    (:func:`perfpredict.dataset.noise_recheck_record`).

    Layer records are rebuilt from their zoo spec and node name and timed as the layer campaign timed
    them: interleaved with the other candidates stored for the same layer and thread count (timed alone,
    a small layer runs with warmer caches and comes out systematically faster). Model records are rebuilt
    from their zoo spec and plan and timed interleaved with the other plans their campaign stored for the same
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
    candidates = [r for k in kinds for r in store.iter_records(kind=k)
                  if r.campaign != NOISE_CAMPAIGN and r.median_ms is not None and "spec" in r.extra()
                  and (campaigns is None or r.campaign in campaigns)]
    if not candidates:
        where = f" of campaign(s) {', '.join(campaigns)}" if campaigns else ""
        raise PerfPredictError(f"{store.path}: no {' or '.join(kinds)} records{where} with a zoo spec to re-measure")
    rng = random.Random(f"perfpredict.profile.noise:{seed}")
    by_kind = {k: [r for r in candidates if r.kind == k] for k in kinds}
    by_kind = {k: v for k, v in by_kind.items() if v}
    chosen = []
    for i, (k, recs) in enumerate(sorted(by_kind.items())):  # the sample is split evenly across kinds
        share = sample // len(by_kind) + (1 if i < sample % len(by_kind) else 0)
        chosen += rng.sample(recs, min(share, len(recs)))
    chosen.sort(key=lambda r: (_spec_key(r.extra()["spec"]), r.kind))  # load each model once
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
    bar = _progress(len(chosen), "noise recheck", progress)
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
            graph = _record_graph(orig, graphs)
            proto = protocol or (Protocol() if orig.kind == "layer" else MODEL_PROTOCOL)
            if time_cap_s is not None:
                proto = replace(proto, time_cap_s=time_cap_s)
            try:
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


def _spec_key(spec: Mapping[str, Any]) -> str:
    """A zoo spec dict as text: the identity of the graph it builds."""
    return json.dumps(spec, sort_keys=True)


def _record_graph(record: Record, graphs: dict[str, Graph]) -> Graph:
    """The zoo graph of ``record``'s spec; ``graphs`` keeps the last one built (one name can stand for several
    resolutions, so the whole spec is the key)."""
    spec = record.extra()["spec"]
    skey = _spec_key(spec)
    if skey not in graphs:
        graphs.clear()
        gc.collect()
        graphs[skey] = zoo_graph(spec_from_dict(spec))[0]
    return graphs[skey]


def rebuild_model_record(record: Record, graphs: dict[str, Graph], *,
                         chain: bool = True) -> tuple[Any, tuple[Any, ...]]:
    """(executable, prepared input) of model record ``record`` as its campaign built them: its zoo graph and plan,
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
    return exe, exe.prepare_input(*_random_inputs(graph, _seed_of(ex["spec"]["name"], ex.get("seed", 0))))


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
    their zoo specs (each model built once; ``graphs`` caches it), storing in batches; an original ``is_done``
    says is already measured is counted and skipped, one whose rebuild fails is counted by reason, and the loop
    stops cleanly after ``max_minutes``."""
    todo.sort(key=lambda r: (_spec_key(r.extra()["spec"]), r.threads))
    deadline = None if max_minutes is None else t_start + 60 * max_minutes
    bar = _progress(len(todo), desc, progress)
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
                if _spec_key(orig.extra()["spec"]) not in graphs:
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

    Each plan is rebuilt from its zoo spec (campaign inputs and int8 calibration) and measured twice; the
    report gives how far the two figures lie apart (``repeat_max_rel_diff``: the method's noise) and how the
    resident-set figures stored before compare with the new ones (``vs_stored``). Resumable: records already
    re-measured are skipped. ``max_minutes`` stops cleanly.
    """
    from perfpredict.dataset import MEMORY_CAMPAIGN, NOISE_CAMPAIGN, memory_method_of, memory_remeasure_record

    t_start = time.perf_counter()
    done = store.memory_remeasurements()
    todo = [r for r in store.iter_records(kind="model") if r.campaign not in (NOISE_CAMPAIGN, MEMORY_CAMPAIGN)
            and memory_method_of(r) == "rss" and "spec" in r.extra()]
    report = CampaignReport(MEMORY_CAMPAIGN, "model", str(store.path), tuple(sorted({r.threads for r in todo})))
    report.planned = len(todo)
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
    todo = [r for c in (campaigns or sorted(known)) for r in store.iter_records(kind="model", campaign=c)
            if r.plan_json and (threads is None or r.threads in threads) and "spec" in r.extra()]
    ts = tuple(sorted({r.threads for r in todo}))
    report = CampaignReport(STEPS_CAMPAIGN, "model", str(store.path), ts)
    devices = {t: campaign_device(store, t) for t in ts}
    report.planned = len(todo)
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
    node = graph.node(ex["node"])
    identity = node_identity(node)
    if _canonical(identity) != orig.node_json:
        raise PerfPredictError(f"node '{ex['node']}' of {ex['spec']['name']} no longer matches the record")
    cfg = LayerConfig(identity, isolate_node(graph, node), orig.family or "", orig.model_name or "", ex["spec"],
                      ex["node"])
    me = LayerCandidate(orig.primitive, orig.layout, orig.precision, float(orig.prune or 0.0))
    cands = siblings.get((orig.campaign, orig.model_name, orig.threads, orig.node_json)) or [me]
    if me not in cands:
        cands = [*cands, me]
    outcomes = measure_layer(cfg, cands, orig.threads, protocol, seed=_seed_of(orig.node_json, ex.get("seed", 0)))
    return next(o.stats for o in outcomes if o.candidate == me)


def _model_group(record: Record) -> tuple:
    """The plans its campaign timed together with model record ``record``: same campaign, zoo model, device and
    thread count."""
    return (record.campaign, _spec_key(record.extra().get("spec", {})), record.device_json, record.threads)


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
                                seed=_seed_of(orig.key, ex.get("seed", 0)), **protocol.measure_kwargs(),
                                **protocol.block_kwargs())
    return stats[orig.key], (beacon_extra(stats[BEACON_KEY]) if with_beacon else None)


def _dummy_stats() -> LatencyStats:
    return LatencyStats(1.0, 0.0, 1.0, 1.0, 0.0, 1, math.inf, False, None, 0)


if __name__ == "__main__":
    if sys.argv[1:] == ["--memory-worker"]:
        _memory_worker()
    else:
        sys.exit("usage: python -m perfpredict.profile --memory-worker  (internal; use `perfpredict profile`)")

