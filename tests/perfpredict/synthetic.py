"""Synthetic training data on small real zoo graphs, for behaviour tests of the predictors only.

The targets are known functions of the plan (not measurements): an additive per-node latency that
depends on the primitive, layout, precision, pruning and thread count, and a memory that follows the
analytical estimate. No figure derived from them is ever reported.
"""

from __future__ import annotations

import random
from functools import lru_cache

import numpy as np

from perfpredict.devices import load_device
from perfpredict.features import FeatureSpace, encode_plans, plan_node_features, template_for, PLAN_COLUMNS
from perfpredict.graph import Graph
from perfpredict.plan import Choice, Plan
from perfpredict.primitives import candidates
from perfpredict.samples import LayerSample, ModelSample, SampleSet

FAMILIES = ("resnet", "squeezenet", "mobilenet_v2")

DEVICE = load_device({
    "schema_version": 1, "name": "synthetic-host", "kind": "cpu", "arch": "x86_64", "cores": 2, "threads": 2,
    "isa_features": ["avx2", "fma"], "freq_mhz_max": 3000, "peak_gflops_fp32": 100.0, "peak_gops_int8": 250.0,
    "mem_bw_triad_gbs": 20.0, "threads_used": 2,
})

_PRIM_COST = {"conv.onednn": 1.0, "conv.native": 1.3, "conv.im2col": 1.8, "conv.winograd": 0.8, "conv.fft": 2.5,
              "conv.gemm1x1": 0.9, "conv.depthwise": 0.7, "conv.reference": 6.0, "conv.int8": 0.5,
              "conv.dnnl": 0.9, "conv.dnnl_int8": 0.3,
              "gemm.blas": 1.0, "gemm.reference": 4.0, "gemm.int8": 0.6}


def zoo_spec(family: str, index: int = 0, resolution: int = 64) -> dict:
    """The zoo.describe() dict of a small variant of a family."""
    from perfpredict.zoo import describe, sample_variants

    return describe(sample_variants(family, index + 1, 0, resolutions=(resolution,))[index])


@lru_cache(maxsize=None)
def zoo_graph(family: str, index: int = 0, resolution: int = 64) -> Graph:
    """A small variant of a zoo family (exported once, cached on disk by perfpredict.models)."""
    from perfpredict.samples import GRAPHS

    return GRAPHS.graph(zoo_spec(family, index, resolution))


def random_plan(graph: Graph, rng: random.Random, p_change: float = 0.6) -> Plan:
    """A valid plan: each node keeps its default or takes a random legal choice."""
    choices = {}
    prunable = template_for(graph).prunable
    for i, node in enumerate(graph.nodes):
        if rng.random() > p_change:
            continue
        cands = candidates(node)
        if not cands:
            continue
        prim = rng.choice(cands)
        prune = rng.choice([0.0, 0.25, 0.5]) if prunable[i] and rng.random() < 0.3 else 0.0
        choices[node.name] = Choice(prim.name, rng.choice(prim.layouts), rng.choice(prim.precisions), prune)
    return Plan(choices)


def synthetic_latency(graph, plans: list, threads: int) -> np.ndarray:
    """A known additive latency (ms) of a Graph or GraphTemplate: the sum of :func:`synthetic_node_latency`."""
    return synthetic_node_latency(graph, plans, threads).sum(axis=1)


def synthetic_node_latency(graph, plans: list, threads: int) -> np.ndarray:
    """[plans, nodes] each node's known latency (ms): effective FLOPs at a primitive-dependent speed plus a fixed
    overhead, a penalty per conversion, times a thread factor (0 for a node fused into its producer)."""
    space = FeatureSpace.current()
    tpl = graph if not isinstance(graph, Graph) else template_for(graph)
    arr = encode_plans(tpl, plans, space)
    pf = plan_node_features(tpl, arr, space, DEVICE, threads)
    base = len(space.primitives) + 1
    col = {c: base + i for i, c in enumerate(PLAN_COLUMNS)}
    flops = np.expm1(pf.plan[:, :, col["log_eff_flops"]].astype(np.float64))
    conv = pf.plan[:, :, col["layout_conversions_in"]] + pf.plan[:, :, col["precision_conversions_in"]]
    fused = pf.plan[:, :, col["fused_now"]]
    speed = np.ones_like(flops)
    for k, name in enumerate(space.primitives):
        speed[arr.primitive == k] = _PRIM_COST.get(name, 1.0)
    per_node = (flops * speed / 2e7 + 0.01) * (1.0 - fused) + 0.02 * conv
    return per_node * (1.0 if threads == 1 else 0.6)


