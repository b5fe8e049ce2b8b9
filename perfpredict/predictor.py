"""The Predictor protocol: what the optimiser depends on to cost a plan without running it.

Implementations (the GNN, the baselines, the analytical roofline model) live in their own modules and
are interchangeable behind :class:`Predictor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from perfpredict.devices import DeviceSpec
    from perfpredict.graph import Graph
    from perfpredict.plan import Plan


@dataclass(frozen=True)
class Prediction:
    """Predicted costs, one entry per (graph, plan) pair asked for."""

    latency_ms: np.ndarray
    peak_mem_bytes: np.ndarray

    def __len__(self) -> int:
        return len(self.latency_ms)


@runtime_checkable
class Predictor(Protocol):
    """Predicts end-to-end latency and peak memory of graphs under plans on a device, batched.

    ``graphs`` is one Graph (shared by every plan) or a sequence as long as ``plans``.
    """

    def predict(self, graphs: "Graph | Sequence[Graph]", plans: "Sequence[Plan]",
                device: "DeviceSpec") -> Prediction:
        ...
