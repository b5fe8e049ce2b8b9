"""Node and pair costs (:class:`perfpredict.predictor.NodeCostModel`) for any batched plan predictor.

A learned predictor is not exactly additive, so its costs are a second-order expansion around the
default plan ``d`` (T = predicted latency, ``d[i<-o]`` = d with node i set to option o)::

    node_costs[i][o]        = T(d[i<-o]) - T(d) + share_i(d)
    edge_costs[(s,t)][a, b] = T(d[s<-a, t<-b]) - T(d[s<-a]) - T(d[t<-b]) + T(d)

where ``share_i(d)`` is node i's contribution to T(d) (the per-node latencies of the model, summing to
T(d)). The expansion reproduces T exactly for the default plan, every plan that changes one node, and
every plan that changes one pair of ``cost_pairs``; elsewhere it is the pairwise approximation an exact
solver can optimise. ``node_memory`` is the option's weight plus workspace bytes (features.PlanFeatures).
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

    def _cost_state(self, graph: "Graph", device: "DeviceSpec") -> dict[str, Any]:
        cache = self.__dict__.setdefault("_cost_cache", {})
        key = (graph.graph_id, graph.name, device.to_json(indent=None), threads_of(device))
        st = cache.get(key)
        if st is None:
            tpl = template_for(graph)
            default_plan(graph)  # raises PlanError for a node without a default primitive
            base = Plan({}, name="default", graph_id=graph.graph_id)  # defaults everywhere, sparse: cheap to encode
            shares = self.node_latencies(tpl, [base], device)[0]  # type: ignore[attr-defined]
            st = {"template": tpl, "base": base, "total": float(shares.sum()), "shares": shares, "single": {}}
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

    def edge_costs(self, graph: "Graph", device: "DeviceSpec", src_node: str, dst_node: str,
                   src_options: Sequence[Choice], dst_options: Sequence[Choice]) -> np.ndarray:
        """Pairwise latency term (ms), shape (len(src_options), len(dst_options))."""
        st = self._cost_state(graph, device)
        a_single = self._singles(st, device, src_node, list(src_options))
        b_single = self._singles(st, device, dst_node, list(dst_options))
        base: Plan = st["base"]
        plans = [base.with_choice(src_node, a).with_choice(dst_node, b) for a in src_options for b in dst_options]
        both = self.plan_latencies(st["template"], plans, device).reshape(len(src_options), len(dst_options))
        return both - a_single[:, None] - b_single[None, :] + st["total"]

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