def synthetic_memory(graph: Graph, plans: list[Plan]) -> np.ndarray:
    """A known peak memory (bytes): 1.3 x the analytical estimate plus 2 MB."""
    space = FeatureSpace.current()
    tpl = template_for(graph)
    pf = plan_node_features(tpl, encode_plans(tpl, plans, space), space, DEVICE, 1)
    return 1.3 * pf.memory_prior + 2e6


def synthetic_samples(plans_per_graph: int = 24, seed: int = 0, families=FAMILIES, variants: int = 2,
                      layers: bool = False) -> SampleSet:
    """Model samples (and optionally single-node layer samples) with synthetic targets, 1 and 2 threads."""
    rng = random.Random(seed)
    models, layer_samples = [], []
    for fam in families:
        for v in range(variants):
            g = zoo_graph(fam, v)
            tpl = template_for(g)
            plans = [random_plan(g, rng) for _ in range(plans_per_graph)]
            mem = synthetic_memory(g, plans)
            for threads in (1, 2):
                lat = synthetic_latency(g, plans, threads)
                for p, l, m in zip(plans, lat, mem):
                    models.append(ModelSample(tpl, p, DEVICE, threads, float(l), float(m), fam, g.name,
                                              f"{g.name}:{threads}:{len(models)}", zoo_spec(fam, v)))
            if layers:
                for i, node in enumerate(g.nodes):
                    sub = tpl.subset([i])
                    for threads in (1, 2):
                        choice = random_plan(g, rng, 1.0).choices.get(node.name) or tpl.default_choices[i]
                        lat = synthetic_latency(sub, [{node.name: choice}], threads)[0]
                        layer_samples.append(LayerSample(sub, {node.name: choice}, DEVICE, threads, float(lat), fam,
                                                         g.name))
    return SampleSet(models, layer_samples, "synthetic", f"synthetic-{seed}")


def write_synthetic_store(path, samples: SampleSet, extra_records: bool = True) -> str:
    """Write ``samples`` (model samples with a zoo spec, plus layer samples cut from zoo graphs) as records
    of a measurement store, with one noise-recheck and one graph_id-mismatch record when asked."""

    from perfpredict.dataset import make_record, noise_recheck_record, open_store
    from perfpredict.measure import LatencyStats

    def stats(ms: float) -> LatencyStats:
        return LatencyStats(median_ms=ms, iqr_ms=ms * 0.01, mean_ms=ms, min_ms=ms * 0.99, cv=0.01, n_repeats=20,
                            ci95_rel=0.005, stable=True, threads=1, warmup=3)

    records = []
    for s in samples.models:
        records.append(make_record(kind="model", device=s.device, campaign="synthetic", threads=s.threads,
                                   stats=stats(s.latency_ms), graph_id=s.template.graph_id, plan_json=s.plan,
                                   model_name=s.model_name, family=s.family, peak_mem_bytes=int(s.peak_mem_bytes),
                                   extra={"spec": s.spec}))
    for s in samples.layers:
        node = s.template.node_names[0]
        spec = zoo_spec(s.family, 0 if s.model_name == zoo_graph(s.family, 0).name else 1)
        c = s.choices[node]
        records.append(make_record(kind="layer", device=s.device, campaign="synthetic", threads=s.threads,
                                   stats=stats(s.latency_ms), node_json={"name": node}, primitive=c.primitive,
                                   layout=c.layout, precision=c.precision, prune=c.prune, model_name=s.model_name,
                                   family=s.family, extra={"spec": spec, "node": node}))
    if extra_records:
        first = records[0]
        records.append(noise_recheck_record(first, stats(first.median_ms * 1.01)))
        s = samples.models[0]
        records.append(make_record(kind="model", device=s.device, campaign="mismatch", threads=s.threads,
                                   stats=stats(1.0), graph_id="0" * 16, plan_json=s.plan, model_name=s.model_name,
                                   family=s.family, extra={"spec": s.spec}))
    with open_store(path) as store:
        store.append_many(records)
    return str(path)
