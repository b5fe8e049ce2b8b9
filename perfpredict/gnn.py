"""The latency / peak-memory graph neural network (torch_geometric).

For a graph g with nodes i (static features s_i, plan features p_i, roofline prior pi_i in ms), device
vector d_g and analytical memory facts a_g with memory prior M0_g (see :mod:`perfpredict.features`)::

    h_i^0     = W2 ReLU(W_s s_i + W_p p_i + W_d d_g + b)                      node encoder
    h_i^{l+1} = h_i^l + ReLU(LN(W_r h_i^l + W_f mean_{j->i} h_j^l + W_b mean_{i->k} h_k^l))   l < L
                                                     (GraphSAGE over data-flow edges and their reverse)
    t_i       = pi_i * exp(f_node(h_i^L))                                      per-node latency (ms)
                (pi_i alone for a node whose op the training data never had: see gnn_predictor)
    T_g       = (sum_i t_i) * exp(f_lat([mean_i h_i ; max_i h_i ; d_g ; log sum_i t_i]))
    M_g       = M0_g * exp(f_mem([mean_i h_i ; max_i h_i ; d_g ; a_g]))

f_node, f_lat and f_mem are two-layer MLPs whose last layer starts at zero, so an untrained network
predicts the analytical priors (sum of node rooflines, analytical memory). The sum over nodes is the
additive (nn-Meter-like) prior; f_lat is the graph-level correction (overlap, cache effects, dispatch).
Training minimises errors of log T_g and log M_g (relative errors), of log sum_i t_i against the same
T_g (so the nodes carry the latency and f_lat stays a small residual: trained freely, f_lat learned
family-specific corrections that did not carry to unseen families), when layer measurements are given,
of log t_i for nodes measured alone, and, when the forward pass was timed step by step
(:attr:`perfpredict.samples.ModelSample.steps`), of each step group's share of sum_i t_i against its measured share.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch_geometric.nn import SAGEConv, global_max_pool, global_mean_pool
from torch_geometric.utils import scatter


@dataclass(frozen=True)
class GNNConfig:
    """Hyper-parameters of :class:`PerfGNN`."""

    hidden: int = 32
    layers: int = 3
    dropout: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)

    @classmethod
    def of(cls, hidden: int | None = None, layers: int | None = None) -> "GNNConfig":
        """The default config with ``hidden`` / ``layers`` where given (None keeps the default)."""
        return cls(**{k: v for k, v in (("hidden", hidden), ("layers", layers)) if v is not None})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GNNConfig":
        """Parse :meth:`to_dict` output (unknown keys are an error)."""
        return cls(**dict(d))


def _mlp(inp: int, hidden: int, out: int, zero_last: bool = True) -> nn.Sequential:
    last = nn.Linear(hidden, out)
    if zero_last:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), last)


@dataclass
class GNNOutput:
    """Forward results: per-graph log latency (log ms), log peak memory (log bytes) and log of the plain sum
    of node latencies (before the graph-level correction); per-node log latency."""

    log_latency: Tensor
    log_memory: Tensor
    log_node_sum: Tensor
    node_log_latency: Tensor


class PerfGNN(nn.Module):
    """The network of the module docstring. Inputs are already standardised (see features.Normaliser)."""

    def __init__(self, static_dim: int, plan_dim: int, device_dim: int, memory_dim: int,
                 config: GNNConfig = GNNConfig()):
        super().__init__()
        h = config.hidden
        self.config = config
        self.enc_static = nn.Linear(static_dim, h)
        self.enc_plan = nn.Linear(plan_dim, h, bias=False)
        self.enc_device = nn.Linear(device_dim, h, bias=False)
        self.enc_out = nn.Linear(h, h)
        self.fwd = nn.ModuleList(SAGEConv(h, h, aggr="mean") for _ in range(config.layers))
        self.bwd = nn.ModuleList(SAGEConv(h, h, aggr="mean", root_weight=False, bias=False)
                                 for _ in range(config.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(h) for _ in range(config.layers))
        self.dropout = nn.Dropout(config.dropout)
        self.node_head = _mlp(h, h, 1)
        self.lat_head = _mlp(2 * h + device_dim + 1, h, 1)
        self.mem_head = _mlp(2 * h + device_dim + memory_dim, h, 1)

    def encode_static(self, static: Tensor) -> Tensor:
        """W_s s_i + b: the plan-independent part of the encoder (computed once per graph at prediction)."""
        return self.enc_static(static)

    def forward(self, static_h: Tensor, plan: Tensor, log_prior: Tensor, device: Tensor, edge_index: Tensor,
                batch: Tensor, num_graphs: int, memory: Tensor, log_memory_prior: Tensor,
                corrected: Tensor | None = None) -> GNNOutput:
        """Run the network.

        static_h [N, H] (:meth:`encode_static` of the static rows), plan [N, plan_dim], log_prior [N]
        (log ms), device [G, device_dim], edge_index [2, E] (data-flow direction), batch [N] graph index
        per node, memory [G, memory_dim], log_memory_prior [G] (log bytes); ``corrected`` [N] (default all
        ones) scales each node's learned correction: 0 leaves a node at its prior.
        """
        h = self.embed(static_h, plan, self.enc_device(device)[batch], edge_index)
        node_log = log_prior + self.node_correction(h, corrected)
        # log-sum-exp per graph, stabilised by the per-graph max
        shift = scatter(node_log.detach(), batch, 0, dim_size=num_graphs, reduce="max")
        total = scatter(torch.exp(node_log - shift[batch]), batch, 0, dim_size=num_graphs, reduce="sum")
        log_sum = torch.log(total) + shift
        pooled = torch.cat([global_mean_pool(h, batch, num_graphs), global_max_pool(h, batch, num_graphs)], dim=1)
        log_lat = self.graph_latency(pooled, device, log_sum)
        log_mem = log_memory_prior + self.mem_head(torch.cat([pooled, device, memory], 1)).squeeze(-1)
        return GNNOutput(log_lat, log_mem, log_sum, node_log)

    def node_correction(self, h: Tensor, corrected: Tensor | None = None) -> Tensor:
        """f_node(h_i): each node's log correction of its prior [N], times ``corrected`` where given."""
        out = self.node_head(h).squeeze(-1)
        return out if corrected is None else out * corrected

    def embed(self, static_h: Tensor, plan: Tensor, device_h: Tensor, edge_index: Tensor) -> Tensor:
        """Node embeddings h^L [N, H]; ``device_h`` [N, H] is W_d d_g of each node's graph."""
        h = self.enc_out(torch.relu(static_h + self.enc_plan(plan) + device_h))
        rev = edge_index.flip(0)
        for fwd, bwd, norm in zip(self.fwd, self.bwd, self.norms):
            m = fwd(h, edge_index) + bwd(h, rev)
            h = h + self.dropout(torch.relu(norm(m)))
        return h

    def graph_latency(self, pooled: Tensor, device: Tensor, log_sum: Tensor) -> Tensor:
        """log T_g from the pooled embeddings [G, 2H], the device [G, D] and log sum_i t_i [G]."""
        return log_sum + self.lat_head(torch.cat([pooled, device, log_sum.unsqueeze(1) / 5.0], 1)).squeeze(-1)
