"""Node and pair costs (:class:`perfpredict.predictor.NodeCostModel`) for any batched plan predictor.

A learned predictor is not exactly additive, so its costs are a second-order expansion around the
default plan ``d`` (T = predicted latency, ``d[i<-o]`` = d with node i set to option o)::

    node_costs[i][o]        = T(d[i<-o]) - T(d) + share_i(d)
    edge_costs[(s,t)][a, b] = T(d[s<-a, t<-b]) - T(d[s<-a]) - T(d[t<-b]) + T(d)

where ``share_i(d)`` is node i's contribution to T(d) (the per-node latencies of the model, summing to
T(d)). The expansion reproduces T exactly for the default plan, every plan that changes one node, and
every plan that changes one pair of ``cost_pairs``; elsewhere it is the pairwise approximation an exact
solver can optimise. ``node_memory`` is the option's weight plus workspace bytes (features.PlanFeatures).

Pair terms are what costs time: a pair of nodes with 40 options each is 1,600 plans to predict. With
``pair_groups`` (the default) the options of a node that differ only in primitive (same layout, precision and
prune ratio, so the same conversions and channel counts at the edge) share one pair term, that of the cheapest
of them by its single-change latency; the default option keeps its own, so the expansion stays exact at the
default plan, for every single change, and for pair changes between those representatives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from perfpredict.features import encode_plans, plan_node_features, template_for, threads_of
from perfpredict.plan import Choice, Plan, default_plan
from perfpredict.predictor import interaction_pairs

if TYPE_CHECKING:
    from perfpredict.devices import DeviceSpec
    from perfpredict.features import GraphTemplate
    from perfpredict.graph import Graph


class PairwiseCostsMixin:
    """Adds NodeCostModel methods to a predictor with ``predict_plans`` and ``node_latencies``."""

    _COST_CACHE_SIZE = 8
    pair_groups: bool = True
    """Options differing only in primitive share the pair term of the cheapest (see the module docstring)."""

    def _cost_state(self, graph: "Graph", device: "DeviceSpec") -> dict[str, Any]:
        cache = self.__dict__.setdefault("_cost_cache", {})
        key = (graph.graph_id, graph.name, device.to_json(indent=None), threads_of(device))
        st = cache.get(key)
        if st is None:
            tpl = template_for(graph)
            defaults = default_plan(graph).choices  # raises PlanError for a node without a default primitive
            base = Plan({}, name="default", graph_id=graph.graph_id)  # defaults everywhere, sparse: cheap to encode
            shares = self.node_latencies(tpl, [base], device)[0]  # type: ignore[attr-defined]
            st = {"template": tpl, "base": base, "total": float(shares.sum()), "shares": shares, "single": {},
                  "defaults": defaults}
            if len(cache) >= self._COST_CACHE_SIZE:
                cache.pop(next(iter(cache)))
            cache[key] = st
        return st

    def _singles(self, st: dict[str, Any], device: "DeviceSpec", node: str, opts: Sequence[Choice]) -> np.ndarray:
        missing = [o for o in dict.fromkeys(opts) if (node, o) not in st["single"]]
        if missing:
            base: Plan = st["base"]
            lat = self.plan_latencies(st["template"], [base.with_choice(node, o) for o in missing], device)
            for o, v in zip(missing, lat):
                st["single"][(node, o)] = float(v)
        return np.array([st["single"][(node, o)] for o in opts])

    def plan_latencies(self, template: "GraphTemplate", plans: Sequence[Plan], device: "DeviceSpec") -> np.ndarray:
        """Predicted latency (ms) of plans that change a few nodes of the default plan (a predictor may
        override this with something faster than predicting each plan whole)."""
        return np.asarray(self.predict_plans(template, plans, device).latency_ms)  # type: ignore[attr-defined]

    def node_costs(self, graph: "Graph", device: "DeviceSpec",
                   options: Mapping[str, Sequence[Choice]]) -> dict[str, np.ndarray]:
        """Latency (ms) of each option of each named node (see the module docstring)."""
        st = self._cost_state(graph, device)
        tpl: GraphTemplate = st["template"]
        out = {}
        for node, opts in options.items():
            i = tpl.node_names.index(node)
            out[node] = self._singles(st, device, node, list(opts)) - st["total"] + float(st["shares"][i])
        return out

    def _pair_representatives(self, st: dict[str, Any], device: "DeviceSpec", node: str,
                              opts: Sequence[Choice]) -> tuple[list[Choice], np.ndarray]:
        """The options whose pair terms are predicted and, per option of ``opts``, the index of the one whose
        term it takes (itself without ``pair_groups``)."""
        if not self.pair_groups:
            return list(opts), np.arange(len(opts))
        single = self._singles(st, device, node, opts)
        default = st["defaults"].get(node)
        best: dict[tuple[str, str, float], int] = {}
        for k, o in enumerate(opts):
            g = (o.layout, o.precision, o.prune)
            if o != default and (g not in best or single[k] < single[best[g]]):
                best[g] = k
        of = [k if o == default else best[(o.layout, o.precision, o.prune)] for k, o in enumerate(opts)]
        reps = sorted(set(of))
        pos = {k: j for j, k in enumerate(reps)}
        return [opts[k] for k in reps], np.array([pos[k] for k in of], dtype=int)

    def edge_costs(self, graph: "Graph", device: "DeviceSpec", src_node: str, dst_node: str,
                   src_options: Sequence[Choice], dst_options: Sequence[Choice]) -> np.ndarray:
        """Pairwise latency term (ms), shape (len(src_options), len(dst_options))."""
        st = self._cost_state(graph, device)
        src_reps, src_of = self._pair_representatives(st, device, src_node, list(src_options))
        dst_reps, dst_of = self._pair_representatives(st, device, dst_node, list(dst_options))
        a_single = self._singles(st, device, src_node, src_reps)
        b_single = self._singles(st, device, dst_node, dst_reps)
        base: Plan = st["base"]
        plans = [base.with_choice(src_node, a).with_choice(dst_node, b) for a in src_reps for b in dst_reps]
        both = self.plan_latencies(st["template"], plans, device).reshape(len(src_reps), len(dst_reps))
        terms = both - a_single[:, None] - b_single[None, :] + st["total"]
        return terms[np.ix_(src_of, dst_of)]

    def node_memory(self, graph: "Graph", device: "DeviceSpec",
                    options: Mapping[str, Sequence[Choice]]) -> dict[str, np.ndarray]:
        """Weight plus workspace bytes of each option of each named node."""
        st = self._cost_state(graph, device)
        tpl: GraphTemplate = st["template"]
        space = self.space  # type: ignore[attr-defined]
        out = {}
        for node, opts in options.items():
            i = tpl.node_names.index(node)
            plans = [st["base"].with_choice(node, o) for o in opts]
            pf = plan_node_features(tpl, encode_plans(tpl, plans, space), space, device)
            out[node] = pf.node_memory[:, i].copy()
        return out

    def cost_pairs(self, graph: "Graph") -> Sequence[tuple[str, str]]:
        """Data-flow pairs plus channel-source pairs (:func:`perfpredict.predictor.interaction_pairs`)."""
        return interaction_pairs(graph)
