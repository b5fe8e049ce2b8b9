"""Stand-ins the transfer tests adapt from: synthetic NB201 devices, roofline and plan-aware source predictors,
a target device with a proxy that shares its fingerprint."""

from __future__ import annotations

import numpy as np

from perfpredict.devices import load_device
from perfpredict.nasbench201 import arch_string


OPS = ["nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect", "none"]


def nb201_archs(n, seed):
    """``n`` seeded random NAS-Bench-201 cells (arch strings)."""
    r = np.random.default_rng(seed)
    return [arch_string([OPS[i] for i in r.integers(0, 5, 6)]) for i in range(n)]


def synthetic_latency(graphs, a, b):
    """Synthetic device: latency = a * (MMACs)^b + 0.02 * nodes."""
    return np.array([a * (g.macs / 1e6) ** b + 0.02 * len(g.nodes) for g in graphs])


class RooflinePredictor:
    """A device-conditioned Predictor for the test: per node max(FLOPs / peak, bytes / bandwidth) + 5 us."""

    kind = "test-roofline"

    def predict(self, graphs, plans, device):
        from perfpredict.features import device_rates
        from perfpredict.predictor import Prediction

        r = device_rates(device)
        gl = [graphs] * len(plans) if not isinstance(graphs, list) else graphs
        lat = [sum(max(n.flops / (r.gflops_fp32 * 1e6), (n.bytes_in + n.bytes_out) / (r.bandwidth_gbs * 1e6)) + 0.005
                   for n in g.nodes) for g in gl]
        return Prediction(np.array(lat), np.ones(len(gl)))


class PlanAwareSource:
    """A plan-aware (GNN-like) source for the test: 2 ms per plan, 10 bytes, 4 equal nodes; records the threads."""

    def __init__(self):
        self.threads_seen = []

    def predict_plans(self, template, plans, device, threads=None):
        from perfpredict.predictor import Prediction

        self.threads_seen.append(threads)
        return Prediction(np.full(len(plans), 2.0), np.full(len(plans), 10.0))

    def node_latencies(self, template, plans, device, threads=None):
        self.threads_seen.append(threads)
        return np.full((len(plans), 4), 0.5)


def target_and_proxy(slower: float):
    """A fingerprint, a new device whose fingerprint is ``slower`` x it, and a proxy device that has it."""
    fp = {"conv_a": 1.0, "conv_b": 2.0, "conv_c": 4.0, "fc": 0.5}
    target = load_device({"schema_version": 1, "name": "new", "kind": "cpu", "cores": 2, "peak_gflops_fp32": 50.0,
                          "fingerprint": {k: slower * v for k, v in fp.items()}})
    proxy = load_device({"schema_version": 1, "name": "proxy", "kind": "cpu", "cores": 2, "peak_gflops_fp32": 200.0,
                         "mem_bw_triad_gbs": 20.0, "fingerprint": fp})
    return fp, target, proxy


class TwoThreadRoofline(RooflinePredictor):
    """A source that knows thread scaling up to the 2 threads it 'trained' at: each graph's parallel fraction
    grows with its FLOPs; asked for more threads it answers for 2."""

    def predict(self, graphs, plans, device, threads=None):
        from perfpredict.features import threads_of
        from perfpredict.predictor import Prediction

        base = super().predict(graphs, plans, device)
        gl = [graphs] * len(plans) if not isinstance(graphs, list) else graphs
        p = np.array([0.3 + 0.6 * min(1.0, g.macs / 2e8) for g in gl])
        t = min(threads_of(device, threads), 2)
        return Prediction(base.latency_ms * ((1 - p) + p / t), base.peak_mem_bytes)
